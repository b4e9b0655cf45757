"""Process-wide settings made before Prefect or MLflow is imported: project-local state, no telemetry; interrupts
that clean up; a temporary Prefect server that never outlives the run that started it."""

from __future__ import annotations

import os
import signal
import types
from pathlib import Path

from alignloop.paths import Layout
from alignloop.pipeline import stop_points


def configure(root: Path) -> None:
    root = root.resolve()
    defaults = {
        # Prefect keeps its database and results in the project, not in ~/.prefect.
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        # MLflow: a SQLite file in the project unless MLFLOW_TRACKING_URI says otherwise; no telemetry.
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "DVC_NO_ANALYTICS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # Digests of large weight files, reused across runs while their size and mtime are unchanged.
        "ALIGNLOOP_DIGEST_STORE": str(Layout(root).digest_store),
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: raised in the main thread, so every `finally` (temporaries, the run lock) runs."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_received: list[int] = []


def _raise_interrupted(signum: int, frame: object) -> None:
    _received.append(signum)
    raise Interrupted(signum)


def handle_interrupts() -> None:
    """Turn SIGINT and SIGTERM into `Interrupted` (Python's default SIGTERM ends the process with no cleanup)."""
    _received.clear()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _raise_interrupted)


def interrupt_signal(exc: BaseException) -> int | None:
    """The signal that stopped the command, or None when `exc` is no interrupt. Prefect swaps in its own SIGTERM
    handler during a flow run (raising its TerminationSignal), so the first signal received is what counts."""
    if _received:
        return _received[0]
    if isinstance(exc, Interrupted):
        return exc.signum
    if type(exc).__name__ == "TerminationSignal" and isinstance(getattr(exc, "signal", None), int):
        return exc.signal
    if isinstance(exc, KeyboardInterrupt):
        return int(signal.SIGINT)
    return None


# Runs in the temporary Prefect server's process before uvicorn: a thread that stops the server once the process that
# started it is gone, however it died (SIGKILL included), so no orphaned server outlives a killed run.
_WATCHDOG = """\
import os, runpy, signal, sys, threading, time
parent = int(sys.argv[1])
def watch():
    while os.getppid() == parent:
        time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
    os._exit(1)
threading.Thread(target=watch, daemon=True, name="alignloop-parent-watchdog").start()
sys.argv = ["uvicorn", *sys.argv[2:]]
runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)
"""


def _with_watchdog(args: list[str]) -> list[str]:
    if list(args[1:3]) == ["-m", "uvicorn"]:
        return [args[0], "-c", _WATCHDOG, str(os.getpid()), *args[3:]]
    return list(args)


def tie_prefect_server_to_this_process() -> None:
    """Make the temporary server that Prefect starts when no PREFECT_API_URL is set (a `python -m uvicorn`
    subprocess, `SubprocessASGIServer`) stop when this process ends, even by SIGKILL: its command gets the watchdog
    above. Prefect stops it itself at a normal exit (atexit). With PREFECT_API_URL set no server is started here,
    and its module (seconds to import) is not loaded."""
    if os.environ.get("PREFECT_API_URL"):
        return
    from prefect.server.api import server as prefect_server

    cls = prefect_server.SubprocessASGIServer
    if getattr(cls, "_alignloop_watchdog", False):
        return
    original = cls._run_uvicorn_command

    def run_uvicorn_command(self):  # type: ignore[no-untyped-def]
        module_subprocess = prefect_server.subprocess
        real_popen = module_subprocess.Popen

        class WatchedPopen(real_popen):  # type: ignore[misc, valid-type]
            def __init__(self, args, *rest, **kwargs):  # type: ignore[no-untyped-def]
                # Its own session: a Ctrl-C in the terminal reaches the run, which then still needs the server to
                # record the interrupted state; the server stops when the run ends.
                kwargs.setdefault("start_new_session", True)
                super().__init__(_with_watchdog(list(args)), *rest, **kwargs)

        shim = types.SimpleNamespace(**{**vars(module_subprocess), "Popen": WatchedPopen})
        prefect_server.subprocess = shim
        try:
            return original(self)
        finally:
            prefect_server.subprocess = module_subprocess

    cls._run_uvicorn_command = run_uvicorn_command
    cls._alignloop_watchdog = True


def prepare_mlflow_store() -> None:
    """Create the project's MLflow SQLite store under a temporary name and rename it into place.

    MLflow builds a new store with schema migrations that are not transactional: a run killed during those seconds
    left a `mlflow.db` that every later run failed to open ("table ... already exists"). Found by
    `benchmarks/faults.py`. A store that exists is left alone; only the default `sqlite:///` file store is prepared.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    if path.exists() or not path.parent.is_dir():
        return
    for stale in path.parent.glob(f".{path.name}.*.tmp*"):  # left by a run killed while preparing it
        stale.unlink(missing_ok=True)
    try:
        import sqlalchemy
        from mlflow.store.db.utils import _initialize_tables
    except ImportError:  # another MLflow layout: it creates the store itself
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp}")
    if (stop_points.wanted() or "").startswith("mlflow-store:"):
        _stop_after_create_table(engine)
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()
    os.replace(tmp, path)


def _stop_after_create_table(engine) -> None:
    """The test hook's points inside MLflow's migrations: `mlflow-store:created-<table>` once that table exists."""
    import re

    import sqlalchemy

    @sqlalchemy.event.listens_for(engine, "after_cursor_execute")
    def created(conn, cursor, statement, parameters, context, executemany) -> None:
        table = re.match(r"\s*CREATE TABLE (\w+)", statement)
        if table:
            stop_points.reach(f"mlflow-store:created-{table.group(1)}")
