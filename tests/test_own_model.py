"""The real-model path on the fixture (a Qwen2-style chat model with a byte-level BPE tokenizer whose end-of-turn
token is not EOS): training reads the sampled token ids, gradient accumulation gives the full batch's update, the
LoRA reference is the starting model, and a merged policy is a plain model with the adapter's logits."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from alignloop.config import Config, ModelConfig
from alignloop.models.distributed import make_accelerator
from alignloop.models.generation import generate, prompt_token_ids
from alignloop.models.losses import LOSSES
from alignloop.models.objective import NLLTerm, PreferenceTerm, ReferenceSums, sequence_sums
from alignloop.models.policy import load_policy, stop_token_ids
from alignloop.models.training import adapter_disabled, save_policy, with_lora
from alignloop.tasks.optimize import accumulation_steps, loss_params, tokenize_pairs, train_step
from alignloop.testbed.fixture import build_fixture

MODEL = ModelConfig(name_or_path="fixture", max_length=160)
PROMPTS = ["Write a short note about rivers.", "List three facts about the moon.", "Explain tides to a child.",
           "Describe a quiet morning."]


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return build_fixture(tmp_path_factory.mktemp("fixture"))


@pytest.fixture(scope="module")
def policy(fixture):
    return load_policy(fixture.policy, MODEL)


@pytest.fixture(scope="module")
def sampled(policy):
    """Four responses per prompt, sampled by the stage's own code."""
    model, tokenizer = policy
    return generate(model, tokenizer, PROMPTS, num_samples=4, max_new_tokens=24, seed=3, max_length=160)


def _pair_rows(sampled) -> list[dict]:
    return [{"prompt": prompt, "chosen_ids": list(gens[0].token_ids), "rejected_ids": list(gens[1].token_ids)}
            for prompt, gens in zip(PROMPTS, sampled)] * 2


def test_training_sequences_are_the_sampled_ids_even_where_text_does_not_round_trip(policy, sampled):
    model, tokenizer = policy
    pairs = tokenize_pairs(_pair_rows(sampled), tokenizer, MODEL.max_length)
    for (chosen, rejected), (prompt, gens) in zip(pairs, zip(PROMPTS, sampled)):
        assert chosen.prompt_ids == prompt_token_ids(tokenizer, prompt)
        assert chosen.response_ids == list(gens[0].token_ids) and rejected.response_ids == list(gens[1].token_ids)
    # The random policy writes token sequences that BPE would merge differently: decode → encode changes them.
    changed = [g for gens in sampled for g in gens
               if tokenizer.encode(tokenizer.decode(g.token_ids), add_special_tokens=False) != list(g.token_ids)]
    assert len(changed) >= 4, "the fixture should show decode→encode drift"


def test_the_end_of_turn_token_not_eos_ends_responses_and_training_sequences(fixture):
    model, tokenizer = load_policy(fixture.policy, MODEL)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn != tokenizer.eos_token_id
    assert stop_token_ids(model, tokenizer) == [end_of_turn, tokenizer.eos_token_id]
    # A head that always prefers <|im_end|> after two tokens: the response must stop there, finished, with it.
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    head.weight.data.zero_()
    head.bias.data.zero_()
    head.bias.data[100] = 5.0  # an ordinary BPE token
    model.lm_head = head
    calls = {"n": 0}
    original = head.forward

    def biased(hidden):  # third generated position onwards: end the turn
        calls["n"] += 1
        logits = original(hidden)
        if calls["n"] >= 3:
            logits[..., end_of_turn] += 50.0
        return logits

    head.forward = biased
    (gens,) = generate(model, tokenizer, PROMPTS[:1], greedy=True, max_new_tokens=10, max_length=160)
    response = gens[0]
    assert response.finished and response.token_ids[-1] == end_of_turn
    assert tokenizer.eos_token_id not in response.token_ids
    (pair,) = tokenize_pairs([{"prompt": PROMPTS[0], "chosen_ids": list(response.token_ids),
                               "rejected_ids": list(response.token_ids)}], tokenizer, MODEL.max_length)
    assert pair[0].response_ids[-1] == end_of_turn


def _terms(model, pairs, tokenizer) -> list:
    spec = LOSSES["dpo"]
    reference = ReferenceSums(*sequence_sums(model, pairs, tokenizer.pad_token_id, 16, "reference"))
    return [PreferenceTerm(spec, loss_params(Config().optimize), [reference]), NLLTerm(1.0)]


