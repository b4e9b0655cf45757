"""Pair building (alignloop/tasks/rank.py): best vs worst, first on ties, all-tied prompts dropped."""

from __future__ import annotations

import random

import pytest
from row_helpers import sample_row

from alignloop.config import parse_config
from alignloop.io import read_json, read_jsonl, write_jsonl
from alignloop.methods.pairing import build_pairs, max_min
from alignloop.paths import Layout
from alignloop.tasks.rank import run_rank


def best_vs_worst(samples: list[dict], scores: list[float]) -> tuple[int, int] | None:
    """The max_min rule's one pair as (chosen, rejected) positions; None when all tie or fewer than two."""
    picks = max_min(scores, 0.0, random.Random(0))
    return picks[0] if picks else None


def _samples(prompt_id: str, responses: list[str], finished=lambda index: index % 2 == 0) -> list[dict]:
    return [sample_row(prompt_id, index, response, finished=finished(index))
            for index, response in enumerate(responses)]


def test_best_vs_worst_picks_max_and_min():
    samples = _samples("p", ["a", "b", "c", "d"])
    assert best_vs_worst(samples, [0.2, 0.9, 0.1, 0.5]) == (1, 2)


def test_best_vs_worst_all_tied_is_none():
    assert best_vs_worst(_samples("p", ["a", "b", "c"]), [0.4, 0.4, 0.4]) is None
    assert best_vs_worst(_samples("p", ["a"]), [1.0]) is None


def test_best_vs_worst_first_index_on_ties():
    samples = _samples("p", ["a", "b", "c", "d", "e"])
    assert best_vs_worst(samples, [0.3, 0.9, 0.1, 0.9, 0.1]) == (1, 2)  # 1 and 3 tie for best, 2 and 4 for worst
    assert best_vs_worst(samples, [1.0, 1.0, 1.0, 1.0, 0.0]) == (0, 4)


def test_build_pairs_on_three_prompts():
    prompts = [{"prompt_id": "p1", "prompt": "reverse abc"},
               {"prompt_id": "p2", "prompt": "sort cab"},
               {"prompt_id": "p3", "prompt": "uppercase ab"}]
    samples_by_prompt = {
        "p1": _samples("p1", ["cba", "cab", "abc ✓", "cba ✓"]),
        "p2": _samples("p2", ["abc", "abc", "abc", "abc"]),
        "p3": _samples("p3", ["Ab", "AB as requested", "AB", "ab"]),
    }
    scores_by_prompt = {
        "p1": [0.85, 0.5667, 0.2, 1.0],
        "p2": [0.85, 0.85, 0.85, 0.85],
        "p3": [0.425, 0.75, 0.85, 0.0],
    }
    pairs, dropped = build_pairs(prompts, samples_by_prompt, scores_by_prompt, drop_unfinished=False)
    assert dropped == {"all_tied": 1, "unfinished": 0, "below_gap": 0}
    assert len(pairs) == 2
    first, second = pairs
    assert first == {
        "pair_id": "p1-3-2", "prompt_id": "p1", "prompt": "reverse abc",
        "chosen": "cba ✓", "rejected": "abc ✓",
        "chosen_ids": [ord(c) for c in "cba ✓"], "rejected_ids": [ord(c) for c in "abc ✓"],
        "chosen_finished": False, "rejected_finished": True,
        "chosen_score": 1.0, "rejected_score": 0.2,
        "chosen_index": 3, "rejected_index": 2,
    }
    assert second == {
        "pair_id": "p3-2-3", "prompt_id": "p3", "prompt": "uppercase ab",
        "chosen": "AB", "rejected": "ab",
        "chosen_ids": [65, 66], "rejected_ids": [97, 98],
        "chosen_finished": True, "rejected_finished": False,
        "chosen_score": 0.85, "rejected_score": 0.0,
        "chosen_index": 2, "rejected_index": 3,
    }
    # By default responses cut by max_new_tokens (odd indices here) are never paired: p1 pairs its finished 0 and
    # 2 (0.85 vs 0.2), and p3 keeps only 0 and 2 (0.425 vs 0.85).
    pairs, dropped = build_pairs(prompts, samples_by_prompt, scores_by_prompt)
    assert dropped == {"all_tied": 1, "unfinished": 0, "below_gap": 0}
    assert [(p["pair_id"], p["chosen_score"], p["rejected_score"]) for p in pairs] == [
        ("p1-0-2", 0.85, 0.2), ("p3-2-0", 0.85, 0.425)]
    assert all(p["chosen_finished"] and p["rejected_finished"] for p in pairs)


def test_a_prompt_with_fewer_than_two_finished_responses_is_dropped_and_counted():
    prompts = [{"prompt_id": "p", "prompt": "x"}]
    samples = {"p": _samples("p", ["a", "b", "c"], finished=lambda index: index == 1)}
    pairs, dropped = build_pairs(prompts, samples, {"p": [0.1, 0.5, 0.9]})
    assert pairs == [] and dropped == {"all_tied": 0, "unfinished": 1, "below_gap": 0}


