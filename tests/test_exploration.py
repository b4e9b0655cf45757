"""COPO's exploration term by hand, α = 0 leaving any base loss untouched, and the CFN's features on a real model:
a response seen 20 times gets a lower bonus than one seen once, also after the buffer is saved and reloaded."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from alignloop.config import ModelConfig
from alignloop.models.cfn_features import last_token_features
from alignloop.models.coin_flipping import CFNHead, ReplayBuffer, bonuses, train_cfn
from alignloop.models.exploration import copo_term
from alignloop.models.losses import LOSSES, LossParams, PairBatch
from alignloop.models.policy import load_policy
from alignloop.testbed.model import create_base_model

from token_helpers import tokenize_text


def test_copo_term_by_hand():
    policy = torch.tensor([-2.0, -1.0, -3.0], requires_grad=True)
    sampler = torch.tensor([-2.5, -4.0, -3.0])
    bonus = torch.tensor([0.5, 1.0, 0.25])
    loss = copo_term(policy, sampler, bonus, alpha=0.2, scale=0.1, clip=5.0)
    weights = [min(math.exp(0.5), 5) * 0.1 * 0.5, 5 * 0.1 * 1.0, 1.0 * 0.1 * 0.25]  # exp(3) is clipped to 5
    assert loss.tolist() == pytest.approx([-0.2 * w * p for w, p in zip(weights, [-2.0, -1.0, -3.0])])
    loss.sum().backward()
    # the weight is stopped: dL/dS = −α·w, so minimising raises S, most for the rarest (largest bonus)
    assert policy.grad.tolist() == pytest.approx([-0.2 * w for w in weights])
    assert all(g < 0 for g in policy.grad)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_alpha_zero_leaves_every_base_loss_and_its_gradients_unchanged(loss):
    generator = torch.Generator().manual_seed(0)
    shape = (4, 6)
    logps = [torch.randn(shape, generator=generator, dtype=torch.float64).clamp(max=-0.01) for _ in range(2)]
    masks = [torch.ones(shape, dtype=torch.bool) for _ in range(2)]
    fields = dict(reference_chosen_logps=torch.randn(4, dtype=torch.float64, generator=generator) - 3,
                  reference_rejected_logps=torch.randn(4, dtype=torch.float64, generator=generator) - 3,
                  chosen_kl=torch.rand(shape, dtype=torch.float64, generator=generator),
                  rejected_kl=torch.rand(shape, dtype=torch.float64, generator=generator),
                  prompted_margin=torch.randn(4, dtype=torch.float64, generator=generator))
    if LOSSES[loss].needs_kl:
        fields["reference_chosen_logps"] = torch.randn(shape, dtype=torch.float64, generator=generator) - 1

    def total(alpha: float):
        chosen, rejected = (x.clone().requires_grad_(True) for x in logps)
        out = LOSSES[loss].fn(PairBatch(chosen, rejected, *masks, **fields), LossParams())
        chosen_sum = chosen.sum(-1)
        value = (out.losses + copo_term(chosen_sum, chosen_sum.detach() - 0.3, torch.full((4,), 0.7), alpha)).mean()
        value.backward()
        return value.detach(), chosen.grad, rejected.grad

    base, with_zero = total(0.0), total(0.0)
    plain_chosen, plain_rejected = (x.clone().requires_grad_(True) for x in logps)
    plain = LOSSES[loss].fn(PairBatch(plain_chosen, plain_rejected, *masks, **fields), LossParams()).losses.mean()
    plain.backward()
    assert torch.equal(with_zero[0], plain.detach()) and torch.equal(base[1], plain_chosen.grad)
    assert torch.equal(with_zero[2], plain_rejected.grad)
    assert not torch.equal(total(0.5)[1], plain_chosen.grad)  # and a non-zero α does change the gradient


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfn-model") / "model"
    create_base_model(ModelConfig(n_layer=1, n_embd=32, n_head=2), 0, path)
    return path


def full_forward_feature(model, seq) -> torch.Tensor:
    """The definition, computed the plain way: one unpadded forward pass, the last position's final hidden state."""
    with torch.no_grad():
        ids = torch.tensor([seq.prompt_ids + seq.response_ids])
        return model.base_model(input_ids=ids).last_hidden_state[0, -1]


def test_features_are_the_last_real_token_of_each_sequence(model_dir):
    model, tokenizer = load_policy(model_dir, ModelConfig(), torch.device("cpu"))
    rows = [("reverse: ab", "ba", True), ("sort, then uppercase: zyx123", "123XYZ ✓", True),
            ("reverse: ab", "b", False), ("reverse: ab", "ba", True),  # a repeat, and a third response of one prompt
            ("reverse: cd", "dc and then a much longer tail", True), ("reverse: ab", "abcdefghijklmnop", True)]
    seqs = [tokenize_text(tokenizer, *row, 96) for row in rows]
    prompt_length = len(seqs[0].prompt_ids)
    seqs.append(tokenize_text(tokenizer, "reverse: ab", "ba", True, prompt_length))  # response cut away entirely
    assert seqs[-1].response_ids == []
    expected = torch.stack([full_forward_feature(model, seq) for seq in seqs])
    for batch_size in (1, 2, 256):  # prompts shared or not, response lengths bucketed with padding or not
        features = last_token_features(model, seqs, tokenizer.pad_token_id, batch_size=batch_size)
        assert features.shape == (len(seqs), 32)
        assert torch.allclose(features, expected, atol=1e-5)
    assert torch.equal(features[0], features[3])


def test_a_response_seen_20_times_gets_a_lower_bonus_than_one_seen_once(model_dir, tmp_path):
    model, tokenizer = load_policy(model_dir, ModelConfig(), torch.device("cpu"))
    seqs = [tokenize_text(tokenizer, f"reverse: {text}", text[::-1], True, 96)
            for text in ("ab1", "q9z", "kk2m", "x7", "pq", "m3n4")]
    features = last_token_features(model, seqs, tokenizer.pad_token_id)
    frequent, rare = features[0], features[1]
    visits = torch.cat([frequent.expand(20, -1), rare[None], features[2:]])  # the others once each too
    generator = torch.Generator().manual_seed(0)
    buffer = ReplayBuffer.empty(32, 20).add(visits, generator)
    head = CFNHead(32, 20, seed=0)
    train_cfn(head, buffer, steps=3000, batch_size=16, learning_rate=1e-3, generator=generator)
    first = bonuses(head, torch.stack([frequent, rare]))
    assert first[0] < 0.5 * first[1]

    # next iteration: the buffer comes back from disk with its flips, the rare response is visited once more
    save_file({"features": buffer.features, "flips": buffer.flips}, tmp_path / "buffer.safetensors")
    stored = load_file(tmp_path / "buffer.safetensors")
    reloaded = ReplayBuffer(stored["features"], stored["flips"])
    assert torch.equal(reloaded.flips, buffer.flips)
    grown = reloaded.add(rare[None], generator)
    head = CFNHead(32, 20, seed=1)
    train_cfn(head, grown, steps=3000, batch_size=16, learning_rate=1e-3, generator=generator)
    second = bonuses(head, torch.stack([frequent, rare]))
    assert second[0] < 0.5 * second[1]