def test_gradient_accumulation_gives_the_full_batch_update(fixture, sampled):
    base, tokenizer = load_policy(fixture.policy, MODEL)
    pairs = tokenize_pairs(_pair_rows(sampled), tokenizer, MODEL.max_length)
    indices = list(range(len(pairs)))
    grads, losses = {}, {}
    for micro in (None, 3, 1):
        model = copy.deepcopy(base)
        opt = Config.model_validate({"optimize": {"batch_size": len(pairs), "micro_batch_size": micro}}).optimize
        terms = _terms(model, pairs, tokenizer)
        model.train()
        accelerator = make_accelerator(torch.device("cpu"), accumulation_steps(opt, 1, len(pairs)))
        loss, _ = train_step(accelerator, model, terms, pairs, indices, opt, tokenizer.pad_token_id, keep_hidden=False)
        grads[micro] = {name: p.grad.clone() for name, p in model.named_parameters()}
        losses[micro] = loss.item()
    for micro in (3, 1):
        assert losses[micro] == pytest.approx(losses[None], abs=1e-6)
        worst = max((grads[micro][name] - grads[None][name]).abs().max().item() for name in grads[None])
        assert worst < 1e-6, f"micro-batches of {micro}: gradients differ by {worst}"
    assert max(g.abs().max().item() for g in grads[None].values()) > 1e-3  # a real gradient, not zeros


def _train_lora(fixture, sampled, steps: int = 3):
    model, tokenizer = load_policy(fixture.policy, MODEL)
    lora_cfg = Config.model_validate({"optimize": {"lora": {"r": 4, "alpha": 8}}}).optimize
    pairs = tokenize_pairs(_pair_rows(sampled), tokenizer, MODEL.max_length)
    policy = with_lora(model, lora_cfg.lora, seed=0)
    terms = _terms(policy, pairs, tokenizer)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    policy.train()
    for _ in range(steps):
        optimizer.zero_grad()
        train_step(make_accelerator(torch.device("cpu")), policy, terms, pairs, list(range(len(pairs))), lora_cfg,
                   tokenizer.pad_token_id, False)
        optimizer.step()
    policy.eval()
    return policy, tokenizer, pairs


def test_the_adapter_disabled_reference_is_the_starting_model(fixture, sampled):
    policy, tokenizer, pairs = _train_lora(fixture, sampled)
    start, _ = load_policy(fixture.policy, MODEL)
    expected = sequence_sums(start, pairs, tokenizer.pad_token_id, 16, "start")
    moved = sequence_sums(policy, pairs, tokenizer.pad_token_id, 16, "policy")
    with adapter_disabled(policy):
        reference = sequence_sums(policy, pairs, tokenizer.pad_token_id, 16, "reference")
    for ours, theirs in zip(reference, expected):
        assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)
    assert (moved[0] - expected[0]).abs().max() > 1e-3  # the adapter did train


def test_a_merged_policy_is_a_plain_model_with_the_adapters_logits(fixture, sampled, tmp_path):
    policy, tokenizer, pairs = _train_lora(fixture, sampled)
    batch = torch.tensor([pairs[0][0].prompt_ids + pairs[0][0].response_ids])
    with torch.no_grad():
        adapted = policy(input_ids=batch).logits
    save_policy(policy, tokenizer, tmp_path / "merged", "test")
    files = sorted(path.name for path in (tmp_path / "merged").iterdir())
    assert "adapter_config.json" not in files and "model.safetensors" in files
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", use_safetensors=True).eval()
    with torch.no_grad():
        merged = plain(input_ids=batch).logits
    assert (merged - adapted).abs().max().item() < 1e-5


def test_a_static_kv_cache_gives_the_same_tokens_as_a_dynamic_one(policy):
    """`model.kv_cache: static` only changes how the cache is stored: greedy and seeded sampled responses of prompts
    of different lengths (left-padded in one batch) are the same token for token."""
    model, tokenizer = policy
    for options in ({"greedy": True}, {"num_samples": 4, "seed": 3}):
        static = generate(model, tokenizer, PROMPTS, max_new_tokens=24, max_length=160, kv_cache="static", **options)
        dynamic = generate(model, tokenizer, PROMPTS, max_new_tokens=24, max_length=160, kv_cache="dynamic",
                           **options)
        assert [[g.token_ids for g in gens] for gens in static] == [[g.token_ids for g in gens] for gens in dynamic]
