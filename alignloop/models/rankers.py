"""Rankers: who scores a response. One interface; the testbed's gold scorer is the first implementation."""

from __future__ import annotations

from typing import Protocol

from alignloop.testbed.scorer import gold_score


class Ranker(Protocol):
    def score(self, prompts: list[dict], responses: list[list[str]]) -> list[list[float]]:
        """A score per response, higher is better; `responses[k]` are the N responses to `prompts[k]`."""
        ...


class GoldRanker:
    """The testbed's exact graded score; needs each prompt row's `answer`."""

    def score(self, prompts: list[dict], responses: list[list[str]]) -> list[list[float]]:
        missing = [row["prompt_id"] for row in prompts if "answer" not in row]
        if missing:
            raise ValueError(f"rank.ranker=gold needs testbed prompts with answers; {len(missing)} lack one "
                             f"(e.g. {missing[0]})")
        return [[gold_score(row["answer"], text) for text in texts] for row, texts in zip(prompts, responses)]


RANKERS = {"gold": GoldRanker}
