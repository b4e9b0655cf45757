"""Named points where a test can stop a run, to kill it exactly there (a test hook; off unless the variable is set).

`ALIGNLOOP_TEST_STOP_AT=optimize-2:step-3` makes the process that reaches that point print
`alignloop test hook: stopped at optimize-2:step-3` on stderr and wait there until it is killed. A kill test waits
for that line, so its kill lands inside the point it names, however fast or slow the machine is; a point the run never
reaches leaves the line unprinted and the test fails. Points: `<stage>:start` (before the stage's work),
`<stage>:outputs-written` (its outputs in place, its stamp not yet), `<stage>:step-<n>` (after training step n of
optimize, sft, reward_model and cfn), `mlflow-store:created-<table>` (a table of a new MLflow store, mid-migration).
Without the variable every point is a no-op that reads one environment variable.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Iterator

STOP_AT = "ALIGNLOOP_TEST_STOP_AT"
# The stage the process works for, passed to the processes it launches (set only while a stop point is wanted).
STAGE = "ALIGNLOOP_TEST_STAGE"
MARKER = "alignloop test hook: stopped at"


def wanted() -> str | None:
    return os.environ.get(STOP_AT) or None


def reach(point: str) -> None:
    """Stop here, forever, when this is the point the test named; `point` is a full name (`stage:what`)."""
    if point != wanted():
        return
    sys.stderr.write(f"{MARKER} {point}\n")
    sys.stderr.flush()
    while True:  # signals still arrive (sleep is interrupted): SIGINT/SIGTERM stop the run as they would anywhere
        time.sleep(3600)


def reach_in_stage(what: str) -> None:
    """`reach` for a point inside the current stage (`step-3` in optimize-2 is `optimize-2:step-3`)."""
    if wanted() is not None:
        reach(f"{os.environ.get(STAGE, '?')}:{what}")


@contextmanager
def stage(key: str) -> Iterator[None]:
    """The stage `key` runs inside: its points are `key:start`, then its own, then `key:outputs-written` (by the
    caller, after the work)."""
    if wanted() is None:
        yield
        return
    previous = os.environ.get(STAGE)
    os.environ[STAGE] = key
    try:
        reach(f"{key}:start")
        yield
    finally:
        if previous is None:
            os.environ.pop(STAGE, None)
        else:
            os.environ[STAGE] = previous
