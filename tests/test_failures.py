"""Failures people can act on: one line naming the stage, retries per stage, finished artifacts intact (slow)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipeline_helpers import ALIGNLOOP, copy_project, run, set_params, snapshot, statuses

pytestmark = pytest.mark.slow


def test_failing_stage_stops_with_one_line_and_the_next_run_resumes(tiny_run: Path, diverged_run,
                                                                   tmp_path: Path) -> None:
    # The shared tiny run, then a learning rate that diverges at once: NaN loss by the second step of optimize-1.
    project, result = copy_project(diverged_run[0], tmp_path / "project", dvc=False), diverged_run[1]
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: stage optimize (iteration 1) failed: NonFiniteLossError: "), last
    assert "learning_rate" in last
    # What finished before the failure is intact, and the failed stage wrote nothing: the previous policy is the
    # shared run's, byte for byte.
    before = snapshot(project)
    assert "artifacts/iter-1/pairs.jsonl" in before and "artifacts/sft/metrics.json" in before
    assert before == snapshot(tiny_run)

    set_params(project, {"optimize": {"learning_rate": 3.0e-4}})
    run([ALIGNLOOP, "run"], project)
    status = statuses(project)
    assert {k for k, v in status.items() if v == "cached"} == {"prepare", "sft", "benchmark-0", "sample-1", "rank-1"}
    assert {k for k, v in status.items() if v == "ran"} == {"optimize-1", "benchmark-1", "report"}
    kept = {k: v for k, v in before.items() if k.startswith(("data/", "artifacts/sft/", "artifacts/iter-1/pairs",
                                                             "artifacts/iter-1/samples"))}
    assert len(kept) > 5 and {k: v for k, v in snapshot(project).items() if k in kept} == kept


@pytest.fixture(scope="module")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.parametrize("retries, expect_success", [(1, True), (0, False)])
def test_stage_retries_come_from_params(prefect_harness, monkeypatch, tmp_path: Path, retries: int,
                                        expect_success: bool) -> None:
    from prefect import flow

    from alignloop.config import Config
    from alignloop.paths import Layout
    from alignloop.pipeline import flow as pipeline
    from alignloop.pipeline import stages
    from alignloop.pipeline.flow import RunState, StageError, run_step

    calls = []
    out = tmp_path / "out.txt"

    def flaky(cfg, layout, iteration):  # fails on its first call, like a sampler losing its GPU
        calls.append(iteration)
        if len(calls) == 1:
            raise RuntimeError("device lost")
        out.write_text("done\n")

    class FlakyStage(stages.Stage):
        def run_here(self, cfg, layout, iteration):
            flaky(cfg, layout, iteration)

    fields = {field.name: getattr(stages.STAGES["sample"], field.name) for field in dataclasses.fields(stages.Stage)}
    stage = FlakyStage(**fields | {"deps": lambda layout, cfg, i: [], "outs": lambda layout, cfg, i: [out]})
    monkeypatch.setitem(stages.STAGES, "sample", stage)
    cfg = Config(pipeline={"retries": {"sample": retries}, "retry_delay_seconds": 0})

    state = RunState(cfg, Layout(tmp_path))
    monkeypatch.setattr(pipeline, "_run", state)

    @flow
    def one_step() -> dict:
        run_step(stage, 1, state)
        return state.steps["sample-1"]

    if expect_success:
        assert one_step() == {"status": "ran", "seconds": pytest.approx(0, abs=5)}
        assert calls == [1, 1] and out.read_text() == "done\n"
    else:
        with pytest.raises(StageError, match=r"^stage sample \(iteration 1\) failed: RuntimeError: device lost$"):
            one_step()
        assert calls == [1] and not out.exists()
