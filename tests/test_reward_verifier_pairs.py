"""Reward-model pairs the run labels itself: best vs worst by a scorer (the testbed's gold scorer, or the verifier
with data.sharegpt), held-out pairs with true labels, an exact share of training labels flipped."""

from __future__ import annotations

import pytest

from alignloop.config import ConfigError, parse_config
from alignloop.pipeline.stages import STAGES
from alignloop.tasks.reward_model import label_pairs

from real_kit import needs_checkers


def _data(prompts: int = 10):
    rows = [{"prompt_id": f"p{k}", "prompt": f"prompt {k}"} for k in range(prompts)]
    samples = {row["prompt_id"]: [{"sample_index": j, "response": f"{row['prompt_id']} answer {j}",
                                   "response_ids": [j], "finished": j != 2} for j in range(3)] for row in rows}
    scores = {row["prompt_id"]: [0.0, 1.0, 0.5] for row in rows}
    scores["p9"] = [0.5, 0.5, 0.5]  # all tied: no pair
    return rows, samples, scores


def test_best_vs_worst_with_held_out_true_labels_and_exact_flips():
    rows, samples, scores = _data()
    pairs = label_pairs(rows, samples, scores, held=3, noise=0.5, seed=1, drop_unfinished=False)
    train = [p for p in pairs if p["split"] == "train"]
    held = [p for p in pairs if p["split"] == "eval"]
    assert [p["prompt_id"] for p in held] == ["p0", "p1", "p2"] and not any(p["flipped"] for p in held)
    assert len(train) == 6 and sum(p["flipped"] for p in train) == 3  # round(0.5 · 6), p9 gave no pair
    for pair in held + [p for p in train if not p["flipped"]]:
        assert (pair["chosen_score"], pair["rejected_score"]) == (1.0, 0.0) and pair["chosen"].endswith("answer 1")
    for pair in (p for p in train if p["flipped"]):
        assert (pair["chosen_score"], pair["rejected_score"]) == (0.0, 1.0) and pair["chosen"].endswith("answer 0")
    assert pairs == label_pairs(rows, samples, scores, held=3, noise=0.5, seed=1, drop_unfinished=False)
    # unfinished responses (index 2 here) are left out when asked: the pairs stay best (1.0) vs worst (0.0)
    assert len(label_pairs(rows, samples, scores, 3, 0.0, 1, drop_unfinished=True)) == 9


def test_label_noise_is_for_the_verifier_and_the_testbed_keeps_its_own():
    with pytest.raises(ConfigError, match=r"^reward\.label_noise: flips the verifier's labels"):
        parse_config({"reward": {"enabled": True, "label_noise": 0.2}})
    params = STAGES["reward_model"].params_of(parse_config({"reward": {"enabled": True}}))
    assert params == ("seed", "reward", "model", "testbed")  # unchanged on the testbed: its cache keys too


@needs_checkers
def test_the_verifier_labels_reward_pairs_on_sharegpt_prompts():
    cfg = parse_config({"data": {"sharegpt": {}}, "sft": {"enabled": False}, "rank": {"ranker": "reward_model"},
                        "reward": {"enabled": True, "label_noise": 0.4}})
    assert cfg.reward.data is None and cfg.reward.label_noise == 0.4
    assert STAGES["reward_model"].params_of(cfg) == ("seed", "reward", "model", "data", "rank")
