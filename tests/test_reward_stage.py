"""The `reward_model` stage in the loop (tiny preset; slow): SFT → train a reward model from noisy gold pairs → rank
and judge with it. It caches like every stage, and a run killed inside reward training resumes to the bytes of an
uninterrupted one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline_helpers import (
    ALIGNLOOP,
    REPO,
    copy_project,
    make_project,
    merge,
    run,
    run_until_killed,
    snapshot,
    statuses,
)

pytestmark = pytest.mark.slow

PARAMS = {
    "testbed": {"label_noise": 0.2},
    "rank": {"ranker": "reward_model"},
    "reward": {"enabled": True, "num_prompts": 120, "eval_prompts": 40, "epochs": 4, "batch_size": 16,
               "ensemble_size": 2, "denoising": "flip_margin", "contrastive_weight": 1.0},
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    project = make_project(tmp_path_factory.mktemp("reward"), PARAMS)
    run([ALIGNLOOP, "run"], project)
    return project, snapshot(project)


def test_the_loop_ranks_and_judges_with_the_trained_reward_model(reference):
    project, _ = reference
    assert statuses(project)["reward_model"] == "ran"
    stats = json.loads((project / "artifacts" / "reward_model" / "stats.json").read_text())
    pairs = [json.loads(line) for line in (project / "artifacts" / "reward_model" / "pairs.jsonl").open()]
    train = [row for row in pairs if row["split"] == "train"]
    assert sum(row["flipped"] for row in train) == round(0.2 * len(train)) > 0
    assert not any(row["flipped"] for row in pairs if row["split"] == "eval")
    assert all("strength" in row and "strength_std" in row for row in train)
    assert stats["train_pairs"] == len(train) and 0.0 <= stats["eval_accuracy"] <= 1.0
    assert stats["detection"]["flipped"] == sum(row["flipped"] for row in train)
    scores = [json.loads(line) for line in (project / "artifacts" / "iter-1" / "scores.jsonl").open()]
    assert {row["ranker"] for row in scores} == {"reward_model"}
    metrics = json.loads((project / "artifacts" / "iter-1" / "metrics.json").read_text())
    assert "in_distribution/greedy_reward" in metrics and "in_distribution/greedy_gold" in metrics


def test_a_second_run_is_all_cached(reference, tmp_path):
    project = copy_project(reference[0], tmp_path / "again")
    run([ALIGNLOOP, "run"], project)
    assert set(statuses(project).values()) == {"cached"}
    assert snapshot(project) == reference[1]


def test_a_kill_inside_reward_training_resumes_to_identical_artifacts(reference, tmp_path):
    # The finished run with its reward model taken away: the stage runs again, and is killed after its first step.
    project = copy_project(reference[0], tmp_path / "killed")
    shutil.rmtree(project / "artifacts" / "reward_model")
    output = run_until_killed(project, "reward_model:step-1")
    assert "reward_model: held-out accuracy" not in output  # killed inside the stage
    assert not (project / "artifacts" / "reward_model").exists()  # nothing half-written under the final name
    run([ALIGNLOOP, "run"], project)
    status = statuses(project)
    assert status["prepare"] == status["sft"] == "cached" and status["reward_model"] == "ran"
    assert snapshot(project) == reference[1]


def test_own_model_path_trains_its_reward_model_from_preference_pairs(tmp_path):
    """The fixture's chat model, its Parquet file's chosen/rejected columns as pairs, a Qwen2 classifier started from
    policy 0, denoised and with MetaRM on the policy's own samples; then it ranks the iteration."""
    project = tmp_path / "own"
    project.mkdir()
    params = merge(yaml.safe_load((REPO / "presets" / "own_model.yaml").read_text()), {
        "iterations": 1, "rank": {"ranker": "reward_model", "reward_model": None},
        "reward": {"enabled": True, "data": {"path": "fixture/prompts/train.parquet"}, "epochs": 1,
                   "batch_size": 16, "ensemble_size": 2, "denoising": "flip", "metarm": True, "num_prompts": 16,
                   "max_new_tokens": 16}})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([ALIGNLOOP, "fixture", "fixture"], project)
    run([ALIGNLOOP, "run"], project)
    reward = project / "artifacts" / "reward_model"
    stats = json.loads((reward / "stats.json").read_text())
    assert stats["train_pairs"] > 100 and stats["eval_pairs"] > 10 and stats["label_noise"] is None
    config = json.loads((reward / "model" / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForSequenceClassification"] and config.get("num_labels", 1) == 1
    history = json.loads((reward / "train_log.json").read_text())["history"]
    assert all("difference_score" in step for step in history)
    scores = [json.loads(line) for line in (project / "artifacts" / "iter-1" / "scores.jsonl").open()]
    assert {row["ranker"] for row in scores} == {"reward_model"}
    assert "test/greedy_reward" in json.loads((project / "artifacts" / "iter-1" / "metrics.json").read_text())
