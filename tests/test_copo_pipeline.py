"""COPO in the pipeline (tiny preset, two iterations; slow): the cfn stage runs before each optimize, the buffer
grows across iterations, and DVC agrees with the run (`dvc status` clean, `dvc repro` runs nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline_helpers import ALIGNLOOP, DVC, copy_project, run, set_params, statuses

pytestmark = pytest.mark.slow


def test_copo_run_accumulates_counts_and_dvc_agrees(tiny_run: Path, tmp_path: Path) -> None:
    # The shared tiny run (a DVC project) grown to two COPO iterations: what it had stays cached.
    project = copy_project(tiny_run, tmp_path / "copo", mlflow=False)
    set_params(project, {"iterations": 2, "optimize": {"exploration": "copo"}})
    run([ALIGNLOOP, "run"], project)
    status = statuses(project)
    assert {key: status[key] for key in ("prepare", "sft", "benchmark-0", "sample-1", "rank-1")} == dict.fromkeys(
        ("prepare", "sft", "benchmark-0", "sample-1", "rank-1"), "cached"), status
    assert {"cfn-1", "cfn-2"} <= {key for key, status in status.items() if status == "ran"}
    stats = [json.loads((project / f"artifacts/iter-{i}/cfn/stats.json").read_text()) for i in (1, 2)]
    assert stats[0]["buffer_visits"] == 48 * 4 and stats[1]["buffer_visits"] == 2 * 48 * 4
    log = json.loads((project / "artifacts/iter-2/train_log.json").read_text())
    assert log["final"]["copo_bonus"] > 0 and log["final"]["copo_term"] > 0
    assert "up to date" in run([DVC, "status"], project).stdout
    assert "Running stage" not in run([DVC, "repro"], project).stdout

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("alignloop").experiment_id
    child = client.search_runs([experiment], "tags.iteration = '2'")[0]
    assert child.data.metrics["cfn.buffer_visits"] == 2 * 48 * 4  # the cfn stage's stats reach MLflow
