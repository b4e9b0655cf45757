"""The Prefect flow: SFT, then one subflow per iteration with a task per stage; MLflow logs each iteration.

Tasks call the same plain stage functions as `alignloop stage` and `dvc repro`; only the orchestration lives here.
Resuming is running the same command again: a task whose cache key (cache.py) matches a finished run and whose
outputs are intact finishes as Cached; one whose outputs are missing or changed, or whose inputs were just recomputed,
runs again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.context import TaskRunContext

from alignloop import cache
from alignloop.config import Config, load_config
from alignloop.dvcfile import commit_stages, write_dvc_yaml
from alignloop.io import write_json
from alignloop.iteration_rows import iteration_rows
from alignloop.paths import Layout
from alignloop.schedule import scheduled_iterations, set_iterations
from alignloop.stages import STAGES, Stage, check_iteration, iteration_stages, plan
from alignloop.tracking import Tracker

log = logging.getLogger(__name__)


class StageError(RuntimeError):
    """A stage failed; the message names the stage, the iteration and the cause."""


# The stage this process is running (its key, e.g. `optimize-1`), None between stages: an interrupt names it.
current_stage: str | None = None


def _where(name: str, iteration: int) -> str:
    return f"stage {name}" + (f" (iteration {iteration})" if STAGES[name].per_iteration else "")


def _given_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return parameters["cache_key"]


# Results are persisted as JSON, never pickle: Prefect reads them back when it checks its cache.
@task(task_run_name="{name}-{iteration}", cache_key_fn=_given_key, persist_result=True, result_serializer="json")
def stage_task(name: str, iteration: int, config: dict[str, Any], root: str, cache_key: str,
               force: bool) -> dict[str, Any]:
    cfg, layout, stage = Config.model_validate(config), Layout(Path(root)), STAGES[name]
    if not force and cache.is_fresh(stage, cfg, layout, iteration, cache_key):
        return {"status": "reused", "seconds": 0.0}  # written by `alignloop stage` (e.g. `dvc repro`) from these inputs
    start = time.perf_counter()
    try:
        cache.run_stage(name, cfg, layout, iteration, key=cache_key)
    except Exception as exc:
        raise StageError(f"{_where(name, iteration)} failed: {type(exc).__name__}: {exc}") from exc
    return {"status": "ran", "seconds": round(time.perf_counter() - start, 2)}


def _reads_any(stage: Stage, cfg: Config, layout: Layout, iteration: int, written: list[str]) -> bool:
    deps, outs = stage.deps(layout, cfg, iteration), [Path(path) for path in written]
    return any(dep == out or out in dep.parents or dep in out.parents for dep in deps for out in outs)


def run_step(stage: Stage, iteration: int, cfg: Config, layout: Layout, written: list[str]) -> dict[str, Any]:
    """One stage through Prefect's cache. `written` collects the outputs recomputed in this run: what reads them
    is recomputed too, even where its cache key would match."""
    check_iteration(stage, cfg, iteration)
    try:
        key = cache.cache_key(stage, cfg, layout, iteration)
    except FileNotFoundError as exc:
        raise StageError(f"{_where(stage.name, iteration)} cannot start: {exc}") from None
    force = _reads_any(stage, cfg, layout, iteration, written) or not cache.is_fresh(stage, cfg, layout, iteration, key)
    runner = stage_task.with_options(refresh_cache=force, retries=cfg.pipeline.retries.get(stage.name, 0),
                                     retry_delay_seconds=cfg.pipeline.retry_delay_seconds)
    global current_stage
    current_stage = stage.key(iteration)
    state = runner(stage.name, iteration, cfg.model_dump(mode="json"), str(layout.root), key, force,
                   return_state=True)
    result = state.result()  # raises the task's StageError if it failed
    current_stage = None
    status = "cached" if state.name == "Cached" else result["status"]
    if status == "ran":
        written += [str(path) for path in stage.outs(layout, cfg, iteration)]
    return {"status": status, "seconds": result["seconds"] if status == "ran" else 0.0}


@flow(name="alignloop-iteration", flow_run_name="iteration-{iteration}", result_serializer="json")
def iteration_flow(iteration: int, config: dict[str, Any], root: str, written: list[str]) -> dict[str, Any]:
    cfg, layout = Config.model_validate(config), Layout(Path(root))
    steps = {STAGES[name].key(iteration): run_step(STAGES[name], iteration, cfg, layout, written)
             for name in iteration_stages(cfg, iteration)}
    return {"steps": steps, "written": written}


@flow(name="alignloop", result_serializer="json")
def pipeline_flow(params_path: str = "params.yaml", root: str = ".", scheduled: bool = False) -> dict[str, Any]:
    """The whole pipeline. `scheduled` (what `alignloop serve` sets) first grows `iterations` in params.yaml to the
    last completed iteration plus `schedule.iterations_per_run`, under the project's run lock (`alignloop run`
    takes it before the flow starts)."""
    if not scheduled:
        return _pipeline(params_path, root, scheduled)
    from alignloop.run_lock import run_lock

    with run_lock(Path(root), "alignloop serve (scheduled run)"):
        return _pipeline(params_path, root, scheduled)


def _pipeline(params_path: str, root: str, scheduled: bool) -> dict[str, Any]:
    start = time.perf_counter()
    layout = Layout(Path(root))
    cfg: Config = load_config(params_path)
    if scheduled:
        target = scheduled_iterations(cfg, layout)
        if target != cfg.iterations:
            set_iterations(Path(params_path), target)
            cfg = load_config(params_path)
        get_run_logger().info("scheduled run: iterations %d (+%d)", cfg.iterations, cfg.schedule.iterations_per_run)
    if (layout.root / "dvc.yaml").is_file():  # keep `dvc repro` describing the same pipeline as this run
        write_dvc_yaml(cfg, layout.root)

    steps: dict[str, dict[str, Any]] = {}
    written: list[str] = []
    config = cfg.model_dump(mode="json")
    try:
        steps["prepare"] = run_step(STAGES["prepare"], 0, cfg, layout, written)
        with Tracker(cfg, layout).pipeline() as tracker:
            for iteration in range(cfg.iterations + 1):
                result = iteration_flow(iteration, config, str(layout.root), written)
                steps |= result["steps"]
                written = result["written"]
                tracker.log_iteration(iteration)
            steps["report"] = run_step(STAGES["report"], 0, cfg, layout, written)
            _sync_dvc(cfg, layout)
    except BaseException:
        try:
            for stage, iteration in plan(cfg):  # what a stopped stage left half-written (atomic_path cleans its own)
                cache.remove_scratch(stage, cfg, layout, iteration)
            _sync_dvc(cfg, layout)  # the stages that finished before the failure are recorded for `dvc repro` too
        except Exception as exc:  # noqa: BLE001 - never hide the failure that stopped the run
            log.warning("clean-up after the failure did not finish (dvc.lock may be behind): %s: %s",
                        type(exc).__name__, exc)
        raise

    rows = iteration_rows(cfg, layout)
    summary = {
        "iterations": [{"iteration": row["iteration"], "metrics": row["metrics"]} for row in rows],
        "wall_seconds": round(time.perf_counter() - start, 2),
        "stages": steps,
    }
    write_json(layout.summary, summary)
    return summary


def committable_stages(cfg: Config, layout: Layout) -> list[str]:
    """The stages of the plan whose outputs were made from the current params, inputs and code: their stamp's cache
    key is the key they would get now and the outputs are still what was stamped. Outputs left by a run with other
    params (a stage that failed or was interrupted after a params change) are stale and never recorded."""
    finished = []
    for stage, iteration in plan(cfg):
        try:
            key = cache.cache_key(stage, cfg, layout, iteration)
        except FileNotFoundError:
            continue  # an input is missing: the stage cannot be current
        if cache.is_fresh(stage, cfg, layout, iteration, key):
            finished.append(stage.key(iteration))
    return finished


def _sync_dvc(cfg: Config, layout: Layout) -> None:
    """`dvc commit` every stage of the plan whose outputs are current (`committable_stages`), so dvc.lock matches
    the workspace and never records old outputs under new params."""
    if not cfg.pipeline.dvc_commit:
        return
    result = commit_stages(layout.root, committable_stages(cfg, layout))
    if result is not None and result.returncode != 0:
        log.warning("dvc commit failed (dvc.lock is behind; `dvc commit -f` fixes it): %s",
                    (result.stderr or result.stdout).strip().splitlines()[-1:])
