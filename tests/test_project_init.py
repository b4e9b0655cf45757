"""`alignloop init DIR --preset NAME`: a git + DVC project with params.yaml, dvc.yaml and a first commit; bad
requests are one line, exit 2, and leave nothing behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pipeline_helpers import ALIGNLOOP, DVC, REPO, env_for


def _init(directory: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([ALIGNLOOP, "init", str(directory), *extra], cwd=directory.parent,
                          env=env_for(directory.parent), capture_output=True, text=True, stdin=subprocess.DEVNULL)


def test_init_makes_a_committed_git_and_dvc_project_from_the_preset(tmp_path: Path) -> None:
    project = tmp_path / "mine"
    result = _init(project, "--preset", "tiny")
    assert result.returncode == 0, result.stderr
    assert (project / "params.yaml").read_text() == (REPO / "presets" / "tiny.yaml").read_text()
    assert (project / ".dvc" / "config").is_file() and "stages:" in (project / "dvc.yaml").read_text()
    assert "prepare:" in (project / "dvc.yaml").read_text() and "/mlflow.db" in (project / ".gitignore").read_text()
    log = subprocess.run(["git", "log", "--format=%s"], cwd=project, capture_output=True, text=True).stdout
    assert log.strip() == "alignloop init (preset tiny)"
    tracked = subprocess.run(["git", "ls-files"], cwd=project, capture_output=True, text=True).stdout.split()
    assert {"params.yaml", "dvc.yaml", ".gitignore", ".dvc/config"} <= set(tracked)
    status = subprocess.run([DVC, "status"], cwd=project, capture_output=True, text=True)
    assert status.returncode == 0 and "prepare" in status.stdout  # DVC sees the pipeline, nothing run yet


def test_the_default_preset_is_the_testbed_run(tmp_path: Path) -> None:
    project = tmp_path / "default"
    assert _init(project).returncode == 0
    assert (project / "params.yaml").read_text() == (REPO / "params.yaml").read_text()


def test_bad_requests_are_one_line_exit_2_and_leave_nothing(tmp_path: Path) -> None:
    unknown = _init(tmp_path / "a", "--preset", "nope")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert "no preset 'nope'; presets are: default, " in unknown.stderr and "smollm2_ifeval" in unknown.stderr
    assert not (tmp_path / "a").exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    refused = _init(taken, "--preset", "tiny")
    assert refused.returncode == 2 and "exists and is not an empty directory" in refused.stderr
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
