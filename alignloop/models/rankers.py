"""Rankers: who scores a response (and judges benchmarks). One interface, built from config.

`gold` is the testbed's exact graded score; `reward_model` is any one-label sequence classifier
(models/reward_model.py); `verifier` runs the IFEval/IFBench checkers of each prompt's constraints.
"""

from __future__ import annotations

from typing import Protocol

from alignloop.config import JUDGE_NAMES, Config
from alignloop.errors import InputError
from alignloop.testbed.scorer import gold_score


class Ranker(Protocol):
    name: str  # names the benchmark's score metrics: greedy_<name>, sampled_<name>

    def score(self, prompts: list[dict], responses: list[list[str]]) -> list[list[float]]:
        """A score per response, higher is better; `responses[k]` are the N responses to `prompts[k]`."""
        ...


class GoldRanker:
    """The testbed's exact graded score; needs each prompt row's `answer`."""

    name = "gold"

    def score(self, prompts: list[dict], responses: list[list[str]]) -> list[list[float]]:
        missing = [row["prompt_id"] for row in prompts if "answer" not in row]
        if missing:
            raise InputError(f"rank.ranker=gold needs testbed prompts with answers; {len(missing)} lack one "
                             f"(e.g. {missing[0]})")
        return [[gold_score(row["answer"], text) for text in texts] for row, texts in zip(prompts, responses)]


class VerifierRanker:
    """The fraction of a prompt's constraints a response follows, strictly (IFEval's instruction-level accuracy on
    one response); needs each prompt row's `constraint_family`, `instruction_id_list` and `kwargs` (data.sharegpt).
    A prompt with no constraint has no score (NaN): it can be neither ranked nor judged."""

    name = "verifier"

    def check(self, prompts: list[dict], responses: list[list[str]]) -> list[list[list[tuple[bool, bool]]]]:
        """(strict, loose) per constraint, per response, per prompt."""
        from alignloop.verifiers.checkers import check_response

        missing = [row["prompt_id"] for row in prompts if "instruction_id_list" not in row]
        if missing:
            raise InputError(f"rank.ranker=verifier needs prompts with constraints (data.sharegpt); {len(missing)} "
                             f"have none recorded (e.g. {missing[0]})")
        return [[check_response(row["constraint_family"], row["instruction_id_list"], row["kwargs"], text)
                 if row["instruction_id_list"] else [] for text in texts]
                for row, texts in zip(prompts, responses)]

    def score(self, prompts: list[dict], responses: list[list[str]]) -> list[list[float]]:
        from alignloop.verifiers.metrics import followed_fraction

        return [[followed_fraction(checks) for checks in per_response]
                for per_response in self.check(prompts, responses)]


def build_ranker(cfg: Config, model_dir=None) -> Ranker:
    """The configured ranker; `model_dir` is its model's resolved directory (model_source.ranker_model_dir)."""
    if cfg.rank.ranker == "gold":
        return GoldRanker()
    if cfg.rank.ranker == "verifier":
        return VerifierRanker()
    if cfg.rank.ranker == "pairrm":
        from alignloop.models.pairrm import PairRMRanker

        ranker = PairRMRanker(model_dir, dtype=cfg.model.dtype, device=cfg.model.device,
                              batch_size=cfg.rank.batch_size)
    else:
        from alignloop.models.reward_model import RewardModelRanker

        ranker = RewardModelRanker(model_dir, dtype=cfg.model.dtype, device=cfg.model.device,
                                   batch_size=cfg.rank.batch_size, trust_remote_code=cfg.model.trust_remote_code)
    ranker.name = JUDGE_NAMES[cfg.rank.ranker]
    return ranker
