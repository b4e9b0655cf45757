"""On a CUDA GPU (skipped without one; scripts/gpu_check.sh runs them): the tiny loop on the GPU with both backends,
vLLM's CUDA engine against HF generate, and data parallelism over two GPUs against one."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline_helpers import ALIGNLOOP, REPO, copy_project, make_project, requires_vllm, run, set_params

# scripts/gpu_check.sh sets ALIGNLOOP_REQUIRE_GPU=1: there a missing CUDA device fails these tests instead of skipping.
pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available() and not os.environ.get("ALIGNLOOP_REQUIRE_GPU"),
                                 reason="no CUDA device")]
# head width 64: what vLLM's kernels take
ON_GPU = {"model": {"device": "cuda", "n_layer": 2, "n_embd": 128, "n_head": 2},
          "sample": {"num_prompts": 96}, "optimize": {"batch_size": 8}}


@requires_vllm
def test_tiny_loop_on_gpu_with_vllm(tmp_path):
    project = make_project(tmp_path / "project", {**ON_GPU, "sample": {**ON_GPU["sample"], "backend": "vllm"},
                                                  "benchmark": {"backend": "vllm"}})
    run([ALIGNLOOP, "run"], project)
    samples = (project / "artifacts/iter-1/samples.jsonl").read_text().splitlines()
    assert len(samples) == 96 * 4  # every prompt's N samples, from the vLLM engine
    log = json.loads((project / "artifacts/iter-1/train_log.json").read_text())
    assert log["steps"] > 0 and math.isfinite(log["final"]["loss"])
    for folder in ("sft", "iter-1"):  # benchmark-0 and benchmark-1
        metrics = json.loads((project / "artifacts" / folder / "metrics.json").read_text())
        for split in ("in_distribution", "harder", "unseen_composition"):
            assert 0.0 <= metrics[f"{split}/greedy_gold"] <= 1.0 and metrics[f"{split}/greedy_length"] > 0
    sft = load_file(project / "artifacts/sft/model/model.safetensors")
    policy = load_file(project / "artifacts/iter-1/policy/model.safetensors")
    assert max((policy[name].float() - sft[name].float()).abs().max().item() for name in sft) > 0  # it trained


@requires_vllm
def test_vllm_greedy_matches_hf_on_gpu(tmp_path):
    from alignloop.config import load_config
    from alignloop.models.generation import generate
    from alignloop.models.policy import load_policy
    from alignloop.models.vllm_engine import GenerationJob, vllm_generate

    project = make_project(tmp_path / "project", {**ON_GPU, "iterations": 0})
    run([ALIGNLOOP, "run"], project)
    cfg = load_config(project / "params.yaml")
    policy = project / "artifacts/sft/model"
    model, tokenizer = load_policy(policy, cfg.model)
    rows = [json.loads(line) for line in (project / "data/train_prompts.jsonl").read_text().splitlines()][:200]
    prompts, ids = [row["prompt"] for row in rows], [row["prompt_id"] for row in rows]
    hf = generate(model, tokenizer, prompts, greedy=True, max_new_tokens=16, batch_size=64, prompt_ids=ids,
                  max_length=cfg.model.max_length)
    del model
    torch.cuda.empty_cache()
    [greedy] = vllm_generate(cfg, project, policy, tokenizer,
                             [GenerationJob(prompts, ids, greedy=True, max_new_tokens=16)])
    same = sum(a[0].token_ids == b[0].token_ids for a, b in zip(hf, greedy))
    assert same >= 0.99 * len(prompts), f"greedy equal on {same} of {len(prompts)}"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpus_follow_one(tmp_path):
    one = make_project(tmp_path / "one", ON_GPU)
    run([ALIGNLOOP, "run"], one)
    two = copy_project(one, tmp_path / "two")
    config = tmp_path / "two_gpus.yaml"
    config.write_text((REPO / "configs/accelerate/multi_gpu.yaml").read_text().replace("num_processes: 8",
                                                                                        "num_processes: 2"))
    set_params(two, {"pipeline": {"launcher": "accelerate", "accelerate_config": str(config)}})
    run([ALIGNLOOP, "stage", "optimize", "--iteration", "1"], two)
    first = json.loads((one / "artifacts/iter-1/train_log.json").read_text())["history"]
    second = json.loads((two / "artifacts/iter-1/train_log.json").read_text())["history"]
    assert [round(step["loss"], 3) for step in first] == [round(step["loss"], 3) for step in second]
    assert Path(two / "artifacts/iter-1/policy/model.safetensors").is_file()
