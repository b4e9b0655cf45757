"""One run per project directory: a lock file that names its holder, recognised as stale once that process is gone.

Two runs in one directory (two `alignloop run`, a run and `dvc repro`, a scheduled run) would delete each other's
temporaries and stamp one run's key onto the other's outputs. The lock is `.alignloop/run.lock`, created with
O_EXCL; a lock whose process no longer exists (a killed run) is taken over.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alignloop.config import ConfigError
from alignloop.paths import Layout


class RunLockedError(ConfigError):
    """Another process is running alignloop in this directory."""


def lock_path(root: Path) -> Path:
    return Layout(root).run_lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _holder(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return holder if isinstance(holder, dict) else None
    except (OSError, ValueError):
        return None  # half-written or damaged: treated as stale


def _is_live(holder: dict | None) -> bool:
    return (holder is not None and holder.get("host") == socket.gethostname()
            and isinstance(holder.get("pid"), int) and _alive(holder["pid"]))


@contextmanager
def run_lock(root: Path, command: str) -> Iterator[None]:
    """Hold the project's run lock for the body; refuse at once (RunLockedError, one line) while another live
    process holds it, and take over a lock left by a process that is gone."""
    path = lock_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
          "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if _is_live(holder):
                raise RunLockedError(
                    f"another alignloop process is running in {root.resolve()}: pid {holder['pid']} "
                    f"(`{holder.get('command')}`, since {holder.get('started')}); wait for it or stop it") from None
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(me, handle)
        break
    else:
        raise RunLockedError(f"could not take the run lock {path}; remove it if no alignloop process is running")
    try:
        yield
    finally:
        if (_holder(path) or {}).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)
