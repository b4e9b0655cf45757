"""What `accelerate launch` runs in each training process: `python -m alignloop.pipeline.launch_worker <stage>
<iteration> <root> <config.json> <errors dir>` (alignloop/pipeline/launch.py builds the command; nobody types it).

Each process runs the stage function itself; the stage's code decides what each process computes and that only
the main process writes. A failure is written as `rank-<n>.json` (with its traceback, for the pipeline's log) for
the pipeline's process to report in one line.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path


def _exit_when_orphaned(parent_pid: int, every: float = 0.25) -> None:
    """Stop this process when the pipeline process that launched it is gone (SIGKILL leaves no one to stop us)."""
    def watch() -> None:
        while True:
            time.sleep(every)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # the pid was reused by another user's process: ours is gone
                os._exit(1)

    threading.Thread(target=watch, name="alignloop-orphan-watch", daemon=True).start()


def main(argv: list[str]) -> int:
    stage, iteration, root, config_json, errors = argv
    from alignloop.pipeline.launch import PARENT_PID_ENV

    if os.environ.get(PARENT_PID_ENV):
        _exit_when_orphaned(int(os.environ[PARENT_PID_ENV]))
    from alignloop.cli_errors import console_logging
    from alignloop.config import Config
    from alignloop.errors import is_user_error
    from alignloop.paths import Layout
    from alignloop.pipeline import environment
    from alignloop.pipeline.stages import STAGES

    environment.configure(Path(root))
    console_logging()
    rank = int(os.environ.get("RANK", "0"))
    try:
        cfg = Config.model_validate(json.loads(Path(config_json).read_text()))
        STAGES[stage].run_here(cfg, Layout(Path(root)), int(iteration))
    except Exception as exc:  # noqa: BLE001 - reported to the pipeline's process, which raises it
        report = {"type": type(exc).__name__, "message": str(exc), "user_error": is_user_error(exc),
                  "traceback": traceback.format_exc()}
        (Path(errors) / f"rank-{rank}.json").write_text(json.dumps(report))
    # Exit 0 even so: the pipeline's process reads the report, and torchrun would add a page of its own about a
    # non-zero exit to the one-line error.
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
