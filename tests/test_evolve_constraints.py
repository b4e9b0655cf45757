"""eva's creator on verifiable prompts (`evolve.evolver: constraints`): one more constraint or one swapped for another
type, drawn toward the types the policy breaks, every variant checkable, its lineage on the row."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from real_kit import skip_module_without_checkers

skip_module_without_checkers()

from row_helpers import sample_row, score_row  # noqa: E402

from alignloop.config import ConfigError, parse_config  # noqa: E402
from alignloop.io import write_jsonl  # noqa: E402
from alignloop.paths import Layout  # noqa: E402
from alignloop.tasks.evolve import constraint_candidates, mean_difficulty, type_failure_rates  # noqa: E402
from alignloop.verifiers.checkers import (  # noqa: E402
    _conflicts,
    check_response,
    constrained_prompt,
    draw_constraints,
    evolve_constraints,
    rebuilt_constraints,
)

IDS = ["punctuation:no_comma", "change_case:english_lowercase", "change_case:english_capital",
       "startend:end_checker", "detectable_content:postscript", "keywords:existence"]


def _prompt(seed: int, count: int = 1):
    return draw_constraints("ifeval", IDS, count, count, seed=seed)


def test_add_constraint_appends_one_compatible_verifiable_constraint() -> None:
    for seed in range(30):
        start = _prompt(seed)
        evolved = evolve_constraints("ifeval", start, IDS, "add_constraint", {}, max_count=3, seed=seed)
        assert evolved is not None and evolved[:1] == start and len(evolved) == 2
        new = evolved[1].instruction_id
        assert new != start[0].instruction_id and new in IDS
        conflicts = _conflicts("ifeval")
        assert new not in conflicts.get(start[0].instruction_id, set())
        assert start[0].instruction_id not in conflicts.get(new, set())
        # the row's ids and kwargs rebuild the same prompt, and the checkers can judge a response to it
        rebuilt = rebuilt_constraints("ifeval", [c.instruction_id for c in evolved], [c.kwargs for c in evolved])
        assert constrained_prompt("Name a fruit.", rebuilt) == constrained_prompt("Name a fruit.", evolved)
        assert len(check_response("ifeval", [c.instruction_id for c in evolved], [c.kwargs for c in evolved],
                                  "an apple")) == 2


def test_swap_keeps_the_count_and_changes_the_type() -> None:
    for seed in range(30):
        start = _prompt(seed, 2)
        evolved = evolve_constraints("ifeval", start, IDS, "swap_constraint", {}, max_count=3, seed=seed)
        assert evolved is not None and len(evolved) == 2
        assert {c.instruction_id for c in evolved} != {c.instruction_id for c in start}
        assert len({c.instruction_id for c in evolved}) == 2


def test_operators_are_reproducible_and_stop_at_the_limit() -> None:
    start = _prompt(3, 2)
    first = evolve_constraints("ifeval", start, IDS, "add_constraint", {}, max_count=3, seed=11)
    assert first == evolve_constraints("ifeval", start, IDS, "add_constraint", {}, max_count=3, seed=11)
    assert evolve_constraints("ifeval", start, IDS, "add_constraint", {}, max_count=2, seed=11) is None
    only = [c for c in _prompt(5) if c.instruction_id == IDS[0]] or _prompt(5)
    assert evolve_constraints("ifeval", only, [only[0].instruction_id], "add_constraint", {}, 3, seed=1) is None


def test_new_types_follow_the_failure_weights() -> None:
    """A type the policy always breaks is drawn far more often than one it always follows."""
    weights = {iid: 0.0 for iid in IDS} | {"startend:end_checker": 1.0, "keywords:existence": 0.05}
    picks = Counter()
    for seed in range(400):
        start = _prompt(seed)
        if start[0].instruction_id in ("startend:end_checker", "keywords:existence"):
            continue  # both are open to every other start
        evolved = evolve_constraints("ifeval", start, IDS, "add_constraint", weights, max_count=3, seed=seed)
        picks[evolved[-1].instruction_id] += 1
    assert picks["startend:end_checker"] > 8 * picks["keywords:existence"] > 0  # 20 to 1 expected
    assert sum(count for iid, count in picks.items() if weights[iid] == 0.0) < 0.02 * sum(picks.values())


def _row(prompt_id: str, base: str, constraints) -> dict:
    return {"prompt_id": prompt_id, "prompt": constrained_prompt(base, constraints), "base_prompt": base,
            "source_id": "r1", "constraint_family": "ifeval",
            "instruction_id_list": [c.instruction_id for c in constraints], "kwargs": [c.kwargs for c in constraints]}


def test_candidates_keep_the_user_prompt_and_record_lineage(tmp_path: Path) -> None:
    cfg = parse_config({"data": {"sharegpt": {}, "constraints": {"train": {"ids": IDS}}}, "sft": {"enabled": False},
                        "rank": {"ranker": "verifier"},
                        "evolve": {"enabled": True, "evolver": "constraints", "variants_per_seed": 3}})
    layout = Layout(tmp_path)
    lower = [c for c in draw_constraints("ifeval", ["change_case:english_lowercase"], 1, 1, seed=0)]
    rows = [_row("p1", "Describe a cat.", lower), _row("p2", "Describe a dog.", _prompt(7))]
    write_jsonl(layout.prompts(1), rows)
    english = "the cat sat on the warm mat by the window and purred softly all afternoon."
    write_jsonl(layout.samples(1), [sample_row("p1", 0, english), sample_row("p2", 0, "A DOG")])
    rates = type_failure_rates(rows[:1], [{"prompt_id": "p1", "response": english},
                                          {"prompt_id": "p1", "response": english.upper()}], "ifeval")
    assert rates == {"change_case:english_lowercase": 0.5}  # followed once, broken once
    candidates, failed = constraint_candidates(cfg, layout, [(rows[0], 1.0), (rows[1], 0.5)], 1, random.Random(0))
    assert len(candidates) == 6 and not failed
    for row in candidates:
        parent = rows[0] if row["parent_id"] == "p1" else rows[1]
        assert row["base_prompt"] == parent["base_prompt"] and row["prompt"].startswith(parent["base_prompt"])
        assert row["operator"] in ("add_constraint", "swap_constraint") and row["born"] == 1
        assert row["prompt"] == constrained_prompt(row["base_prompt"], rebuilt_constraints(
            "ifeval", row["instruction_id_list"], row["kwargs"]))
        if row["operator"] == "add_constraint":
            assert row["instruction_id_list"][:-1] == parent["instruction_id_list"]
    assert mean_difficulty(candidates)["constraints"] >= mean_difficulty(rows)["constraints"]


def test_the_constraints_evolver_needs_verifiable_prompts() -> None:
    with pytest.raises(ConfigError, match=r"^evolve\.evolver: constraints evolves"):
        parse_config({"evolve": {"enabled": True, "evolver": "constraints"}})


class _CountingTokenizer:
    """Four characters a token: enough for the evolve stage's prompt-length check."""

    def apply_chat_template(self, messages, **kwargs):
        return list(range(len(messages[0]["content"]) // 4 + 2))


def test_the_evolve_stage_writes_verifiable_prompts_with_lineage_and_no_eval_prompt(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    from alignloop.io import read_json, read_jsonl
    from alignloop.tasks import evolve

    cfg = parse_config({"data": {"sharegpt": {}, "constraints": {"train": {"ids": IDS}}}, "sft": {"enabled": False},
                        "rank": {"ranker": "verifier"}, "iterations": 2, "sample": {"num_prompts": 8},
                        "evolve": {"enabled": True, "evolver": "constraints", "seed_fraction": 0.5}})
    layout = Layout(tmp_path)
    rows = [_row(f"p{k}", f"Tell me about topic number {k}.", _prompt(k)) for k in range(8)]
    write_jsonl(layout.prompts(1), rows)
    write_jsonl(layout.samples(1), [sample_row(row["prompt_id"], j, text)
                                    for row in rows for j, text in enumerate(["fine.", "FINE, THANKS"])])
    write_jsonl(layout.scores(1), [score_row(row["prompt_id"], j, float(j == k % 2))
                                   for k, row in enumerate(rows) for j in range(2)])
    evolved_eval = rows[0] | {"prompt_id": "e0"}  # an evaluation prompt a variant could hit: refused
    for split in ("in_distribution", "unseen_types", "no_constraint"):
        write_jsonl(layout.eval_prompts(split), [evolved_eval] if split == "in_distribution" else [])
    monkeypatch.setattr(evolve, "load_tokenizer", lambda *args, **kwargs: _CountingTokenizer())
    evolve.run_evolve(cfg, layout, 1)
    next_rows = read_jsonl(layout.next_prompts(1))
    stats = read_json(layout.evolve_stats(1))
    assert len(next_rows) == 8 and stats["evolved"] >= 1 and stats["current_constraints"] == 1.0
    assert stats["next_constraints"] == sum(len(row["instruction_id_list"]) for row in next_rows) / 8 > 1.0
    for row in next_rows:
        assert row["prompt"] != evolved_eval["prompt"] and row["operator"] in ("pool", "add_constraint",
                                                                                "swap_constraint")
        assert row["prompt"] == constrained_prompt(row["base_prompt"], rebuilt_constraints(
            "ifeval", row["instruction_id_list"], row["kwargs"]))
        if row["operator"] != "pool":
            assert row["parent_id"] in {r["prompt_id"] for r in rows} and row["born"] == 1
