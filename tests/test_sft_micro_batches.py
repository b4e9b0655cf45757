"""SFT's length-balanced micro-batches (`sft.micro_batch_size`): the batch sampler is the run's seed's, reruns are
byte-identical, and the micro-batches of a batch are its own demonstrations, less padded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from alignloop.config import Config
from alignloop.paths import Layout
from alignloop.pipeline.cache import run_stage

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _sft(root: Path, **overrides) -> bytes:
    params = yaml.safe_load((REPO / "presets" / "tiny.yaml").read_text())
    params["sft"] = {**params["sft"], "micro_batch_size": 8}
    params.update(overrides)
    cfg, layout = Config.model_validate(params), Layout(root)
    run_stage("prepare", cfg, layout)
    run_stage("sft", cfg, layout)
    return (layout.policy(0) / "model.safetensors").read_bytes()


def test_micro_batched_sft_is_deterministic_and_follows_the_seed(tmp_path: Path) -> None:
    first, again = _sft(tmp_path / "a"), _sft(tmp_path / "b")
    assert hashlib.sha256(first).digest() == hashlib.sha256(again).digest()
    assert _sft(tmp_path / "c", seed=1) != first


def test_the_sampler_splits_each_random_batch_by_length_and_reads_the_seed() -> None:
    """The Trainer's sampler, as the stage configures it: 4 micro-batches of one batch hold exactly that batch's
    demonstrations, each micro-batch spans fewer lengths than the batch, and the seed changes the batches."""
    from transformers.trainer_pt_utils import BatchRebalanceSampler

    lengths = [(k * 37) % 60 + 5 for k in range(256)]

    def batches(seed: int) -> list[list[int]]:
        sampler = BatchRebalanceSampler(lengths=lengths, effective_batch_size=64, dp_size=1, grad_accum=4)
        sampler.seed = seed  # what SeededSFTTrainer sets from the run's data seed
        return [list(micro) for micro in sampler]

    micro = batches(0)
    assert len(micro) == 16 and sorted(k for m in micro for k in m) == list(range(256))
    for start in range(0, 16, 4):
        group = micro[start:start + 4]
        whole = [k for m in group for k in m]
        padded_whole = max(lengths[k] for k in whole) * len(whole)
        padded_micro = sum(max(lengths[k] for k in m) * len(m) for m in group)
        assert padded_micro < padded_whole
    assert batches(1) != micro and batches(0) == micro
