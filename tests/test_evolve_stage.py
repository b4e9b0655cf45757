"""The `evolve` stage on a small project: the next prompt set's size, mix and lineage, the leakage guard, harder
prompts from in-depth operators, and the `llm` evolver end to end with a tiny random model."""

from __future__ import annotations

import logging

import pytest
from row_helpers import score_row

from alignloop.config import Config, ModelConfig
from alignloop.io import read_json, read_jsonl, write_jsonl
from alignloop.paths import EVAL_SPLITS, Layout
from alignloop.tasks import evolve
from alignloop.tasks.sample import iteration_prompts
from alignloop.testbed.evolution import parse_task
from alignloop.testbed.model import create_base_model
from alignloop.testbed.world import solve

NUM_PROMPTS = 40


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained model whose context fits the llm evolver's meta-prompts."""
    path = tmp_path_factory.mktemp("evolver") / "model"
    create_base_model(ModelConfig(n_layer=1, n_embd=16, n_head=2, max_length=160), 0, path)
    return path


def _config(**evolve_overrides) -> Config:
    return Config.model_validate({"model": {"n_layer": 1, "n_embd": 16, "n_head": 2},
                                  "sample": {"num_prompts": NUM_PROMPTS},
                                  "evolve": {"enabled": True, **evolve_overrides}})


def _project(tmp_path, data, model_dir) -> Layout:
    layout = Layout(tmp_path)
    for split in EVAL_SPLITS:
        write_jsonl(layout.eval_prompts(split), data[f"eval/{split}"])
    prompts = [{**row, "iteration": 1} for row in data["train_prompts"][:NUM_PROMPTS]]
    write_jsonl(layout.prompts(1), prompts)
    # prompt k's four rewards spread by k: later prompts are more informative under max_min
    write_jsonl(layout.scores(1), [score_row(row["prompt_id"], j, 0.5 + (j - 1.5) * k / 200)
                                   for k, row in enumerate(prompts) for j in range(4)])
    layout.policy(0).parent.mkdir(parents=True, exist_ok=True)
    layout.policy(0).symlink_to(model_dir, target_is_directory=True)
    return layout


def test_next_prompts_mix_evolved_and_buffer_with_lineage(tmp_path, small_testbed_data, tiny_model):
    layout = _project(tmp_path, small_testbed_data, tiny_model)
    evolve.run_evolve(_config(), layout, 1)
    rows, stats = read_jsonl(layout.next_prompts(1)), read_json(layout.evolve_stats(1))
    current = {row["prompt_id"]: row for row in read_jsonl(layout.prompts(1))}
    assert len(rows) == NUM_PROMPTS and len({row["prompt"] for row in rows}) == NUM_PROMPTS
    evolved = [row for row in rows if row["operator"] != "pool"]
    assert len(evolved) == stats["evolved"] == round(0.8 * NUM_PROMPTS)
    assert stats["seeds"] == 10 and 36 <= stats["candidates"] <= 40  # 4 variants per seed, a few given up on
    for row in evolved:
        assert row["born"] == 1 and row["parent_id"] in current
        assert row["prompt"] not in {r["prompt"] for r in current.values()}
        assert row["answer"] == solve(tuple(row["skills"]), row["input"]) and parse_task(row["prompt"]) is not None
    # seeds lean to the informative prompts (later ones here)
    parents = [list(current).index(row["parent_id"]) for row in evolved]
    assert sum(parents) / len(parents) > (NUM_PROMPTS - 1) / 2
    for row in rows:
        if row["operator"] == "pool":
            assert row["prompt_id"] in current and row["born"] == 1 and row["parent_id"] is None
    # iteration 2 samples exactly these prompts
    assert [r["prompt"] for r in iteration_prompts(_config(), layout, 2)] == [r["prompt"] for r in rows]


def test_in_depth_evolution_makes_harder_prompts(tmp_path, small_testbed_data, tiny_model):
    layout = _project(tmp_path, small_testbed_data, tiny_model)
    evolve.run_evolve(_config(in_depth_probability=1.0, evolved_fraction=1.0), layout, 1)
    stats = read_json(layout.evolve_stats(1))
    assert stats["next_input_length"] > stats["current_input_length"] + 0.3
    assert stats["next_depth"] > stats["current_depth"] + 0.1
    assert set(stats["operators"]) <= {"lengthen", "compose", "constrain"}


