"""The `alignloop` command: run the pipeline, run one stage, write dvc.yaml, print the report.

Every command ends a failure with one line on stderr and a non-zero exit, never a traceback: a problem a person can
act on (a bad params value, a missing file, a diverged loss) is `error: <what and where>` (exit 2 for params, 1 for
the rest); anything unexpected is `alignloop: unexpected error: <Type>: <message> (traceback in <log>)`, with the
traceback in `.alignloop/logs/` (a temporary directory when the project is not writable). SIGINT and SIGTERM stop a
command cleanly: `alignloop: interrupted (SIGTERM) ...`, exit 130 / 143. `alignloop run` logs everything, Prefect's
tracebacks included, to `.alignloop/logs/<time>-run-<pid>.log`; the terminal gets one line per event.
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

from alignloop.config import Config, ConfigError, load_config

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Online, iterative preference alignment: SFT, then sample → rank → optimize → benchmark per iteration.")

PARAMS_OPTION = typer.Option("params.yaml", "--params", "-p", help="The run's parameters (see params.yaml).")

# Errors a person can act on: printed as one line, no traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError, OSError)
# The same, by name, for classes whose modules are too heavy to import just to name them.
_USER_ERROR_NAMES = {"alignloop.models.policy.ModelLoadError"}
LOG_DIR = Path(".alignloop") / "logs"
_KEEP_LOGS = 50
_MAX_LINE = 2000

F = TypeVar("F", bound=Callable[..., Any])


class _Current:
    """What the running command is, for its error and interrupt lines."""

    command = ""
    root: Path = Path(".")
    log: Path | None = None
    stage: str | None = None  # `alignloop stage`'s stage key


def _one_line(text: str) -> str:
    line = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return line if len(line) <= _MAX_LINE else line[:_MAX_LINE - 1] + "…"


def _fail(message: str, code: int) -> None:
    typer.secho(f"error: {_one_line(message)}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _say(line: str, code: int) -> None:
    typer.secho(line, err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, (*_USER_ERRORS, FloatingPointError)) or any(
        f"{cls.__module__}.{cls.__qualname__}" in _USER_ERROR_NAMES for cls in type(exc).__mro__)


def log_dir(root: Path) -> Path:
    """`.alignloop/logs` in the project, or a temporary directory when the project cannot be written."""
    for directory in (root / LOG_DIR, Path(tempfile.gettempdir()) / f"alignloop-logs-{os.getuid()}"):
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
        path = _Current.log or _new_log(_Current.root, _Current.command or "alignloop")
        for handler in logging.getLogger().handlers:
            handler.flush()
        with path.open("a", encoding="utf-8") as handle:
            handle.write(f"\n{time.strftime('%Y-%m-%d %H:%M:%S')} alignloop {_Current.command}: unexpected error\n")
            handle.write("".join(traceback.format_exception(exc)))
        where = f"traceback in {path}"
    except OSError as log_error:
        where = f"no traceback written: {log_error}"
    _say(f"alignloop: unexpected error: {_one_line(what)} ({where})", 1)


def _interrupted(signum: int) -> None:
    name = signal.Signals(signum).name
    if _Current.command == "run":
        pipeline = sys.modules.get("alignloop.flows.pipeline")
        stage = getattr(pipeline, "current_stage", None)
        where = f" during stage {stage}" if stage else ""
        line = f"alignloop: interrupted ({name}){where}; finished stages are kept, run again to resume"
    elif _Current.command == "stage" and _Current.stage:
        line = f"alignloop: interrupted ({name}) during stage {_Current.stage}; nothing of it was kept, run it again"
    else:
        line = f"alignloop: interrupted ({name})"
    _say(line, 128 + signum)


def _report_failure(exc: BaseException) -> None:
    """Turn any exception that ends a command into its one line and exit code."""
    signum = _interrupt_signal(exc)
    if signum is not None:
        _interrupted(signum)
    if isinstance(exc, ConfigError):
        _fail(str(exc), 2)
    if type(exc).__name__ == "StageError":  # a stage of `alignloop run` failed: judged by its cause
        cause = exc.__cause__
        if isinstance(cause, ConfigError):
            _fail(str(cause), 2)
        if cause is None or _is_user_error(cause):
            _fail(str(exc), 1)
        _unexpected(exc, str(exc))
    if _is_user_error(exc):
        _fail(str(exc), 1)
    _unexpected(exc)


def _interrupt_signal(exc: BaseException) -> int | None:
    from alignloop import environment

    return environment.interrupt_signal(exc)


def command(name: str) -> Callable[[F], F]:
    """The error and interrupt handling every command shares (see the module docstring)."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from alignloop import environment

            params = kwargs.get("params")
            _Current.command, _Current.log, _Current.stage = name, None, None
            _Current.root = Path(params).resolve().parent if isinstance(params, Path) else Path.cwd()
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


