"""The loss registry (alignloop/models/losses.py): values by hand, gradient signs, TRL 1.16 parity,
TDPO's chunked KL, Sr-*'s stop-gradient, SimPO's independence from the reference."""

from __future__ import annotations

import math

import pytest
import torch
from loss_helpers import dpo_loss

from alignloop.models.losses import (
    LOSSES,
    LossParams,
    PairBatch,
    dpo,
    ipo,
    log_ratio_margin,
    sequence_mean,
    sequence_sum,
    simpo,
    srdpo,
    sripo,
    tdpo1,
    tdpo2,
    token_forward_kl,
)

NAN = float("nan")

# ---------------------------------------------------------------- three hand-picked pairs
# Per-token log-probs of the response tokens only; the tensors pad them to 4 positions with NaN, which the masks
# must keep out of every sum. Pair 0 is ranked right by the policy (h > 0), pairs 1 and 2 wrong.
POLICY_CHOSEN = [[-0.5, -1.0, -0.3], [-1.0, -2.0, -0.5, -0.5], [-3.0]]
REFERENCE_CHOSEN = [[-0.7, -1.2, -0.4], [-0.8, -1.5, -0.5, -0.4], [-2.0]]
POLICY_REJECTED = [[-2.0, -1.5], [-0.2, -0.3, -0.4], [-1.0, -1.0, -1.0, -1.0]]
REFERENCE_REJECTED = [[-1.8, -1.0], [-0.5, -0.6, -0.2], [-1.5, -1.5, -1.5, -1.5]]
KL_CHOSEN = [[0.1, 0.2, 0.05], [0.3, 0.0, 0.1, 0.2], [0.4]]  # per-token KL(π_ref ‖ π_θ) on y_w
KL_REJECTED = [[0.3, 0.4], [0.05, 0.05, 0.1], [0.2, 0.1, 0.3, 0.2]]
PROMPTED_MARGIN = [0.8, -0.5, 2.0]  # h recomputed with the quality prompt

CUSTOM = LossParams(beta=0.3, label_smoothing=0.2, ipo_tau=0.05, simpo_beta=2.5, simpo_gamma_ratio=0.4,
                    tdpo_alpha=0.7, sr_lambda=0.3)
PARAMS = [LossParams(), CUSTOM]


