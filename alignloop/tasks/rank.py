"""Stage `rank`: score every response and build chosen/rejected pairs (best vs worst, ties dropped)."""

from __future__ import annotations

import logging
from collections import defaultdict

from alignloop.config import Config
from alignloop.io import read_jsonl, write_json, write_jsonl
from alignloop.models.rankers import RANKERS
from alignloop.paths import Layout

log = logging.getLogger(__name__)


def best_vs_worst(samples: list[dict], scores: list[float]) -> tuple[dict, dict] | None:
    """(chosen, rejected) = the highest- and lowest-scored responses (first on ties); None when all tie."""
    best = max(range(len(scores)), key=lambda k: (scores[k], -k))
    worst = min(range(len(scores)), key=lambda k: (scores[k], k))
    if scores[best] == scores[worst]:
        return None
    return samples[best], samples[worst]


def build_pairs(prompts: list[dict], samples_by_prompt: dict[str, list[dict]],
                scores_by_prompt: dict[str, list[float]]) -> tuple[list[dict], int]:
    pairs, dropped = [], 0
    for row in prompts:
        samples, scores = samples_by_prompt[row["prompt_id"]], scores_by_prompt[row["prompt_id"]]
        picked = best_vs_worst(samples, scores)
        if picked is None:
            dropped += 1
            continue
        chosen, rejected = picked
        pairs.append({
            "pair_id": f"{row['prompt_id']}-{chosen['sample_index']}-{rejected['sample_index']}",
            "prompt_id": row["prompt_id"], "prompt": row["prompt"],
            "chosen": chosen["response"], "rejected": rejected["response"],
            "chosen_finished": chosen["finished"], "rejected_finished": rejected["finished"],
            "chosen_score": scores[samples.index(chosen)], "rejected_score": scores[samples.index(rejected)],
            "chosen_index": chosen["sample_index"], "rejected_index": rejected["sample_index"],
        })
    return pairs, dropped


def run_rank(cfg: Config, layout: Layout, iteration: int) -> None:
    prompts = read_jsonl(layout.prompts(iteration))
    samples_by_prompt: dict[str, list[dict]] = defaultdict(list)
    for sample in read_jsonl(layout.samples(iteration)):
        samples_by_prompt[sample["prompt_id"]].append(sample)
    for group in samples_by_prompt.values():
        group.sort(key=lambda sample: sample["sample_index"])
    ranker = RANKERS[cfg.rank.ranker]()
    score_lists = ranker.score(prompts, [[s["response"] for s in samples_by_prompt[row["prompt_id"]]]
                                        for row in prompts])
    scores_by_prompt = {row["prompt_id"]: scores for row, scores in zip(prompts, score_lists)}
    pairs, dropped = build_pairs(prompts, samples_by_prompt, scores_by_prompt)

    write_jsonl(layout.scores(iteration), (
        {"prompt_id": row["prompt_id"], "sample_index": index, "score": score, "ranker": cfg.rank.ranker}
        for row, scores in zip(prompts, score_lists) for index, score in enumerate(scores)))
    write_jsonl(layout.pairs(iteration), pairs)
    all_scores = [score for scores in score_lists for score in scores]
    stats = {"prompts": len(prompts), "pairs": len(pairs), "dropped_all_tied": dropped,
             "mean_sample_score": sum(all_scores) / max(1, len(all_scores)),
             "mean_chosen_score": sum(p["chosen_score"] for p in pairs) / max(1, len(pairs)),
             "mean_rejected_score": sum(p["rejected_score"] for p in pairs) / max(1, len(pairs))}
    write_json(layout.rank_stats(iteration), stats)
    log.info("rank: %d pairs from %d prompts; %d prompts dropped (all responses tied)",
             len(pairs), len(prompts), dropped)
