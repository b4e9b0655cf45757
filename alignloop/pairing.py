"""Pairs from scored responses: each prompt's best response against its worst (pure; used by `rank` and by the
reward model's testbed pairs)."""

from __future__ import annotations


def best_vs_worst(samples: list[dict], scores: list[float]) -> tuple[int, int] | None:
    """(chosen, rejected) = positions of the highest- and lowest-scored responses (first on ties); None when all
    tie or fewer than two."""
    if len(scores) < 2:
        return None
    best = max(range(len(scores)), key=lambda k: (scores[k], -k))
    worst = min(range(len(scores)), key=lambda k: (scores[k], k))
    if scores[best] == scores[worst]:
        return None
    return best, worst


def build_pairs(prompts: list[dict], samples_by_prompt: dict[str, list[dict]],
                scores_by_prompt: dict[str, list[float]], drop_unfinished: bool = True
                ) -> tuple[list[dict], dict[str, int]]:
    """Pairs, and how many prompts were dropped and why."""
    pairs, dropped = [], {"all_tied": 0, "unfinished": 0}
    for row in prompts:
        samples, scores = samples_by_prompt[row["prompt_id"]], scores_by_prompt[row["prompt_id"]]
        eligible = [k for k, sample in enumerate(samples) if sample["finished"] or not drop_unfinished]
        picked = best_vs_worst([samples[k] for k in eligible], [scores[k] for k in eligible])
        if picked is None:
            dropped["all_tied" if len(eligible) >= 2 else "unfinished"] += 1
            continue
        chosen_at, rejected_at = eligible[picked[0]], eligible[picked[1]]
        chosen, rejected = samples[chosen_at], samples[rejected_at]
        pairs.append({
            "pair_id": f"{row['prompt_id']}-{chosen['sample_index']}-{rejected['sample_index']}",
            "prompt_id": row["prompt_id"], "prompt": row["prompt"],
            "chosen": chosen["response"], "rejected": rejected["response"],
            "chosen_ids": chosen["response_ids"], "rejected_ids": rejected["response_ids"],
            "chosen_finished": chosen["finished"], "rejected_finished": rejected["finished"],
            "chosen_score": scores[chosen_at], "rejected_score": scores[rejected_at],
            "chosen_index": chosen["sample_index"], "rejected_index": rejected["sample_index"],
        })
    return pairs, dropped
