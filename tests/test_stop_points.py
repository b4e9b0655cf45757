"""The test hook that stops a run at a named point (alignloop/pipeline/stop_points.py): off unless asked, and then it
stops exactly there and nowhere else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alignloop.pipeline import stop_points

SCRIPT = """
from alignloop.pipeline import stop_points
with stop_points.stage("optimize-2"):
    for step in range(3):
        print(f"step {step + 1} done", flush=True)
        stop_points.reach_in_stage(f"step-{step + 1}")
print("finished", flush=True)
"""


def _run(point: str | None, timeout: float = 60) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key not in (stop_points.STOP_AT, stop_points.STAGE)}
    if point is not None:
        env[stop_points.STOP_AT] = point
    return subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_without_the_variable_every_point_is_a_no_op(monkeypatch) -> None:
    monkeypatch.delenv(stop_points.STOP_AT, raising=False)
    monkeypatch.delenv(stop_points.STAGE, raising=False)
    with stop_points.stage("optimize-1"):
        assert stop_points.STAGE not in os.environ  # nothing is set for the processes a stage launches
        stop_points.reach_in_stage("step-1")
        stop_points.reach("optimize-1:step-1")
    assert _run(None).communicate(timeout=60)[0].splitlines()[-1] == "finished"


def test_only_the_hook_reads_its_variable() -> None:
    package = Path(stop_points.__file__).parent
    naming = [path.name for path in package.rglob("*.py") if "STOP_AT" in path.read_text() and path.name not in
              ("stop_points.py",)]
    assert naming == []  # nothing in the package sets it: only a test can turn a stop on


def test_a_named_point_stops_there_and_waits() -> None:
    process = _run("optimize-2:step-2")
    lines = []
    deadline = time.monotonic() + 60
    while not lines or lines[-1] != f"{stop_points.MARKER} optimize-2:step-2":
        assert time.monotonic() < deadline
        lines.append(process.stdout.readline().rstrip("\n"))
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=0.5)  # still waiting at the point
    process.send_signal(signal.SIGKILL)
    rest = process.communicate(timeout=30)[0]
    assert lines[-3:-1] == ["step 1 done", "step 2 done"] and "step 3 done" not in rest


@pytest.mark.parametrize("point", ["optimize-2:step-7", "optimize-1:step-2", "optimize-2:start-typo"])
def test_a_point_never_reached_never_stops(point: str) -> None:
    output = _run(point).communicate(timeout=60)[0]
    assert output.splitlines()[-1] == "finished" and stop_points.MARKER not in output
