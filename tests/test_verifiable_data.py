"""data.sharegpt: ShareGPT prompts with verifiable constraints, held out by hash, every removal counted; the
verifier ranker on those rows; the config refusing what the checkers cannot do."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import yaml

from real_kit import skip_module_without_checkers

skip_module_without_checkers()

from alignloop.config import ConfigError, parse_config  # noqa: E402
from alignloop.config.data import DataConfig  # noqa: E402
from alignloop.models.rankers import VerifierRanker  # noqa: E402
from alignloop.sources.prompts import DataError  # noqa: E402
from alignloop.sources.verifiable import prepare_verifiable_sets  # noqa: E402

from pipeline_helpers import ALIGNLOOP, env_for  # noqa: E402

TRAIN_IDS = ["punctuation:no_comma", "change_case:english_lowercase", "detectable_format:title"]


def conversation(index: int, prompt: str, answer: str | None = "An answer.") -> dict:
    turns = [{"from": "human", "value": prompt}] + ([{"from": "gpt", "value": answer}] if answer else [])
    return {"id": f"r{index}", "conversations": turns}


def write_sharegpt(path: Path) -> Path:
    """30 good prompts and one of each kind the filters remove, then a record cut mid-string (a truncated file)."""
    records = [conversation(i, f"Tell me something interesting about topic number {i}.") for i in range(30)]
    records += [conversation(30, "Tell me something interesting about topic number 3."),  # duplicate
                conversation(31, "Hi"),  # too short
                conversation(32, "A first line\nand a second line of a pasted text."),  # multi-line
                conversation(33, "Qu'est-ce que c'est, exactement, à votre avis ?"),  # non-ASCII
                {"id": "r34", "conversations": [{"from": "gpt", "value": "I start the conversation."}]}]
    text = json.dumps(records)[:-1] + ', {"id": "r35", "conversations": [{"from": "human", "value": "cut he'
    path.write_text(text, encoding="utf-8")
    return path


def data_config(path: Path, **constraints) -> DataConfig:
    return DataConfig(sharegpt={"path": str(path), "min_chars": 10, "eval_size": 3, "reference_answers": 2},
                      constraints={"train": {"ids": TRAIN_IDS, **constraints},
                                   "unseen": {"family": "ifbench", "ids": ["format:emoji", "count:numbers"]}})


def prepare(data: DataConfig, root: Path, seed: int = 0, max_train_tokens: int = 1000):
    return prepare_verifiable_sets(data, root, seed, lambda text: len(text.split()), max_train_tokens, 1000)


def test_sets_are_held_out_by_hash_and_every_removal_is_counted(tmp_path: Path) -> None:
    files, stats = prepare(data_config(write_sharegpt(tmp_path / "sharegpt.json")), tmp_path)
    assert stats["sharegpt"] == {"records": 35, "truncated": 1, "no_prompt": 1, "length": 1, "multi_line": 1,
                                 "non_ascii": 1, "duplicates": 1, "candidates": 30}
    held = {row["base_prompt"] for name in ("in_distribution", "unseen_types", "no_constraint")
            for row in files[f"eval/{name}"]} | {row["prompt"] for row in files["reference_answers"]}
    assert len(held) == 3 * 3 + 2 and stats["train"] == {"held_out": 11, "too_long": 0, "kept": 19}
    assert not held & {row["base_prompt"] for row in files["train_prompts"]}  # never trained on
    assert [row["pool_index"] for row in files["train_prompts"]] == list(range(19))
    for row in files["train_prompts"] + files["eval/in_distribution"]:
        assert row["constraint_family"] == "ifeval" and len(row["instruction_id_list"]) == 1
        assert row["instruction_id_list"][0] in TRAIN_IDS and row["prompt"].startswith(row["base_prompt"] + " ")
    assert all(row["constraint_family"] == "ifbench" for row in files["eval/unseen_types"])
    assert all(row["instruction_id_list"] == [] and row["prompt"] == row["base_prompt"]
               for row in files["eval/no_constraint"])
    assert all(row["answer"] == "An answer." for row in files["reference_answers"])


def test_the_same_seed_draws_the_same_constraints_and_another_seed_others(tmp_path: Path) -> None:
    data = data_config(write_sharegpt(tmp_path / "sharegpt.json"), min_per_prompt=1, max_per_prompt=2)
    first, again, other = prepare(data, tmp_path, 0)[0], prepare(data, tmp_path, 0)[0], prepare(data, tmp_path, 1)[0]
    assert first == again
    assert {r["base_prompt"] for r in first["eval/in_distribution"]} == {
        r["base_prompt"] for r in other["eval/in_distribution"]}  # held-out prompts do not depend on the seed
    drawn = lambda files: [(r["instruction_id_list"], r["kwargs"]) for r in files["train_prompts"]]  # noqa: E731
    assert drawn(first) != drawn(other)
    assert {len(ids) for ids, _ in drawn(first)} == {1, 2}


def test_prompts_too_long_with_their_constraints_are_dropped_and_counted(tmp_path: Path) -> None:
    files, stats = prepare(data_config(write_sharegpt(tmp_path / "sharegpt.json")), tmp_path, max_train_tokens=20)
    assert stats["train"]["too_long"] > 0
    assert stats["train"]["too_long"] + stats["train"]["kept"] == 19
    assert all(len(row["prompt"].split()) <= 20 for row in files["train_prompts"])


def test_a_file_without_a_complete_record_is_one_line_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    path.write_text('[{"id": "r0", "conversations": [{"from": "human", "value": "cut', encoding="utf-8")
    with pytest.raises(DataError, match=r"^data\.sharegpt\.path: .*no complete record"):
        prepare(data_config(path), tmp_path)


def test_the_verifier_ranker_scores_the_fraction_of_constraints_followed() -> None:
    row = {"prompt_id": "p", "constraint_family": "ifeval",
           "instruction_id_list": ["punctuation:no_comma", "change_case:english_lowercase"], "kwargs": [{}, {}]}
    scores = VerifierRanker().score([row, {**row, "instruction_id_list": [], "kwargs": []}],
                                    [["all lowercase and no commas here.", "Has, a Comma.", "no caps, but a comma."],
                                     ["anything"]])
    assert scores[0] == [1.0, 0.0, 0.5]
    assert math.isnan(scores[1][0])  # no constraint: nothing to rank by
    with pytest.raises(ValueError, match="needs prompts with constraints"):
        VerifierRanker().score([{"prompt_id": "testbed"}], [["x"]])


@pytest.mark.parametrize(("data", "message"), [
    ({"sharegpt": {}, "constraints": {"train": {"ids": ["nope:nope"]}}}, "data.constraints.train.ids: 'nope:nope'"),
    ({"sharegpt": {}, "constraints": {"unseen": {"family": "ifbench", "ids": ["ratio:stop_words"]}}},
     "data.constraints.unseen.ids: .*ratio:stop_words.* NLTK"),
    ({"sharegpt": {}, "constraints": {"train": {"ids": ["punctuation:no_comma"], "max_per_prompt": 2}}},
     "data.constraints.train.max_per_prompt: 2 constraints per prompt, but only 1"),
    ({"sharegpt": {}, "constraints": {"train": {"ids": ["change_case:english_capital",
                                                       "change_case:english_lowercase"], "min_per_prompt": 2,
                                               "max_per_prompt": 2}}},
     "data.constraints.train.min_per_prompt: .*at most 1"),
    ({"sharegpt": {}, "constraints": {"unseen": {"family": "ifeval", "ids": TRAIN_IDS}}},
     "data.constraints.unseen: .* are in train.ids too"),
    ({"constraints": {}}, "data.constraints: apply to data.sharegpt prompts only"),
])
def test_constraints_no_run_can_use_are_refused_naming_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"data": data, "sft": {"enabled": False}, "rank": {"ranker": "verifier"}})


def test_a_sharegpt_file_without_a_complete_record_stops_the_cli_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "cut.json").write_text('[{"id": "r0", "conversations": [{"from": "human", "value": "cu',
                                       encoding="utf-8")
    params = {"data": {"sharegpt": {"path": "cut.json"}}, "sft": {"enabled": False}, "rank": {"ranker": "verifier"},
              "model": {"name_or_path": "testbed"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run([ALIGNLOOP, "stage", "prepare"], cwd=tmp_path, env=env_for(tmp_path),
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: data.sharegpt.path: ") and "no complete record" in result.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "artifacts").exists()
