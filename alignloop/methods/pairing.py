"""Pairs from scored responses (pure; used by `rank` and by the reward model's testbed pairs).

Three rules pick (chosen, rejected) among a prompt's eligible responses; a pair needs a score gap above
`min_gap` (0: any difference, so tied responses are never paired):
- `max_min`: the best against the worst, one pair per prompt (first index on ties) — the default;
- `best_vs_random`: the best against a random lower-scored response, one pair per prompt (seeded per prompt);
- `all_pairs`: every ordered pair whose gap exceeds `min_gap`, up to N(N−1)/2 per prompt.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from alignloop.stage_rows import PairRow, SampleRow

Picks = list[tuple[int, int]]  # (chosen, rejected) positions


def _best(scores: list[float]) -> int:
    return max(range(len(scores)), key=lambda k: (scores[k], -k))


def max_min(scores: list[float], min_gap: float, rng: random.Random) -> Picks:
    if len(scores) < 2:
        return []
    best, worst = _best(scores), min(range(len(scores)), key=lambda k: (scores[k], k))
    return [(best, worst)] if scores[best] - scores[worst] > min_gap else []


def best_vs_random(scores: list[float], min_gap: float, rng: random.Random) -> Picks:
    if len(scores) < 2:
        return []
    best = _best(scores)
    lower = [k for k in range(len(scores)) if scores[best] - scores[k] > min_gap]
    return [(best, rng.choice(lower))] if lower else []


def all_pairs(scores: list[float], min_gap: float, rng: random.Random) -> Picks:
    return [(i, j) for i in range(len(scores)) for j in range(len(scores)) if scores[i] - scores[j] > min_gap]


PAIR_RULES: dict[str, Callable[[list[float], float, random.Random], Picks]] = {
    "max_min": max_min, "best_vs_random": best_vs_random, "all_pairs": all_pairs}


def build_pairs(prompts: list[dict], samples_by_prompt: dict[str, list[SampleRow]],
                scores_by_prompt: dict[str, list[float]], drop_unfinished: bool = True, rule: str = "max_min",
                min_gap: float = 0.0, seed: int = 0) -> tuple[list[PairRow], dict[str, int]]:
    """Pairs, and how many prompts gave none and why: all eligible responses tied, fewer than two eligible
    (unfinished), or no score gap above `min_gap`."""
    pick = PAIR_RULES[rule]
    pairs, dropped = [], {"all_tied": 0, "unfinished": 0, "below_gap": 0}
    for row in prompts:
        samples, scores = samples_by_prompt[row["prompt_id"]], scores_by_prompt[row["prompt_id"]]
        eligible = [k for k, sample in enumerate(samples) if sample["finished"] or not drop_unfinished]
        eligible_scores = [scores[k] for k in eligible]
        picks = pick(eligible_scores, min_gap, random.Random(f"{seed}-{row['prompt_id']}"))
        if not picks:
            reason = ("unfinished" if len(eligible) < 2 else "all_tied" if len(set(eligible_scores)) == 1
                      else "below_gap")
            dropped[reason] += 1
            continue
        for chosen_pos, rejected_pos in picks:
            chosen_at, rejected_at = eligible[chosen_pos], eligible[rejected_pos]
            chosen, rejected = samples[chosen_at], samples[rejected_at]
            pairs.append(PairRow(
                pair_id=f"{row['prompt_id']}-{chosen['sample_index']}-{rejected['sample_index']}",
                prompt_id=row["prompt_id"], prompt=row["prompt"],
                chosen=chosen["response"], rejected=rejected["response"],
                chosen_ids=chosen["response_ids"], rejected_ids=rejected["response_ids"],
                chosen_finished=chosen["finished"], rejected_finished=rejected["finished"],
                chosen_score=scores[chosen_at], rejected_score=scores[rejected_at],
                chosen_index=chosen["sample_index"], rejected_index=rejected["sample_index"],
            ))
    return pairs, dropped
