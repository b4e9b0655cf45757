"""End to end on the tiny preset: `alignloop run` (Prefect + MLflow) and `dvc repro` (DVC), one iteration each (the
session's shared runs, tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline_helpers import DVC, copy_project, run, snapshot

pytestmark = pytest.mark.slow


def test_alignloop_run_end_to_end(tiny_run: Path, tmp_path: Path) -> None:
    project = tiny_run
    summary = json.loads((project / "reports" / "summary.json").read_text())
    assert [row["iteration"] for row in summary["iterations"]] == [0, 1]
    for row in summary["iterations"]:
        metrics = row["metrics"]
        for split in ("in_distribution", "harder", "unseen_composition"):
            for metric in ("greedy_gold", "sampled_gold", "greedy_exact_match", "win_rate_vs_sft"):
                assert 0.0 <= metrics[f"{split}/{metric}"] <= 1.0
            assert metrics[f"{split}/greedy_length"] > 0
            assert metrics[f"{split}/sampled_entropy"] > 0
    # The SFT model against itself: every prompt ties, so the win rate is exactly one half.
    assert summary["iterations"][0]["metrics"]["win_rate_vs_sft"] == 0.5
    assert summary["iterations"][0]["metrics"]["lc_win_rate_vs_sft"] == 0.5
    assert summary["wall_seconds"] > 0
    assert {"prepare", "sft", "benchmark-0", "sample-1", "rank-1", "optimize-1", "benchmark-1"} <= set(
        summary["stages"])
    assert all(step["status"] == "ran" and step["seconds"] >= 0 for step in summary["stages"].values())
    assert "in_dist" in (project / "run.stdout").read_text()  # the per-iteration table

    samples = [json.loads(line) for line in (project / "artifacts/iter-1/samples.jsonl").read_text().splitlines()]
    assert len(samples) == 48 * 4
    assert all(len(row["policy"]) == 16 and isinstance(row["seed"], int) for row in samples)
    assert (project / "artifacts/iter-1/policy/model.safetensors").is_file()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("alignloop").experiment_id])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 2
    history = client.get_metric_history(parents[0].info.run_id, "in_distribution.greedy_gold")
    assert sorted(point.step for point in history) == [0, 1]
    assert parents[0].data.params["optimize.beta"] == "0.1"
    assert parents[0].data.tags["alignloop.run_key"]
    on_parent = {item.path for item in client.list_artifacts(parents[0].info.run_id)}
    assert {"report.html", "plots"} <= on_parent
    assert {"plots/scores.png", "plots/win_rate.png"} <= {
        item.path for item in client.list_artifacts(parents[0].info.run_id, "plots")}
    by_iteration = {int(run.data.tags["iteration"]): run for run in children}
    logged = {item.path for item in client.list_artifacts(by_iteration[1].info.run_id)}
    assert {"metrics.json", "train_log.json", "rank_stats.json", "training_curve.png", "samples.json"} <= logged
    table = json.loads(Path(client.download_artifacts(by_iteration[1].info.run_id, "samples.json",
                                                      str(tmp_path / "download"))).read_text())
    assert {"prompt", "chosen", "chosen_score", "rejected", "rejected_score"} <= set(table["columns"])
    assert 0 < len(table["data"]) <= 5


def test_dvc_repro_end_to_end(tiny_repro: Path, tmp_path: Path) -> None:
    metrics = json.loads((tiny_repro / "artifacts/iter-1/metrics.json").read_text())
    assert 0.0 <= metrics["in_distribution/greedy_gold"] <= 1.0
    # DVC's cache links the policies instead of copying them: the workspace file is the cache's file
    assert "hardlink,symlink,copy" in (tiny_repro / ".dvc" / "config").read_text()
    weights = tiny_repro / "artifacts/iter-1/policy/model.safetensors"
    assert weights.is_symlink() or weights.stat().st_nlink > 1

    project = copy_project(tiny_repro, tmp_path / "project")
    assert "up to date" in run([DVC, "status"], project).stdout
    second = run([DVC, "repro"], project).stdout
    assert "Running stage" not in second
    shown = run([DVC, "metrics", "show", "--json"], project).stdout
    assert "in_distribution/greedy_gold" in shown
    plots = run([DVC, "plots", "show", "-o", "plots"], project)
    assert "WARNING" not in plots.stdout + plots.stderr  # DVC only warns when it cannot draw a plot
    assert "in_distribution/greedy_gold" in (project / "plots" / "index.html").read_text()


def test_dvc_repro_and_alignloop_run_make_the_same_bytes(tiny_run: Path, tiny_repro: Path) -> None:
    made_by_dvc = snapshot(tiny_repro)
    assert len(made_by_dvc) > 20 and snapshot(tiny_run) == made_by_dvc