def _console_logging() -> None:
    root = logging.getLogger()
    if not any(getattr(handler, "alignloop_console", False) for handler in root.handlers):
        handler = _Stderr()
        handler.setFormatter(_ConsoleFormatter("%(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_ConsoleFilter())
        handler.alignloop_console = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    logging.getLogger("alignloop").setLevel(logging.INFO)


def _log_to_file(root: Path, command_name: str) -> Path | None:
    """Everything the command logs, tracebacks included, in a file of its own (`alignloop run`)."""
    try:
        path = _new_log(root, command_name)
        handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    except OSError:
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    _Current.log = path
    return path


def _setup(params: Path, check_files: bool = False, runs: bool = False) -> tuple[Config, Path]:
    """Validate params before any work: a bad key stops here with exit code 2; with `runs` (commands that run
    stages) so does what this machine or the testbed makes impossible (alignloop/config_checks.py), and with
    `check_files` a model, reward model or prompt file that cannot be used (alignloop/preflight.py)."""
    root = params.resolve().parent
    from alignloop import environment

    environment.configure(root)
    _console_logging()
    try:
        cfg = load_config(params)
        if runs:
            from alignloop.config_checks import check_runnable

            check_runnable(cfg)
        if check_files:
            from alignloop.preflight import preflight

            preflight(cfg, root)
        return cfg, root
    except ConfigError as exc:
        _fail(str(exc), 2)
    except (ValueError, OSError, RuntimeError) as exc:  # a model or file the checks could not even read
        _fail(f"{params.name}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}", 2)
    raise AssertionError("unreachable")


@app.command()
@command("run")
def run(params: Path = PARAMS_OPTION) -> None:
    """The whole pipeline as a Prefect flow; writes artifacts/, reports/summary.json and logs to MLflow.

    Run it again to resume: stages whose inputs, params and code are unchanged and whose outputs are intact finish
    as Cached; only what is missing or out of date runs. Raise `iterations` in params.yaml to grow a finished run.
    Ctrl-C or SIGTERM stops it after removing the running stage's temporaries; finished stages are kept.
    """
    cfg, root = _setup(params, check_files=True, runs=True)
    _log_to_file(root, "run")
    from alignloop import environment

    environment.tie_prefect_server_to_this_process()
    from alignloop.flows.pipeline import pipeline_flow
    from alignloop.io import write_json
    from alignloop.iteration_rows import format_table, iteration_rows, table_columns
    from alignloop.paths import Layout
    from alignloop.run_lock import run_lock

    start = time.perf_counter()
    try:
        with run_lock(root, "alignloop run"):
            environment.prepare_mlflow_store()
            summary = pipeline_flow(params_path=str(params.resolve()), root=str(root))
    finally:
        _quiet_prefect_shutdown()
    layout = Layout(root)
    summary["orchestration_seconds"] = round(time.perf_counter() - start - summary["wall_seconds"], 2)
    write_json(layout.summary, summary)
    typer.echo("\n" + format_table(iteration_rows(cfg, layout), table_columns(cfg)))
    typer.echo("\n" + stage_line(summary["stages"]))
    typer.echo(f"wall time {summary['wall_seconds']:.1f} s in the flow + {summary['orchestration_seconds']:.1f} s "
               f"Prefect start-up and shut-down; summary in {layout.summary.relative_to(root)}")


def _quiet_prefect_shutdown() -> None:
    """Prefect's temporary server logs its shutdown at exit; keep our last line (result or error) the last line."""
    logging.getLogger("prefect").setLevel(logging.WARNING)


def stage_line(stages: dict[str, dict]) -> str:
    """`stages: 13 cached, 3 ran (optimize-2, benchmark-2, report)`."""
    by_status: dict[str, list[str]] = {}
    for key, step in stages.items():
        by_status.setdefault(step["status"], []).append(key)
    parts = [f"{len(keys)} {status}" + (f" ({', '.join(keys)})" if status != "cached" else "")
             for status, keys in sorted(by_status.items())]
    return "stages: " + "; ".join(parts)


@app.command()
@command("serve")
def serve(params: Path = PARAMS_OPTION,
          interval: float | None = typer.Option(None, help="Seconds between scheduled runs."),
          cron: str | None = typer.Option(None, help='A cron schedule, e.g. "0 3 * * *" (03:00 every day).'),
          name: str = typer.Option("alignloop", help="Name of the Prefect deployment.")) -> None:
    """Run the pipeline on a schedule: each run continues from the last completed iteration and adds
    `schedule.iterations_per_run` more (written back to params.yaml).

    Needs a Prefect server: `prefect server start` in another terminal, then
    `export PREFECT_API_URL=http://127.0.0.1:4200/api`. Stops with Ctrl-C.
    """
    cfg, root = _setup(params, runs=True)
    if (interval is None) == (cron is None):
        _fail("give exactly one of --interval SECONDS or --cron EXPR", 2)
    if interval is not None and interval <= 0:
        _fail(f"--interval: must be > 0, got {interval}", 2)
    if cron is not None:
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=cron)
        except ValueError:
            _fail(f'--cron: not a cron expression: {cron!r} (five fields, e.g. "0 3 * * *")', 2)
    if not os.environ.get("PREFECT_API_URL"):
        _fail("scheduled runs need a Prefect server: run `prefect server start`, then "
              "`export PREFECT_API_URL=http://127.0.0.1:4200/api` and try again", 2)
    from alignloop import environment
    from alignloop.flows.pipeline import pipeline_flow

    environment.prepare_mlflow_store()
    pipeline_flow.serve(
        name=name, interval=interval, cron=cron, limit=1, pause_on_shutdown=False,
        parameters={"params_path": str(params.resolve()), "root": str(root), "scheduled": True},
        description=f"alignloop on {root}: +{cfg.schedule.iterations_per_run} iteration(s) per run")


@app.command()
@command("stage")
def stage(name: str = typer.Argument(
              ..., help="prepare, sft, sample, rank, evolve (eva), cfn (COPO), optimize, benchmark or report."),
          iteration: int = typer.Option(0, "--iteration", "-i", help="The iteration (0 is SFT)."),
          params: Path = PARAMS_OPTION) -> None:
    """Run one stage on its own (what `dvc repro` calls)."""
    cfg, root = _setup(params, check_files=name == "prepare", runs=True)
    from alignloop.cache import run_stage
    from alignloop.models.policy import ModelLoadError
    from alignloop.paths import Layout
    from alignloop.run_lock import run_lock
    from alignloop.stages import STAGES

    if name not in STAGES:
        _fail(f"unknown stage {name!r}; stages are {', '.join(STAGES)}", 2)
    _Current.stage = STAGES[name].key(iteration)
    try:
        with run_lock(root, f"alignloop stage {name} --iteration {iteration}"):
            run_stage(name, cfg, Layout(root), iteration)
    except ConfigError as exc:
        _fail(str(exc), 2)
    except (*_USER_ERRORS, ModelLoadError, FloatingPointError) as exc:
        _fail(f"stage {name} (iteration {iteration}): {exc}", 1)
    except KeyboardInterrupt:  # SIGINT / SIGTERM: what the stage left half-written goes (atomic_path cleans its own)
        from alignloop import cache

        cache.remove_scratch(STAGES[name], cfg, Layout(root), iteration)
        raise


@app.command()
@command("report")
def report(params: Path = PARAMS_OPTION) -> None:
    """Per-iteration metrics table from the finished iterations' metrics.json files."""
    cfg, root = _setup(params)
    from alignloop.iteration_rows import format_table, table_columns
    from alignloop.paths import Layout
    from alignloop.tasks.report import run_report

    try:
        rows = run_report(cfg, Layout(root))
    except FileNotFoundError as exc:
        _fail(f"{exc} (has every iteration been benchmarked?)", 1)
    except ValueError as exc:  # a damaged metrics file, named with its line
        _fail(str(exc), 1)
    typer.echo(format_table(rows, table_columns(cfg)))


@app.command()
@command("fixture")
def fixture(out_dir: Path = typer.Argument(..., help="Directory to build it in (created)."),
            seed: int = typer.Option(0, help="Seed of the weights, tokenizer corpus and prompts.")) -> None:
    """Build a small real-architecture setup to try the own-model path on a CPU in minutes: a Qwen2-style chat
    model with a byte-level BPE tokenizer (its end-of-turn token is not EOS), a one-label reward model with a chat
    template of its own, and UltraFeedback-style Parquet prompts (presets/own_model.yaml runs on it)."""
    from alignloop.fixture import build_fixture

    built = build_fixture(out_dir, seed=seed)
    for name in ("policy", "reward_model", "train_prompts", "eval_prompts", "sft_data"):
        typer.echo(f"{name}: {getattr(built, name)}")


@app.command("dvc-yaml")
@command("dvc-yaml")
def dvc_yaml(params: Path = PARAMS_OPTION,
             check: bool = typer.Option(False, help="Exit 1 if dvc.yaml is not what params.yaml implies.")) -> None:
    """Write dvc.yaml (one stage per stage and iteration) for the iterations in params.yaml."""
    cfg, root = _setup(params)
    from alignloop.dvcfile import render_dvc_yaml, write_dvc_yaml

    if check:
        current = (root / "dvc.yaml").read_text(encoding="utf-8") if (root / "dvc.yaml").is_file() else ""
        if current != render_dvc_yaml(cfg, root):
            _fail("dvc.yaml is out of date; run `alignloop dvc-yaml`", 1)
        return
    write_dvc_yaml(cfg, root)
    typer.echo(f"wrote {root / 'dvc.yaml'}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
