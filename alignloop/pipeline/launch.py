"""Running a training stage under `accelerate launch` (`pipeline.launcher: accelerate`).

The pipeline's process (the Prefect flow, `alignloop stage`, hence `dvc repro`) stays in charge: it writes the
checked config to a private directory, starts `accelerate launch --config_file <pipeline.accelerate_config> -m
alignloop.pipeline.launch_worker ...`, waits, and stamps the outputs only if every process succeeded. The training
processes write nothing but the stage's outputs, atomically, from the main process; a failure comes back as one
line. Stopping the pipeline stops the launch (its whole process group), and a launch whose pipeline process vanished
(killed with SIGKILL) stops itself, so a resumed run never races a leftover trainer.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from alignloop.config import Config
from alignloop.errors import UserError
from alignloop.paths import Layout

PARENT_PID_ENV = "ALIGNLOOP_PARENT_PID"

log = logging.getLogger(__name__)


class LaunchedStageError(RuntimeError):
    """The launched stage failed with an error nobody expected (its message names it)."""


class LaunchedStageUserError(UserError, ValueError):
    """The launched stage refused its input or diverged: the message says what to change."""


# The configs this checkout ships (configs/accelerate/), for a project that names one without copying it.
CHECKOUT = Path(__file__).resolve().parents[2]


def accelerate_config_file(cfg: Config, root: Path) -> Path:
    """`pipeline.accelerate_config` in the project directory, else (a relative path such as
    configs/accelerate/multi_gpu.yaml) in alignloop's checkout."""
    path = Path(cfg.pipeline.accelerate_config or "")
    local = root / path
    if local.is_file() or path.is_absolute() or not (CHECKOUT / path).is_file():
        return local
    return CHECKOUT / path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(cfg: Config, stage: str, iteration: int, root: Path, config_json: Path, errors: Path) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config_file(cfg, root)),
            "--main_process_port", str(_free_port()), "--quiet",
            "-m", "alignloop.pipeline.launch_worker", stage, str(iteration), str(root), str(config_json), str(errors)]


def _stop(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _failure(errors: Path, code: int, stage: str) -> Exception:
    # The first failure is the cause; the other processes then fail waiting for it.
    reports = sorted(errors.glob("rank-*.json"), key=lambda path: path.stat().st_mtime_ns)
    if not reports:
        return LaunchedStageError(f"accelerate launch of {stage} exited with code {code} before the stage reported "
                                  "an error (see the output above)")
    report = json.loads(reports[0].read_text())
    log.debug("the launched %s failed on %s:\n%s", stage, reports[0].stem, report["traceback"])
    error = LaunchedStageUserError if report["user_error"] else LaunchedStageError
    return error(f"{report['type']}: {report['message']}" if not report["user_error"] else report["message"])


def run_launched(stage: str, cfg: Config, layout: Layout, iteration: int) -> None:
    """Run `stage` under `accelerate launch` and wait; raises with the stage's own message if it failed."""
    scratch = layout.launch_scratch
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix=f"{stage}-{iteration}-") as tmp:
        config_json, errors = Path(tmp) / "config.json", Path(tmp) / "errors"
        errors.mkdir()
        config_json.write_text(json.dumps(cfg.model_dump(mode="json")))
        command = launch_command(cfg, stage, iteration, layout.root, config_json, errors)
        env = {**os.environ, PARENT_PID_ENV: str(os.getpid())}
        process = subprocess.Popen(command, cwd=layout.root, env=env, stdin=subprocess.DEVNULL,
                                   start_new_session=True)  # its own group: stopping it stops every process
        try:
            code = process.wait()
        except BaseException:
            _stop(process)
            raise
        if code != 0 or any(errors.iterdir()):
            raise _failure(errors, code, stage)
