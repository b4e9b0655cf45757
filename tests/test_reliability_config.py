"""Values that pass the schema but no run can use are refused when params.yaml is loaded, one line naming the key,
exit 2 (issue 14, item 4; alignloop/config/checks.py, alignloop/pipeline/runnable.py)."""

from __future__ import annotations

import itertools
import random
import subprocess
from pathlib import Path

import pytest
import yaml

from alignloop.config import ConfigError, load_config, parse_config
from alignloop.testbed.geometry import longest_testbed_prompt

from pipeline_helpers import ALIGNLOOP, REPO, env_for

PARAMS = REPO / "params.yaml"


def _leaves(tree: dict, prefix: tuple[str, ...] = ()):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


@pytest.mark.parametrize("path", [PARAMS, *sorted((REPO / "presets").glob("*.yaml"))], ids=lambda p: p.name)
def test_shipped_params_and_presets_load_with_every_value_they_write(path: Path) -> None:
    """Each shipped file loads, and the config holds every value the file writes (none dropped, renamed or
    coerced into something else)."""
    held = load_config(path).model_dump(mode="json")
    written = list(_leaves(yaml.safe_load(path.read_text())))
    assert len(written) >= 5
    differ = []
    for keys, value in written:
        node = held
        for key in keys:
            node = node.get(key, "<missing>") if isinstance(node, dict) else "<missing>"
        if node != value:
            differ.append((".".join(keys), value, node))
    assert not differ, differ


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("optimize:\n  beta: .inf\n", "optimize.beta: must be a finite number, got inf"),
    ("optimize:\n  beta: -.inf\n", "optimize.beta: must be a finite number, got -inf"),
    ("sft:\n  learning_rate: .nan\n", "sft.learning_rate: must be a finite number, got nan"),
    ("testbed:\n  depth_weights: [0.6, .NaN]\n", "testbed.depth_weights[1]: must be a finite number, got nan"),
    ("pipeline:\n  retry_delay_seconds: .inf\n", "pipeline.retry_delay_seconds: must be a finite number, got inf"),
])
def test_non_finite_numbers_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(_write(tmp_path, text))
    assert str(excinfo.value) == message


@pytest.mark.parametrize("text, message", [
    ("seed: 4294967296\n", "seed: must be < 4294967296, got 4294967296"),  # torch and numpy seeds are < 2^32
    ("seed: true\n", "seed: input should be a valid integer, got True"),  # not seed 1
    ("seed: 1.0\n", "seed: input should be a valid integer, got 1.0"),
])
def test_a_seed_no_random_generator_takes_is_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(_write(tmp_path, text))
    assert str(excinfo.value) == message
    assert load_config(_write(tmp_path, "seed: 4294967295\n")).seed == 2**32 - 1


def test_non_finite_numbers_are_refused_in_code_too() -> None:
    with pytest.raises(ConfigError, match=r"^optimize\.beta: must be a finite number, got inf$"):
        parse_config({"optimize": {"beta": float("inf")}})


@pytest.mark.parametrize("text, key, line", [
    ("seed: 0\niterations: 1\nseed: 1\n", "seed", 3),
    ("optimize:\n  beta: 0.1\n  epochs: 1\n  beta: 0.2\n", "optimize.beta", 4),
    ("optimize:\n  beta: 0.1\nsample:\n  num_prompts: 8\noptimize:\n  epochs: 1\n", "optimize", 5),
    ("data:\n  eval:\n    test: {path: a.jsonl}\n    test: {path: b.jsonl}\n", "data.eval.test", 4),
    ("sft:\n  lora: {r: 4, r: 8}\n", "sft.lora.r", 2),
])
def test_a_key_written_twice_is_refused(tmp_path: Path, text: str, key: str, line: int) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert str(excinfo.value) == f"{path}: key `{key}` appears twice (line {line})"


def test_anchors_and_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    text = "sft: &training\n  epochs: 1\n  batch_size: 8\noptimize:\n  <<: *training\n  beta: 0.2\n"
    cfg = load_config(_write(tmp_path, text))
    assert cfg.optimize.epochs == 1 and cfg.optimize.batch_size == 8 and cfg.optimize.beta == 0.2


