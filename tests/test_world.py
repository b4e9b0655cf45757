"""The instruction world (alignloop/testbed/world.py) and the testbed data it generates (alignloop/testbed/data.py)."""

from __future__ import annotations

from statistics import mean

import pytest

from alignloop.config import TestbedConfig as BedConfig  # not Test*: pytest would try to collect it
from alignloop.testbed.data import build_testbed_data
from alignloop.testbed.world import HELD_OUT_PAIRS, SKILLS, Distribution, sample_tasks, solve

EVAL_SPLITS = ("eval/in_distribution", "eval/harder", "eval/unseen_composition")


@pytest.mark.parametrize(("skill", "text", "expected"), [
    ("reverse", "ab1c", "c1ba"),
    ("upper", "ab1c", "AB1C"),
    ("sort", "cb1a", "1abc"),  # digits sort before letters
    ("sort", "zz9a0", "09azz"),
    ("shift", "amz", "bna"),  # z wraps to a
    ("shift", "09", "10"),  # 9 wraps to 0
    ("shift", "az09m", "ba10n"),
    ("digits", "a1b2c3", "123"),
    ("digits", "abc", ""),
    ("letters", "a1b2c3", "abc"),
    ("double", "ab1", "aabb11"),
    ("swap", "abcd", "dbca"),
    ("swap", "ab", "ba"),
    ("swap", "a", "a"),
])
def test_skill_apply(skill, text, expected):
    assert SKILLS[skill].apply(text) == expected


def test_every_skill_is_covered():
    assert set(SKILLS) == {"reverse", "upper", "sort", "shift", "digits", "letters", "double", "swap"}


def test_solve_composes_left_to_right():
    # swap then sort: "cab" -> "bac" -> "abc"; sort then swap: "cab" -> "abc" -> "cba".
    assert solve(("swap", "sort"), "cab") == "abc"
    assert solve(("sort", "swap"), "cab") == "cba"
    # "abz9" -> shift "bca0" -> reverse "0acb" -> swap ends "bac0"
    assert solve(("shift", "reverse", "swap"), "abz9") == "bac0"
    # "a9b1" -> digits "91" -> double "9911"
    assert solve(("digits", "double"), "a9b1") == "9911"
    assert solve((), "abc") == "abc"


def test_sample_tasks_are_distinct_and_solved():
    dist = Distribution(3, 7, (0.5, 0.3, 0.2))
    tasks = sample_tasks(dist, 200, seed=5)
    assert len(tasks) == 200
    assert len({task.prompt for task in tasks}) == 200
    for task in tasks:
        assert task.answer == solve(task.skills, task.input)
        assert task.answer and task.answer != task.input  # copying the input earns no full credit
        assert 3 <= len(task.input) <= 7
        assert task.depth == len(task.skills) and 1 <= task.depth <= 3
        assert task.input in task.prompt


def test_sample_tasks_respects_exclude_and_seed():
    dist = Distribution(3, 5, (1.0,))
    first = sample_tasks(dist, 30, seed=1)
    again = sample_tasks(dist, 30, seed=1)
    assert [t.prompt for t in first] == [t.prompt for t in again]
    excluded = {t.prompt for t in first[:10]}
    others = sample_tasks(dist, 30, seed=1, exclude=excluded)
    assert not excluded & {t.prompt for t in others}


def _adjacent_pairs(skills):
    return set(zip(skills, skills[1:]))


def test_unseen_composition_uses_only_held_out_pairs(small_testbed_data):
    rows = small_testbed_data["eval/unseen_composition"]
    assert len(rows) == 50
    for row in rows:
        assert row["depth"] == 2
        assert tuple(row["skills"]) in HELD_OUT_PAIRS
        assert row["answer"] == solve(tuple(row["skills"]), row["input"])


def test_training_never_composes_held_out_pairs(small_testbed_data):
    for name in ("sft", "train_prompts", "eval/in_distribution", "eval/harder"):
        for row in small_testbed_data[name]:
            assert not _adjacent_pairs(tuple(row["skills"])) & HELD_OUT_PAIRS, (name, row)


def test_no_evaluation_prompt_leaks_into_training(small_testbed_data):
    eval_prompts = {row["prompt"] for split in EVAL_SPLITS for row in small_testbed_data[split]}
    assert len(eval_prompts) == 150  # the three splits are disjoint too
    training = {row["prompt"] for name in ("sft", "train_prompts") for row in small_testbed_data[name]}
    assert not eval_prompts & training


def test_row_counts_and_answers(small_testbed_data):
    assert {name: len(rows) for name, rows in small_testbed_data.items()} == {
        "eval/in_distribution": 50, "eval/harder": 50, "eval/unseen_composition": 50,
        "train_prompts": 300, "sft": 200}
    assert [row["pool_index"] for row in small_testbed_data["train_prompts"]] == list(range(300))
    assert len({row["prompt"] for row in small_testbed_data["train_prompts"]}) == 300
    for rows in small_testbed_data.values():
        for row in rows:
            assert row["answer"] == solve(tuple(row["skills"]), row["input"])
    for row in small_testbed_data["sft"]:
        assert (row["response"].split(" ")[0] != row["answer"]) == row["corrupted"]


def test_build_testbed_data_is_deterministic(small_testbed_config, small_testbed_data):
    assert build_testbed_data(small_testbed_config, seed=0) == small_testbed_data
    other = build_testbed_data(small_testbed_config, seed=1)
    for name in small_testbed_data:
        assert other[name] != small_testbed_data[name], name


def test_harder_split_is_deeper(small_testbed_config, small_testbed_data):
    harder = mean(row["depth"] for row in small_testbed_data["eval/harder"])
    in_distribution = mean(row["depth"] for row in small_testbed_data["eval/in_distribution"])
    assert harder > in_distribution
    assert min(row["depth"] for row in small_testbed_data["eval/harder"]) == 2  # weights (0, 0.5, 0.5)
    assert max(row["depth"] for row in small_testbed_data["eval/harder"]) == 3
    assert max(len(row["input"]) for row in small_testbed_data["eval/harder"]) <= small_testbed_config.harder_max_length
    longest = max(len(row["input"]) for row in small_testbed_data["eval/in_distribution"])
    assert longest <= small_testbed_config.max_length


def test_config_lengths_reach_the_data():
    cfg = BedConfig(min_length=4, max_length=4, sft_examples=20, prompt_pool_size=20, eval_size=10)
    data = build_testbed_data(cfg, seed=3)
    assert {len(row["input"]) for row in data["train_prompts"]} == {4}
    assert {len(row["input"]) for row in data["sft"]} == {4}
