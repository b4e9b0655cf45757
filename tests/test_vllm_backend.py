"""`sample.backend: vllm` and `benchmark.backend: vllm`: vLLM's engine, in its own environment (.venv-vllm, made by
scripts/setup_vllm.sh), on the fixture's chat model after SFT.

- greedy responses are the HF path's on every prompt of a testbed policy (200 of 200) and on >= 99 % of the chat
  fixture's, and the engine's response log-probs equal the policy's (recomputed with transformers) within 1e-4;
- sampled responses repeat exactly with the same seeds, in a new engine;
- the own-model pipeline runs with both stages on vLLM, its samples naming the policy that made them;
- an engine that loaded other weights than the policy's is refused.

The engine tests need the vLLM environment: without it they skip, except under ALIGNLOOP_REQUIRE_VLLM=1 (CI), where
its absence is a failure.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from alignloop.config import Config, ConfigError
from alignloop.pipeline.runnable import check_runnable

from pipeline_helpers import ALIGNLOOP, REPO, merge, requires_vllm, run, statuses

ON_VLLM = {"iterations": 1, "sample": {"backend": "vllm"}, "benchmark": {"backend": "vllm"}}


def test_a_missing_vllm_environment_is_refused_before_any_work(tmp_path):
    cfg = Config.model_validate({"sample": {"backend": "vllm"}, "vllm": {"python": "no/such/python"}})
    with pytest.raises(ConfigError, match=r"vllm.python: no vLLM environment at .*no/such/python; create it with "
                                          r"scripts/setup_vllm.sh"):
        check_runnable(cfg, tmp_path)
    check_runnable(cfg.model_copy(update={"sample": cfg.sample.model_copy(update={"backend": "hf"})}), tmp_path)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The own-model preset, one iteration, sampling and benchmarking on vLLM."""
    path = tmp_path_factory.mktemp("vllm") / "project"
    path.mkdir()
    params = merge(yaml.safe_load((REPO / "presets" / "own_model.yaml").read_text()), ON_VLLM)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([ALIGNLOOP, "fixture", "fixture"], path)
    run([ALIGNLOOP, "run"], path)
    return path


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
@requires_vllm
def test_pipeline_samples_and_benchmarks_on_vllm(project):
    from transformers import AutoTokenizer

    from alignloop.models.policy import policy_hash

    assert set(statuses(project).values()) == {"ran"}
    samples = _jsonl(project / "artifacts/iter-1/samples.jsonl")
    assert {row["policy"] for row in samples} == {policy_hash(project / "artifacts/sft/model")}
    seeds = {}
    for row in samples:  # one seed per prompt (its request), shared by the prompt's 4 samples
        seeds.setdefault(row["prompt_id"], set()).add(row["seed"])
    assert all(len(found) == 1 for found in seeds.values()) and len({s for v in seeds.values() for s in v}) > 1
    tokenizer = AutoTokenizer.from_pretrained(project / "fixture" / "policy")
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    finished = [row for row in samples if row["finished"]]
    assert finished and {row["response_ids"][-1] for row in finished} <= {end_of_turn, tokenizer.eos_token_id}
    assert all(len(row["response_ids"]) == 32 for row in samples if not row["finished"])
    metrics = json.loads((project / "artifacts/iter-1/metrics.json").read_text())
    assert {"test/greedy_reward", "test/sampled_reward", "test/win_rate_vs_sft", "test/kl_to_sft"} <= set(metrics)


def _prompts(project: Path, tokenizer, limit: int = 200) -> tuple[list[str], list[str]]:
    from alignloop.models.generation import prompt_token_ids

    rows = _jsonl(project / "data" / "train_prompts.jsonl")
    rows = [row for row in rows if len(prompt_token_ids(tokenizer, row["prompt"])) + 32 <= 160][:limit]
    return [row["prompt"] for row in rows], [row["prompt_id"] for row in rows]


def _engine_logps_match(model, tokenizer, prompts: list[str], generations, max_length: int) -> float:
    """The largest |S(π, y | x) recomputed with transformers − the engine's own Σ log-prob| over the responses."""
    import torch

    from alignloop.models.logprobs import collate, sequence_logps, tokenize_ids

    responses = [(prompt, list(g.token_ids)) for prompt, gens in zip(prompts, generations) for g in gens]
    with torch.no_grad():
        logps = sequence_logps(model, collate(tokenize_ids(tokenizer, responses, max_length),
                                              tokenizer.pad_token_id))[0]
    engine = torch.tensor([g.logprob for gens in generations for g in gens], dtype=torch.float64)
    return (logps.double() - engine).abs().max().item()


def _sft_policy(project: Path):
    """The project's config, its SFT policy's directory, and that policy loaded with transformers."""
    from alignloop.config import load_config
    from alignloop.models.policy import load_policy

    cfg = load_config(project / "params.yaml")
    policy = project / "artifacts/sft/model"
    return (cfg, policy, *load_policy(policy, cfg.model))


