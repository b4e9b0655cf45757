"""Resume, determinism and growth of `alignloop run` (tiny preset, two iterations; slow).

The reference is one uninterrupted run. A second run of the same params is SIGKILLed inside iteration 2's
`optimize` and resumed: it must reuse every finished stage, never show a half-written file under its final name, and
end with exactly the reference's bytes (which also shows that two runs with the same seed are identical).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from pipeline_helpers import (
    ALIGNLOOP,
    artifact_files,
    continue_run,
    copy_project,
    run,
    run_until_killed,
    set_params,
    snapshot,
    statuses,
)

pytestmark = pytest.mark.slow

# Every prompt with two different scores gives a pair (not only finished responses, which the tiny model rarely
# writes), so each optimize stage has steps to be killed between.
PARAMS = {"iterations": 2, "rank": {"drop_unfinished": False}}
SHARED = ("prepare", "sft", "sample-1")  # what the shared tiny run holds for these params (benchmark reads `rank`)
BEFORE_KILL = ("prepare", "sft", "benchmark-0", "sample-1", "rank-1", "optimize-1", "benchmark-1", "sample-2",
               "rank-2")
AFTER_KILL = ("optimize-2", "benchmark-2", "report")


@pytest.fixture(scope="module")
def reference(tiny_run: Path, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The uninterrupted run: the shared tiny run grown to these params."""
    project = continue_run(tiny_run, tmp_path_factory.mktemp("reference") / "project", PARAMS, cached=SHARED)
    return project, snapshot(project)


def _check_complete(path: Path) -> str | None:
    """Why a file under its final name is not a complete artifact, or None."""
    try:
        if path.suffix == ".jsonl":
            text = path.read_text()
            if text and not text.endswith("\n"):
                return "no final newline"
            for line in text.splitlines():
                json.loads(line)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as handle:
                for name in handle.keys():
                    handle.get_tensor(name)
    except FileNotFoundError:
        return None  # replaced between listing and reading
    except Exception as exc:  # noqa: BLE001 - any parse failure is the finding
        return f"{type(exc).__name__}: {exc}"
    return None


class Watcher(threading.Thread):
    """Polls the project while a run is going and records every final-name file that is not complete."""

    def __init__(self, project: Path):
        super().__init__(daemon=True)
        self.project, self.stop, self.problems, self.checks = project, threading.Event(), [], 0

    def run(self) -> None:
        checked: set[tuple] = set()  # (path, inode, size, mtime): each version of a file is parsed once
        while not self.stop.is_set():
            for path in artifact_files(self.project):
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                version = (path, stat.st_ino, stat.st_size, stat.st_mtime_ns)
                if version in checked:
                    continue
                checked.add(version)
                self.checks += 1
                problem = _check_complete(path)
                if problem:
                    self.problems.append(f"{path.relative_to(self.project)}: {problem}")
            time.sleep(0.02)


