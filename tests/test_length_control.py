"""The length-controlled win rate against values worked out by hand.

With only two length differences, ±d, the fitted model has one free probability per side, so the maximum-likelihood
fit reproduces each side's observed win rate p₊ and p₋ and θ = (logit p₊ + logit p₋) / 2.
"""

from __future__ import annotations

import math

import pytest

from alignloop.methods.length_control import length_controlled_win_rate, length_feature
from alignloop.tasks.benchmark import outcomes, win_rate


def _table(longer: int, longer_wins: int, shorter: int, shorter_wins: int) -> tuple[list, list, list]:
    """Outcomes and lengths: `longer` prompts answered 5 tokens longer than the baseline, `shorter` 5 shorter."""
    wins = [1.0] * longer_wins + [0.0] * (longer - longer_wins)
    wins += [1.0] * shorter_wins + [0.0] * (shorter - shorter_wins)
    policy = [15] * longer + [5] * shorter
    return wins, policy, [10] * (longer + shorter)


def test_a_policy_that_only_got_longer_gets_half():
    """The judge prefers the longer answer 4 times in 5 whichever model wrote it; the policy is longer on 3/4 of the
    prompts, so its raw win rate is 0.75·0.8 + 0.25·0.2 = 0.65, but at equal length it is no better: ½."""
    wins, policy, baseline = _table(longer=60, longer_wins=48, shorter=20, shorter_wins=4)
    assert sum(wins) / len(wins) == pytest.approx(0.65)
    assert length_controlled_win_rate(wins, policy, baseline) == pytest.approx(0.5, abs=1e-3)


def test_a_better_policy_keeps_its_advantage():
    """Longer answers win 9 in 10, shorter ones 1 in 2: θ = (ln 9 + 0)/2 = ln 3, so σ(θ) = 3/4."""
    wins, policy, baseline = _table(longer=40, longer_wins=36, shorter=40, shorter_wins=20)
    assert length_controlled_win_rate(wins, policy, baseline) == pytest.approx(0.75, abs=1e-3)


def test_a_worse_but_longer_policy_is_shown_worse():
    """Longer answers win 1 in 2, shorter ones 1 in 10: θ = (0 − ln 9)/2, σ(θ) = 1/4, below the raw 0.4."""
    wins, policy, baseline = _table(longer=60, longer_wins=30, shorter=20, shorter_wins=2)
    assert sum(wins) / len(wins) == pytest.approx(0.4)
    assert length_controlled_win_rate(wins, policy, baseline) == pytest.approx(0.25, abs=1e-3)


def test_equal_lengths_give_the_raw_win_rate_and_ties_count_half():
    scores, baseline_scores = [0.9, 0.5, 0.5, 0.1, 0.7], [0.1, 0.5, 0.5, 0.3, 0.2]
    assert outcomes(scores, baseline_scores) == [1.0, 0.5, 0.5, 0.0, 1.0]
    assert win_rate(scores, baseline_scores) == pytest.approx(0.6)
    lengths = [7] * 5
    assert list(length_feature(lengths, lengths)) == [0.0] * 5
    lc = length_controlled_win_rate(outcomes(scores, baseline_scores), lengths, lengths)
    assert lc == pytest.approx(0.6, abs=1e-3)


def test_the_length_feature_is_tanh_of_the_standardised_difference():
    feature = length_feature([12, 8], [10, 10])  # differences ±2, standard deviation 2
    assert list(feature) == pytest.approx([math.tanh(1.0), math.tanh(-1.0)])


def test_empty_and_mismatched_inputs():
    assert math.isnan(length_controlled_win_rate([], [], []))
    with pytest.raises(ValueError, match="one entry per prompt"):
        length_controlled_win_rate([1.0, 0.0], [3, 4], [3])