def test_cli_refuses_with_one_line_and_exit_2(tmp_path: Path) -> None:
    _write(tmp_path, "optimize:\n  beta: .inf\n")
    result = subprocess.run([ALIGNLOOP, "dvc-yaml"], cwd=tmp_path, env=env_for(tmp_path), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: optimize.beta: must be a finite number, got inf"]
    assert not (tmp_path / "dvc.yaml").exists()


def _refused(overrides: dict) -> str:
    with pytest.raises(ConfigError) as excinfo:
        parse_config(overrides)
    return str(excinfo.value)


def _not_runnable(overrides: dict) -> str:
    from alignloop.pipeline.runnable import check_runnable

    cfg = parse_config(overrides)  # a valid Config: it may name a model or a tokenizer without running
    with pytest.raises(ConfigError) as excinfo:
        check_runnable(cfg)
    return str(excinfo.value)


def test_a_device_this_machine_does_not_have_is_refused() -> None:
    import torch

    from alignloop.pipeline.runnable import check_runnable

    assert _not_runnable({"model": {"device": "gpu0"}}).startswith("model.device: not a device: 'gpu0'")
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        assert _not_runnable({"model": {"device": f"cuda:{count}"}}).startswith(
            f"model.device: cuda:{count} does not exist")
    else:
        assert _not_runnable({"model": {"device": "cuda"}}).startswith("model.device: cuda is not available here")
    check_runnable(parse_config({"model": {"device": "cpu"}}))


def test_odd_rotary_head_width_of_the_testbed_model_is_refused() -> None:
    assert _refused({"model": {"n_embd": 30, "n_head": 2}}) == (
        "model.n_head: the testbed's llama model needs an even head width (n_embd / n_head) for its rotary "
        "positions, got 30 / 2 = 15")
    parse_config({"model": {"n_embd": 30, "n_head": 2, "architecture": "gpt2"}})


def test_model_max_length_must_leave_room_after_the_longest_testbed_prompt() -> None:
    from alignloop.pipeline.runnable import check_runnable

    short = {"model": {"max_length": 24}, "sample": {"max_new_tokens": 8}, "benchmark": {"max_new_tokens": 8}}
    message = _not_runnable(short)
    assert message.startswith("model.max_length: must be > 27, the testbed's longest prompt in tokens (harder: 3 "
                              "skill(s) on inputs of up to 8 characters)"), message
    check_runnable(parse_config(short | {"model": {"max_length": 28}}))
    # a data set of your own is measured by the preflight, not here
    check_runnable(parse_config(short | {"rank": {"ranker": "reward_model", "reward_model": "rm"},
                                         "data": {"train": {"path": "p.jsonl"}, "eval": {"test": {"path": "e.jsonl"}}},
                                         "sft": {"enabled": False}}))


def test_commands_that_run_stages_refuse_what_cannot_run_with_one_line(tmp_path: Path) -> None:
    _write(tmp_path, yaml.safe_dump({"model": {"max_length": 24}, "sample": {"max_new_tokens": 8},
                                     "benchmark": {"max_new_tokens": 8}}))
    result = subprocess.run([ALIGNLOOP, "stage", "prepare"], cwd=tmp_path, env=env_for(tmp_path), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: model.max_length: must be > 27, the testbed's longest prompt in tokens")
    assert not (tmp_path / "data").exists()
    written = subprocess.run([ALIGNLOOP, "dvc-yaml"], cwd=tmp_path, env=env_for(tmp_path), capture_output=True,
                             text=True, timeout=300)
    assert written.returncode == 0, written.stderr[-2000:]  # writing dvc.yaml runs nothing


def test_longest_testbed_prompt_matches_the_tokenizer(tokenizer) -> None:
    from alignloop.models.generation import prompt_token_ids
    from alignloop.testbed.world import SKILLS, Distribution, allowed_chain, sample_task

    # Brute force over every allowed chain and every phrasing of it, the longest input, through the real chat template.
    for depths, held_out in (((1, 2), False), ((2, 3), False)):
        longest = 0
        for depth in depths:
            for chain in itertools.product(SKILLS, repeat=depth):
                if allowed_chain(chain, held_out_only=False):
                    for verbs in itertools.product(*(SKILLS[s].verbs for s in chain)):
                        prompt = ", then ".join(verbs) + ": " + "a" * 8
                        longest = max(longest, len(prompt_token_ids(tokenizer, prompt)))
        assert longest == longest_testbed_prompt(depths, 8, held_out)
    # and no drawn prompt is longer
    rng, dist = random.Random(0), Distribution(2, 8, (0.0, 0.5, 0.5))
    bound = longest_testbed_prompt((2, 3), 8, False)
    assert max(len(prompt_token_ids(tokenizer, sample_task(dist, rng).prompt)) for _ in range(2000)) <= bound
    # words are one token each, the input one per character: <|user|> write backwards : ␣ a b <|assistant|>
    assert len(prompt_token_ids(tokenizer, "write backwards: ab")) == 8


def test_more_prompts_per_iteration_than_the_pool_holds_is_refused() -> None:
    assert _refused({"testbed": {"prompt_pool_size": 10}, "sample": {"num_prompts": 48}}) == (
        "sample.num_prompts: must be <= testbed.prompt_pool_size (10) (every iteration would sample the whole pool), "
        "got 48")


def test_testbed_sets_larger_than_the_world_holds_are_refused() -> None:
    message = _refused({"testbed": {"min_length": 1, "max_length": 1}})
    assert message.startswith("testbed.prompt_pool_size: the testbed holds at most "), message
    assert "20300 asked for" in message
    message = _refused({"testbed": {"min_length": 1, "max_length": 1, "prompt_pool_size": 100, "eval_size": 1000},
                        "sample": {"num_prompts": 50}})
    assert message.startswith("testbed.eval_size: the testbed holds at most 720 distinct unseen_composition "
                              "prompts"), message


def test_eva_mix_without_evolved_prompts_is_refused() -> None:
    message = _refused({"evolve": {"enabled": True, "evolved_fraction": 0.01}, "sample": {"num_prompts": 48}})
    assert message.startswith("evolve.evolved_fraction: 0.01 of sample.num_prompts (48) rounds to 0 evolved prompts")
    parse_config({"evolve": {"enabled": True, "evolved_fraction": 0.0}, "sample": {"num_prompts": 48}})


def test_default_params_file_round_trip_is_unchanged() -> None:
    assert load_config(PARAMS) == parse_config(yaml.safe_load(PARAMS.read_text()))
