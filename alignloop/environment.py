"""Process-wide settings made before Prefect or MLflow is imported: project-local state, no telemetry."""

from __future__ import annotations

import os
from pathlib import Path


def configure(root: Path) -> None:
    root = root.resolve()
    defaults = {
        # Prefect keeps its database and results in the project, not in ~/.prefect.
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        # MLflow: a SQLite file in the project unless MLFLOW_TRACKING_URI says otherwise; no telemetry.
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "DVC_NO_ANALYTICS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # Digests of large weight files, reused across runs while their size and mtime are unchanged.
        "ALIGNLOOP_DIGEST_STORE": str(root / ".alignloop" / "digests.json"),
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
