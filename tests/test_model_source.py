"""Where models come from: local directories, hub ids resolved once by prepare (then never the network), policy 0
without SFT being the base model itself, weights in the configured dtype, digests of large files reused across runs,
and SFT with a LoRA adapter saving a plain model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignloop.config import Config
from alignloop.io import read_json, write_jsonl
from alignloop.models.policy import load_policy
from alignloop.paths import Layout
from alignloop.pipeline import digests
from alignloop.pipeline.stages import iteration_stages
from alignloop.sources.models import ModelSourceError, base_model_dir, is_local, policy_dir, resolve_model
from alignloop.testbed.fixture import build_fixture


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return build_fixture(tmp_path_factory.mktemp("fixture"))


def _fake_hub_cache(cache: Path, repo_id: str, source: Path) -> Path:
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/...}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(source, repo / "snapshots" / commit)
    return repo / "snapshots" / commit


def test_local_paths_and_hub_ids_are_told_apart(tmp_path):
    (tmp_path / "models" / "mine").mkdir(parents=True)
    assert is_local("models/mine", tmp_path) and is_local("./x/y", tmp_path) and is_local("/abs/path", tmp_path)
    assert is_local("models/other", tmp_path)  # its first part is a local directory: a typo, not a hub id
    assert not is_local("HuggingFaceH4/mistral-7b-sft-beta", tmp_path)
    with pytest.raises(ModelSourceError, match="model.name_or_path: models/other: no such directory"):
        resolve_model("models/other", tmp_path, "model.name_or_path", download=False)


def test_a_hub_model_is_resolved_once_by_prepare_and_read_from_the_record(fixture, tmp_path, monkeypatch):
    from huggingface_hub import constants

    snapshot = _fake_hub_cache(tmp_path / "hub", "acme/chat-tiny", fixture.policy)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the "download" must come from the cache
    layout = Layout(tmp_path / "project")
    prompts = tmp_path / "project" / "prompts.jsonl"
    write_jsonl(prompts, [{"prompt": f"Tell me about topic {k}."} for k in range(6)])
    cfg = Config.model_validate({
        "model": {"name_or_path": "acme/chat-tiny", "max_length": 128}, "sft": {"enabled": False},
        "data": {"train": {"path": "prompts.jsonl"}, "eval": {"dev": {"path": "prompts.jsonl", "max_rows": 2}}},
        "rank": {"ranker": "reward_model", "reward_model": str(fixture.reward_model)}})
    from alignloop.tasks.prepare import run_prepare

    run_prepare(cfg, layout)
    assert read_json(layout.model_record) == {"model.name_or_path": str(snapshot.resolve())}
    assert base_model_dir(cfg, layout) == snapshot.resolve() == policy_dir(cfg, layout, 0)
    assert len(list(open(layout.train_prompts))) == 4  # the two evaluation prompts left the training pool
    # Without SFT, iteration 0 only benchmarks the base model, which is used in place.
    assert iteration_stages(cfg, 0) == ("benchmark",)


def test_weights_load_in_the_configured_dtype(fixture):
    model, _ = load_policy(fixture.policy, Config.model_validate({"model": {"dtype": "bfloat16"}}).model)
    assert {param.dtype for param in model.parameters()} == {torch.bfloat16}
    model, _ = load_policy(fixture.policy, Config().model)
    assert {param.dtype for param in model.parameters()} == {torch.float32}


def test_large_file_digests_are_reused_across_runs_until_the_file_changes(tmp_path, monkeypatch):
    big = tmp_path / "model.safetensors"
    big.write_bytes(os.urandom(digests.MIN_STORED_BYTES + 10))
    monkeypatch.setenv(digests.STORE_ENV, str(tmp_path / "digests.json"))
    reads = []
    real = digests.sha256_of
    monkeypatch.setattr(digests, "sha256_of", lambda path: reads.append(path) or real(path))
    first = digests.file_digest(big)
    digests._memo.clear()  # a new process: only the store remembers
    assert digests.file_digest(big) == first and len(reads) == 1
    big.write_bytes(os.urandom(digests.MIN_STORED_BYTES + 10))  # new content, new mtime
    digests._memo.clear()
    assert digests.file_digest(big) != first and len(reads) == 2


def test_sft_with_lora_saves_a_plain_merged_model(fixture, tmp_path):
    from alignloop.tasks.sft import run_sft

    layout = Layout(tmp_path)
    write_jsonl(layout.sft_data, [{"prompt": f"Say something about item {k}.", "response": f"Item {k} is helpful."}
                                  for k in range(16)])
    cfg = Config.model_validate({"model": {"name_or_path": str(fixture.policy), "max_length": 128},
                                 "sft": {"epochs": 1, "batch_size": 8, "learning_rate": 0.01,
                                         "lora": {"r": 4, "alpha": 8}}})
    run_sft(cfg, layout)
    saved = {path.name for path in layout.policy(0).iterdir()}
    assert "model.safetensors" in saved and "adapter_config.json" not in saved
    before, after = load_file(str(fixture.policy / "model.safetensors")), load_file(
        str(layout.policy(0) / "model.safetensors"))
    assert before.keys() == after.keys()
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert changed and all("proj" in name for name in changed)  # only adapted linear layers moved