def test_run_rank_with_gold_scorer(tmp_path):
    layout = Layout(tmp_path)
    prompts = [{"prompt_id": "p1", "prompt": "reverse abc", "answer": "cba"},
               {"prompt_id": "p2", "prompt": "sort cab", "answer": "abc"}]
    samples = _samples("p1", ["cba", "cbx", "cba ✓", "xyz"], lambda k: True) + _samples("p2", ["abc"] * 4)
    write_jsonl(layout.prompts(1), prompts)
    write_jsonl(layout.samples(1), reversed(samples))  # file order must not matter
    run_rank(parse_config({}), layout, 1)

    p1_scores = [0.85, 0.85 * 2 / 3, 1.0, 0.0]  # exact, one edit of three, exact + check, all wrong
    scores = read_jsonl(layout.scores(1))
    assert [(row["prompt_id"], row["sample_index"]) for row in scores] == (
        [("p1", k) for k in range(4)] + [("p2", k) for k in range(4)])
    assert [row["score"] for row in scores] == pytest.approx(p1_scores + [0.85] * 4)
    assert {row["ranker"] for row in scores} == {"gold"}

    pairs = read_jsonl(layout.pairs(1))
    assert len(pairs) == 1
    assert (pairs[0]["pair_id"], pairs[0]["chosen"], pairs[0]["rejected"]) == ("p1-2-3", "cba ✓", "xyz")
    assert (pairs[0]["chosen_score"], pairs[0]["rejected_score"]) == pytest.approx((1.0, 0.0))

    stats = read_json(layout.rank_stats(1))
    assert stats["prompts"] == 2 and stats["pairs"] == 1 and stats["dropped_all_tied"] == 1
    assert stats["dropped_unfinished"] == 0 and stats["unfinished_responses"] == 2
    assert stats["mean_sample_score"] == pytest.approx((sum(p1_scores) + 4 * 0.85) / 8)
    assert stats["mean_chosen_score"] == pytest.approx(1.0)
    assert stats["mean_rejected_score"] == pytest.approx(0.0)


# ---------------------------------------------------------------- pair rules (alignloop/methods/pairing.py)

def _pairs_of(rule: str, scores: list[float], min_gap: float = 0.0, seed: int = 0) -> list[tuple[int, int]]:
    samples = {"p": _samples("p", [f"r{k}" for k in range(len(scores))], finished=lambda index: True)}
    pairs, _ = build_pairs([{"prompt_id": "p", "prompt": "q"}], samples, {"p": scores}, rule=rule,
                           min_gap=min_gap, seed=seed)
    return [(pair["chosen_index"], pair["rejected_index"]) for pair in pairs]


def test_all_pairs_takes_every_pair_with_a_gap_above_the_minimum():
    scores = [0.5, 0.9, 0.5, 0.1]
    assert _pairs_of("all_pairs", scores) == [(0, 3), (1, 0), (1, 2), (1, 3), (2, 3)]  # the tie 0–2 is never paired
    assert _pairs_of("all_pairs", scores, min_gap=0.4) == [(1, 3)]  # 0.4 is not above 0.4: gaps must exceed it
    assert _pairs_of("all_pairs", [0.3, 0.3]) == []


def test_best_vs_random_pairs_the_best_with_a_seeded_lower_response():
    scores = [0.2, 0.9, 0.5, 0.1]
    picked = {_pairs_of("best_vs_random", scores, seed=seed)[0] for seed in range(40)}
    assert picked == {(1, 0), (1, 2), (1, 3)}  # every lower response is drawn, never the best itself
    assert _pairs_of("best_vs_random", scores, seed=7) == _pairs_of("best_vs_random", scores, seed=7)
    assert _pairs_of("best_vs_random", scores, min_gap=0.75) == [(1, 3)]  # only 0.9 − 0.1 exceeds 0.75


def test_max_min_respects_the_gap_and_counts_why_prompts_give_no_pair():
    assert _pairs_of("max_min", [0.2, 0.9, 0.5]) == [(1, 0)]
    assert _pairs_of("max_min", [0.2, 0.9, 0.5], min_gap=0.6) == [(1, 0)]
    assert _pairs_of("max_min", [0.2, 0.9, 0.5], min_gap=0.75) == []
    samples = {pid: _samples(pid, ["a", "b"], finished=lambda index: True) for pid in ("tied", "close", "ok")}
    prompts = [{"prompt_id": pid, "prompt": pid} for pid in samples]
    _, dropped = build_pairs(prompts, samples, {"tied": [0.5, 0.5], "close": [0.5, 0.6], "ok": [0.0, 1.0]},
                             min_gap=0.2)
    assert dropped == {"all_tied": 1, "unfinished": 0, "below_gap": 1}
