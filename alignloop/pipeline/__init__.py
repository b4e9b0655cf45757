"""The machinery that runs stages: the registry and plan, cache keys and stamps, the Prefect flow, DVC, launching, the
run lock, tracking."""