def _hf_greedy(cfg, model, tokenizer, prompts: list[str], ids: list[str], max_new_tokens: int):
    from alignloop.models.generation import generate

    return generate(model, tokenizer, prompts, greedy=True, max_new_tokens=max_new_tokens, batch_size=64,
                    prompt_ids=ids, max_length=cfg.model.max_length)


def _assert_same_greedy(hf, engine, at_least: float) -> None:
    same = sum(a[0].token_ids == b[0].token_ids for a, b in zip(hf, engine, strict=True))
    assert same >= at_least * len(hf), f"greedy responses equal on {same} of {len(hf)} prompts"


@pytest.fixture(scope="module")
def testbed_project(tmp_path_factory) -> Path:
    """A testbed SFT policy that answers (head width 32, which vLLM's CPU kernels take; the default's 24 is not)."""
    path = tmp_path_factory.mktemp("vllm-testbed") / "project"
    path.mkdir()
    params = merge(yaml.safe_load((REPO / "presets" / "tiny.yaml").read_text()),
                   {"iterations": 0, "model": {"n_layer": 2, "n_embd": 64, "n_head": 2},
                    "testbed": {"sft_examples": 3000}, "sft": {"epochs": 2}})
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([ALIGNLOOP, "run"], path)
    return path


@pytest.mark.slow
@requires_vllm
def test_vllm_greedy_matches_hf_on_the_testbed_policy(testbed_project):
    from alignloop.models.vllm_engine import GenerationJob, vllm_generate

    cfg, policy, model, tokenizer = _sft_policy(testbed_project)
    rows = _jsonl(testbed_project / "data" / "train_prompts.jsonl")[:200]
    prompts, ids = [row["prompt"] for row in rows], [row["prompt_id"] for row in rows]
    [greedy] = vllm_generate(cfg, testbed_project, policy, tokenizer,
                             [GenerationJob(prompts, ids, greedy=True, max_new_tokens=16)])
    _assert_same_greedy(_hf_greedy(cfg, model, tokenizer, prompts, ids, 16), greedy, at_least=1.0)  # 200 of 200
    # answers that depend on the prompt and end at the stop token: a comparison that could have failed
    assert len({gens[0].token_ids for gens in greedy}) > 20 and sum(g[0].finished for g in greedy) > 150
    assert _engine_logps_match(model, tokenizer, prompts, greedy, cfg.model.max_length) < 1e-4


@pytest.mark.slow
@requires_vllm
def test_vllm_on_the_chat_fixture(project):
    from alignloop.models.vllm_engine import GenerationJob, vllm_generate

    cfg, policy, model, tokenizer = _sft_policy(project)
    prompts, ids = _prompts(project, tokenizer)
    assert len(prompts) >= 100
    sampled = GenerationJob(prompts, ids, greedy=False, max_new_tokens=32, num_samples=4, seed=11)
    greedy, first = vllm_generate(cfg, project, policy, tokenizer,
                                  [GenerationJob(prompts, ids, greedy=True, max_new_tokens=32), sampled])
    # 32 tokens of BPE text from an untrained-looking chat model: near-ties in the logits may break either way
    _assert_same_greedy(_hf_greedy(cfg, model, tokenizer, prompts, ids, 32), greedy, at_least=0.99)
    # the sampled responses are varied BPE text: the engine's log-probs are the policy's, token by token
    assert all(len({g.token_ids for g in gens}) > 1 for gens in first[:20])  # n samples per request, not n copies
    assert _engine_logps_match(model, tokenizer, prompts, first, cfg.model.max_length) < 1e-4

    again = vllm_generate(cfg, project, policy, tokenizer,
                          [sampled, GenerationJob(prompts, ids, greedy=False, max_new_tokens=32, num_samples=4,
                                                  seed=12)])
    assert [[g.token_ids for g in gens] for gens in again[0]] == [[g.token_ids for g in gens] for gens in first]
    differ = sum([g.token_ids for g in a] != [g.token_ids for g in b] for a, b in zip(again[1], first))
    assert differ > len(prompts) / 2  # another seed, other samples


@pytest.mark.slow
@requires_vllm
def test_an_engine_on_other_weights_is_refused(project, monkeypatch):
    from alignloop.config import load_config
    from alignloop.models import vllm_engine
    from alignloop.models.policy import load_tokenizer

    cfg = load_config(project / "params.yaml")
    policy = project / "artifacts/sft/model"
    monkeypatch.setattr(vllm_engine, "policy_hash", lambda path: "0" * 16)  # the stage expected other weights
    job = vllm_engine.GenerationJob(["Hi"], ["p"], greedy=True, max_new_tokens=4)
    with pytest.raises(vllm_engine.StalePolicyError, match="but the policy at .* is 0000000000000000"):
        vllm_engine.vllm_generate(cfg, project, policy, load_tokenizer(policy, cfg.model), [job])
