"""The own-model path end to end (slow): the fixture's chat model, Parquet prompts in the UltraFeedback layout, the
reward model as ranker and judge, LoRA and micro-batches in optimize, two iterations (presets/own_model.yaml).

After `alignloop run`, DVC agrees (`dvc status` clean, `dvc repro` runs nothing); a run SIGKILLed inside iteration
2's optimize resumes to the uninterrupted run's artifacts, byte for byte.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline_helpers import (
    ALIGNLOOP,
    DVC,
    REPO,
    copy_project,
    run,
    run_until_killed,
    set_params,
    snapshot,
    statuses,
)

pytestmark = pytest.mark.slow

def make_own_project(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "presets" / "own_model.yaml", path / "params.yaml")
    run([ALIGNLOOP, "fixture", "fixture"], path)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    project = make_own_project(tmp_path_factory.mktemp("own"))
    run([DVC, "init", "--no-scm", "-q"], project)
    run([ALIGNLOOP, "dvc-yaml"], project)
    run([ALIGNLOOP, "run"], project)
    return project, snapshot(project)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_own_model_run_end_to_end(reference) -> None:
    project, _ = reference
    assert set(statuses(project).values()) == {"ran"}
    stats = json.loads((project / "data" / "prepare_stats.json").read_text())
    train = stats["train"]  # the fixture plants 3 duplicates, 3 test prompts and 2 over-long prompts
    assert (train["read"], train["duplicates"], train["in_eval"], train["too_long"]) == (240, 3, 3, 2)
    assert train["kept"] == 232 and stats["eval/test"]["kept"] == 24

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(project / "fixture" / "policy")
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for iteration in (1, 2):
        samples = _jsonl(project / f"artifacts/iter-{iteration}/samples.jsonl")
        finished = [row for row in samples if row["finished"]]
        endings = [row["response_ids"][-1] for row in finished]
        assert set(endings) <= {end_of_turn, tokenizer.eos_token_id}  # both stop; SFT taught the end of turn
        assert endings.count(end_of_turn) > len(endings) / 2, endings
        assert all(len(row["response_ids"]) == 32 for row in samples if not row["finished"])
        by_key = {(row["prompt_id"], row["sample_index"]): row for row in samples}
        pairs = _jsonl(project / f"artifacts/iter-{iteration}/pairs.jsonl")
        assert pairs and all(p["chosen_finished"] and p["rejected_finished"] for p in pairs)
        for pair in pairs:  # pairs carry exactly the sampled ids
            assert pair["chosen_ids"] == by_key[(pair["prompt_id"], pair["chosen_index"])]["response_ids"]
        rank = json.loads((project / f"artifacts/iter-{iteration}/rank_stats.json").read_text())
        assert rank["unfinished_responses"] == len(samples) - len(finished)
        policy_files = {path.name for path in (project / f"artifacts/iter-{iteration}/policy").iterdir()}
        assert "model.safetensors" in policy_files and "adapter_config.json" not in policy_files  # merged
        metrics = json.loads((project / f"artifacts/iter-{iteration}/metrics.json").read_text())
        assert {"test/greedy_reward", "test/sampled_reward", "test/win_rate_vs_sft", "test/kl_to_sft",
                "test/sampled_entropy", "test/greedy_length"} <= set(metrics)
        assert "test/greedy_exact_match" not in metrics  # no answers outside the testbed
        export = json.loads((project / f"artifacts/iter-{iteration}/alpaca_eval/test.json").read_text())
        assert len(export) == 24 and set(export[0]) == {"instruction", "output", "generator", "dataset"}
    log = json.loads((project / "artifacts/iter-1/train_log.json").read_text())
    assert log["steps"] > 0 and log["final"]["reward_accuracy"] > 0.5  # LoRA DPO learns its pairs


def test_dvc_agrees_after_the_run(reference) -> None:
    project, _ = reference
    assert "up to date" in run([DVC, "status"], project).stdout
    assert "Running stage" not in run([DVC, "repro"], project).stdout


def test_a_kill_inside_iteration_2_optimize_resumes_to_identical_artifacts(reference, tmp_path: Path) -> None:
    # The finished run with iteration 2's policy taken away: optimize-2 runs again, and is killed after its first step.
    project = copy_project(reference[0], tmp_path / "killed", dvc=False)
    shutil.rmtree(project / "artifacts/iter-2/policy")
    run_until_killed(project, "optimize-2:step-1")
    assert (project / "artifacts/iter-2/pairs.jsonl").is_file()
    assert not (project / "artifacts/iter-2/policy").exists()
    run([ALIGNLOOP, "run"], project)
    status = statuses(project)
    assert {key for key, value in status.items() if value == "ran"} == {"optimize-2", "benchmark-2", "report"}
    assert snapshot(project) == reference[1]


def test_the_loop_ranks_with_a_tiny_pairrm(tmp_path: Path) -> None:
    """One iteration on the fixture with the committed tiny PairRM checkpoint as ranker and judge (its own run: the
    ranker's tokenizer enters prepare, so nothing of another run would be reused)."""
    project = make_own_project(tmp_path / "pairrm")
    set_params(project, {"iterations": 1, "rank": {"ranker": "pairrm", "batch_size": 64,
                                                   "pairrm": str(REPO / "tests" / "data" / "pairrm_tiny")}})
    run([ALIGNLOOP, "run"], project)
    scores = _jsonl(project / "artifacts/iter-1/scores.jsonl")
    assert {row["ranker"] for row in scores} == {"pairrm"}
    by_prompt: dict[str, list[float]] = {}
    for row in scores:
        by_prompt.setdefault(row["prompt_id"], []).append(row["score"])
    # s_i = mean_j (C_ij − C_ji) is antisymmetric in sum: each prompt's scores add up to zero
    assert all(abs(sum(values)) < 1e-4 for values in by_prompt.values())
    metrics = json.loads((project / "artifacts/iter-1/metrics.json").read_text())
    assert "test/greedy_pairrm" in metrics and "test/win_rate_vs_sft" in metrics
