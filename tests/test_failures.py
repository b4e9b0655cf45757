"""Failures people can act on: one line naming the stage, retries per stage, finished artifacts intact (slow)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from pipeline_helpers import ALIGNLOOP, env_for, make_project, run, set_params, snapshot, statuses

pytestmark = pytest.mark.slow


def test_failing_stage_stops_with_one_line_and_the_next_run_resumes(tmp_path: Path) -> None:
    # diverges at once: NaN loss by the second step (cut responses are left out of pairs, so few pairs per epoch)
    project = make_project(tmp_path, {"optimize": {"learning_rate": 1.0e9, "epochs": 4}})
    result = subprocess.run([ALIGNLOOP, "run"], cwd=project, env=env_for(project), capture_output=True, text=True,
                            timeout=900, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: stage optimize (iteration 1) failed: NonFiniteLossError: "), last
    assert "learning_rate" in last
    # What finished before the failure is intact; the failed stage left nothing under its final names.
    before = snapshot(project)
    assert "artifacts/iter-1/pairs.jsonl" in before and "artifacts/sft/metrics.json" in before
    assert not (project / "artifacts" / "iter-1" / "policy").exists()

    set_params(project, {"optimize": {"learning_rate": 3.0e-4}})
    run([ALIGNLOOP, "run"], project)
    status = statuses(project)
    assert {k for k, v in status.items() if v == "cached"} == {"prepare", "sft", "benchmark-0", "sample-1", "rank-1"}
    assert {k for k, v in status.items() if v == "ran"} == {"optimize-1", "benchmark-1", "report"}
    assert {k: v for k, v in snapshot(project).items() if k in before} == before


@pytest.fixture(scope="module")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.parametrize("retries, expect_success", [(1, True), (0, False)])
def test_stage_retries_come_from_params(prefect_harness, monkeypatch, tmp_path: Path, retries: int,
                                        expect_success: bool) -> None:
    from prefect import flow

    from alignloop import stages
    from alignloop.config import Config
    from alignloop.flows import pipeline
    from alignloop.flows.pipeline import RunState, StageError, run_step
    from alignloop.paths import Layout

    calls = []
    out = tmp_path / "out.txt"

    def flaky(cfg, layout, iteration):  # fails on its first call, like a sampler losing its GPU
        calls.append(iteration)
        if len(calls) == 1:
            raise RuntimeError("device lost")
        out.write_text("done\n")

    stage = dataclasses.replace(stages.STAGES["sample"], run=flaky, deps=lambda layout, cfg, i: [],
                                outs=lambda layout, cfg, i: [out])
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
