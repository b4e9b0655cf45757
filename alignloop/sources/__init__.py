"""Where a run's inputs come from: prompt and preference files, ShareGPT, verifiable prompts, models (local, hub, GGUF,
packaged files)."""
