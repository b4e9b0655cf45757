"""Typed params.yaml (alignloop/config.py) and how the CLI reports a bad one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alignloop.config import Config, ConfigError, load_config, parse_config
from alignloop.config.run import STAGE_NAMES

STAGE_LIST = ", ".join(STAGE_NAMES)  # the config names them in alphabetical order
CLI_STAGE_LIST = "prepare, sft, reward_model, sample, rank, evolve, cfn, optimize, benchmark, report"  # pipeline order

REPO = Path(__file__).resolve().parents[1]
ALIGNLOOP = REPO / ".venv" / "bin" / "alignloop"
if not ALIGNLOOP.is_file():  # another environment: the console script next to this interpreter
    ALIGNLOOP = Path(sys.executable).parent / "alignloop"


def test_empty_mapping_gives_defaults():
    cfg = parse_config({})
    assert cfg == Config()
    assert parse_config(None) == cfg
    assert cfg.seed == 0
    assert cfg.iterations == 3
    assert cfg.optimize.loss == "dpo"
    assert cfg.optimize.beta == 0.1
    assert cfg.optimize.nll_weight == 1.0
    assert cfg.sample.num_samples == 4
    assert cfg.sample.temperature == 1.0
    assert cfg.model.n_embd == 96 and cfg.model.n_head == 4
    assert cfg.testbed.depth_weights == (0.6, 0.4)
    assert cfg.rank.ranker == "gold"


def test_values_override_defaults():
    cfg = parse_config({"optimize": {"beta": 0.5}, "sample": {"num_samples": 8}, "seed": 3})
    assert (cfg.optimize.beta, cfg.sample.num_samples, cfg.seed) == (0.5, 8, 3)
    assert cfg.optimize.nll_weight == 1.0  # untouched keys keep their defaults
    assert cfg.flat()["optimize.beta"] == 0.5


@pytest.mark.parametrize(("raw", "message"), [
    ({"optimize": {"beta": -1}}, "optimize.beta: must be > 0, got -1"),
    ({"optimize": {"betta": 1}}, "optimize.betta: unknown key"),
    ({"sample": {"temperature": 0}}, "sample.temperature: must be > 0, got 0"),
    ({"model": {"n_head": 5}}, "model.n_head: must divide n_embd (96), got 5"),
    ({"sft": {"micro_batch_size": 24}}, "sft.micro_batch_size: must divide sft.batch_size (64), got 24"),
    ({"model": {"kv_cache": "paged"}}, "model.kv_cache: must be one of 'static' or 'dynamic', got 'paged'"),
])
def test_exact_error_messages(raw, message):
    with pytest.raises(ConfigError) as excinfo:
        parse_config(raw)
    assert str(excinfo.value) == message


@pytest.mark.parametrize(("raw", "key"), [
    ({"optimise": {"beta": 0.1}}, "optimise:"),
    ({"sample": {"num_prompts": -5}}, "sample.num_prompts:"),
    ({"sample": {"num_samples": "x"}}, "sample.num_samples:"),
    ({"optimize": {"loss": "dpo2"}}, "optimize.loss:"),
    ({"testbed": {"min_length": 5, "max_length": 4}}, "testbed.min_length:"),
])
def test_error_names_the_key_path_first(raw, key):
    with pytest.raises(ConfigError) as excinfo:
        parse_config(raw)
    message = str(excinfo.value)
    assert message.split()[0] == key
    assert "\n" not in message


def test_negative_count_message_gives_bound_and_value():
    with pytest.raises(ConfigError, match=r"^sample\.num_prompts: must be >= 1, got -5$"):
        parse_config({"sample": {"num_prompts": -5}})


def test_wrong_type_message_shows_value():
    with pytest.raises(ConfigError) as excinfo:
        parse_config({"sample": {"num_samples": "x"}})
    assert str(excinfo.value).endswith("got 'x'")


def test_several_errors_are_all_reported_on_one_line():
    with pytest.raises(ConfigError) as excinfo:
        parse_config({"sample": {"temperature": 0}, "optimize": {"beta": -1}})
    message = str(excinfo.value)
    assert "\n" not in message
    assert "sample.temperature: must be > 0, got 0" in message
    assert "optimize.beta: must be > 0, got -1" in message
    assert "(and 1 more: " in message


def test_not_a_mapping():
    with pytest.raises(ConfigError, match=r"^params: expected a mapping of sections, got list$"):
        parse_config([1, 2])


def test_load_config_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert str(excinfo.value).startswith(f"{path}: no such file")


def test_load_config_invalid_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("optimize:\n  beta: [1, 2\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}: not valid YAML (")
    assert "\n" not in message


def test_load_config_reads_values(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 7\noptimize:\n  beta: 0.25\n")
    cfg = load_config(path)
    assert (cfg.seed, cfg.optimize.beta) == (7, 0.25)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == Config()


def test_repository_params_yaml_parses():
    path = REPO / "params.yaml"
    if not path.is_file():
        pytest.skip("the repository has no params.yaml yet")
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.model.n_embd % cfg.model.n_head == 0


def test_cli_rejects_bad_params_with_one_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("optimize:\n  beta: -1\n")
    result = subprocess.run([str(ALIGNLOOP), "stage", "prepare", "--params", str(params)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: optimize.beta: must be > 0")
    assert lines[0] == "error: optimize.beta: must be > 0, got -1"
    assert "Traceback" not in result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["params.yaml"]


@pytest.mark.parametrize(("args", "files", "message"), [
    (["stage", "prepare", "--params", "missing.yaml"], {},
     "error: missing.yaml: no such file (copy params.yaml from the repository or pass --params)"),
    (["stage", "prepare", "--params", "params.yaml"], {"params.yaml": "optimize: [1\n"},
     "error: params.yaml: not valid YAML (while parsing a flow sequence)"),
    (["stage", "bogus", "--params", "params.yaml"], {"params.yaml": "seed: 0\n"},
     f"error: unknown stage 'bogus'; stages are {CLI_STAGE_LIST}"),
    (["run", "--params", "params.yaml"], {"params.yaml": "sample:\n  temperature: 0\n"},
     "error: sample.temperature: must be > 0, got 0"),
    (["serve", "--params", "params.yaml"], {"params.yaml": "seed: 0\n"},
     "error: give exactly one of --interval SECONDS or --cron EXPR"),
    (["serve", "--interval", "0", "--params", "params.yaml"], {"params.yaml": "seed: 0\n"},
     "error: --interval: must be > 0, got 0.0"),
    (["serve", "--cron", "every day", "--params", "params.yaml"], {"params.yaml": "seed: 0\n"},
     "error: --cron: not a cron expression: 'every day' (five fields, e.g. \"0 3 * * *\")"),
    (["serve", "--interval", "60", "--params", "params.yaml"], {"params.yaml": "seed: 0\n"},
     "error: scheduled runs need a Prefect server: run `prefect server start`, then "
     "`export PREFECT_API_URL=http://127.0.0.1:4200/api` and try again"),
], ids=["missing-file", "invalid-yaml", "unknown-stage", "run-bad-value", "serve-no-schedule", "serve-bad-interval",
        "serve-bad-cron", "serve-no-server"])
def test_cli_user_errors_exit_2_with_one_line(tmp_path, args, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    result = subprocess.run([str(ALIGNLOOP), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [message]
    assert "Traceback" not in result.stdout + result.stderr
    # Nothing written but Prefect's empty home (importing prefect makes it).
    assert sorted(p.name for p in tmp_path.rglob("*") if ".prefect" not in p.parts) == sorted(files)


def test_repository_params_yaml_equals_the_typed_defaults():
    """One place for each default: params.yaml spells out exactly the defaults of alignloop/config.py."""
    from pathlib import Path

    from alignloop.config import load_config

    assert load_config(Path(__file__).resolve().parents[1] / "params.yaml") == Config()


@pytest.mark.parametrize(("raw", "message"), [
    ({"pipeline": {"retries": {"bogus": 1}}},
     f"pipeline.retries: unknown stage 'bogus'; stages are {STAGE_LIST}"),
    ({"pipeline": {"retries": {"sample": 1, "optimise": 2}}},
     f"pipeline.retries: unknown stage 'optimise'; stages are {STAGE_LIST}"),
    ({"pipeline": {"retries": {"sample": -1}}}, "pipeline.retries: sample must be >= 0, got -1"),
    ({"pipeline": {"retries": {"optimize": 2, "benchmark": -3}}}, "pipeline.retries: benchmark must be >= 0, got -3"),
    ({"schedule": {"iterations_per_run": 0}}, "schedule.iterations_per_run: must be >= 1, got 0"),
    ({"schedule": {"iterations_per_run": -2}}, "schedule.iterations_per_run: must be >= 1, got -2"),
], ids=["retries-unknown", "retries-misspelt", "retries-negative", "retries-negative-second",
        "per-run-zero", "per-run-negative"])
def test_pipeline_and_schedule_errors(raw, message):
    with pytest.raises(ConfigError) as excinfo:
        parse_config(raw)
    assert str(excinfo.value) == message


def test_pipeline_and_schedule_values_are_accepted():
    cfg = parse_config({"pipeline": {"retries": {"sample": 0, "optimize": 2}}, "schedule": {"iterations_per_run": 3}})
    assert cfg.pipeline.retries == {"sample": 0, "optimize": 2}
    assert cfg.schedule.iterations_per_run == 3
    assert parse_config({"pipeline": {"retries": {}}}).pipeline.retries == {}
    assert parse_config({}).pipeline.retries == {"sample": 1}
    assert parse_config({}).schedule.iterations_per_run == 1


def test_retries_bad_value_type_names_the_stage():
    with pytest.raises(ConfigError) as excinfo:
        parse_config({"pipeline": {"retries": {"sample": "x"}}})
    assert str(excinfo.value).startswith("pipeline.retries.sample: ")
    assert str(excinfo.value).endswith("got 'x'")
