"""Stage `rank`: score every response and build chosen/rejected pairs (`rank.pair_rule`, alignloop/methods/pairing.py;
best vs worst by default, ties never paired).

Responses cut by `sample.max_new_tokens` are scored but, with `rank.drop_unfinished` (the default), never paired:
a cut response has no ending to prefer or reject, and training on it teaches the model to stop nowhere.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict

from alignloop.config import Config
from alignloop.errors import NonFiniteError
from alignloop.io import read_jsonl, write_json, write_jsonl
from alignloop.methods.pairing import build_pairs
from alignloop.models.rankers import build_ranker
from alignloop.paths import Layout
from alignloop.seeds import derive_seed
from alignloop.sources.models import ranker_model_dir
from alignloop.stage_rows import SampleRow, ScoreRow, read_rows

log = logging.getLogger(__name__)


def check_scores(score_lists: list[list[float]], prompts: list[dict], ranker: str) -> None:
    bad = [row["prompt_id"] for row, scores in zip(prompts, score_lists) if not all(map(math.isfinite, scores))]
    if bad:
        raise NonFiniteError(f"rank: ranker {ranker} gave non-finite scores for {len(bad)} prompts (e.g. {bad[0]})")


def run_rank(cfg: Config, layout: Layout, iteration: int) -> None:
    prompts = read_jsonl(layout.prompts(iteration))
    samples_by_prompt: dict[str, list[SampleRow]] = defaultdict(list)
    for sample in read_rows(layout.samples(iteration), SampleRow):
        samples_by_prompt[sample["prompt_id"]].append(sample)
    for group in samples_by_prompt.values():
        group.sort(key=lambda sample: sample["sample_index"])
    ranker = build_ranker(cfg, ranker_model_dir(cfg, layout))
    score_lists = ranker.score(prompts, [[s["response"] for s in samples_by_prompt[row["prompt_id"]]]
                                        for row in prompts])
    check_scores(score_lists, prompts, cfg.rank.ranker)
    scores_by_prompt = {row["prompt_id"]: scores for row, scores in zip(prompts, score_lists)}
    pairs, dropped = build_pairs(prompts, samples_by_prompt, scores_by_prompt, cfg.rank.drop_unfinished,
                                 cfg.rank.pair_rule, cfg.rank.min_score_gap,
                                 seed=derive_seed(cfg.seed, "rank", iteration))

    write_jsonl(layout.scores(iteration), (
        ScoreRow(prompt_id=row["prompt_id"], sample_index=index, score=score, ranker=cfg.rank.ranker)
        for row, scores in zip(prompts, score_lists) for index, score in enumerate(scores)))
    write_jsonl(layout.pairs(iteration), pairs)
    all_scores = [score for scores in score_lists for score in scores]
    unfinished = sum(not s["finished"] for group in samples_by_prompt.values() for s in group)
    stats = {"prompts": len(prompts), "pairs": len(pairs), "dropped_all_tied": dropped["all_tied"],
             "dropped_unfinished": dropped["unfinished"], "dropped_below_gap": dropped["below_gap"],
             "unfinished_responses": unfinished,
             "mean_sample_score": sum(all_scores) / max(1, len(all_scores)),
             "mean_chosen_score": sum(p["chosen_score"] for p in pairs) / max(1, len(pairs)),
             "mean_rejected_score": sum(p["rejected_score"] for p in pairs) / max(1, len(pairs))}
    write_json(layout.rank_stats(iteration), stats)
    log.info("rank: %d pairs from %d prompts; dropped %d prompts whose responses all tied and %d with fewer than two "
             "finished responses (%d responses cut by sample.max_new_tokens%s)", len(pairs), len(prompts),
             dropped["all_tied"], dropped["unfinished"], unfinished,
             ", left out of pairs" if cfg.rank.drop_unfinished else "")
