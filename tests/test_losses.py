"""Preference losses (alignloop/models/losses.py) and per-sequence log-probs (alignloop/models/logprobs.py)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from loss_helpers import dpo_loss

from alignloop.models.logprobs import (
    Tokenized,
    collate,
    mean_token_entropy,
    sequence_logps,
    token_logps,
    tokenize_ids,
)
from alignloop.models.losses import nll_anchor


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _t(*values: float, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


# ---------------------------------------------------------------- dpo_loss

def test_dpo_loss_by_hand():
    # h = (−1.0 − (−1.5)) − (−3.0 − (−2.0)) = 0.5 − (−1.0) = 1.5; loss = −log σ(0.1 · 1.5)
    losses, chosen_rewards, rejected_rewards = dpo_loss(_t(-1.0), _t(-3.0), _t(-1.5), _t(-2.0), beta=0.1)
    expected = -math.log(_sigmoid(0.15))
    assert expected == pytest.approx(0.62096, abs=1e-5)
    assert losses.shape == (1,)
    assert losses.item() == pytest.approx(expected, rel=1e-12)
    assert chosen_rewards.item() == pytest.approx(0.1 * 0.5, rel=1e-12)
    assert rejected_rewards.item() == pytest.approx(0.1 * -1.0, rel=1e-12)


def test_dpo_loss_batch_is_per_pair():
    policy_chosen, policy_rejected = _t(-1.0, -4.0, -2.0), _t(-3.0, -1.0, -2.0)
    reference_chosen, reference_rejected = _t(-1.5, -3.0, -2.0), _t(-2.0, -2.0, -2.0)
    beta = 0.5
    losses, chosen_rewards, rejected_rewards = dpo_loss(policy_chosen, policy_rejected, reference_chosen,
                                                        reference_rejected, beta)
    for k in range(3):
        rho_w = policy_chosen[k].item() - reference_chosen[k].item()
        rho_l = policy_rejected[k].item() - reference_rejected[k].item()
        assert losses[k].item() == pytest.approx(-math.log(_sigmoid(beta * (rho_w - rho_l))), rel=1e-12)
        assert chosen_rewards[k].item() == pytest.approx(beta * rho_w, rel=1e-12)
        assert rejected_rewards[k].item() == pytest.approx(beta * rho_l, rel=1e-12)
    # Equal ratios: h = 0, loss = log 2.
    assert losses[2].item() == pytest.approx(math.log(2.0), rel=1e-12)


def test_dpo_loss_is_stable_for_large_margins():
    losses, _, _ = dpo_loss(torch.tensor([0.0, -1000.0]), torch.tensor([-1000.0, 0.0]),
                            torch.tensor([0.0, 0.0]), torch.tensor([0.0, 0.0]), beta=1.0)
    assert torch.isfinite(losses).all()
    assert losses[0].item() == pytest.approx(0.0, abs=1e-6)
    assert losses[1].item() == pytest.approx(1000.0, rel=1e-6)  # log(sigmoid) would give inf here


def test_dpo_gradient_signs_and_values():
    policy_chosen, policy_rejected = _t(-1.0, grad=True), _t(-3.0, grad=True)
    reference_chosen, reference_rejected = _t(-1.5, grad=True), _t(-2.0, grad=True)
    losses, chosen_rewards, rejected_rewards = dpo_loss(policy_chosen, policy_rejected, reference_chosen,
                                                        reference_rejected, beta=0.1)
    losses.sum().backward()
    # d/dh −log σ(βh) = −β σ(−βh)
    slope = 0.1 * _sigmoid(-0.15)
    assert policy_chosen.grad.item() < 0
    assert policy_rejected.grad.item() > 0
    assert policy_chosen.grad.item() == pytest.approx(-slope, rel=1e-12)
    assert policy_rejected.grad.item() == pytest.approx(slope, rel=1e-12)
    assert reference_chosen.grad.item() == pytest.approx(slope, rel=1e-12)
    assert reference_rejected.grad.item() == pytest.approx(-slope, rel=1e-12)
    # The implicit rewards are reports, not part of the graph.
    assert not chosen_rewards.requires_grad and not rejected_rewards.requires_grad


def test_nll_anchor_by_hand():
    anchor = nll_anchor(torch.tensor([-6.0, -2.0, -3.0]), torch.tensor([3, 4, 0]))
    # −logp / len, with an empty response counted as one token
    assert anchor.tolist() == pytest.approx([6.0 / 3, 2.0 / 4, 3.0 / 1])


def test_nll_anchor_gradient():
    policy_chosen = torch.tensor([-6.0], requires_grad=True)
    nll_anchor(policy_chosen, torch.tensor([4])).sum().backward()
    assert policy_chosen.grad.item() == pytest.approx(-0.25)


# ---------------------------------------------------------------- logprobs

def test_token_logps_on_hand_made_logits():
    logits = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 1.0, 1.0], [2.0, 0.0, 0.0]]])  # (1, 3, 3)
    input_ids = torch.tensor([[0, 2, 1]])
    response_mask = torch.tensor([[False, True, True]])
    logps, mask = token_logps(logits, input_ids, response_mask)
    assert logps.shape == (1, 2)
    # position 0 predicts token 2, position 1 predicts token 1; the last position predicts nothing
    expected = [2.0 - math.log(1 + math.e + math.e ** 2), math.log(1 / 3)]
    assert logps[0].tolist() == pytest.approx(expected, rel=1e-6)
    reference = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    assert torch.allclose(logps, reference)
    assert mask.tolist() == [[True, True]]


def test_token_logps_upcasts_to_fp32():
    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    input_ids = torch.randint(0, 7, (2, 5), generator=torch.Generator().manual_seed(1))
    logps, _ = token_logps(logits, input_ids, torch.ones(2, 5, dtype=torch.bool))
    assert logps.dtype == torch.float32
    reference = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    assert torch.allclose(logps, reference, atol=1e-6)


PAD_ID = 0
SEQUENCES = [Tokenized(prompt_ids=[2, 10, 11, 3], response_ids=[20, 21, 4]),
             Tokenized(prompt_ids=[2, 12, 3], response_ids=[22, 4])]


def test_collate_masks_prompt_and_padding():
    batch = collate(SEQUENCES, pad_id=PAD_ID)
    assert batch["input_ids"].tolist() == [[2, 10, 11, 3, 20, 21, 4], [2, 12, 3, 22, 4, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]]
    assert batch["response_mask"].tolist() == [[False, False, False, False, True, True, True],
                                               [False, False, False, True, True, False, False]]
    assert batch["response_mask"].dtype == torch.bool


class _FixedLogits:
    """A stand-in model that returns given logits, so sequence sums can be checked by hand."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits

    def __call__(self, input_ids, attention_mask):
        assert input_ids.shape == self.logits.shape[:2]
        return SimpleNamespace(logits=self.logits)


