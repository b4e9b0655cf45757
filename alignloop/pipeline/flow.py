"""The Prefect flow: SFT, then one subflow per iteration with a task per stage; MLflow logs each iteration.

Tasks call the same plain stage functions as `alignloop stage` and `dvc repro`; only the orchestration lives here.
Resuming is running the same command again: a task whose cache key (cache.py) matches a finished run and whose
outputs are intact finishes as Cached; one whose outputs are missing or changed, or whose inputs were just recomputed,
runs again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.context import TaskRunContext

from alignloop.config import Config, load_config
from alignloop.errors import MissingInputError, StageError
from alignloop.io import write_json
from alignloop.paths import Layout
from alignloop.pipeline import cache
from alignloop.pipeline.dvcfile import commit_stages, write_dvc_yaml
from alignloop.pipeline.schedule import scheduled_iterations, set_iterations
from alignloop.pipeline.stages import STAGES, Plan, Stage, check_iteration, plan
from alignloop.pipeline.tracking import Tracker
from alignloop.report.html import write_report_html
from alignloop.report.rows import iteration_rows

log = logging.getLogger(__name__)


# The stage this process is running (its key, e.g. `optimize-1`), None between stages: an interrupt names it.
current_stage: str | None = None


def _where(name: str, iteration: int) -> str:
    return f"stage {name}" + (f" (iteration {iteration})" if STAGES[name].per_iteration else "")


def _given_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return parameters["cache_key"]


@dataclass
class RunState:
    """What one pipeline run holds while it walks its plan (`stages.plan(cfg)`): the config read once, the outputs
    recomputed so far (what reads them runs again), and every finished stage with its status and seconds."""
    cfg: Config
    layout: Layout
    written: list[Path] = field(default_factory=list)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    plan: Plan = field(init=False)

    def __post_init__(self) -> None:
        self.plan = plan(self.cfg)


# The run this process is executing (one per process: the run lock keeps others out of the project). Subflows and
# tasks read it instead of passing the config across each Prefect boundary.
_run: RunState | None = None


def _active() -> RunState:
    if _run is None:
        raise RuntimeError("no pipeline run is active in this process")
    return _run


# Results are persisted as JSON, never pickle: Prefect reads them back when it checks its cache.
@task(task_run_name="{name}-{iteration}", cache_key_fn=_given_key, persist_result=True, result_serializer="json")
def stage_task(name: str, iteration: int, cache_key: str, fresh: bool) -> dict[str, Any]:
    if fresh:  # written by `alignloop stage` (e.g. `dvc repro`) from these inputs; Prefect's cache did not know it
        return {"status": "reused", "seconds": 0.0}
    run = _active()
    start = time.perf_counter()
    try:
        cache.run_stage(name, run.cfg, run.layout, iteration, key=cache_key)
    except Exception as exc:
        raise StageError(f"{_where(name, iteration)} failed: {type(exc).__name__}: {exc}") from exc
    return {"status": "ran", "seconds": round(time.perf_counter() - start, 2)}


def _reads_any(stage: Stage, cfg: Config, layout: Layout, iteration: int, written: list[Path]) -> bool:
    deps = stage.deps(layout, cfg, iteration)
    return any(dep == out or out in dep.parents or dep in out.parents for dep in deps for out in written)


def run_step(stage: Stage, iteration: int, run: RunState) -> None:
    """One stage through Prefect's cache, its stamp checked once. A stage that reads an output recomputed in this
    run is recomputed too, even where its cache key would match."""
    cfg, layout = run.cfg, run.layout
    check_iteration(stage, cfg, iteration)
    try:
        key = cache.cache_key(stage, cfg, layout, iteration)
    except MissingInputError as exc:
        raise StageError(f"{_where(stage.name, iteration)} cannot start: {exc}") from exc
    fresh = not _reads_any(stage, cfg, layout, iteration, run.written) and cache.is_fresh(stage, cfg, layout,
                                                                                          iteration, key)
    runner = stage_task.with_options(refresh_cache=not fresh, retries=cfg.pipeline.retries.get(stage.name, 0),
                                     retry_delay_seconds=cfg.pipeline.retry_delay_seconds)
    global current_stage
    current_stage = stage.key(iteration)
    state = runner(stage.name, iteration, key, fresh, return_state=True)
    result = state.result()  # raises the task's StageError if it failed
    current_stage = None
    status = "cached" if state.name == "Cached" else result["status"]
    if status == "ran":
        run.written += stage.outs(layout, cfg, iteration)
    run.steps[stage.key(iteration)] = {"status": status, "seconds": result["seconds"] if status == "ran" else 0.0}


@flow(name="alignloop-iteration", flow_run_name="iteration-{iteration}", result_serializer="json")
def iteration_flow(iteration: int) -> dict[str, dict[str, Any]]:
    """The iteration's stages in order; returns their status and seconds (the subflow's result in Prefect)."""
    run = _active()
    stages = run.plan.iterations[iteration]
    for stage in stages:
        run_step(stage, iteration, run)
    return {stage.key(iteration): run.steps[stage.key(iteration)] for stage in stages}


@flow(name="alignloop", result_serializer="json", validate_parameters=False)
def pipeline_flow(params_path: str = "params.yaml", root: str = ".", scheduled: bool = False,
                  cfg: Config | None = None) -> dict[str, Any]:
    """The whole pipeline. `cfg` is params.yaml already read and checked (what `alignloop run` passes); without it
    the flow reads the file itself. `scheduled` (what `alignloop serve` sets) first grows `iterations` in
    params.yaml to the last completed iteration plus `schedule.iterations_per_run`, under the project's run lock
    (`alignloop run` takes it before the flow starts)."""
    if not scheduled:
        return _pipeline(params_path, root, cfg)
    from alignloop.pipeline.run_lock import run_lock

    with run_lock(Path(root), "alignloop serve (scheduled run)"):
        layout, cfg = Layout(Path(root)), load_config(params_path)
        target = scheduled_iterations(cfg, layout)
        if target != cfg.iterations:
            set_iterations(Path(params_path), target)
            cfg = cfg.model_copy(update={"iterations": target})
        get_run_logger().info("scheduled run: iterations %d (+%d)", cfg.iterations, cfg.schedule.iterations_per_run)
        return _pipeline(params_path, root, cfg)


def _pipeline(params_path: str, root: str, cfg: Config | None) -> dict[str, Any]:
    global _run
    start = time.perf_counter()
    layout = Layout(Path(root))
    cfg = cfg if cfg is not None else load_config(params_path)
    if (layout.root / "dvc.yaml").is_file():  # keep `dvc repro` describing the same pipeline as this run
        write_dvc_yaml(cfg, layout.root)

    run = _run = RunState(cfg, layout)
    try:
        for stage in run.plan.first:
            run_step(stage, 0, run)
        with Tracker(cfg, layout).pipeline() as tracker:
            for iteration in range(len(run.plan.iterations)):
                iteration_flow(iteration)
                tracker.log_iteration(iteration)
            for stage in run.plan.last:
                run_step(stage, 0, run)
            _sync_dvc(cfg, layout, run)
            summary = {
                "iterations": [{"iteration": row["iteration"], "metrics": row["metrics"]}
                               for row in iteration_rows(cfg, layout)],
                "wall_seconds": round(time.perf_counter() - start, 2),
                "stages": run.steps,
            }
            write_json(layout.summary, summary)
            tracker.log_report(write_report_html(cfg, layout, summary))
    except BaseException:
        try:
            for stage, iteration in run.plan:  # what a stopped stage left half-written (atomic_path cleans its own)
                cache.remove_scratch(stage, cfg, layout, iteration)
            _sync_dvc(cfg, layout, run)  # the stages that finished before the failure are recorded for `dvc repro`
        except Exception as exc:  # noqa: BLE001 - never hide the failure that stopped the run
            log.warning("clean-up after the failure did not finish (dvc.lock may be behind): %s: %s",
                        type(exc).__name__, exc)
        raise
    finally:
        _run = None
    return summary


def _sync_dvc(cfg: Config, layout: Layout, run: RunState) -> None:
    """`dvc commit` the stages this run finished (ran, cached or reused: each stamped or checked against its current
    key once, in `run_step`), so dvc.lock matches the workspace and never records old outputs under new params."""
    if not cfg.pipeline.dvc_commit:
        return
    result = commit_stages(layout.root, list(run.steps))
    if result is not None and result.returncode != 0:
        log.warning("dvc commit failed (dvc.lock is behind; `dvc commit -f` fixes it): %s",
                    (result.stderr or result.stdout).strip().splitlines()[-1:])
