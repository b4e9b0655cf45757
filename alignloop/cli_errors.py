"""How every `alignloop` command ends: one line on stderr and a non-zero exit, never a traceback.

A problem a person can act on (`alignloop.errors.UserError`: a bad params value, a missing file, a diverged loss;
or the operating system's word about the machine, such as a full disk) is `error: <what and where>` (exit 2 for
params, 1 for the rest). Anything else is a bug, whatever its type (a `ValueError` too): `alignloop: unexpected
error: <Type>: <message> (traceback in <log>)`, with the traceback in `.alignloop/logs/` (a temporary directory when
the project is not writable). SIGINT and SIGTERM stop a command cleanly: `alignloop: interrupted (SIGTERM) ...`,
exit 130 / 143. Console logging prints one line per record; `log_to_file` keeps everything, tracebacks included.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import typer

from alignloop.config import ConfigError
from alignloop.errors import StageError, is_user_error

_KEEP_LOGS = 50
_MAX_LINE = 2000

F = TypeVar("F", bound=Callable[..., Any])


class Current:
    """What the running command is, for its error and interrupt lines."""

    command = ""
    root: Path = Path(".")
    log: Path | None = None
    stage: str | None = None  # `alignloop stage`'s stage key


def _one_line(text: str) -> str:
    line = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return line if len(line) <= _MAX_LINE else line[:_MAX_LINE - 1] + "…"


def fail(message: str, code: int) -> None:
    typer.secho(f"error: {_one_line(message)}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _say(line: str, code: int) -> None:
    typer.secho(line, err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def log_dir(root: Path) -> Path:
    """`.alignloop/logs` in the project, or a temporary directory when the project cannot be written."""
    from alignloop.paths import Layout

    for directory in (Layout(root).logs, Path(tempfile.gettempdir()) / f"alignloop-logs-{os.getuid()}"):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if os.access(directory, os.W_OK):
                return directory
        except OSError:
            continue
    raise OSError(f"no writable directory for logs under {root} or {tempfile.gettempdir()}")


def _new_log(root: Path, command: str) -> Path:
    directory = log_dir(root)
    logs = sorted(directory.glob("*.log"))
    for old in logs[:max(0, len(logs) - _KEEP_LOGS + 1)]:
        old.unlink(missing_ok=True)
    return directory / f"{time.strftime('%Y%m%d-%H%M%S')}-{command}-{os.getpid()}.log"


def _unexpected(exc: BaseException, what: str | None = None) -> None:
    """One line naming the error and the log that holds its traceback; exit 1."""
    what = what or f"{type(exc).__name__}: {exc}"
    try:
        path = Current.log or _new_log(Current.root, Current.command or "alignloop")
        for handler in logging.getLogger().handlers:
            handler.flush()
        with path.open("a", encoding="utf-8") as handle:
            handle.write(f"\n{time.strftime('%Y-%m-%d %H:%M:%S')} alignloop {Current.command}: unexpected error\n")
            handle.write("".join(traceback.format_exception(exc)))
        where = f"traceback in {path}"
    except OSError as log_error:
        where = f"no traceback written: {log_error}"
    _say(f"alignloop: unexpected error: {_one_line(what)} ({where})", 1)


def _interrupted(signum: int) -> None:
    name = signal.Signals(signum).name
    if Current.command == "run":
        from alignloop.pipeline import flow  # already imported: `run` is running it

        stage = flow.current_stage
        where = f" during stage {stage}" if stage else ""
        line = f"alignloop: interrupted ({name}){where}; finished stages are kept, run again to resume"
    elif Current.command == "stage" and Current.stage:
        line = f"alignloop: interrupted ({name}) during stage {Current.stage}; nothing of it was kept, run it again"
    else:
        line = f"alignloop: interrupted ({name})"
    _say(line, 128 + signum)


def _report_failure(exc: BaseException) -> None:
    """Turn any exception that ends a command into its one line and exit code."""
    signum = _interrupt_signal(exc)
    if signum is not None:
        _interrupted(signum)
    if isinstance(exc, ConfigError):
        fail(str(exc), 2)
    if isinstance(exc, StageError):  # a stage of `alignloop run` failed: judged by its cause
        cause = exc.__cause__
        if isinstance(cause, ConfigError):
            fail(str(cause), 2)
        if cause is not None and is_user_error(cause):
            fail(str(exc), 1)
        _unexpected(exc, str(exc))
    if is_user_error(exc):
        fail(str(exc), 1)
    _unexpected(exc)


def _interrupt_signal(exc: BaseException) -> int | None:
    from alignloop.pipeline import environment

    return environment.interrupt_signal(exc)


def command(name: str) -> Callable[[F], F]:
    """The error and interrupt handling every command shares (see the module docstring)."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from alignloop.pipeline import environment

            params = kwargs.get("params")
            Current.command, Current.log, Current.stage = name, None, None
            Current.root = Path(params).resolve().parent if isinstance(params, Path) else Path.cwd()
            environment.handle_interrupts()
            try:
                return function(*args, **kwargs)
            except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.ClickException,
                    click.exceptions.Abort, SystemExit):
                raise  # already an ending with its exit code
            except BaseException as exc:  # noqa: BLE001 - every ending gets its one line
                _report_failure(exc)
                raise

        return wrapper  # type: ignore[return-value]

    return decorate


class _Stderr(logging.StreamHandler):
    """A handler on whatever sys.stderr is now."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _ConsoleFormatter(logging.Formatter):
    """One line per record on the terminal: tracebacks go to the log file only."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return _one_line(super().format(record))
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


class _ConsoleFilter(logging.Filter):
    """Prefect reports a failing task or flow at length (with tracebacks, once per enclosing flow); the command's
    own last line says it once. Retries stay visible."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("prefect"):
            return True
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            return "Retry" in message
        return not (message.startswith("Finished in state") and ("Failed" in message or "Crashed" in message))


def console_logging() -> None:
    root = logging.getLogger()
    if not any(getattr(handler, "alignloop_console", False) for handler in root.handlers):
        handler = _Stderr()
        handler.setFormatter(_ConsoleFormatter("%(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_ConsoleFilter())
        handler.alignloop_console = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    logging.getLogger("alignloop").setLevel(logging.INFO)


def log_to_file(root: Path, command_name: str) -> Path | None:
    """Everything the command logs, tracebacks included, in a file of its own (`alignloop run`)."""
    try:
        path = _new_log(root, command_name)
        handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    except OSError:
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    Current.log = path
    return path
