"""Numerical faults stop the stage where they happen, name it, and leave nothing saved or stamped; the cache key
follows the device a run resolves to."""

from __future__ import annotations

import math

import pytest
import torch

from alignloop.config import parse_config
from alignloop.errors import NonFiniteError
from alignloop.models.training import NonFiniteWeightsError, save_policy
from alignloop.paths import Layout
from alignloop.pipeline import cache
from alignloop.pipeline.cache import run_stage
from alignloop.pipeline.stages import STAGES
from alignloop.tasks.cfn import check_bonuses
from alignloop.tasks.rank import check_scores
from alignloop.tasks.sft import NonFiniteSFTLossError, check_logged_loss
from alignloop.testbed.model import create_base_model

TINY = {"testbed": {"sft_examples": 64, "prompt_pool_size": 20, "eval_size": 4},
        "model": {"n_layer": 1, "n_embd": 16, "n_head": 2}, "sft": {"epochs": 1, "batch_size": 8},
        "sample": {"num_prompts": 8}}


def test_check_logged_loss():
    check_logged_loss({"loss": 1.5}, 3)
    check_logged_loss({"learning_rate": 0.1}, 3)  # a log without a loss
    with pytest.raises(NonFiniteSFTLossError, match="sft, step 7: the training loss is nan; nothing was saved"):
        check_logged_loss({"loss": math.nan}, 7)


def test_sft_that_diverges_stops_before_saving_or_stamping(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLOOP_PROGRESS", "0")
    cfg = parse_config({**TINY, "sft": {**TINY["sft"], "learning_rate": 1e30}})
    layout = Layout(tmp_path)
    run_stage("prepare", cfg, layout)
    with pytest.raises(NonFiniteSFTLossError, match="nothing was saved"):
        run_stage("sft", cfg, layout)
    assert not layout.policy(0).exists() and not layout.train_log(0).exists()
    assert not cache.stamp_path(STAGES["sft"], layout, 0).exists()
    assert cache.stamp_path(STAGES["prepare"], layout, 0).exists()


def test_saving_non_finite_weights_writes_nothing(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = create_base_model(parse_config(TINY).model, 0, tmp_path / "base")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("inf")
    with pytest.raises(NonFiniteWeightsError, match="optimize iteration 2: 1 weight tensors hold inf/NaN"):
        save_policy(model, tokenizer, tmp_path / "policy", "optimize iteration 2")
    assert not (tmp_path / "policy").exists()


def test_non_finite_bonuses_and_scores_name_their_stage():
    check_bonuses(torch.ones(3), torch.ones(3), 2)
    with pytest.raises(NonFiniteError, match="cfn iteration 2: 2 non-finite bonuses or pseudo-counts"):
        check_bonuses(torch.tensor([1.0, math.nan]), torch.tensor([math.inf, 1.0]), 2)
    prompts = [{"prompt_id": "a"}, {"prompt_id": "b"}]
    check_scores([[0.1, 0.2], [0.3, -1.0]], prompts, "reward_model")
    message = r"rank: ranker reward_model gave non-finite scores for 1 prompts \(e.g. b\)"
    with pytest.raises(NonFiniteError, match=message):
        check_scores([[0.1, 0.2], [math.nan, -1.0]], prompts, "reward_model")


def test_reward_training_that_diverges_stops(tmp_path):
    from alignloop.config.reward import RewardConfig
    from alignloop.models.reward_training import NonFiniteRewardLossError, train_reward_model

    cfg = parse_config(TINY)
    base = create_base_model(cfg.model, 0, tmp_path / "base")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    pairs = [([5, 6, 7, 8], [5, 6, 9]), ([5, 10, 11], [5, 12, 13, 14])] * 8
    settings = RewardConfig(enabled=True, learning_rate=1e30, epochs=20, batch_size=4, warmup_ratio=0.0)
    with pytest.raises(NonFiniteRewardLossError, match=r"reward model, step \d+: loss is nan"):
        train_reward_model(base, tokenizer, pairs, settings, cfg.model, seed=0)


def test_the_cache_key_follows_the_resolved_device(tmp_path, monkeypatch):
    cfg, layout = parse_config(TINY), Layout(tmp_path)
    prepare, report = STAGES["prepare"], STAGES["report"]
    monkeypatch.setattr(cache, "resolved_device", lambda name: "cpu")
    on_cpu = cache.cache_key(prepare, cfg, layout, 0)
    monkeypatch.setattr(cache, "resolved_device", lambda name: "cuda")
    assert cache.cache_key(prepare, cfg, layout, 0) != on_cpu
    assert "model" not in report.params_of(cfg)  # stages that run no model keep their key


def test_resolved_device_maps_auto():
    cache.resolved_device.cache_clear()
    assert cache.resolved_device("cpu") == "cpu"
    assert cache.resolved_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
