"""MLflow lineage: one parent run per pipeline run, one child per iteration with metrics at `step=iteration`.

A run that was killed or failed is resumed into the same parent run: the parent carries a tag with the hash of the
params that define the pipeline (all but `iterations`, `pipeline` and `schedule`), and an unfinished parent with the
same tag is reopened instead of starting a new one. Iterations already logged under it are not logged twice.
`MLFLOW_TRACKING_URI` is honoured; `environment.configure` defaults it to a SQLite file in the project.
"""

from __future__ import annotations

import logging
import math
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from alignloop.config import Config
from alignloop.io import read_json, read_jsonl
from alignloop.paths import Layout
from alignloop.pipeline.digests import file_digest
from alignloop.report.rows import iteration_row

log = logging.getLogger(__name__)
EXPERIMENT = "alignloop"
RUN_KEY_TAG = "alignloop.run_key"
TABLE_ROWS = 5
_NOT_PIPELINE_DEFINING = {"iterations", "pipeline", "schedule"}


def run_key(cfg: Config) -> str:
    return cfg.section_hash(*(name for name in Config.model_fields if name not in _NOT_PIPELINE_DEFINING))


def finite_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """MLflow metric names cannot hold '/'; NaN, infinities and non-numbers are left out."""
    return {key.replace("/", "."): float(value) for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


def reward_model_metrics(layout: Layout) -> dict[str, Any]:
    """The trained reward model's held-out accuracy and, on the testbed, how well μ < 0 found flipped labels."""
    if not layout.reward_stats.is_file():
        return {}
    stats = read_json(layout.reward_stats)
    detection = stats.get("detection") or {}
    named = {"eval_accuracy": stats.get("eval_accuracy"), "negative_strength_fraction":
             stats.get("negative_strength_fraction"), "detection_precision": detection.get("precision"),
             "detection_recall": detection.get("recall")}
    return {f"reward_model/{key}": value for key, value in named.items() if value is not None}


def git_commit(root: Path) -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def file_sha256(path: Path) -> str | None:
    return file_digest(path) if path.is_file() else None


def sample_table(layout: Layout, iteration: int, rows: int = TABLE_ROWS) -> dict[str, list]:
    """A few rows to eyeball: prompt / chosen / rejected with scores, or SFT's greedy answers for iteration 0."""
    if iteration == 0:
        outputs = read_jsonl(layout.benchmark_outputs(0))[:rows]
        columns = ("prompt", "answer", "greedy", "greedy_score") if all("answer" in r for r in outputs) else (
            "prompt", "greedy", "greedy_score")  # only the testbed knows answers
        return {key: [r[key] for r in outputs] for key in columns}
    pairs = read_jsonl(layout.pairs(iteration))[:rows]
    return {key: [pair[key] for pair in pairs]
            for key in ("prompt", "chosen", "chosen_score", "rejected", "rejected_score")}


def training_curve(layout: Layout, iteration: int):
    """The loss (and reward accuracy) of the iteration's training steps as a matplotlib figure; None if no steps."""
    path = layout.train_log(iteration)
    history = read_json(path).get("history", []) if path.is_file() else []
    history = [entry for entry in history if "loss" in entry]
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    steps = [entry.get("step", index) for index, entry in enumerate(history)]
    axis.plot(steps, [entry["loss"] for entry in history], label="loss")
    if "reward_accuracy" in history[0]:
        axis.plot(steps, [entry["reward_accuracy"] for entry in history], label="reward accuracy")
    axis.set_xlabel("step")
    axis.set_title("SFT" if iteration == 0 else f"iteration {iteration}")
    axis.legend()
    figure.tight_layout()
    return figure


class Tracker:
    """Thin wrapper over the MLflow fluent API; MLflow is imported only when a run starts."""

    def __init__(self, cfg: Config, layout: Layout):
        self.cfg, self.layout = cfg, layout
        self.key = run_key(cfg)
        self.parent_id: str | None = None
        self.resumed = False
        self._logged: set[int] = set()

    def _unfinished_parent(self, client, experiment_id: str) -> str | None:
        runs = client.search_runs(
            [experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{self.key}' and attributes.status != 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0].info.run_id if runs else None

    def _logged_iterations(self, client, experiment_id: str) -> set[int]:
        children = client.search_runs(
            [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_id}' "
                                           "and attributes.status = 'FINISHED'")
        return {int(run.data.tags["iteration"]) for run in children if "iteration" in run.data.tags}

    @contextmanager
    def pipeline(self) -> Iterator[Tracker]:
        import mlflow

        experiment = mlflow.set_experiment(EXPERIMENT)
        client = mlflow.MlflowClient()
        resume_id = self._unfinished_parent(client, experiment.experiment_id)
        with mlflow.start_run(run_id=resume_id, run_name=None if resume_id else f"alignloop-{self.key[:8]}") as run:
            self.parent_id, self.resumed = run.info.run_id, resume_id is not None
            if self.resumed:
                self._logged = self._logged_iterations(client, experiment.experiment_id)
                log.info("MLflow: resuming run %s (iterations logged: %s)", self.parent_id, sorted(self._logged))
            else:
                mlflow.log_params(self.cfg.flat())
            tags = {RUN_KEY_TAG: self.key, "iterations": str(self.cfg.iterations)}
            commit = git_commit(self.layout.root)
            if commit:
                tags["mlflow.source.git.commit"] = tags["git.commit"] = commit
            mlflow.set_tags(tags)
            yield self
            self.tag_dvc_lock()

    def tag_dvc_lock(self) -> None:
        import mlflow

        digest = file_sha256(self.layout.root / "dvc.lock")
        if digest:
            mlflow.set_tag("dvc.lock.sha256", digest)

    def log_iteration(self, iteration: int) -> None:
        """Metrics at step=iteration on a child run and on the parent; the training curve and sample table."""
        if iteration in self._logged:
            return
        import mlflow

        row = iteration_row(self.layout, iteration)
        values = finite_metrics(row["metrics"] | row["train"] | row["rank"] | row["evolve"] | row["cfn"]
                                | (reward_model_metrics(self.layout) if iteration == 0 else {}))
        with mlflow.start_run(run_name=f"iteration-{iteration}", nested=True):
            mlflow.set_tag("iteration", iteration)
            mlflow.log_metrics(values, step=iteration)
            for path in (self.layout.metrics(iteration), self.layout.train_log(iteration),
                         self.layout.rank_stats(iteration), self.layout.evolve_stats(iteration),
                         *([self.layout.reward_stats] if iteration == 0 else [])):
                if path.is_file():
                    mlflow.log_artifact(str(path))
            figure = training_curve(self.layout, iteration)
            if figure is not None:
                mlflow.log_figure(figure, "training_curve.png")
                from matplotlib import pyplot as plt

                plt.close(figure)
            mlflow.log_table(sample_table(self.layout, iteration), artifact_file="samples.json")
        mlflow.log_metrics(values, step=iteration)  # the parent's per-iteration curves
        self._logged.add(iteration)

    def log_report(self, page: Path) -> None:
        """The report page and its figures, on the parent run."""
        import mlflow

        mlflow.log_artifact(str(page))
        if self.layout.report_plots.is_dir():
            mlflow.log_artifacts(str(self.layout.report_plots), artifact_path="plots")
