"""Native PairRM against the original llm-blender implementation's recorded logits (scripts/pairrm_reference.py).

tests/data/pairrm_tiny is a random tiny PairRM saved in the PairRM-hf format by the original class; the JSON holds
the model card's `tokenize_pair` ids and the original `DebertaV2PairRM` logits for each (prompt, A, B).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from alignloop.config import ConfigError
from alignloop.errors import NonFiniteError
from alignloop.models.pairrm import PairRMRanker, check_pairrm, format_pair, scores_from_matrix

DATA = Path(__file__).parent / "data"
CHECKPOINT = DATA / "pairrm_tiny"
RECORDED = json.loads((DATA / "pairrm_tiny_logits.json").read_text())["cases"]
PROMPTS = [{"prompt_id": "p1", "prompt": "what is two plus two?"}, {"prompt_id": "p2", "prompt": "write a poem"}]
RESPONSES = [["four", "two plus two is four.", "five", ""], ["roses are red", "no", "a poem about python", "hi"]]


@pytest.fixture(scope="module")
def ranker() -> PairRMRanker:
    return PairRMRanker(CHECKPOINT, device="cpu", batch_size=7)


def native_logits(ranker: PairRMRanker, sequences: list[list[int]]) -> list[float]:
    """Raw logits of already formatted ids, in chunks of 7 ordered by length (the long cases batch together)."""
    order = sorted(range(len(sequences)), key=lambda index: len(sequences[index]))
    logits = [0.0] * len(sequences)
    for start in range(0, len(order), 7):
        chunk = order[start:start + 7]
        items = [(sequences[i], [sequences[i].index(p) for p in ranker.prefix_ids]) for i in chunk]
        for index, value in zip(chunk, ranker.forward_batch(items)):
            logits[index] = value
    return logits


def test_format_pair_matches_the_model_card(ranker):
    for case in RECORDED:
        ids = format_pair(ranker.tokenizer, case["prompt"], case["a"], case["b"], case["source_max_length"],
                          case["max_length"])
        assert ids == case["input_ids"], case["prompt"][:40]
    assert any(len(case["input_ids"]) == case["max_length"] for case in RECORDED)  # truncation was exercised


def test_logits_match_the_original(ranker):
    native = native_logits(ranker, [case["input_ids"] for case in RECORDED])
    recorded = [case["logit"] for case in RECORDED]
    assert max(abs(x - y) for x, y in zip(native, recorded)) < 1e-5
    assert max(recorded) - min(recorded) > 0.5  # the recorded logits are spread out, not all ≈ 0


def test_compare_averages_both_orders(ranker):
    cases = [case for case in RECORDED if case["max_length"] == 2048][:6]
    prompts, a, b = ([case[key] for case in cases] for key in ("prompt", "a", "b"))
    forward, backward = ranker.compare(prompts, a, b), ranker.compare(prompts, b, a)
    assert forward == [-value for value in backward]
    swapped = native_logits(ranker, [format_pair(ranker.tokenizer, p, y, x) for p, x, y in zip(prompts, a, b)])
    for value, case, reverse in zip(forward, cases, swapped):
        assert value == pytest.approx((case["logit"] - reverse) / 2, abs=1e-5)


def test_score_from_a_hand_built_matrix():
    matrix = torch.tensor([[0.0, 1.0, 2.0], [-1.0, 0.0, 0.5], [3.0, 0.0, 0.0]])
    # s_i = mean_{j≠i} (C_ij − C_ji): s_0 = (2 − 1) / 2, s_1 = (−2 + 0.5) / 2, s_2 = (1 − 0.5) / 2
    assert scores_from_matrix(matrix) == pytest.approx([0.5, -0.75, 0.25])
    assert scores_from_matrix(torch.zeros(1, 1)) == [0.0]


def test_score_uses_the_comparison_matrix(ranker):
    scores = ranker.score(PROMPTS, RESPONSES)
    matrix = ranker.comparison_matrix(PROMPTS[0]["prompt"], RESPONSES[0])
    assert matrix.shape == (4, 4) and torch.all(matrix.diagonal() == 0)
    ids = format_pair(ranker.tokenizer, PROMPTS[0]["prompt"], RESPONSES[0][1], RESPONSES[0][2])
    assert matrix[1, 2].item() == pytest.approx(native_logits(ranker, [ids])[0], abs=1e-5)
    assert scores[0] == pytest.approx(scores_from_matrix(matrix), abs=1e-5)
    assert sum(scores[1]) == pytest.approx(0.0, abs=1e-5)  # every margin is counted once each way
    assert ranker.score([PROMPTS[0]], [["alone"]]) == [[0.0]]


def test_batch_size_does_not_change_scores(ranker):
    ranker.batch_size = 1
    try:
        one = ranker.score(PROMPTS, RESPONSES)
    finally:
        ranker.batch_size = 7
    seven = ranker.score(PROMPTS, RESPONSES)
    for row_one, row_seven in zip(one, seven):
        assert row_one == pytest.approx(row_seven, abs=1e-5)


def test_prefix_text_in_a_response_cannot_move_the_read_positions(ranker):
    ids, positions = ranker.encode("say <|candidate2|>", "<|source|> twice <|source|>", "ok")
    segments = [ids.index(ranker.prefix_ids[1]), len(ids) - 1 - ids[::-1].index(ranker.prefix_ids[2])]
    assert positions == [1, segments[0], segments[1]]
    assert math.isfinite(ranker.forward_batch([(ids, positions)])[0])


def test_non_finite_logits_name_the_prompt(ranker, monkeypatch):
    monkeypatch.setattr(ranker, "forward_batch", lambda items: [float("nan")] * len(items))
    with pytest.raises(NonFiniteError, match="non-finite.*prompt p1"):
        ranker.score(PROMPTS, RESPONSES)


def test_check_pairrm(tmp_path):
    check_pairrm(CHECKPOINT)  # the recorded checkpoint passes
    with pytest.raises(ConfigError) as missing:
        check_pairrm(tmp_path / "nowhere", "rank.pairrm")
    broken = tmp_path / "broken"
    shutil.copytree(CHECKPOINT, broken)
    config = json.loads((broken / "config.json").read_text())
    del config["source_prefix_id"], config["cand1_prefix_id"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError) as lacking:
        check_pairrm(broken, "rank.pairrm")
    for error in (missing.value, lacking.value):
        assert str(error).startswith("rank.pairrm: ") and "\n" not in str(error)
    assert "no such directory" in str(missing.value)
    assert "source_prefix_id, cand1_prefix_id" in str(lacking.value) and "cand2" not in str(lacking.value)
