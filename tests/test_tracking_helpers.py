"""The pure helpers of alignloop/pipeline/tracking.py (no MLflow run is started here)."""

from __future__ import annotations

import hashlib
import math

import pytest

from alignloop.config import Config
from alignloop.io import write_json, write_jsonl
from alignloop.paths import Layout
from alignloop.pipeline.tracking import (
    TABLE_ROWS,
    file_sha256,
    finite_metrics,
    git_commit,
    run_key,
    sample_table,
    training_curve,
)

# --- run_key --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("changed", [
    {"iterations": 9},
    {"iterations": 0},
    {"pipeline": {"retries": {"optimize": 2}}},
    {"pipeline": {"retry_delay_seconds": 0.0, "dvc_commit": False}},
    {"schedule": {"iterations_per_run": 5}},
], ids=["iterations", "iterations-0", "pipeline.retries", "pipeline.other", "schedule"])
def test_run_key_ignores_what_does_not_define_the_pipeline(changed):
    assert run_key(Config(**changed)) == run_key(Config())


@pytest.mark.parametrize("changed", [
    {"optimize": {"beta": 0.2}},
    {"seed": 1},
    {"sample": {"temperature": 0.7}},
    {"model": {"n_layer": 2}},
    {"testbed": {"eval_size": 10}},
    {"benchmark": {"num_samples": 2}},
    {"sft": {"enabled": False}},
], ids=["optimize.beta", "seed", "sample.temperature", "model.n_layer", "testbed.eval_size", "benchmark",
        "sft.enabled"])
def test_run_key_follows_the_pipeline_defining_params(changed):
    assert run_key(Config(**changed)) != run_key(Config())


def test_run_key_is_stable_and_short():
    key = run_key(Config())
    assert key == run_key(Config())
    assert len(key) == 16 and int(key, 16) >= 0


# --- finite_metrics -------------------------------------------------------------------------------------------


def test_finite_metrics():
    result = finite_metrics({
        "in_distribution/greedy_gold": 0.5,
        "harder/greedy_length": 7,
        "rank/pairs": 0,
        "nan/value": float("nan"),
        "flag": True,
        "off": False,
        "name": "sft",
        "number_as_text": "0.5",
        "nothing": None,
        "list": [1.0],
        "plain": -2.5,
    })
    assert result == {"in_distribution.greedy_gold": 0.5, "harder.greedy_length": 7.0, "rank.pairs": 0.0,
                      "plain": -2.5}
    assert all(type(value) is float for value in result.values())
    assert all("/" not in key for key in result)


def test_finite_metrics_replaces_every_slash():
    assert finite_metrics({"a/b/c": 1}) == {"a.b.c": 1.0}


def test_finite_metrics_of_nothing():
    assert finite_metrics({}) == {}
    assert finite_metrics({"x": math.nan}) == {}


# --- sample_table ---------------------------------------------------------------------------------------------


def test_sample_table_of_an_iteration_shows_pairs(tmp_path):
    layout = Layout(tmp_path)
    pairs = [{"pair_id": f"p{k}-0-1", "prompt_id": f"p{k}", "prompt": f"reverse: ab{k}", "chosen": f"{k}ba",
              "rejected": "x", "chosen_score": 1.0 - k / 10, "rejected_score": k / 100, "chosen_finished": True,
              "rejected_finished": False, "chosen_index": 0, "rejected_index": 1} for k in range(7)]
    write_jsonl(layout.pairs(1), pairs)
    table = sample_table(layout, 1)
    assert list(table) == ["prompt", "chosen", "chosen_score", "rejected", "rejected_score"]
    assert all(len(column) == TABLE_ROWS == 5 for column in table.values())
    assert table["prompt"] == [f"reverse: ab{k}" for k in range(5)]
    assert table["chosen"] == [f"{k}ba" for k in range(5)]
    assert table["chosen_score"] == [1.0 - k / 10 for k in range(5)]
    assert table["rejected"] == ["x"] * 5
    assert table["rejected_score"] == [k / 100 for k in range(5)]


def test_sample_table_with_fewer_rows_than_the_table(tmp_path):
    layout = Layout(tmp_path)
    write_jsonl(layout.pairs(2), [{"prompt": "p", "chosen": "c", "chosen_score": 1.0, "rejected": "r",
                                   "rejected_score": 0.0}] * 2)
    assert sample_table(layout, 2) == {"prompt": ["p", "p"], "chosen": ["c", "c"], "chosen_score": [1.0, 1.0],
                                       "rejected": ["r", "r"], "rejected_score": [0.0, 0.0]}
    assert sample_table(layout, 2, rows=1)["prompt"] == ["p"]


