"""The Prefect flow: SFT, then one subflow per iteration with a task per stage; MLflow logs each iteration.

Tasks call the same plain stage functions as `alignloop stage` and `dvc repro`; only the orchestration lives here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from alignloop.config import Config, load_config
from alignloop.io import write_json
from alignloop.paths import Layout
from alignloop.stages import ITERATION_STAGES, STAGES, run_stage
from alignloop.tasks.report import iteration_row, iteration_rows
from alignloop.tracking import Tracker


class StageError(RuntimeError):
    """A stage failed; the message names the stage, the iteration and the cause."""


@task(cache_policy=NO_CACHE, task_run_name="{name}-{iteration}")
def stage_task(name: str, iteration: int, params_path: str, root: str) -> float:
    cfg, layout = load_config(params_path), Layout(Path(root))
    start = time.perf_counter()
    try:
        run_stage(name, cfg, layout, iteration)
    except Exception as exc:
        where = f"stage {name}" + (f" (iteration {iteration})" if STAGES[name].per_iteration else "")
        raise StageError(f"{where} failed: {type(exc).__name__}: {exc}") from exc
    return time.perf_counter() - start


@flow(name="alignloop-iteration", flow_run_name="iteration-{iteration}")
def iteration_flow(iteration: int, params_path: str, root: str) -> dict[str, float]:
    names = ("sft", "benchmark") if iteration == 0 else ITERATION_STAGES
    return {f"{name}-{iteration}" if STAGES[name].per_iteration else name:
            stage_task(name, iteration, params_path, root) for name in names}


@flow(name="alignloop")
def pipeline_flow(params_path: str = "params.yaml", root: str = ".") -> dict[str, Any]:
    start = time.perf_counter()
    cfg: Config = load_config(params_path)
    layout = Layout(Path(root))
    stage_seconds: dict[str, float] = {"prepare": stage_task("prepare", 0, params_path, root)}
    with Tracker(cfg, run_name=f"alignloop-{cfg.section_hash('seed', 'iterations')}").pipeline() as tracker:
        for iteration in range(cfg.iterations + 1):
            stage_seconds |= iteration_flow(iteration, params_path, root)
            row = iteration_row(layout, iteration)
            tracker.log_iteration(iteration, row["metrics"] | row["train"] | row["rank"],
                                  artifacts=[str(layout.metrics(iteration))])
        stage_seconds["report"] = stage_task("report", 0, params_path, root)
    rows = iteration_rows(cfg, layout)  # the report stage above already wrote reports/iterations.json
    summary = {
        "iterations": [{"iteration": row["iteration"], "metrics": row["metrics"]} for row in rows],
        "wall_seconds": round(time.perf_counter() - start, 2),
        "stage_seconds": {key: round(value, 2) for key, value in stage_seconds.items()},
    }
    write_json(layout.summary, summary)
    return summary
