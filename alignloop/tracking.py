"""MLflow: one parent run per pipeline run, one child per iteration, metrics at `step=iteration`."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator

from alignloop.config import Config

log = logging.getLogger(__name__)
EXPERIMENT = "alignloop"


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    return {key.replace("/", "."): float(value) for key, value in metrics.items()
            if isinstance(value, (int, float)) and value == value}


class Tracker:
    """Thin wrapper over the MLflow fluent API; MLflow is imported only when a run starts."""

    def __init__(self, cfg: Config, run_name: str):
        self.cfg, self.run_name = cfg, run_name
        self.parent_id: str | None = None

    @contextmanager
    def pipeline(self) -> Iterator[Tracker]:
        import mlflow

        mlflow.set_experiment(EXPERIMENT)
        with mlflow.start_run(run_name=self.run_name) as parent:
            self.parent_id = parent.info.run_id
            mlflow.log_params(self.cfg.flat())
            yield self

    def log_iteration(self, iteration: int, metrics: dict[str, Any], artifacts: list[str] = ()) -> None:
        import mlflow

        values = _finite(metrics)
        with mlflow.start_run(run_name=f"iteration-{iteration}", nested=True):
            mlflow.set_tag("iteration", iteration)
            mlflow.log_metrics(values, step=iteration)
            for path in artifacts:
                mlflow.log_artifact(path)
        mlflow.log_metrics(values, step=iteration)  # the parent's per-iteration curves