def test_sample_table_of_sft_shows_greedy_answers(tmp_path):
    layout = Layout(tmp_path)
    outputs = [{"split": "in_distribution", "prompt_id": f"q{k}", "prompt": f"sort: c{k}a", "answer": f"ac{k}",
                "greedy": f"a{k}c", "greedy_score": k / 10, "sampled": ["x"], "sampled_scores": [0.0]}
               for k in range(8)]
    write_jsonl(layout.benchmark_outputs(0), outputs)
    table = sample_table(layout, 0)
    assert list(table) == ["prompt", "answer", "greedy", "greedy_score"]
    assert table == {"prompt": [f"sort: c{k}a" for k in range(5)], "answer": [f"ac{k}" for k in range(5)],
                     "greedy": [f"a{k}c" for k in range(5)], "greedy_score": [k / 10 for k in range(5)]}


def test_sample_table_without_its_file_names_it(tmp_path):
    layout = Layout(tmp_path)
    with pytest.raises(FileNotFoundError, match="pairs.jsonl"):
        sample_table(layout, 1)


# --- training_curve -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("log", [None, {}, {"history": []}, {"history": [{"step": 0, "grad_norm": 1.0}]}],
                         ids=["no-file", "no-history", "empty-history", "no-loss"])
def test_training_curve_without_steps_is_none(tmp_path, log):
    layout = Layout(tmp_path)
    if log is not None:
        write_json(layout.train_log(1), log)
    assert training_curve(layout, 1) is None


def test_training_curve_of_dpo_steps(tmp_path):
    from matplotlib import pyplot as plt
    from matplotlib.figure import Figure

    layout = Layout(tmp_path)
    history = [{"step": step, "loss": 0.7 - step / 100, "reward_accuracy": 0.5 + step / 100} for step in range(6)]
    write_json(layout.train_log(2), {"history": history, "final": {}})
    figure = training_curve(layout, 2)
    try:
        assert isinstance(figure, Figure)
        (axis,) = figure.axes
        lines = {line.get_label(): line for line in axis.get_lines()}
        assert set(lines) == {"loss", "reward accuracy"}
        assert list(lines["loss"].get_xdata()) == list(range(6))
        assert list(lines["loss"].get_ydata()) == [entry["loss"] for entry in history]
        assert list(lines["reward accuracy"].get_ydata()) == [entry["reward_accuracy"] for entry in history]
        assert axis.get_title() == "iteration 2"
        assert axis.get_xlabel() == "step"
    finally:
        plt.close(figure)


def test_training_curve_of_sft_has_loss_only(tmp_path):
    from matplotlib import pyplot as plt
    from matplotlib.figure import Figure

    layout = Layout(tmp_path)
    write_json(layout.train_log(0), {"history": [{"loss": 2.0}, {"eval": 1}, {"loss": 1.5}]})
    figure = training_curve(layout, 0)
    try:
        assert isinstance(figure, Figure)
        (axis,) = figure.axes
        (line,) = axis.get_lines()
        assert line.get_label() == "loss"
        assert list(line.get_xdata()) == [0, 1]  # entries without a step count in order among the loss entries
        assert list(line.get_ydata()) == [2.0, 1.5]
        assert axis.get_title() == "SFT"
    finally:
        plt.close(figure)


# --- git / files ----------------------------------------------------------------------------------------------


def test_git_commit_outside_a_repository_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    for name in ("GIT_DIR", "GIT_WORK_TREE"):
        monkeypatch.delenv(name, raising=False)
    assert git_commit(tmp_path) is None


def test_git_commit_of_a_missing_directory_is_none(tmp_path):
    assert git_commit(tmp_path / "missing") is None


def test_file_sha256(tmp_path):
    path = tmp_path / "dvc.lock"
    assert file_sha256(path) is None
    path.write_bytes(b"schema: '2.0'\n")
    assert file_sha256(path) == hashlib.sha256(b"schema: '2.0'\n").hexdigest()
    assert file_sha256(tmp_path) is None


def test_reward_model_metrics_read_the_stage_stats(tmp_path):
    from alignloop.io import write_json
    from alignloop.paths import Layout
    from alignloop.pipeline.tracking import reward_model_metrics

    layout = Layout(tmp_path)
    assert reward_model_metrics(layout) == {}
    write_json(layout.reward_stats, {"eval_accuracy": 0.7, "negative_strength_fraction": 0.25,
                                     "detection": {"precision": 0.4, "recall": None}})
    assert reward_model_metrics(layout) == {"reward_model/eval_accuracy": 0.7,
                                            "reward_model/negative_strength_fraction": 0.25,
                                            "reward_model/detection_precision": 0.4}
