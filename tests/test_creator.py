"""eva's creator, pure part: informativeness by hand, weighted selection frequencies, validation, mixing."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from alignloop.methods.creator import (
    greedy_topk,
    informativeness,
    min_max_normalise,
    mix,
    select_seeds,
    validate,
    weighted_sample,
)

CHI2_DF4_P001 = 18.467  # chi-square critical value, 4 degrees of freedom, p = 0.001


@pytest.mark.parametrize("metric, expected", [
    ("max_min", 0.9 - 0.2), ("max_mean", 0.9 - 0.5), ("mean", 0.5), ("inverse_mean", 0.5),
    ("variance", ((0.2 - 0.5) ** 2 + 0 + (0.9 - 0.5) ** 2 + (0.4 - 0.5) ** 2) / 4),
])
def test_informativeness_by_hand(metric, expected):
    assert informativeness([0.2, 0.5, 0.9, 0.4], metric) == pytest.approx(expected)


def test_min_max_normalise():
    assert min_max_normalise([2.0, 4.0, 3.0]) == [0.0, 1.0, 0.5]
    assert min_max_normalise([0.3, 0.3]) == [1.0, 1.0]  # no signal: every prompt equally likely


def test_single_draws_follow_the_weights():
    weights, draws = [0.0, 1.0, 2.0, 3.0, 4.0], 20_000
    rng = random.Random(0)
    counts = Counter(weighted_sample(weights, 1, rng)[0] for _ in range(draws))
    assert counts[0] == 0
    expected = [draws * w / sum(weights) for w in weights[1:]]
    chi2 = sum((counts[k + 1] - e) ** 2 / e for k, e in enumerate(expected))
    assert chi2 < CHI2_DF4_P001
    # and a biased sampler would fail it: uniform picks give a statistic in the thousands
    uniform = [draws / 4] * 4
    assert sum((u - e) ** 2 / e for u, e in zip(uniform, expected)) > 100 * CHI2_DF4_P001


def test_draws_without_replacement_match_sequential_inclusion_probabilities():
    weights, k, draws = [1.0, 2.0, 3.0, 4.0], 2, 20_000
    total = sum(weights)
    # P(i in sample) = P(i first) + Σ_j≠i P(j first) · w_i / (W − w_j)
    exact = [w / total + sum(wj / total * w / (total - wj) for j, wj in enumerate(weights) if j != i)
             for i, w in enumerate(weights)]
    rng = random.Random(1)
    counts = Counter()
    for _ in range(draws):
        picked = weighted_sample(weights, k, rng)
        assert len(set(picked)) == k
        counts.update(picked)
    for i, p in enumerate(exact):
        assert counts[i] / draws == pytest.approx(p, abs=0.015)


def test_zero_weights_only_fill_in_when_positive_ones_run_out():
    rng = random.Random(2)
    for _ in range(50):
        picked = weighted_sample([0.0, 5.0, 0.0, 1.0], 3, rng)
        assert set(picked[:2]) == {1, 3} and picked[2] in (0, 2)
    with pytest.raises(ValueError):
        weighted_sample([1.0, -1.0], 1, rng)


def test_greedy_topk_and_seed_counts():
    assert greedy_topk([0.1, 0.9, 0.5, 0.9], 3) == [1, 3, 2]
    scores = [k / 100 for k in range(100)]
    assert len(select_seeds(scores, 0.25, "weighted", random.Random(0))) == 25
    assert select_seeds(scores, 0.25, "greedy_topk", random.Random(0)) == list(range(99, 74, -1))
    assert len(select_seeds([0.5, 0.2], 0.1, "weighted", random.Random(0))) == 1  # at least one seed
    # weighted seeds lean informative but are not the top-k
    weighted = select_seeds(scores, 0.25, "weighted", random.Random(0))
    assert sum(weighted) / 25 > sum(range(100)) / 100 and sorted(weighted) != list(range(75, 100))


def _validate(rows, **overrides):
    kwargs = {"buffer_prompts": {"reverse: ab"}, "eval_prompts": {"sort: cab"},
              "prompt_tokens": len, "max_prompt_tokens": 20,
              "solvable": lambda row: None if row.get("answer") else "no answer"}
    return validate(rows, **(kwargs | overrides))


def test_validation_rejects_each_bad_kind_and_names_why():
    rows = [{"prompt": "  ", "answer": "x"}, {"prompt": "reverse: ab", "answer": "ba"},
            {"prompt": "sort: cab", "answer": "abc"}, {"prompt": "uppercase: " + "a" * 20, "answer": "A" * 20},
            {"prompt": "shift: ab", "answer": ""}, {"prompt": "shift: ab ", "answer": "bc"},
            {"prompt": "shift: ab", "answer": "bc"}]
    result = _validate(rows)
    assert [row["prompt"] for row in result.accepted] == ["shift: ab"]
    assert result.rejected == Counter({"empty": 1, "duplicate": 2, "equals an evaluation prompt": 1,
                                       "too long": 1, "no answer": 1})


def test_leakage_guard_never_lets_an_evaluation_prompt_through():
    eval_prompts = {f"reverse: a{k}" for k in range(30)}
    rows = [{"prompt": prompt, "answer": "x"} for prompt in sorted(eval_prompts)] + [{"prompt": "reverse: zz9",
                                                                                       "answer": "9zz"}]
    result = _validate(rows, eval_prompts=eval_prompts)
    assert [row["prompt"] for row in result.accepted] == ["reverse: zz9"]
    assert result.rejected["equals an evaluation prompt"] == 30


def test_mix_keeps_the_size_and_the_evolved_share():
    evolved = [{"prompt": f"e{k}"} for k in range(100)]
    buffer = [{"prompt": f"b{k}"} for k in range(50)]
    rows, from_buffer = mix(evolved, buffer, 40, 0.8, random.Random(0))
    assert len(rows) == 40 and from_buffer == 8
    assert sum(row["prompt"].startswith("e") for row in rows) == 32
    assert len({row["prompt"] for row in rows}) == 40
    # a shortfall of evolved prompts is filled from the buffer
    rows, from_buffer = mix(evolved[:5], buffer, 40, 0.8, random.Random(0))
    assert len(rows) == 40 and from_buffer == 35
    # an empty buffer cannot pad: the set is what there is
    rows, from_buffer = mix(evolved[:5], [], 40, 0.8, random.Random(0))
    assert len(rows) == 5 and from_buffer == 0
