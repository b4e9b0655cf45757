"""The testbed's evolver: every evolved task's gold answer is right, in-depth operators raise difficulty, limits
and held-out compositions are respected, and prompts parse back into their tasks."""

from __future__ import annotations

import random
from statistics import mean

import pytest

from alignloop.testbed.evolution import (
    IN_BREADTH,
    IN_DEPTH,
    OPERATORS,
    Limits,
    difficulty,
    evolve_task,
    parse_task,
    task_from_row,
    unsolvable_reason,
)
from alignloop.testbed.world import HELD_OUT_PAIRS, SKILLS

LIMITS = Limits(max_depth=3, max_input_length=8)


def _reference_solve(skills, text):
    """An independent implementation of the skills, so the check does not reuse world.solve."""
    def shift(c):
        for alphabet in ("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789"):
            if c in alphabet:
                return alphabet[(alphabet.index(c) + 1) % len(alphabet)]
        return c

    ops = {"reverse": lambda s: s[::-1], "upper": lambda s: s.upper(), "sort": lambda s: "".join(sorted(s)),
           "shift": lambda s: "".join(map(shift, s)), "digits": lambda s: "".join(c for c in s if c.isdigit()),
           "letters": lambda s: "".join(c for c in s if not c.isdigit()),
           "double": lambda s: "".join(2 * c for c in s),
           "swap": lambda s: s[-1] + s[1:-1] + s[0] if len(s) > 1 else s}
    for name in skills:
        text = ops[name](text)
    return text


@pytest.fixture(scope="module")
def parents(small_testbed_data):
    return [task_from_row(row) for row in small_testbed_data["train_prompts"][:300]]


@pytest.mark.parametrize("operator", sorted(OPERATORS))
def test_every_evolved_task_has_the_right_answer_and_respects_the_limits(operator, parents):
    rng = random.Random(0)
    produced = 0
    for parent in parents:
        child = OPERATORS[operator](parent, LIMITS, rng)
        if child is None:
            continue
        produced += 1
        assert child.answer == _reference_solve(child.skills, child.input)
        assert parse_task(child.prompt) == child  # the prompt says exactly this task
        assert child.depth <= LIMITS.max_depth and len(child.input) <= max(LIMITS.max_input_length, len(parent.input))
        assert not set(zip(child.skills, child.skills[1:])) & HELD_OUT_PAIRS
        assert child.prompt != parent.prompt
    assert produced >= 50  # constrain applies only where a fresh input can be less copy-like


def _mean_change(operator, parents, measure):
    rng = random.Random(1)
    pairs = [(parent, OPERATORS[operator](parent, LIMITS, rng)) for parent in parents]
    pairs = [(p, c) for p, c in pairs if c is not None]
    return mean(difficulty(c)[measure] - difficulty(p)[measure] for p, c in pairs), pairs


def test_in_depth_operators_raise_difficulty(parents):
    change, pairs = _mean_change("lengthen", parents, "input_length")
    assert 1.0 <= change <= 2.0 and all(len(c.input) > len(p.input) for p, c in pairs)
    change, pairs = _mean_change("compose", parents, "depth")
    assert change == 1.0
    change, pairs = _mean_change("constrain", parents, "answer_distance")
    assert change > 0.1 and all(difficulty(c)["answer_distance"] > difficulty(p)["answer_distance"]
                                for p, c in pairs)


def test_in_breadth_operators_keep_difficulty_roughly(parents):
    for operator in IN_BREADTH:
        _, pairs = _mean_change(operator, parents, "depth")
        assert all(c.depth == p.depth and len(c.input) == len(p.input) for p, c in pairs)
    _, pairs = _mean_change("rephrase", parents, "depth")
    assert all(c.answer == p.answer and c.skills == p.skills for p, c in pairs)


def test_operators_stop_at_the_limits():
    deep = parse_task("sort, then uppercase, then shift: abcdefgh")
    assert deep is not None and deep.depth == 3
    rng = random.Random(0)
    assert OPERATORS["compose"](deep, LIMITS, rng) is None
    assert OPERATORS["lengthen"](deep, LIMITS, rng) is None  # input already at max_input_length


def test_evolution_mixes_families_by_probability(parents):
    rng = random.Random(3)
    operators = [evolve_task(parents[k % len(parents)], LIMITS, 0.75, rng)[0] for k in range(4000)]
    share = sum(op in IN_DEPTH for op in operators) / len(operators)
    assert share == pytest.approx(0.75, abs=0.03)


def test_parse_task_reads_every_training_prompt_and_rejects_other_text(small_testbed_data):
    for row in small_testbed_data["train_prompts"]:
        task = parse_task(row["prompt"])
        assert task is not None and task.answer == row["answer"] and list(task.skills) == row["skills"]
    for text in ("", "reverse:", "make it harder: ab", "reverse: a b", "reverse, then: ab", "Reverse: ab",
                 "reverse: ab✓"):
        assert parse_task(text) is None


def test_unsolvable_reasons():
    assert unsolvable_reason(parse_task("keep the digits: abc"), 20) == "empty answer"
    assert unsolvable_reason(parse_task("sort: abc"), 20) == "answer equals input"
    held_out = next(iter(sorted(HELD_OUT_PAIRS)))
    text = ", then ".join(SKILLS[name].verbs[0] for name in held_out) + ": ab3d"
    assert unsolvable_reason(parse_task(text), 20) == "disallowed composition"
    assert unsolvable_reason(parse_task("double: abcdef"), 10) == "answer too long"
    assert unsolvable_reason(parse_task("reverse: abc"), 20) is None
