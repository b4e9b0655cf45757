"""Nothing stale reaches dvc.lock: only stages whose outputs were made from the current params, inputs and code are
committed after a run, including a run that failed or was interrupted (issue 14, item 1)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from alignloop.config import Config
from alignloop.paths import Layout
from alignloop.pipeline import cache, stages

from pipeline_helpers import DVC, copy_project, run


def _fake_stage(name: str, deps: list[Path], out: Path) -> stages.Stage:
    return dataclasses.replace(stages.STAGES[name], deps=lambda layout, cfg, i: deps,
                               outs=lambda layout, cfg, i: [out], metrics=lambda layout, cfg, i: [])


def test_only_stages_stamped_with_the_current_key_are_fresh(tmp_path: Path) -> None:
    """What a run commits to dvc.lock is what `run_step` found fresh or ran: a stamp under other params or inputs
    is not fresh."""
    layout = Layout(tmp_path)
    source, made = tmp_path / "in.txt", tmp_path / "made.txt"
    source.write_text("input\n")
    sample = _fake_stage("sample", [source], made)
    old = Config(sample={"num_prompts": 8})
    made.write_text("made under the old params\n")
    cache.write_stamp(sample, old, layout, 1, cache.cache_key(sample, old, layout, 1))
    assert cache.is_fresh(sample, old, layout, 1, cache.cache_key(sample, old, layout, 1))
    new = Config(sample={"num_prompts": 9})  # a params change of the stage: its outputs are stale
    assert not cache.is_fresh(sample, new, layout, 1, cache.cache_key(sample, new, layout, 1))
    source.write_text("changed input\n")  # so is an input change
    assert not cache.is_fresh(sample, old, layout, 1, cache.cache_key(sample, old, layout, 1))


@pytest.mark.slow
def test_a_run_failing_after_a_params_change_leaves_the_stage_changed_in_dvc(tiny_run: Path, diverged_run,
                                                                             tmp_path: Path) -> None:
    # The shared tiny run (a DVC project, `dvc status` clean), then optimize's params changed and a run failing
    # inside optimize-1 (NaN loss); its old policy stays on disk.
    assert "up to date" in run([DVC, "status"], copy_project(tiny_run, tmp_path / "before")).stdout
    project, failed = copy_project(diverged_run[0], tmp_path / "project"), diverged_run[1]
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert (project / "artifacts" / "iter-1" / "policy").is_dir()
    status = run([DVC, "status"], project).stdout
    assert "up to date" not in status
    assert "optimize-1" in status and "changed" in status, status
    lock = (project / "dvc.lock").read_text()
    assert "learning_rate: 1000000000.0" not in lock and "learning_rate: 1.0e+09" not in lock, lock
