"""IFEval's accuracies from the checkers' verdicts: pure functions over (strict, loose) pairs, one per constraint.

- prompt-level: the share of responses that follow every constraint of their prompt;
- instruction-level: the share of all constraints followed;
each strict (the response as written) and loose (IFEval's loose variants: first or last line dropped, `*` removed).
"""

from __future__ import annotations

import math
from collections import defaultdict
from statistics import mean

Checks = list[tuple[bool, bool]]  # (strict, loose) per constraint of one response


def followed_fraction(checks: Checks) -> float:
    """The fraction of a response's constraints it follows strictly (what ranks it); NaN with no constraint."""
    return sum(strict for strict, _ in checks) / len(checks) if checks else math.nan


def ifeval_accuracies(responses: list[Checks]) -> dict[str, float]:
    """Prompt- and instruction-level accuracy, strict and loose, over responses that have constraints."""
    responses = [checks for checks in responses if checks]
    if not responses:
        return {}
    flat = [check for checks in responses for check in checks]
    return {"prompt_strict": mean(all(s for s, _ in checks) for checks in responses),
            "prompt_loose": mean(all(loose for _, loose in checks) for checks in responses),
            "instruction_strict": mean(s for s, _ in flat),
            "instruction_loose": mean(loose for _, loose in flat)}


def verification_metrics(split: str, greedy: list[Checks], sampled: list[list[Checks]]) -> dict[str, float]:
    """A benchmark set's metrics: IFEval's four accuracies on greedy responses (as IFEval reports them) and the
    prompt-level strict accuracy of sampled ones; nothing for a set without constraints."""
    greedy_metrics = ifeval_accuracies(greedy)
    sampled_metrics = ifeval_accuracies([checks for per_prompt in sampled for checks in per_prompt])
    return {**{f"{split}/{key}": value for key, value in greedy_metrics.items()},
            **({f"{split}/sampled_prompt_strict": sampled_metrics["prompt_strict"]} if sampled_metrics else {})}


def accuracy_by_type(rows: list[dict]) -> dict[str, tuple[int, int]]:
    """instruction id → (greedy responses that follow it strictly, prompts that carry it), from benchmark output rows
    (`instruction_id_list`, `greedy_checks`)."""
    followed: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        for instruction_id, (strict, _) in zip(row.get("instruction_id_list") or [], row.get("greedy_checks") or []):
            followed[instruction_id][0] += bool(strict)
            followed[instruction_id][1] += 1
    return {key: (value[0], value[1]) for key, value in sorted(followed.items())}