def test_sequence_logps_sum_only_response_tokens():
    batch = collate(SEQUENCES, pad_id=PAD_ID)
    vocab = 32
    logits = torch.randn(2, 7, vocab, generator=torch.Generator().manual_seed(0))
    # Make padded and prompt positions extreme: if they leaked into the sum it would show.
    logits[1, 4:, :] = 0.0
    logits[1, 4:, PAD_ID] = 50.0
    totals, counts = sequence_logps(_FixedLogits(logits), batch)
    log_probs = torch.log_softmax(logits, dim=-1)
    ids = batch["input_ids"]
    # Row 0: response tokens at positions 4, 5, 6, predicted from positions 3, 4, 5.
    expected_0 = sum(log_probs[0, p - 1, ids[0, p]].item() for p in (4, 5, 6))
    # Row 1: response tokens at positions 3, 4 (positions 5, 6 are padding).
    expected_1 = sum(log_probs[1, p - 1, ids[1, p]].item() for p in (3, 4))
    assert totals.tolist() == pytest.approx([expected_0, expected_1], rel=1e-5)
    assert counts.tolist() == [3, 2]


def test_mean_token_entropy_over_response_positions():
    batch = collate(SEQUENCES, pad_id=PAD_ID)
    vocab = 8
    logits = torch.zeros(2, 7, vocab)  # uniform everywhere: entropy log 8
    logits[0, :3, 0] = 100.0  # row 0 prompt-predicting positions 0..2: nearly one-hot, must be ignored
    logits[1, 4:, 0] = 100.0  # row 1 positions predicting padding: must be ignored
    entropy = mean_token_entropy(logits, batch["response_mask"])
    assert entropy.tolist() == pytest.approx([math.log(8), math.log(8)], rel=1e-6)
    logits[0, 3, 0] = 100.0  # one of row 0's three response positions becomes certain
    entropy = mean_token_entropy(logits, batch["response_mask"])
    assert entropy[0].item() == pytest.approx(2 * math.log(8) / 3, rel=1e-5)


def test_tokenize_ids_keeps_the_sampled_ids(tokenizer):
    prompt_ids = list(tokenizer.apply_chat_template([{"role": "user", "content": "sort cab"}], tokenize=True,
                                                    add_generation_prompt=True, return_dict=False))
    sampled = tokenizer.encode("abc", add_special_tokens=False) + [tokenizer.eos_token_id]
    (row,) = tokenize_ids(tokenizer, [("sort cab", sampled)], max_length=96)
    assert row.prompt_ids == prompt_ids and row.response_ids == sampled
    # Sampling keeps prompt + response within max_length: a longer pair is an error, unless cutting is asked for.
    with pytest.raises(ValueError, match="exceed model.max_length"):
        tokenize_ids(tokenizer, [("sort cab", sampled)], max_length=len(prompt_ids) + 2)
    (cut,) = tokenize_ids(tokenizer, [("sort cab", sampled)], max_length=len(prompt_ids) + 2, cut=True)
    assert cut.response_ids == sampled[:2]
