"""The `alignloop` command: run the pipeline, run one stage, write dvc.yaml, print the report.

Every command ends a failure with one line and a non-zero exit, never a traceback (alignloop/cli_errors.py).
`alignloop run` logs everything, Prefect's tracebacks included, to `.alignloop/logs/<time>-run-<pid>.log`; the
terminal gets one line per event.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import typer

from alignloop.cli_errors import Current, command, console_logging, fail, log_to_file
from alignloop.config import Config, ConfigError, load_config
from alignloop.errors import UserError, is_user_error

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Online, iterative preference alignment: SFT, then sample → rank → optimize → benchmark per iteration.")

PARAMS_OPTION = typer.Option("params.yaml", "--params", "-p", help="The run's parameters (see params.yaml).")


def _setup(params: Path, check_files: bool = False, runs: bool = False) -> tuple[Config, Path]:
    """Validate params before any work: a bad key stops here with exit code 2; with `runs` (commands that run
    stages) so does what this machine or the testbed makes impossible (alignloop/pipeline/runnable.py), and with
    `check_files` a model, reward model or prompt file that cannot be used (alignloop/pipeline/preflight.py)."""
    root = params.resolve().parent
    from alignloop.pipeline import environment

    environment.configure(root)
    console_logging()
    try:
        cfg = load_config(params)
        if runs:
            from alignloop.pipeline.runnable import check_runnable

            check_runnable(cfg, root)
        if check_files:
            from alignloop.pipeline.preflight import preflight

            preflight(cfg, root)
        return cfg, root
    except ConfigError as exc:
        fail(str(exc), 2)
    except (UserError, OSError) as exc:  # a model or file the checks could not even read
        if not is_user_error(exc):
            raise  # a bug: the command's handler says so
        fail(f"{params.name}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}", 2)
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
    log_to_file(root, "run")
    from alignloop.pipeline import environment

    environment.tie_prefect_server_to_this_process()
    from alignloop.paths import Layout
    from alignloop.pipeline.flow import pipeline_flow
    from alignloop.pipeline.run_lock import run_lock
    from alignloop.report.rows import format_table, iteration_rows, table_columns

    start = time.perf_counter()
    try:
        with run_lock(root, "alignloop run"):
            environment.prepare_mlflow_store()
            summary = pipeline_flow(params_path=str(params.resolve()), root=str(root), cfg=cfg)
    finally:
        _quiet_prefect_shutdown()
    layout = Layout(root)
    orchestration = time.perf_counter() - start - summary["wall_seconds"]
    typer.echo("\n" + format_table(iteration_rows(cfg, layout), table_columns(cfg)))
    typer.echo("\n" + stage_line(summary["stages"]))
    typer.echo(f"wall time {summary['wall_seconds']:.1f} s in the flow + {orchestration:.1f} s Prefect start-up and "
               f"shut-down; report in {layout.report_html.relative_to(root)}")


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
        fail("give exactly one of --interval SECONDS or --cron EXPR", 2)
    if interval is not None and interval <= 0:
        fail(f"--interval: must be > 0, got {interval}", 2)
    if cron is not None:
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=cron)
        except ValueError:
            fail(f'--cron: not a cron expression: {cron!r} (five fields, e.g. "0 3 * * *")', 2)
    if not os.environ.get("PREFECT_API_URL"):
        fail("scheduled runs need a Prefect server: run `prefect server start`, then "
              "`export PREFECT_API_URL=http://127.0.0.1:4200/api` and try again", 2)
    from alignloop.pipeline import environment
    from alignloop.pipeline.flow import pipeline_flow

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
    from alignloop.paths import Layout
    from alignloop.pipeline.cache import run_stage
    from alignloop.pipeline.run_lock import run_lock
    from alignloop.pipeline.stages import STAGES

    if name not in STAGES:
        fail(f"unknown stage {name!r}; stages are {', '.join(STAGES)}", 2)
    Current.stage = STAGES[name].key(iteration)
    try:
        with run_lock(root, f"alignloop stage {name} --iteration {iteration}"):
            run_stage(name, cfg, Layout(root), iteration)
    except ConfigError as exc:
        fail(str(exc), 2)
    except (UserError, OSError) as exc:
        if not is_user_error(exc):
            raise  # a bug: the command's handler says so, with the traceback in the log
        fail(f"stage {name} (iteration {iteration}): {exc}", 1)
    except KeyboardInterrupt:  # SIGINT / SIGTERM: what the stage left half-written goes (atomic_path cleans its own)
        from alignloop.pipeline import cache

        cache.remove_scratch(STAGES[name], cfg, Layout(root), iteration)
        raise


@app.command()
@command("report")
def report(params: Path = PARAMS_OPTION) -> None:
    """Rewrite reports/ from the finished iterations: iterations.json, the figures in reports/plots/ and
    reports/report.html (one self-contained page; wall times come from the last run's summary.json); print the
    per-iteration table."""
    cfg, root = _setup(params)
    from alignloop.io import DamagedFileError
    from alignloop.paths import Layout
    from alignloop.report.html import write_report_html
    from alignloop.report.rows import format_table, table_columns
    from alignloop.tasks.report import run_report

    layout = Layout(root)
    try:
        rows = run_report(cfg, layout)
        page = write_report_html(cfg, layout)
    except FileNotFoundError as exc:
        fail(f"{exc} (has every iteration been benchmarked?)", 1)
    except DamagedFileError as exc:  # a damaged metrics file, named with its line
        fail(str(exc), 1)
    typer.echo(format_table(rows, table_columns(cfg)))
    typer.echo(f"report in {page.relative_to(root)}")


@app.command()
@command("fixture")
def fixture(out_dir: Path = typer.Argument(..., help="Directory to build it in (created)."),
            seed: int = typer.Option(0, help="Seed of the weights, tokenizer corpus and prompts.")) -> None:
    """Build a small real-architecture setup to try the own-model path on a CPU in minutes: a Qwen2-style chat
    model with a byte-level BPE tokenizer (its end-of-turn token is not EOS), a one-label reward model with a chat
    template of its own, and UltraFeedback-style Parquet prompts (presets/own_model.yaml runs on it)."""
    from alignloop.testbed.fixture import build_fixture

    built = build_fixture(out_dir, seed=seed)
    for name in ("policy", "reward_model", "train_prompts", "eval_prompts", "sft_data"):
        typer.echo(f"{name}: {getattr(built, name)}")


@app.command()
@command("init")
def init(directory: Path = typer.Argument(..., help="The new project's directory (absent or empty)."),
         preset: str = typer.Option("default", help="The run to start from: default (the testbed run), or a "
                                    "file of presets/, e.g. smollm2_ifeval (a real model on your CPU) or tiny.")
         ) -> None:
    """Start a project: params.yaml from a preset, dvc.yaml, and a git + DVC repository with a first commit, so
    `alignloop run`, `dvc repro`, `dvc status` and `dvc exp run -S key=value` work there from the first run."""
    import subprocess

    from alignloop.pipeline.project_init import init_project

    try:
        cfg = init_project(directory, preset)
    except ConfigError as exc:
        fail(str(exc), 2)
    except subprocess.CalledProcessError as exc:
        reason = (exc.stderr or "").strip().splitlines()
        fail(f"init: `{' '.join(map(str, exc.cmd))}` failed ({reason[-1] if reason else f'exit {exc.returncode}'})", 1)
    typer.echo(f"{directory}: params.yaml (preset {preset}, {cfg.iterations} iterations), dvc.yaml, git + DVC; "
               f"run it with `cd {directory} && alignloop run`")


@app.command("dvc-yaml")
@command("dvc-yaml")
def dvc_yaml(params: Path = PARAMS_OPTION,
             check: bool = typer.Option(False, help="Exit 1 if dvc.yaml is not what params.yaml implies.")) -> None:
    """Write dvc.yaml (one stage per stage and iteration) for the iterations in params.yaml."""
    cfg, root = _setup(params)
    from alignloop.pipeline.dvcfile import render_dvc_yaml, write_dvc_yaml

    if check:
        current = (root / "dvc.yaml").read_text(encoding="utf-8") if (root / "dvc.yaml").is_file() else ""
        if current != render_dvc_yaml(cfg, root):
            fail("dvc.yaml is out of date; run `alignloop dvc-yaml`", 1)
        return
    write_dvc_yaml(cfg, root)
    typer.echo(f"wrote {root / 'dvc.yaml'}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
