"""The native decode loop: nucleus sampling draws from exactly the nucleus with the right probabilities, greedy
decoding gives transformers' greedy tokens (with sequences leaving the batch as they stop), and the N samples of a
prompt continue from copies of its one cache."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers.generation.logits_process import TopPLogitsWarper

from alignloop.config import ModelConfig
from alignloop.models.decoding import nucleus_sample
from alignloop.models.generation import generate
from alignloop.models.policy import load_policy
from alignloop.testbed.model import create_base_model

PROMPTS = ["reverse: abc", "sort the digits: 93721", "reverse then shift: hello", "x", "double: 12"]


def draws(logits: torch.Tensor, rows: int, temperature: float, top_p: float, seed: int = 0) -> Counter:
    generator = torch.Generator().manual_seed(seed)
    return Counter(nucleus_sample(logits.expand(rows, -1), temperature, top_p, generator).tolist())


def test_nucleus_sampling_draws_the_nucleus_with_its_renormalised_probabilities() -> None:
    probs = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    counts = draws(probs.log()[None], 40_000, temperature=1.0, top_p=0.7)
    # mass before token k: 0, .4, .65, .8 -> the nucleus is tokens 0, 1, 2 (renormalised by 0.8)
    assert set(counts) == {0, 1, 2}
    for token, expected in ((0, 0.5), (1, 0.3125), (2, 0.1875)):
        assert counts[token] / 40_000 == pytest.approx(expected, abs=0.01)
    full = draws(probs.log()[None], 40_000, temperature=1.0, top_p=1.0)
    assert set(full) == set(range(6)) and full[5] / 40_000 == pytest.approx(0.04, abs=0.005)


def test_temperature_sharpens_before_the_nucleus_is_taken() -> None:
    probs = torch.tensor([0.5, 0.3, 0.2])
    counts = draws(probs.log()[None], 40_000, temperature=0.5, top_p=1.0)
    sharpened = probs ** 2 / (probs ** 2).sum()  # softmax(log p / 0.5)
    assert counts[2] / 40_000 == pytest.approx(sharpened[2].item(), abs=0.01)


def test_a_flat_distribution_widens_the_candidates_and_keeps_transformers_nucleus() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 2000) * 0.3  # the 64 most probable tokens hold far less than top_p
    kept = torch.isfinite(TopPLogitsWarper(top_p=0.9)(None, logits.clone()))[0].nonzero().squeeze(-1)
    counts = draws(logits, 30_000, temperature=1.0, top_p=0.9)
    assert len(kept) > 64 and set(counts) <= set(kept.tolist())
    assert len(set(counts)) > 0.97 * len(kept)  # nearly every kept token of ~1/len(kept) mass shows up


def test_the_same_seed_draws_the_same_tokens() -> None:
    logits = torch.randn(8, 100)
    first = nucleus_sample(logits, 1.0, 0.95, torch.Generator().manual_seed(3))
    again = nucleus_sample(logits, 1.0, 0.95, torch.Generator().manual_seed(3))
    other = [nucleus_sample(logits, 1.0, 0.95, torch.Generator().manual_seed(s)) for s in range(4, 8)]
    assert torch.equal(first, again) and any(not torch.equal(first, o) for o in other)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny_policy(request, tmp_path_factory) -> tuple:
    cfg = ModelConfig(architecture=request.param, n_layer=2, n_embd=32, n_head=2, max_length=64)
    path = create_base_model(cfg, seed=1, out_dir=Path(tmp_path_factory.mktemp(request.param)) / "model")
    model, tokenizer = load_policy(path, cfg)
    torch.manual_seed(0)
    with torch.no_grad():  # larger weights than an initialisation's: answers that vary from token to token
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(std=0.3)
    return model, tokenizer


def _tokens(generations) -> list[list[tuple[int, ...]]]:
    return [[g.token_ids for g in gens] for gens in generations]


def test_greedy_decoding_gives_transformers_greedy_tokens_as_sequences_stop(tiny_policy) -> None:
    model, tokenizer = tiny_policy
    common = dict(greedy=True, max_new_tokens=24, batch_size=8, max_length=64)
    reference = generate(model, tokenizer, PROMPTS, engine="hf", kv_cache="dynamic", **common)
    # a stop token the random model produces mid-answer in some rows, so sequences end at different steps
    early = {t for gens in reference for t in gens[0].token_ids[:2]}
    later = Counter(t for gens in reference for t in gens[0].token_ids[2:20] if t not in early)
    assert later, [gens[0].token_ids for gens in reference]
    model.generation_config.eos_token_id = [later.most_common(1)[0][0], tokenizer.eos_token_id]
    try:
        hf = generate(model, tokenizer, PROMPTS, engine="hf", kv_cache="dynamic", **common)
        native = generate(model, tokenizer, PROMPTS, engine="native", **common)
    finally:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    assert _tokens(native) == _tokens(hf)
    lengths = {gens[0].num_tokens for gens in native}
    assert len(lengths) > 1 and any(gens[0].finished for gens in native)  # stopped at different steps


def test_samples_of_a_prompt_continue_from_copies_of_its_cache(tiny_policy) -> None:
    model, tokenizer = tiny_policy
    greedy = generate(model, tokenizer, PROMPTS, engine="native", greedy=True, max_new_tokens=16, max_length=64)
    cold = generate(model, tokenizer, PROMPTS, engine="native", num_samples=3, temperature=1e-4,
                    max_new_tokens=16, max_length=64, seed=5)
    assert _tokens(cold) == [[gens[0].token_ids] * 3 for gens in greedy]  # a near-zero temperature is greedy
    hot = generate(model, tokenizer, PROMPTS, engine="native", num_samples=3, temperature=1.5, top_p=0.9,
                   max_new_tokens=16, max_length=64, seed=5)
    again = generate(model, tokenizer, PROMPTS, engine="native", num_samples=3, temperature=1.5, top_p=0.9,
                     max_new_tokens=16, max_length=64, seed=5)
    assert _tokens(hot) == _tokens(again) and all(len(set(gens)) > 1 for gens in _tokens(hot))
