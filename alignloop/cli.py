"""The `alignloop` command: run the pipeline, run one stage, write dvc.yaml, print the report."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import typer

from alignloop.config import Config, ConfigError, load_config

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Online, iterative preference alignment: SFT, then sample → rank → optimize → benchmark per iteration.")

PARAMS_OPTION = typer.Option("params.yaml", "--params", "-p", help="The run's parameters (see params.yaml).")

# Errors a person can act on: printed as one line, no traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError, OSError)


def _fail(message: str, code: int) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _setup(params: Path, check_files: bool = False) -> tuple[Config, Path]:
    """Validate params before any work: a bad key stops here with exit code 2, and with `check_files` so does a
    model, reward model or prompt file that cannot be used (alignloop/preflight.py)."""
    root = params.resolve().parent
    from alignloop import environment

    environment.configure(root)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alignloop").setLevel(logging.INFO)
    try:
        cfg = load_config(params)
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
def run(params: Path = PARAMS_OPTION) -> None:
    """The whole pipeline as a Prefect flow; writes artifacts/, reports/summary.json and logs to MLflow.

    Run it again to resume: stages whose inputs, params and code are unchanged and whose outputs are intact finish
    as Cached; only what is missing or out of date runs. Raise `iterations` in params.yaml to grow a finished run.
    """
    cfg, root = _setup(params, check_files=True)
    from alignloop.flows.pipeline import StageError, pipeline_flow
    from alignloop.io import write_json
    from alignloop.paths import Layout
    from alignloop.tasks.report import format_table, iteration_rows, table_columns

    from alignloop.run_lock import run_lock

    start = time.perf_counter()
    try:
        with run_lock(root, "alignloop run"):
            summary = pipeline_flow(params_path=str(params.resolve()), root=str(root))
    except StageError as exc:
        cause = exc.__cause__
        _fail(str(cause) if isinstance(cause, ConfigError) else str(exc), 2 if isinstance(cause, ConfigError) else 1)
    except ConfigError as exc:
        _fail(str(exc), 2)
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
def serve(params: Path = PARAMS_OPTION,
          interval: float | None = typer.Option(None, help="Seconds between scheduled runs."),
          cron: str | None = typer.Option(None, help='A cron schedule, e.g. "0 3 * * *" (03:00 every day).'),
          name: str = typer.Option("alignloop", help="Name of the Prefect deployment.")) -> None:
    """Run the pipeline on a schedule: each run continues from the last completed iteration and adds
    `schedule.iterations_per_run` more (written back to params.yaml).

    Needs a Prefect server: `prefect server start` in another terminal, then
    `export PREFECT_API_URL=http://127.0.0.1:4200/api`. Stops with Ctrl-C.
    """
    cfg, root = _setup(params)
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
    from alignloop.flows.pipeline import pipeline_flow

    pipeline_flow.serve(
        name=name, interval=interval, cron=cron, limit=1, pause_on_shutdown=False,
        parameters={"params_path": str(params.resolve()), "root": str(root), "scheduled": True},
        description=f"alignloop on {root}: +{cfg.schedule.iterations_per_run} iteration(s) per run")


@app.command()
def stage(name: str = typer.Argument(
              ..., help="prepare, sft, sample, rank, evolve (eva), cfn (COPO), optimize, benchmark or report."),
          iteration: int = typer.Option(0, "--iteration", "-i", help="The iteration (0 is SFT)."),
          params: Path = PARAMS_OPTION) -> None:
    """Run one stage on its own (what `dvc repro` calls)."""
    cfg, root = _setup(params, check_files=name == "prepare")
    from alignloop.models.policy import ModelLoadError
    from alignloop.paths import Layout
    from alignloop.stages import STAGES, run_stage

    from alignloop.run_lock import run_lock

    if name not in STAGES:
        _fail(f"unknown stage {name!r}; stages are {', '.join(STAGES)}", 2)
    try:
        with run_lock(root, f"alignloop stage {name} --iteration {iteration}"):
            run_stage(name, cfg, Layout(root), iteration)
    except ConfigError as exc:
        _fail(str(exc), 2)
    except (*_USER_ERRORS, ModelLoadError, FloatingPointError) as exc:
        _fail(f"stage {name} (iteration {iteration}): {exc}", 1)


@app.command()
def report(params: Path = PARAMS_OPTION) -> None:
    """Per-iteration metrics table from the finished iterations' metrics.json files."""
    cfg, root = _setup(params)
    from alignloop.paths import Layout
    from alignloop.tasks.report import format_table, run_report, table_columns

    try:
        rows = run_report(cfg, Layout(root))
    except FileNotFoundError as exc:
        _fail(f"{exc} (has every iteration been benchmarked?)", 1)
    except ValueError as exc:  # a damaged metrics file, named with its line
        _fail(str(exc), 1)
    typer.echo(format_table(rows, table_columns(cfg)))


@app.command()
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