def test_crash_inside_optimize_of_iteration_2_resumes_to_identical_artifacts(tiny_run: Path, reference,
                                                                            tmp_path: Path) -> None:
    reference_project, reference_files = reference
    project = copy_project(tiny_run, tmp_path / "crashed", dvc=False, mlflow=False)
    set_params(project, PARAMS)

    watcher = Watcher(project)
    watcher.start()
    run_until_killed(project, "optimize-2:step-1")
    layout_policy = project / "artifacts" / "iter-2" / "policy"
    # The kill landed inside optimize-2: its inputs exist, its outputs do not.
    assert (project / "artifacts" / "iter-2" / "pairs.jsonl").is_file()
    assert not layout_policy.exists() and not (project / "artifacts" / "iter-2" / "train_log.json").exists()
    # (c) whatever is under a final name is complete and already equal to the uninterrupted run's file.
    # (The report's table is still the copied run's: the report stage comes after the kill.)
    killed = {name: digest for name, digest in snapshot(project).items() if name != "reports/iterations.json"}
    assert killed and all(reference_files[name] == digest for name, digest in killed.items()), sorted(
        name for name, digest in killed.items() if reference_files.get(name) != digest)
    before = {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in artifact_files(project)
              if path.name != "iterations.json"}

    result = run([ALIGNLOOP, "run"], project)
    watcher.stop.set()
    watcher.join(timeout=10)
    assert watcher.checks > 20 and not watcher.problems, watcher.problems[:10]

    # (a) every stage finished before the kill is Cached (and its files untouched); the rest ran.
    status = statuses(project)
    assert {key: status[key] for key in BEFORE_KILL} == dict.fromkeys(BEFORE_KILL, "cached")
    assert {key: status[key] for key in AFTER_KILL} == dict.fromkeys(AFTER_KILL, "ran")
    assert result.stdout.count("Cached(") + result.stderr.count("Cached(") == len(BEFORE_KILL)
    assert all((path.stat().st_ino, path.stat().st_mtime_ns) == stamp for path, stamp in before.items())

    # (b) the resumed run ends with exactly the uninterrupted run's artifacts, model tensors bit for bit.
    assert snapshot(project) == reference_files
    for name in ("artifacts/sft/model", "artifacts/iter-1/policy", "artifacts/iter-2/policy"):
        ours, theirs = (load_file(str(root / name / "model.safetensors")) for root in (project, reference_project))
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[key], theirs[key]) for key in ours)

    # MLflow: the resumed run logged into the killed run's parent, each iteration exactly once.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("alignloop").experiment_id
    runs = client.search_runs([experiment])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(int(r.data.tags["iteration"]) for r in children) == [0, 1, 2]
    history = client.get_metric_history(parents[0].info.run_id, "in_distribution.greedy_gold")
    assert sorted(point.step for point in history) == [0, 1, 2]
    expected = json.loads((project / "artifacts" / "iter-2" / "metrics.json").read_text())
    assert [p.value for p in history if p.step == 2] == [pytest.approx(expected["in_distribution/greedy_gold"])]


def test_second_run_is_all_cached(reference, tmp_path: Path) -> None:
    project = copy_project(reference[0], tmp_path / "again")
    result = run([ALIGNLOOP, "run"], project)
    assert set(statuses(project).values()) == {"cached"}
    assert "stages: 12 cached" in result.stdout
    assert snapshot(project) == reference[1]
    # Prefect read its cache back from JSON, never from a pickle (unpickling runs code).
    stored = [json.loads(path.read_text()) for path in (project / ".prefect" / "storage").iterdir()]
    assert stored and all(entry.get("metadata", {}).get("serializer", {"type": "json"})["type"] == "json"
                          for entry in stored)


def test_growing_a_run_and_changing_one_stage_parameter(reference, tmp_path: Path) -> None:
    project = copy_project(reference[0], tmp_path / "grown")
    set_params(project, {"iterations": 3})
    run([ALIGNLOOP, "run"], project)
    ran = {key for key, value in statuses(project).items() if value == "ran"}
    assert ran == {"sample-3", "rank-3", "optimize-3", "benchmark-3", "report"}
    assert {key: value for key, value in snapshot(project).items() if key in reference[1]} == reference[1] | {
        "reports/iterations.json": snapshot(project)["reports/iterations.json"]}

    set_params(project, {"optimize": {"beta": 0.2}})
    run([ALIGNLOOP, "run"], project)
    status = statuses(project)
    assert {key for key, value in status.items() if value == "cached"} == {
        "prepare", "sft", "benchmark-0", "sample-1", "rank-1"}
    assert all(status[key] == "ran" for key in status if key not in {"prepare", "sft", "benchmark-0", "sample-1",
                                                                      "rank-1"})


def test_missing_or_damaged_outputs_rerun_their_stage_and_everything_after(reference, tmp_path: Path) -> None:
    project = copy_project(reference[0], tmp_path / "damaged")
    (project / "artifacts" / "iter-2" / "pairs.jsonl").unlink()  # rank-2's output, gone
    train_log = project / "artifacts" / "iter-1" / "train_log.json"  # optimize-1's output, cut short
    train_log.write_text(train_log.read_text()[:100])
    run([ALIGNLOOP, "run"], project)
    status = statuses(project)
    assert {key for key, value in status.items() if value == "cached"} == {
        "prepare", "sft", "benchmark-0", "sample-1", "rank-1"}
    assert {key for key, value in status.items() if value == "ran"} == {
        "optimize-1", "benchmark-1", "sample-2", "rank-2", "optimize-2", "benchmark-2", "report"}
    assert snapshot(project) == reference[1]
