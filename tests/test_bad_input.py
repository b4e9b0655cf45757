"""Bad input on the own-model path: one line naming the key, exit code 2, before any stage runs (nothing written)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from alignloop.testbed.fixture import build_fixture

from pipeline_helpers import REPO, merge, run_cli


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fixture")
    build_fixture(root)
    return root


def _run(tmp_path: Path, fixture_dir: Path, overrides: dict) -> subprocess.CompletedProcess:
    (tmp_path / "fixture").symlink_to(fixture_dir, target_is_directory=True)
    params = merge(yaml.safe_load((REPO / "presets" / "own_model.yaml").read_text()), overrides)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return run_cli(["run"], tmp_path, timeout=300)


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _no_chat_template(tmp_path: Path, fixture_dir: Path) -> dict:
    policy = _copy(fixture_dir / "policy", tmp_path / "plain_lm")
    (policy / "chat_template.jinja").unlink()
    return {"model": {"name_or_path": "plain_lm"}}


def _two_label_reward_model(tmp_path: Path, fixture_dir: Path) -> dict:
    reward = _copy(fixture_dir / "reward_model", tmp_path / "two_labels")
    config = json.loads((reward / "config.json").read_text())
    config["id2label"], config["label2id"] = {"0": "bad", "1": "good"}, {"bad": 0, "good": 1}
    (reward / "config.json").write_text(json.dumps(config))
    return {"rank": {"reward_model": "two_labels"}}


def _pairrm_without_prefix_ids(tmp_path: Path, fixture_dir: Path) -> dict:
    pairrm = _copy(REPO / "tests" / "data" / "pairrm_tiny", tmp_path / "pairrm")
    config = json.loads((pairrm / "config.json").read_text())
    del config["source_prefix_id"]
    (pairrm / "config.json").write_text(json.dumps(config))
    return {"rank": {"ranker": "pairrm", "pairrm": "pairrm", "reward_model": None}}


CASES = {
    "missing model": (lambda tmp, fx: {"model": {"name_or_path": "./models/nope"}},
                      "model.name_or_path: ./models/nope: no such directory"),
    "missing prompt file": (lambda tmp, fx: {"data": {"train": {"path": "fixture/prompts/none.parquet"}}},
                            "data.train.path: no such file"),
    "missing column": (lambda tmp, fx: {"data": {"train": {"prompt_column": "question"}}},
                       "data.train.prompt_column: no column 'question' in"),
    "empty after filtering": (lambda tmp, fx: {"model": {"max_length": 40}, "sample": {"max_new_tokens": 30},
                                               "benchmark": {"max_new_tokens": 8}},
                              "data.train: no prompts left after filtering"),
    "no chat template": (_no_chat_template, "model.name_or_path:"),
    "reward model with two labels": (_two_label_reward_model, "rank.reward_model:"),
    "PairRM without prefix ids": (_pairrm_without_prefix_ids, "rank.pairrm:"),
    "preference data without chosen": (
        lambda tmp, fx: {"rank": {"reward_model": None}, "reward": {"enabled": True, "data": {
            "path": "fixture/prompts/train.parquet", "chosen_column": "better"}}},
        "reward.data.chosen_column: no column 'better' in"),
    "causal LM as reward model": (lambda tmp, fx: {"rank": {"reward_model": "fixture/policy"}},
                                  "is a Qwen2ForCausalLM, not a sequence classifier"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_exit_2_before_any_work(case, tmp_path, fixture_dir):
    make, expected = CASES[case]
    result = _run(tmp_path, fixture_dir, make(tmp_path, fixture_dir))
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert expected in lines[0]
    if case == "missing column":
        assert "columns are: prompt, prompt_id, messages, chosen, rejected" in lines[0]
    if case == "no chat template":
        assert "no chat template" in lines[0]
    if case == "PairRM without prefix ids":
        assert "source_prefix_id" in lines[0]
    if case == "reward model with two labels":
        assert "2 labels" in lines[0]
    assert not (tmp_path / "data").exists() and not (tmp_path / "artifacts").exists()
