"""What the pipeline benchmarks share: run `alignloop run` on a params dict in a project directory, and format
mean ± std over seeds."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml


def project_env(**extra: str) -> dict[str, str]:
    """This environment for a run in its own project directory: its own MLflow and Prefect stores, no progress bars."""
    env = {**os.environ, "ALIGNLOOP_PROGRESS": "0", **extra}
    for key in ("MLFLOW_TRACKING_URI", "PREFECT_HOME", "PREFECT_API_URL"):
        env.pop(key, None)
    return env


def load_params(path: Path, iterations: int | None) -> dict:
    """params.yaml as a dict, with `iterations` overridden when given."""
    params = yaml.safe_load(path.read_text())
    if iterations is not None:
        params["iterations"] = iterations
    return params


def run_pipeline(workdir: Path, params: dict) -> tuple[dict, float]:
    """Write params.yaml, run the pipeline quietly, return (reports/summary.json, seconds)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "alignloop"), "run"], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((workdir / "reports" / "summary.json").read_text()), time.perf_counter() - start


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds (sd 0 for a single seed)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def mean_std(values: list[float], digits: int = 3) -> str:
    mean, std = mean_sd(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