def _padded(rows: list[list[float]], width: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    values = torch.tensor([row + [NAN] * (width - len(row)) for row in rows], dtype=torch.float64)
    mask = torch.tensor([[k < len(row) for k in range(width)] for row in rows])
    return values, mask


def _batch(grad: bool = False, **overrides) -> PairBatch:
    policy_chosen, chosen_mask = _padded(POLICY_CHOSEN)
    policy_rejected, rejected_mask = _padded(POLICY_REJECTED)
    fields = {"policy_chosen_logps": policy_chosen.requires_grad_(grad),
              "policy_rejected_logps": policy_rejected.requires_grad_(grad),
              "chosen_mask": chosen_mask, "rejected_mask": rejected_mask.float(),  # both mask dtypes accepted
              "reference_chosen_logps": _padded(REFERENCE_CHOSEN)[0],
              "reference_rejected_logps": _padded(REFERENCE_REJECTED)[0],
              "chosen_kl": _padded(KL_CHOSEN)[0], "rejected_kl": _padded(KL_REJECTED)[0],
              "prompted_margin": torch.tensor(PROMPTED_MARGIN, dtype=torch.float64)}
    fields.update(overrides)
    return PairBatch(**fields)


def _neg_logsigmoid(z: float) -> float:
    return math.log1p(math.exp(-z))


def _by_hand(name: str, k: int, p: LossParams) -> tuple[float, float, float]:
    """(loss, chosen reward, rejected reward) of pair k, in plain Python."""
    n_w, n_l = len(POLICY_CHOSEN[k]), len(POLICY_REJECTED[k])
    rho_w = sum(POLICY_CHOSEN[k]) - sum(REFERENCE_CHOSEN[k])
    rho_l = sum(POLICY_REJECTED[k]) - sum(REFERENCE_REJECTED[k])
    h = rho_w - rho_l
    k_w, k_l = sum(KL_CHOSEN[k]), sum(KL_REJECTED[k])
    delta = p.beta * PROMPTED_MARGIN[k]
    b = p.beta
    if name == "simpo":
        a_w, a_l = sum(POLICY_CHOSEN[k]) / n_w, sum(POLICY_REJECTED[k]) / n_l
        gamma = p.simpo_gamma_ratio * p.simpo_beta
        return _neg_logsigmoid(p.simpo_beta * (a_w - a_l) - gamma), p.simpo_beta * a_w, p.simpo_beta * a_l
    loss = {
        "dpo": lambda: _neg_logsigmoid(b * h),
        "cdpo": lambda: (1 - p.label_smoothing) * _neg_logsigmoid(b * h) + p.label_smoothing * _neg_logsigmoid(-b * h),
        "ipo": lambda: (rho_w / n_w - rho_l / n_l - 1 / (2 * p.ipo_tau)) ** 2,
        "tdpo1": lambda: _neg_logsigmoid(b * h - b * (k_l - k_w)),
        "tdpo2": lambda: _neg_logsigmoid(b * h - p.tdpo_alpha * b * (k_l - k_w)),
        "srdpo": lambda: _neg_logsigmoid(b * h - p.sr_lambda * delta),
        "sripo": lambda: (h - p.sr_lambda * delta - 1 / (2 * b)) ** 2,
    }[name]()
    return loss, b * rho_w, b * rho_l


def test_hand_data_is_what_the_comments_say():
    # ρ_w = −1.8 − (−2.3) = 0.5, ρ_l = −3.5 − (−2.8) = −0.7: h = 1.2 for pair 0; pair 1 h = −0.8 − 0.4 = −1.2
    assert _by_hand("dpo", 0, LossParams())[0] == pytest.approx(math.log1p(math.exp(-0.12)), rel=1e-12)
    assert _by_hand("dpo", 1, LossParams())[0] == pytest.approx(math.log1p(math.exp(0.12)), rel=1e-12)
    # IPO pair 0: h̄ = 0.5/3 + 0.7/2 = 0.51667, target 5: (0.51667 − 5)² = 20.1003
    assert _by_hand("ipo", 0, LossParams())[0] == pytest.approx((0.5 / 3 + 0.35 - 5) ** 2, rel=1e-12)
    assert _by_hand("ipo", 0, LossParams())[0] == pytest.approx(20.10028, abs=1e-4)


@pytest.mark.parametrize("params", PARAMS, ids=["defaults", "custom"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_matches_the_formula_by_hand(name, params):
    out = LOSSES[name].fn(_batch(), params)
    assert out.losses.shape == out.chosen_rewards.shape == out.rejected_rewards.shape == (3,)
    expected = [_by_hand(name, k, params) for k in range(3)]
    assert out.losses.tolist() == pytest.approx([e[0] for e in expected], rel=1e-10)
    assert out.chosen_rewards.tolist() == pytest.approx([e[1] for e in expected], rel=1e-10)
    assert out.rejected_rewards.tolist() == pytest.approx([e[2] for e in expected], rel=1e-10)
    margins = [e[1] - e[2] for e in expected]
    assert out.metrics["reward_margin"].item() == pytest.approx(sum(margins) / 3, rel=1e-10)
    assert out.metrics["reward_accuracy"].item() == pytest.approx(sum(m > 0 for m in margins) / 3)
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad


def test_loss_specific_metrics_by_hand():
    batch, p = _batch(), LossParams()
    rho_w = [sum(a) - sum(b) for a, b in zip(POLICY_CHOSEN, REFERENCE_CHOSEN)]
    assert dpo(batch, p).metrics["chosen_logp_change"].item() == pytest.approx(sum(rho_w) / 3, rel=1e-12)
    kl = tdpo1(batch, p).metrics
    assert kl["kl_chosen"].item() == pytest.approx(sum(map(sum, KL_CHOSEN)) / 3, rel=1e-12)
    assert kl["kl_rejected"].item() == pytest.approx(sum(map(sum, KL_REJECTED)) / 3, rel=1e-12)
    assert srdpo(batch, p).metrics["refinement_margin"].item() == pytest.approx(0.1 * sum(PROMPTED_MARGIN) / 3)
    chosen_mean = simpo(batch, p).metrics["chosen_mean_logp"].item()
    assert chosen_mean == pytest.approx(sum(sum(r) / len(r) for r in POLICY_CHOSEN) / 3, rel=1e-12)


def test_sequence_helpers_by_hand():
    values, mask = _padded([[-1.0, -2.0], [], [-4.0, -4.0, -1.0]])
    assert sequence_sum(values, mask).tolist() == [-3.0, 0.0, -9.0]  # the NaN padding never leaks
    assert sequence_mean(values, mask).tolist() == [-1.5, 0.0, -3.0]  # an empty response counts as one token


@pytest.mark.parametrize("name", list(LOSSES))
def test_gradient_signs(name):
    # Pairs are not separated to saturation; IPO's h̄ (≤ 0.52) and Sr-IPO's h − λΔ are below their targets (5).
    batch = _batch(grad=True)
    LOSSES[name].fn(batch, LossParams()).losses.sum().backward()
    chosen_grad, rejected_grad = batch.policy_chosen_logps.grad, batch.policy_rejected_logps.grad
    chosen_mask, rejected_mask = batch.chosen_mask.bool(), batch.rejected_mask.bool()
    assert (chosen_grad[chosen_mask] < 0).all()  # raising a chosen token's log-prob lowers the loss
    assert (rejected_grad[rejected_mask] > 0).all()
    assert (chosen_grad[~chosen_mask] == 0).all() and (rejected_grad[~rejected_mask] == 0).all()


def test_dpo_gradient_value_by_hand():
    batch = _batch(grad=True)
    dpo(batch, LossParams()).losses.sum().backward()
    # d/dS(π_θ, y_w) −log σ(β h) = −β σ(−β h), the same for every token of the response; pair 0 has h = 1.2
    slope = 0.1 / (1 + math.exp(0.12))
    assert batch.policy_chosen_logps.grad[0, :3].tolist() == pytest.approx([-slope] * 3, rel=1e-12)


# ---------------------------------------------------------------- registry, parameters, errors

def test_registry_says_what_each_loss_needs():
    assert set(LOSSES) == {"dpo", "cdpo", "ipo", "simpo", "tdpo1", "tdpo2", "srdpo", "sripo"}
    assert {n for n, s in LOSSES.items() if not s.needs_reference} == {"simpo"}
    assert {n for n, s in LOSSES.items() if s.needs_kl} == {"tdpo1", "tdpo2"}
    assert {n for n, s in LOSSES.items() if s.needs_refinement} == {"srdpo", "sripo"}


def test_defaults_follow_algorithms_md():
    p = LossParams()
    assert (p.beta, p.label_smoothing, p.ipo_tau, p.tdpo_alpha) == (0.1, 0.1, 0.1, 0.5)
    assert (p.simpo_beta, p.simpo_gamma) == (2.0, 1.0)
    assert p.sr_lambda in {0.1, 0.3, 0.5, 1.0}


@pytest.mark.parametrize("bad", [{"label_smoothing": 0.5}, {"label_smoothing": -0.1}, {"beta": 0.0},
                                 {"ipo_tau": -1.0}, {"simpo_beta": 0.0}, {"sr_lambda": -0.5}])
def test_bad_parameters_are_rejected(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        LossParams(**bad)


def test_errors_name_what_is_missing():
    with pytest.raises(ValueError, match="tdpo1.*chosen_kl"):
        tdpo1(_batch(chosen_kl=None), LossParams())
    with pytest.raises(ValueError, match="srdpo.*prompted_margin"):
        srdpo(_batch(prompted_margin=None), LossParams())
    with pytest.raises(ValueError, match="ipo.*reference_chosen_logps"):
        ipo(_batch(reference_chosen_logps=None), LossParams())


@pytest.mark.parametrize("name", [n for n, s in LOSSES.items() if s.needs_reference])
def test_presummed_reference_and_kl_equal_per_token(name):
    def sums(rows):
        return torch.tensor([sum(r) for r in rows], dtype=torch.float64)

    summed = {"reference_chosen_logps": sums(REFERENCE_CHOSEN), "reference_rejected_logps": sums(REFERENCE_REJECTED),
              "chosen_kl": sums(KL_CHOSEN), "rejected_kl": sums(KL_REJECTED)}
    per_token = LOSSES[name].fn(_batch(), CUSTOM).losses
    assert torch.allclose(LOSSES[name].fn(_batch(**summed), CUSTOM).losses, per_token, rtol=1e-12, atol=0)


def test_legacy_dpo_loss_equals_the_registry_dpo():
    batch = _batch()
    sums = [torch.tensor([sum(r) for r in rows], dtype=torch.float64)
            for rows in (POLICY_CHOSEN, POLICY_REJECTED, REFERENCE_CHOSEN, REFERENCE_REJECTED)]
    losses, chosen_rewards, rejected_rewards = dpo_loss(*sums, beta=0.3)
    out = dpo(batch, LossParams(beta=0.3))
    assert torch.allclose(losses, out.losses, rtol=1e-12, atol=0)
    assert torch.allclose(chosen_rewards, out.chosen_rewards, rtol=1e-12, atol=0)
    assert torch.allclose(rejected_rewards, out.rejected_rewards, rtol=1e-12, atol=0)


# ---------------------------------------------------------------- Sr-DPO / Sr-IPO

def test_srdpo_with_lambda_zero_is_dpo():
    batch, p = _batch(), LossParams(sr_lambda=0.0)
    assert torch.equal(srdpo(batch, p).losses, dpo(batch, p).losses)
    assert torch.equal(srdpo(batch, p).chosen_rewards, dpo(batch, p).chosen_rewards)


def test_sripo_with_lambda_zero_is_the_unrefined_formula():
    batch, p = _batch(), LossParams(beta=0.3, sr_lambda=0.0)
    h = [sum(a) - sum(b) - (sum(c) - sum(d)) for a, b, c, d in
         zip(POLICY_CHOSEN, REFERENCE_CHOSEN, POLICY_REJECTED, REFERENCE_REJECTED)]
    assert sripo(batch, p).losses.tolist() == pytest.approx([(x - 1 / (2 * 0.3)) ** 2 for x in h], rel=1e-12)


@pytest.mark.parametrize("fn", [srdpo, sripo])
def test_refinement_has_no_gradient(fn):
    prompted = torch.tensor(PROMPTED_MARGIN, dtype=torch.float64, requires_grad=True)
    batch = _batch(grad=True, prompted_margin=prompted)
    out = fn(batch, LossParams())
    out.losses.sum().backward()
    assert prompted.grad is None  # sg[Δ]: the margin is an offset, never a target of the update
    assert batch.policy_chosen_logps.grad is not None
    # ... but it does change the loss
    assert not torch.allclose(out.losses, fn(_batch(), LossParams(sr_lambda=0.0)).losses)


def test_log_ratio_margin_builds_the_prompted_margin():
    # ρ_w − ρ_l per pair: 1.2, −1.2, −3.0
    assert log_ratio_margin(_batch()).tolist() == pytest.approx([1.2, -1.2, -3.0], rel=1e-12)


# ---------------------------------------------------------------- SimPO never touches a reference

def test_simpo_without_and_with_garbage_reference():
    reference_free = _batch(reference_chosen_logps=None, reference_rejected_logps=None, chosen_kl=None,
                            rejected_kl=None, prompted_margin=None)
    nan_reference = _batch(reference_chosen_logps=torch.full((3, 4), NAN, dtype=torch.float64),
                           reference_rejected_logps=torch.full((3, 4), NAN, dtype=torch.float64))
    a, b = simpo(reference_free, LossParams()), simpo(nan_reference, LossParams())
    assert torch.isfinite(a.losses).all()
    assert torch.equal(a.losses, b.losses) and torch.equal(a.chosen_rewards, b.chosen_rewards)
    assert torch.equal(a.losses, simpo(_batch(), LossParams()).losses)


# ---------------------------------------------------------------- TDPO

def test_tdpo2_differs_from_tdpo1_only_by_stop_gradient_and_alpha():
    def run(fn, alpha):
        kl_w = _padded(KL_CHOSEN)[0].requires_grad_(True)
        kl_l = _padded(KL_REJECTED)[0].requires_grad_(True)
        batch = _batch(grad=True, chosen_kl=kl_w, rejected_kl=kl_l)
        out = fn(batch, LossParams(tdpo_alpha=alpha))
        out.losses.sum().backward()
        return out.losses, kl_w.grad, kl_l.grad, batch.policy_chosen_logps.grad

    loss1, kl_w1, kl_l1, policy1 = run(tdpo1, 0.5)
    loss2, kl_w2, kl_l2, policy2 = run(tdpo2, 1.0)
    assert torch.allclose(loss1, loss2, rtol=1e-12, atol=0)  # α = 1: the same value
    assert torch.allclose(kl_l1.nan_to_num(), kl_l2.nan_to_num(), rtol=1e-12, atol=0)
    assert torch.allclose(policy1.nan_to_num(), policy2.nan_to_num(), rtol=1e-12, atol=0)
    mask = _padded(KL_CHOSEN)[1]
    # tdpo1: descent lowers K_l and raises K_w (dL/dK_w = −β·σ(−z) < 0), the drift TDPO2 stops; tdpo2: sg[K_w]
    assert (kl_w1[mask] < 0).all()
    assert kl_w2 is None  # no gradient path at all
    assert (kl_l1[_padded(KL_REJECTED)[1]] > 0).all()
    # α scales the KL term: with α = 0, tdpo2 is DPO
    assert torch.allclose(tdpo2(_batch(), LossParams(tdpo_alpha=0.0)).losses, dpo(_batch(), LossParams()).losses)


def _direct_kl(policy_logits: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
    """Σ_v p_ref(v)·(log p_ref(v) − log p_θ(v)) in float64, terms with p_ref = 0 dropped."""
    log_p_ref = torch.log_softmax(reference_logits.double(), -1)
    log_p_theta = torch.log_softmax(policy_logits.double(), -1)
    p_ref = log_p_ref.exp()
    terms = torch.where(p_ref > 0, p_ref * (log_p_ref - log_p_theta), torch.zeros_like(p_ref))
    return terms.sum(-1)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 4, 7, 100])
@pytest.mark.parametrize("grad", [False, True])
def test_chunked_kl_equals_direct(chunk_size, grad):
    gen = torch.Generator().manual_seed(0)
    policy_logits = (2 * torch.randn(2, 7, 11, generator=gen)).requires_grad_(grad)
    reference_logits = 2 * torch.randn(2, 7, 11, generator=gen)
    kl = token_forward_kl(policy_logits, reference_logits, chunk_size=chunk_size)
    assert kl.shape == (2, 7) and kl.dtype == torch.float32
    assert torch.allclose(kl.double(), _direct_kl(policy_logits.detach(), reference_logits), atol=1e-6, rtol=0)
    assert (kl >= 0).all()
    if grad:
        # d Σ_t KL_t / d z_θ = softmax(z_θ) − softmax(z_ref) at every position
        kl.sum().backward()
        expected = torch.softmax(policy_logits.detach(), -1) - torch.softmax(reference_logits, -1)
        assert torch.allclose(policy_logits.grad, expected, atol=1e-6)


def test_kl_is_zero_when_policy_is_reference_and_respects_mask():
    logits = torch.randn(2, 5, 9, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(token_forward_kl(logits.clone(), logits, chunk_size=2), torch.zeros(2, 5), atol=1e-6)
    mask = torch.tensor([[True, True, False, False, False], [False, True, True, True, True]])
    other = torch.randn(2, 5, 9, generator=torch.Generator().manual_seed(2))
    kl = token_forward_kl(other, logits, mask=mask, chunk_size=3)
    assert (kl[~mask] == 0).all() and (kl[mask] > 0).all()


def test_kl_survives_reference_underflow_and_masked_vocabulary():
    gen = torch.Generator().manual_seed(3)
    policy_logits = torch.randn(2, 6, 10, generator=gen)
    reference_logits = torch.randn(2, 6, 10, generator=gen)
    reference_logits[..., 0] = -1e4  # probability underflows to exactly 0 in fp32
    reference_logits[..., 1] = -float("inf")  # a masked vocabulary entry
    policy_logits[..., 1] = -float("inf")  # masked in the policy too
    policy_logits[..., 2] = -1e4
    reference_logits[0, 0, :] = -1e4  # a whole row very negative: softmax is still uniform
    reference_logits[0, 0, 1] = -float("inf")
    naive = torch.softmax(reference_logits, -1)
    naive_kl = (naive * (naive.log() - torch.log_softmax(policy_logits, -1))).sum(-1)
    assert torch.isnan(naive_kl).any()  # the underflow trap of softmax().log() is really in this input
    policy_logits.requires_grad_(True)
    kl = token_forward_kl(policy_logits, reference_logits, chunk_size=4)
    assert torch.isfinite(kl).all() and (kl >= 0).all()
    assert torch.allclose(kl.double(), _direct_kl(policy_logits.detach(), reference_logits), atol=1e-5, rtol=1e-6)
    kl.sum().backward()
    assert torch.isfinite(policy_logits.grad).all()


def test_kl_feeds_tdpo_and_its_gradient_reaches_the_policy_logits():
    gen = torch.Generator().manual_seed(4)
    policy_logits = torch.randn(3, 4, 8, generator=gen, dtype=torch.float64).requires_grad_(True)
    reference_logits = torch.randn(3, 4, 8, generator=gen, dtype=torch.float64)
    batch = _batch(chosen_kl=token_forward_kl(policy_logits, reference_logits, chunk_size=3))
    tdpo1(batch, LossParams()).losses.sum().backward()
    grad = policy_logits.grad
    mask = _padded(POLICY_CHOSEN)[1]
    assert grad[mask].abs().sum() > 0 and (grad[~mask] == 0).all()


@pytest.mark.parametrize("chunk_size", [1, 3, 8, 100])
def test_sequential_kl_from_hidden_equals_kl_of_full_logits(chunk_size):
    """The stage's TDPO path (heads applied chunk by chunk on hidden states) gives the same KL, reference log-probs
    and policy gradients as applying the heads first and calling `token_forward_kl`."""
    from alignloop.models.losses import sequential_kl_from_hidden, token_forward_kl

    torch.manual_seed(3)
    batch, seq, width, vocab = 2, 7, 5, 11
    policy_head, reference_head = torch.nn.Linear(width, vocab), torch.nn.Linear(width, vocab)
    policy_hidden = torch.randn(batch, seq, width, requires_grad=True)
    reference_hidden = torch.randn(batch, seq, width)
    targets = torch.randint(0, vocab, (batch, seq))
    mask = torch.rand(batch, seq) > 0.3

    reference_logps, kl = sequential_kl_from_hidden(policy_hidden, policy_head, reference_hidden, reference_head,
                                                    targets, mask, chunk_size)
    (kl.sum() * 0.7).backward()
    grads = (policy_hidden.grad.clone(), policy_head.weight.grad.clone())
    policy_hidden.grad, policy_head.weight.grad = None, None

    direct_kl = token_forward_kl(policy_head(policy_hidden), reference_head(reference_hidden), mask, chunk_size=seq)
    (direct_kl.sum() * 0.7).backward()
    direct_logps = torch.log_softmax(reference_head(reference_hidden), -1).gather(-1, targets[..., None])[..., 0]
    assert torch.allclose(kl, direct_kl, atol=1e-6)
    assert torch.allclose(reference_logps, direct_logps.detach(), atol=1e-6)
    assert torch.allclose(grads[0], policy_hidden.grad, atol=1e-6)
    assert torch.allclose(grads[1], policy_head.weight.grad, atol=1e-6)
    assert reference_head.weight.grad is None  # the reference is never trained