def test_leakage_guard_rejects_evolved_evaluation_prompts(tmp_path, small_testbed_data, tiny_model, monkeypatch):
    layout = _project(tmp_path, small_testbed_data, tiny_model)
    eval_tasks = [parse_task(row["prompt"]) for row in small_testbed_data["eval/in_distribution"]]
    leaks = iter(eval_tasks * 10)
    monkeypatch.setattr(evolve, "evolve_task", lambda task, limits, p, rng: ("rephrase", next(leaks)))
    evolve.run_evolve(_config(), layout, 1)
    rows, stats = read_jsonl(layout.next_prompts(1)), read_json(layout.evolve_stats(1))
    eval_prompts = {row["prompt"] for split in EVAL_SPLITS for row in small_testbed_data[f"eval/{split}"]}
    assert not {row["prompt"] for row in rows} & eval_prompts
    assert stats["rejected"]["equals an evaluation prompt"] == 40 and stats["valid"] == 0
    assert stats["from_buffer"] == NUM_PROMPTS and stats["evolved_shortfall"] == 32


def test_llm_evolver_with_a_tiny_random_model_never_crashes(tmp_path, small_testbed_data, tiny_model, caplog):
    layout = _project(tmp_path, small_testbed_data, tiny_model)
    cfg = _config(evolver="llm", llm_model=str(tiny_model), llm_max_new_tokens=24)
    with caplog.at_level(logging.WARNING, logger="alignloop.tasks.evolve"):
        evolve.run_evolve(cfg, layout, 1)
    rows, stats = read_jsonl(layout.next_prompts(1)), read_json(layout.evolve_stats(1))
    assert len(rows) == NUM_PROMPTS and all(row["prompt"].strip() for row in rows)
    assert stats["candidates"] == 40  # every meta-prompt fits a 160-position model
    assert stats["valid"] + sum(stats["rejected"].values()) == 40
    # random text is no testbed task: the buffer fills in, and the log says how many and why
    assert stats["from_buffer"] == NUM_PROMPTS - stats["valid"]
    if stats["valid"] < 32:
        assert "filled from the buffer" in caplog.text and "not a testbed task" in caplog.text


def test_llm_evolver_skips_meta_prompts_that_do_not_fit(tmp_path, small_testbed_data, tiny_model, caplog):
    small = tmp_path / "small-model"
    create_base_model(ModelConfig(n_layer=1, n_embd=16, n_head=2, max_length=40), 0, small)
    layout = _project(tmp_path / "project", small_testbed_data, tiny_model)
    with caplog.at_level(logging.WARNING, logger="alignloop.tasks.evolve"):
        evolve.run_evolve(_config(evolver="llm", llm_model=str(small)), layout, 1)
    stats = read_json(layout.evolve_stats(1))
    assert stats["rejected"]["meta-prompt too long for the evolver"] > 0
    assert stats["from_buffer"] == NUM_PROMPTS - stats["valid"]
    assert "meta-prompt too long" in caplog.text


def test_llm_rewrites_in_the_testbed_language_become_graded_prompts(tmp_path, small_testbed_data, tiny_model,
                                                                    monkeypatch):
    from alignloop.models import generation, llm_evolver

    texts = iter(["reverse, then uppercase: q1w2e3", "shift: zz9", "make it harder", "sort: ab7c\nextra line"] * 20)

    def fake_generate(model, tokenizer, prompts, **kwargs):
        return [[generation.Generation(next(texts), 5, True, 0)] for _ in prompts]

    monkeypatch.setattr(llm_evolver, "generate", fake_generate)
    layout = _project(tmp_path, small_testbed_data, tiny_model)
    evolve.run_evolve(_config(evolver="llm", llm_model=str(tiny_model)), layout, 1)
    stats = read_json(layout.evolve_stats(1))
    rows = {row["prompt"]: row for row in read_jsonl(layout.next_prompts(1))}
    # the held-out composition and the non-task are rejected; the two graded tasks pass once each
    assert stats["valid"] == 2 and stats["rejected"]["disallowed composition"] == 10
    assert stats["rejected"]["not a testbed task (no gold answer)"] == 10 and stats["rejected"]["duplicate"] == 18
    assert rows["shift: zz9"]["answer"] == "aa0" and rows["sort: ab7c"]["answer"] == "7abc"
    assert rows["shift: zz9"]["operator"].startswith("llm_")


def test_empty_prompt_file_is_a_clear_error(tmp_path, small_testbed_data, tiny_model):
    layout = _project(tmp_path, small_testbed_data, tiny_model)
    write_jsonl(layout.prompts(1), [])
    with pytest.raises(ValueError, match="has no prompts"):
        evolve.run_evolve(_config(), layout, 1)
    assert not layout.next_prompts(1).exists()
