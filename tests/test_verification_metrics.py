"""IFEval's four accuracies and the per-type table, computed by hand on made-up verdicts."""

from __future__ import annotations

import math

import pytest

from alignloop.verifiers.metrics import (
    accuracy_by_type,
    followed_fraction,
    ifeval_accuracies,
    verification_metrics,
)

# (strict, loose) per constraint, for three responses: 2 of 2 followed; 1 of 2 strictly, 2 of 2 loosely; 0 of 1.
RESPONSES = [[(True, True), (True, True)], [(True, True), (False, True)], [(False, False)]]


def test_followed_fraction_is_the_strict_share_and_nan_without_constraints() -> None:
    assert followed_fraction(RESPONSES[1]) == 0.5
    assert followed_fraction([(False, True)]) == 0.0
    assert math.isnan(followed_fraction([]))


def test_prompt_and_instruction_level_accuracies_by_hand() -> None:
    accuracies = ifeval_accuracies(RESPONSES + [[]])  # a response without constraints counts nowhere
    assert accuracies["prompt_strict"] == pytest.approx(1 / 3)  # only the first follows everything strictly
    assert accuracies["prompt_loose"] == pytest.approx(2 / 3)
    assert accuracies["instruction_strict"] == pytest.approx(3 / 5)
    assert accuracies["instruction_loose"] == pytest.approx(4 / 5)
    assert ifeval_accuracies([[], []]) == {}


def test_a_set_without_constraints_has_no_verification_metrics() -> None:
    assert verification_metrics("no_constraint", [[], []], [[[]], [[]]]) == {}
    metrics = verification_metrics("in_distribution", RESPONSES, [[checks, [(True, True)]] for checks in RESPONSES])
    assert metrics["in_distribution/prompt_strict"] == pytest.approx(1 / 3)
    assert metrics["in_distribution/sampled_prompt_strict"] == pytest.approx(4 / 6)


def test_accuracy_by_type_counts_greedy_strict_verdicts_per_instruction() -> None:
    rows = [{"instruction_id_list": ["a", "b"], "greedy_checks": [[True, True], [False, True]]},
            {"instruction_id_list": ["a"], "greedy_checks": [[False, False]]},
            {"instruction_id_list": [], "greedy_checks": []}]
    assert accuracy_by_type(rows) == {"a": (1, 2), "b": (0, 1)}
