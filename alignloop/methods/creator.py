"""eva's creator step, the pure part (Ye et al. 2024, "Evolving Alignment via Asymmetric Self-Play"):
informativeness of a prompt from its responses' rewards, weighted seed selection, validation of evolved prompts,
and mixing with the buffer of earlier prompts.

Ye et al. 2024, "Evolving Alignment via Asymmetric Self-Play": the creator prefers prompts on which the solver's
responses differ most in reward (a regret proxy), evolves them, and trains on ~80% evolved + ~20% earlier prompts.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

INFORMATIVENESS: dict[str, Callable[[list[float]], float]] = {
    "max_min": lambda r: max(r) - min(r),  # the chosen–rejected reward gap (eva's default)
    "max_mean": lambda r: max(r) - sum(r) / len(r),  # closest to regret: best minus expected reward
    "variance": lambda r: sum((x - sum(r) / len(r)) ** 2 for x in r) / len(r),  # reported poor in the ablation
    "mean": lambda r: sum(r) / len(r),
    "inverse_mean": lambda r: 1.0 - sum(r) / len(r),  # rewards in [0, 1]: prompts the solver fails on
}


def informativeness(rewards: list[float], metric: str = "max_min") -> float:
    if not rewards:
        raise ValueError("informativeness needs at least one reward")
    return INFORMATIVENESS[metric](rewards)


def min_max_normalise(values: list[float]) -> list[float]:
    """Scaled to [0, 1]; all-equal values become uniform weights (1.0), not zeros."""
    low, high = min(values), max(values)
    if high == low:
        return [1.0] * len(values)
    return [(value - low) / (high - low) for value in values]


def weighted_sample(weights: list[float], k: int, rng: random.Random) -> list[int]:
    """k distinct indices, drawn one after another with probability ∝ weight among those left (Efraimidis–Spirakis
    keys u^(1/w)). Zero-weight items come last, in random order, only when the positive ones run out."""
    if any(w < 0 or math.isnan(w) for w in weights):
        raise ValueError("weights must be non-negative numbers")
    keys = []
    for index, weight in enumerate(weights):
        u = 1.0 - rng.random()  # in (0, 1]: log is finite
        keys.append(((1, math.log(u) / weight) if weight > 0 else (0, rng.random()), index))
    keys.sort(reverse=True)
    return [index for _, index in keys[:k]]


def greedy_topk(weights: list[float], k: int) -> list[int]:
    """The ablation: the k most informative prompts (ties by position)."""
    return sorted(range(len(weights)), key=lambda index: (-weights[index], index))[:k]


def select_seeds(scores: list[float], fraction: float, method: str, rng: random.Random) -> list[int]:
    """Indices of the prompts to evolve: `fraction` of them (at least one), by `weighted` sampling or `greedy_topk`."""
    k = max(1, round(fraction * len(scores)))
    weights = min_max_normalise(scores)
    return weighted_sample(weights, k, rng) if method == "weighted" else greedy_topk(weights, k)


@dataclass
class Validation:
    """Evolved prompts that passed, and why the others did not."""

    accepted: list[dict] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)


def validate(candidates: Iterable[dict], *, buffer_prompts: set[str], eval_prompts: set[str],
             prompt_tokens: Callable[[str], int], max_prompt_tokens: int,
             solvable: Callable[[dict], str | None]) -> Validation:
    """Keep a candidate only if it is non-empty, fits `max_prompt_tokens`, is new (not in the buffer nor already
    accepted), is not an evaluation prompt (leakage guard) and is solvable (`solvable` returns a reason or None)."""
    result, seen = Validation(), set(buffer_prompts)
    for row in candidates:
        prompt = row["prompt"].strip()
        if not prompt:
            reason = "empty"
        elif prompt in eval_prompts:
            reason = "equals an evaluation prompt"
        elif prompt in seen:
            reason = "duplicate"
        elif prompt_tokens(prompt) > max_prompt_tokens:
            reason = "too long"
        else:
            reason = solvable(row)
        if reason:
            result.rejected[reason] += 1
            continue
        seen.add(prompt)
        result.accepted.append({**row, "prompt": prompt})
    return result


def mix(evolved: list[dict], buffer: list[dict], size: int, evolved_fraction: float,
        rng: random.Random) -> tuple[list[dict], int]:
    """The next prompt set: round(evolved_fraction · size) evolved prompts (a random subset when there are more),
    the rest drawn from the buffer without replacement, also covering any shortfall of evolved ones.
    Returns (rows, how many came from the buffer)."""
    wanted = min(len(evolved), round(evolved_fraction * size))
    picked = rng.sample(evolved, wanted)
    taken = {row["prompt"] for row in picked}
    pool = [row for row in buffer if row["prompt"] not in taken]
    from_buffer = rng.sample(pool, min(len(pool), size - wanted))
    return picked + from_buffer, len(from_buffer)
