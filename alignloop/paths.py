"""The artifact layout (docs/pipeline.md), in one place. Every stage, DVC, Prefect and MLflow find files
through here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alignloop.config import Config

EVAL_SPLITS = ("in_distribution", "harder", "unseen_composition")  # the testbed's evaluation splits


def eval_split_names(cfg: Config) -> tuple[str, ...]:
    """The evaluation sets of a run: the testbed's splits, or the names under `data.eval`."""
    if cfg.data.is_verifiable:
        from alignloop.config.data import VERIFIABLE_EVAL_SETS

        return VERIFIABLE_EVAL_SETS
    return EVAL_SPLITS if cfg.data.is_testbed else tuple(cfg.data.eval)


@dataclass(frozen=True)
class Layout:
    """Paths of one project directory; all relative to `root` (the directory holding params.yaml)."""

    root: Path = Path(".")

    # data/
    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sft_data(self) -> Path:
        """SFT's demonstrations (prompt, response) as prepare wrote them."""
        return self.data / "sft.jsonl"

    @property
    def train_prompts(self) -> Path:
        """The pool each iteration's `sample` takes its next slice of prompts from."""
        return self.data / "train_prompts.jsonl"

    def eval_prompts(self, split: str) -> Path:
        return self.data / "eval" / f"{split}.jsonl"

    @property
    def preferences(self) -> Path:
        """`reward.data`'s pairs as prepare read them (prompt, chosen, rejected, split)."""
        return self.data / "preferences.jsonl"

    @property
    def reference_answers(self) -> Path:
        """Held-out prompts with a reference answer (ShareGPT's), whose likelihood under each policy is retention."""
        return self.data / "reference_answers.jsonl"

    @property
    def base_model(self) -> Path:
        """The untrained testbed model and tokenizer (SFT's starting point)."""
        return self.data / "base_model"

    @property
    def model_record(self) -> Path:
        """Which local directory a hub model resolved to (written by prepare)."""
        return self.data / "model.json"

    @property
    def prepare_stats(self) -> Path:
        """Rows read and removed (duplicates, leakage, too long) per prompt set."""
        return self.data / "prepare_stats.json"

    # artifacts/
    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def sft(self) -> Path:
        return self.artifacts / "sft"

    @property
    def reward_outputs(self) -> Path:
        """The `reward_model` stage's output: model/, pairs.jsonl, stats.json, train_log.json (written as one)."""
        return self.artifacts / "reward_model"

    @property
    def reward_model(self) -> Path:
        """The trained reward model: a one-label sequence classifier with its tokenizer."""
        return self.reward_outputs / "model"

    @property
    def reward_pairs(self) -> Path:
        """Its training and held-out pairs, with the ensemble's preference strength (and, on the testbed, which
        labels were flipped)."""
        return self.reward_outputs / "pairs.jsonl"

    @property
    def reward_stats(self) -> Path:
        """Held-out accuracy, the label noise, and (on the testbed) how well μ < 0 finds the flipped labels."""
        return self.reward_outputs / "stats.json"

    @property
    def reward_train_log(self) -> Path:
        """The final reward model's loss, accuracy and gradient norm per step."""
        return self.reward_outputs / "train_log.json"

    def iteration(self, i: int) -> Path:
        return self.sft if i == 0 else self.artifacts / f"iter-{i}"

    def policy(self, i: int) -> Path:
        """The model after iteration i; iteration 0 is the SFT model."""
        return self.sft / "model" if i == 0 else self.iteration(i) / "policy"

    def prompts(self, i: int) -> Path:
        return self.iteration(i) / "prompts.jsonl"

    def samples(self, i: int) -> Path:
        return self.iteration(i) / "samples.jsonl"

    def scores(self, i: int) -> Path:
        return self.iteration(i) / "scores.jsonl"

    def pairs(self, i: int) -> Path:
        return self.iteration(i) / "pairs.jsonl"

    def rank_stats(self, i: int) -> Path:
        return self.iteration(i) / "rank_stats.json"

    def sample_prompts(self, i: int, evolved: bool) -> Path:
        """Where iteration i's prompts come from: the previous creator's output under eva, else the fixed pool."""
        return self.next_prompts(i - 1) if evolved and i > 1 else self.train_prompts

    def next_prompts(self, i: int) -> Path:
        """The creator's output in iteration i: the prompts of iteration i + 1."""
        return self.iteration(i) / "next_prompts.jsonl"

    def evolve_stats(self, i: int) -> Path:
        return self.iteration(i) / "evolve_stats.json"

    def cfn(self, i: int) -> Path:
        """The CFN after iteration i's visits: head, replay buffer, bonuses of the pairs."""
        return self.iteration(i) / "cfn"

    def cfn_visits(self, i: int) -> Path:
        """Iteration i's visits only (features and their coin flips): the replay buffer is every iteration's file."""
        return self.cfn(i) / "visits.safetensors"

    def cfn_bonuses(self, i: int) -> Path:
        return self.cfn(i) / "bonuses.jsonl"

    def cfn_stats(self, i: int) -> Path:
        return self.cfn(i) / "stats.json"

    def train_log(self, i: int) -> Path:
        return self.iteration(i) / "train_log.json"

    def metrics(self, i: int) -> Path:
        return self.iteration(i) / "metrics.json"

    def benchmark_outputs(self, i: int) -> Path:
        return self.iteration(i) / "benchmark_outputs.jsonl"

    def alpaca_eval(self, i: int) -> Path:
        """Greedy responses per evaluation set in AlpacaEval's format, for external evaluators."""
        return self.iteration(i) / "alpaca_eval"

    # .alignloop/: the project's bookkeeping, never an artifact
    @property
    def state(self) -> Path:
        return self.root / ".alignloop"

    @property
    def stamps(self) -> Path:
        """Which stage outputs are complete, and from which cache key (cache.py)."""
        return self.state / "stamps"

    @property
    def logs(self) -> Path:
        """Each command's log, tracebacks included; vLLM's engine logs."""
        return self.state / "logs"

    @property
    def run_lock(self) -> Path:
        """Held by the one process that runs stages here (run_lock.py)."""
        return self.state / "run.lock"

    @property
    def launch_scratch(self) -> Path:
        """A launched stage's config and error reports, while it runs (launch.py)."""
        return self.state / "launch"

    @property
    def digest_store(self) -> Path:
        """Digests of large files, reused while their size and mtime are unchanged (digests.py)."""
        return self.state / "digests.json"

    # reports/
    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def summary(self) -> Path:
        return self.reports / "summary.json"

    @property
    def report_plots(self) -> Path:
        """The report's figures (PNG), one per section; also DVC plots and MLflow artifacts."""
        return self.reports / "plots"

    @property
    def report_html(self) -> Path:
        """One self-contained page: metrics, curves, rank/eva/COPO/reward-model sections and run facts."""
        return self.reports / "report.html"

    @property
    def iterations_table(self) -> Path:
        """One flat row per iteration: DVC's metrics and plots read it."""
        return self.reports / "iterations.json"
