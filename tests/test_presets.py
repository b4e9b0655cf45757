"""The published recipes as presets (presets/copo_zephyr.yaml, copo_llama3.yaml, eva_gemma2.yaml): each validates
as it is, holds the recipe's numbers, and runs end to end with its model and data paths pointed at the fixture and
its sizes shrunk, so every stage the preset switches on is exercised (slow)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from alignloop.config import load_config
from alignloop.pipeline.launch import accelerate_config_file
from alignloop.pipeline.runnable import _launch_fits, launch_processes

from pipeline_helpers import ALIGNLOOP, REPO, merge, run, statuses

PRESETS = ("copo_zephyr", "copo_llama3", "eva_gemma2")
PAIRRM = Path(__file__).parent / "data" / "pairrm_tiny"
_FINISHED: dict[str, Path] = {}  # shrunk params (paths left out) → the project that ran them in this session


@pytest.mark.parametrize("name", PRESETS)
def test_the_preset_validates_and_holds_the_recipe(name: str, tmp_path: Path) -> None:
    cfg = load_config(REPO / "presets" / f"{name}.yaml")
    assert cfg.iterations == 3 and not cfg.sft.enabled and cfg.model.dtype == "bfloat16"
    assert cfg.data.train is not None and cfg.data.train.path == "HuggingFaceH4/ultrafeedback_binarized"
    # GPU engines: vLLM sampling, training on 8 GPUs from the shipped config (found from any project directory)
    assert (cfg.sample.backend, cfg.benchmark.backend, cfg.pipeline.launcher) == ("vllm", "vllm", "accelerate")
    config = accelerate_config_file(cfg, tmp_path)
    assert config == REPO / "configs/accelerate/multi_gpu.yaml" and launch_processes(config) == 8
    _launch_fits(cfg, 8, config)  # the batches split evenly over the 8 processes
    if name.startswith("copo"):
        assert (cfg.rank.ranker, cfg.optimize.exploration) == ("pairrm", "copo")
        assert (cfg.optimize.beta, cfg.optimize.copo_alpha, cfg.optimize.copo_scale) == (0.01, 1e-4, 0.1)
        assert cfg.sample.num_prompts * cfg.iterations <= 61_135  # disjoint slices of UltraFeedback's prompts
    else:
        assert cfg.evolve.enabled and cfg.evolve.evolver == "llm" and cfg.sample.num_samples == 6
        assert (cfg.evolve.informativeness, cfg.evolve.seed_fraction, cfg.evolve.variants_per_seed,
                cfg.evolve.evolved_fraction) == ("max_min", 0.25, 4, 0.8)


def _shrunk(name: str, project: Path) -> dict:
    """The preset with only paths, sizes and engines changed: the fixture's model, prompts and reward model, the tiny
    PairRM, one CPU process and HF generate."""
    params = yaml.safe_load((REPO / "presets" / f"{name}.yaml").read_text())
    prompts = {"prompt_column": "prompt", "split": "train"}
    shrunk = merge(params, {
        "iterations": 2,
        "data": {"train": {"path": "fixture/prompts/train.parquet", **prompts},
                 "eval": {"test": {"path": "fixture/prompts/test.parquet", **prompts, "max_rows": 12}}},
        "model": {"name_or_path": "fixture/policy", "max_length": 160, "dtype": "float32",
                  "gradient_checkpointing": False},
        "sample": {"num_prompts": 16, "max_new_tokens": 16, "batch_size": 32, "backend": "hf"},
        "rank": {"pairrm": str(project / "pairrm"), "reward_model": "fixture/reward_model", "batch_size": 32},
        "optimize": {"learning_rate": 1.0e-4, "batch_size": 8, "micro_batch_size": 4,
                     "lora": {"r": 4, "alpha": 8}},
        "cfn": {"steps": 50, "feature_batch_size": 32},
        "evolve": {"llm_max_new_tokens": 24},
        "benchmark": {"max_new_tokens": 16, "batch_size": 32, "backend": "hf"},
        # this machine's engines (test_launch_runs.py and test_vllm_backend.py run the launcher and vLLM): the
        # fixture's untrained policy rarely finishes a response, and these runs' few pairs come from HF's stream
        "pipeline": {"launcher": "python"},
    })
    return shrunk


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_the_shrunk_preset_runs_end_to_end(name: str, tmp_path: Path) -> None:
    # Presets that differ only in what shrinking replaces (copo_zephyr and copo_llama3 differ in model and data) run
    # once: the second finds the first's finished project.
    recipe = yaml.safe_dump(_shrunk(name, Path("<project>")), sort_keys=True)
    project = _FINISHED.get(recipe)
    if project is None:
        project = tmp_path / name
        project.mkdir()
        shutil.copytree(PAIRRM, project / "pairrm")
        (project / "params.yaml").write_text(yaml.safe_dump(_shrunk(name, project), sort_keys=False))
        run([ALIGNLOOP, "fixture", "fixture"], project)
        run([ALIGNLOOP, "run"], project)
        _FINISHED[recipe] = project
    done = statuses(project)
    assert set(done.values()) == {"ran"} and "sft" not in done
    metrics = json.loads((project / "artifacts" / "iter-2" / "metrics.json").read_text())
    if name.startswith("copo"):
        assert {"cfn-1", "cfn-2"} <= set(done)
        assert "test/greedy_pairrm" in metrics and "lc_win_rate_vs_sft" in metrics
        bonuses = (project / "artifacts" / "iter-1" / "cfn" / "bonuses.jsonl").read_text().splitlines()
        assert bonuses and all(json.loads(line)["bonus"] > 0 for line in bonuses)
    else:
        assert "evolve-1" in done and "test/greedy_reward" in metrics
        evolved = [json.loads(line) for line in
                   (project / "artifacts" / "iter-1" / "next_prompts.jsonl").read_text().splitlines()]
        assert len(evolved) == 16 and any(row.get("operator") not in (None, "pool") for row in evolved)
