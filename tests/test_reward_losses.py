"""Reward-model losses of Wang et al. 2024, "Secrets of RLHF Part II" (alignloop/models/reward_losses.py): every value
by hand in plain Python (math.log / math.exp) on 2–4 element tensors."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from alignloop.models.reward_losses import (
    DENOISING,
    DenoisingParams,
    adaptive_margin,
    bradley_terry,
    denoising_loss,
    flip_labels,
    margin_bradley_terry,
    metarm_difference_score,
    metarm_step,
    preference_strength,
    simcse_contrastive,
    soft_label_bradley_terry,
)


def _t(*values: float, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _nls(z: float) -> float:
    """−log σ(z) = log(1 + e^{−z})."""
    return math.log1p(math.exp(-z))


def _close(actual: torch.Tensor, expected: list[float]) -> None:
    assert actual.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-14)


# ---------------------------------------------------------------- Bradley–Terry

def test_bradley_terry_value_and_gradient_by_hand():
    chosen, rejected = _t(2.0, 0.0, -1.0, grad=True), _t(1.0, 0.5, 1.0, grad=True)
    losses = bradley_terry(chosen, rejected)
    # Δ = (1, −0.5, −2); L = log(1 + e^{−Δ})
    _close(losses, [math.log(1 + math.exp(-1.0)), math.log(1 + math.exp(0.5)), math.log(1 + math.exp(2.0))])
    losses.sum().backward()
    # dL/dr_c = −σ(−Δ), dL/dr_r = +σ(−Δ)
    expected = [_sigmoid(-1.0), _sigmoid(0.5), _sigmoid(2.0)]
    _close(chosen.grad, [-g for g in expected])
    _close(rejected.grad, expected)


def test_bradley_terry_is_stable_for_large_margins():
    losses = bradley_terry(_t(1000.0, -1000.0), _t(-1000.0, 1000.0))
    assert losses[0].item() == 0.0
    assert losses[1].item() == pytest.approx(2000.0)


# ---------------------------------------------------------------- preference strength

# d_{m,b}: 3 reward models (rows) × 4 pairs (columns)
ENSEMBLE = [[1.0, 2.0, -1.0, 0.0],
            [3.0, 2.0, -2.0, 0.5],
            [2.0, 2.0, -3.0, -0.5]]


def test_preference_strength_by_hand():
    mean, std = preference_strength(torch.tensor(ENSEMBLE, dtype=torch.float64))
    _close(mean, [2.0, 2.0, -2.0, 0.0])
    # squared deviations sum to 2, 0, 2, 0.5; sample variance divides by M − 1 = 2
    _close(std, [1.0, 0.0, 1.0, 0.5])
    _, population = preference_strength(torch.tensor(ENSEMBLE, dtype=torch.float64), unbiased=False)
    _close(population, [math.sqrt(2 / 3), 0.0, math.sqrt(2 / 3), math.sqrt(0.5 / 3)])


def test_preference_strength_rejects_bad_shapes():
    with pytest.raises(ValueError, match="M, batch"):
        preference_strength(_t(1.0, 2.0))
    with pytest.raises(ValueError, match="M >= 2"):
        preference_strength(torch.ones(1, 3))
    _, std = preference_strength(torch.ones(1, 3), unbiased=False)
    _close(std, [0.0, 0.0, 0.0])


# ---------------------------------------------------------------- flip rule

# Pair 0: μ > 0, ranked right. Pair 1: μ < 0 (ensemble says mislabelled), ranked wrong. Pair 2: μ = 0, a tie.
CHOSEN, REJECTED, STRENGTH = (1.0, 2.0, 0.5), (0.0, 3.0, 0.5), (0.5, -2.0, 0.0)


def test_flip_labels_swaps_only_negative_strength():
    new_chosen, new_rejected, flipped = flip_labels(_t(*CHOSEN), _t(*REJECTED), _t(*STRENGTH))
    assert flipped.tolist() == [False, True, False]
    _close(new_chosen, [1.0, 3.0, 0.5])
    _close(new_rejected, [0.0, 2.0, 0.5])


def test_flip_gradient_follows_the_swap():
    chosen, rejected = _t(*CHOSEN, grad=True), _t(*REJECTED, grad=True)
    DENOISING["flip"](chosen, rejected, _t(*STRENGTH), DenoisingParams()).sum().backward()
    # after the flip pair 1 has Δ' = 3 − 2 = 1: its original chosen response is pushed *down*
    _close(chosen.grad, [-_sigmoid(-1.0), _sigmoid(-1.0), -0.5])
    _close(rejected.grad, [_sigmoid(-1.0), -_sigmoid(-1.0), 0.5])


# ---------------------------------------------------------------- denoising variants

def _variant(name: str, params: DenoisingParams = DenoisingParams()) -> list[float]:
    return DENOISING[name](_t(*CHOSEN), _t(*REJECTED), _t(*STRENGTH), params).tolist()


def test_denoising_variants_by_hand():
    # Δ = r_c − r_r = (1, −1, 0); μ = (0.5, −2, 0)
    log2 = math.log(2.0)
    assert _variant("none") == pytest.approx([_nls(1.0), _nls(-1.0), log2], rel=1e-12)
    # flip pair 1: Δ' = (1, 1, 0)
    assert _variant("flip") == pytest.approx([_nls(1.0), _nls(1.0), log2], rel=1e-12)
    # margin m = max(μ, 0) = (0.5, 0, 0): z = (0.5, −1, 0)
    assert _variant("margin") == pytest.approx([_nls(0.5), _nls(-1.0), log2], rel=1e-12)
    # paper literal m = μ = (0.5, −2, 0): z = (0.5, 1, 0)
    assert _variant("margin", DenoisingParams(clip_margin=False)) == pytest.approx(
        [_nls(0.5), _nls(1.0), log2], rel=1e-12)
    # margin_scale 2: m = (1, 0, 0): z = (0, −1, 0)
    assert _variant("margin", DenoisingParams(margin_scale=2.0)) == pytest.approx(
        [log2, _nls(-1.0), log2], rel=1e-12)
    # flip then margin |μ| = (0.5, 2, 0): z = (1 − 0.5, 1 − 2, 0) = (0.5, −1, 0)
    assert _variant("flip_margin") == pytest.approx([_nls(0.5), _nls(-1.0), log2], rel=1e-12)
    assert _variant("flip_margin", DenoisingParams(clip_margin=False)) == _variant("flip_margin")
    # soft label a = 0.25 on pair 1 only (μ < 0), margin 0 there: z = −1
    soft = 0.75 * _nls(-1.0) + 0.25 * _nls(1.0)
    assert _variant("soft_label_margin", DenoisingParams(soft_label=0.25)) == pytest.approx(
        [_nls(0.5), soft, log2], rel=1e-12)
    # unclipped: pair 1's margin is μ = −2, z = 1
    soft_unclipped = 0.75 * _nls(1.0) + 0.25 * _nls(-1.0)
    assert _variant("soft_label_margin", DenoisingParams(soft_label=0.25, clip_margin=False)) == pytest.approx(
        [_nls(0.5), soft_unclipped, log2], rel=1e-12)


def test_soft_label_zero_is_margin_and_half_is_symmetric():
    generator = torch.Generator().manual_seed(0)
    chosen, rejected = torch.randn(6, generator=generator, dtype=torch.float64), torch.randn(
        6, generator=generator, dtype=torch.float64)
    strength = _t(1.5, -0.3, 0.0, -2.0, 0.7, -0.1)
    for clip in (True, False):
        zero = DenoisingParams(soft_label=0.0, clip_margin=clip)
        torch.testing.assert_close(DENOISING["soft_label_margin"](chosen, rejected, strength, zero),
                                   DENOISING["margin"](chosen, rejected, strength, zero), rtol=0, atol=0)
    # a = 1/2: L(z) = L(−z)
    z = _t(-3.0, -0.4, 0.0, 0.9, 5.0)
    half = soft_label_bradley_terry(z, torch.zeros_like(z), 0.0, 0.5)
    torch.testing.assert_close(half, soft_label_bradley_terry(-z, torch.zeros_like(z), 0.0, 0.5))
    _close(half, [0.5 * (_nls(v) + _nls(-v)) for v in z.tolist()])
    # ... so with the default clipped margin (m = 0 where μ < 0), a suspect pair's loss ignores its direction
    negative = _t(-1.0, -0.5, -3.0)
    half_params = DenoisingParams(soft_label=0.5)
    torch.testing.assert_close(DENOISING["soft_label_margin"](chosen[:3], rejected[:3], negative, half_params),
                               DENOISING["soft_label_margin"](rejected[:3], chosen[:3], negative, half_params))
    # a = 1 on suspect pairs is the flip (margin 0 there)
    one = DenoisingParams(soft_label=1.0)
    torch.testing.assert_close(DENOISING["soft_label_margin"](chosen[:3], rejected[:3], negative, one),
                               DENOISING["flip"](chosen[:3], rejected[:3], negative, one))


def test_margin_helpers_and_stop_gradient_on_strength():
    _close(margin_bradley_terry(_t(1.0), _t(0.0), 0.25), [_nls(0.75)])
    _close(adaptive_margin(_t(-1.0, 0.0, 2.0), DenoisingParams(margin_scale=0.5)), [0.0, 0.0, 1.0])
    strength = _t(*STRENGTH, grad=True)
    chosen = _t(*CHOSEN, grad=True)
    total = sum(fn(chosen, _t(*REJECTED), strength, DenoisingParams()).sum() for fn in DENOISING.values())
    total.backward()
    assert strength.grad is None  # μ is a statistic of a frozen ensemble
    assert chosen.grad is not None


@pytest.mark.parametrize("name", sorted(DENOISING))
def test_every_denoising_loss_is_finite_with_finite_gradients(name):
    chosen = _t(3.0e4, -3.0e4, 0.0, 1.0, -2.0, 50.0, grad=True)
    rejected = _t(-3.0e4, 3.0e4, 0.0, 1.0, 2.0, -50.0, grad=True)
    strength = _t(40.0, -40.0, 0.0, -1e-9, 1e-9, -3.0)
    for params in (DenoisingParams(), DenoisingParams(soft_label=0.5, margin_scale=3.0, clip_margin=False)):
        losses = denoising_loss(name)(chosen, rejected, strength, params)
        assert losses.shape == (6,)
        assert torch.isfinite(losses).all() and (losses >= 0).all()
        chosen.grad = rejected.grad = None
        losses.sum().backward()
        assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()


def test_registry_and_params_validation():
    assert set(DENOISING) == {"none", "flip", "margin", "flip_margin", "soft_label_margin"}
    with pytest.raises(ValueError, match="not one of"):
        denoising_loss("smooth")
    with pytest.raises(ValueError, match="soft_label"):
        DenoisingParams(soft_label=1.5)
    with pytest.raises(ValueError, match="margin_scale"):
        DenoisingParams(margin_scale=-1.0)


# ---------------------------------------------------------------- SimCSE contrastive loss

def _cosine(u: list[float], v: list[float]) -> float:
    return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


def test_simcse_two_rows_by_hand():
    first, second = [[1.0, 0.0], [0.0, 1.0]], [[3.0, 0.0], [2.0, 2.0]]  # cosine ignores the norms
    loss = simcse_contrastive(torch.tensor(first, dtype=torch.float64), torch.tensor(second, dtype=torch.float64),
                              temperature=0.5)
    # cos = [[1, 1/√2], [0, 1/√2]], logits = cos / 0.5
    root2 = math.sqrt(2.0)
    row0 = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(root2)))
    row1 = -math.log(math.exp(root2) / (math.exp(0.0) + math.exp(root2)))
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-12)


def test_simcse_three_rows_by_hand():
    first = [[1.0, 2.0, 0.0], [0.0, -1.0, 1.0], [2.0, 0.5, 0.5]]
    second = [[1.0, 1.5, 0.2], [0.3, -1.0, 2.0], [-1.0, 0.0, 1.0]]
    tau = 0.2
    expected = 0.0
    for i in range(3):
        logits = [_cosine(first[i], second[j]) / tau for j in range(3)]
        expected -= math.log(math.exp(logits[i]) / sum(math.exp(v) for v in logits)) / 3
    loss = simcse_contrastive(torch.tensor(first, dtype=torch.float64), torch.tensor(second, dtype=torch.float64),
                              tau)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_simcse_identical_separated_views_are_near_minimal():
    views = 3.0 * torch.eye(4, dtype=torch.float64)
    identical = simcse_contrastive(views, views.clone(), temperature=0.05)
    # cos = I, logits 20 on the diagonal and 0 elsewhere: L = log(1 + 3·e^{−20})
    assert identical.item() == pytest.approx(math.log1p(3 * math.exp(-20.0)), rel=1e-9)
    generator = torch.Generator().manual_seed(1)
    random = simcse_contrastive(torch.randn(4, 8, generator=generator), torch.randn(4, 8, generator=generator), 0.05)
    assert identical.item() < 1e-7 < 0.1 < random.item()


def test_simcse_gradient_is_finite_and_validates():
    first = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    simcse_contrastive(first, first.detach() + 0.01).backward()
    assert torch.isfinite(first.grad).all()
    with pytest.raises(ValueError, match="views"):
        simcse_contrastive(torch.ones(2, 3), torch.ones(3, 3))
    with pytest.raises(ValueError, match="temperature"):
        simcse_contrastive(torch.ones(2, 3), torch.ones(2, 3), temperature=0.0)


# ---------------------------------------------------------------- MetaRM difference score

def test_difference_score_by_hand_k3():
    rewards = _t(0.0, 1.0, 3.0, grad=True)
    score = metarm_difference_score(rewards)
    # |gaps| = 1, 3, 2
    assert score.item() == pytest.approx(2 / 9 * (_sigmoid(1.0) + _sigmoid(3.0) + _sigmoid(2.0)), rel=1e-12)
    score.backward()

    def slope(z: float) -> float:
        return _sigmoid(z) * (1 - _sigmoid(z))

    # dJ/dr_i = (2/k²) Σ_j σ'(|r_i − r_j|)·sign(r_i − r_j)
    _close(rewards.grad, [2 / 9 * (-slope(1.0) - slope(3.0)), 2 / 9 * (slope(1.0) - slope(2.0)),
                          2 / 9 * (slope(3.0) + slope(2.0))])
    # order does not matter; groups are averaged; equal rewards give the floor (k−1)/(2k)
    assert metarm_difference_score(_t(3.0, 0.0, 1.0)).item() == pytest.approx(score.item(), rel=1e-12)
    grouped = metarm_difference_score(torch.tensor([[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]], dtype=torch.float64))
    assert grouped.item() == pytest.approx((score.item() + 1 / 3) / 2, rel=1e-12)
    with pytest.raises(ValueError, match="k >= 2"):
        metarm_difference_score(_t(1.0))


# ---------------------------------------------------------------- MetaRM step on a linear reward model

def _linear_setup():
    generator = torch.Generator().manual_seed(3)
    model = torch.nn.Linear(3, 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -1.0, 0.25]]))
        model.bias.fill_(0.1)
    meta = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    chosen = torch.randn(2, 3, generator=generator, dtype=torch.float64)
    rejected = torch.randn(2, 3, generator=generator, dtype=torch.float64)

    def score_fn(reward):
        return metarm_difference_score(reward(meta).squeeze(-1))

    def loss_fn(reward):
        return bradley_terry(reward(chosen).squeeze(-1), reward(rejected).squeeze(-1)).mean()

    return model, meta, chosen, rejected, score_fn, loss_fn


def test_metarm_first_order_step_matches_a_hand_computed_copy():
    model, meta, chosen, rejected, score_fn, loss_fn = _linear_setup()
    eta = 0.5
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    step = metarm_step(model, score_fn, loss_fn, meta_lr=eta)

    # closed form for r = w·x + b: ∇_w J = (2/k²) Σ_{i<j} σ'(|d_ij|)·sign(d_ij)·(x_i − x_j), ∇_b J = 0
    w = before["weight"][0]
    k = meta.shape[0]
    grad_w = torch.zeros(3, dtype=torch.float64)
    for i in range(k):
        for j in range(i + 1, k):
            d = float(w @ (meta[i] - meta[j]))
            slope = _sigmoid(abs(d)) * (1 - _sigmoid(abs(d)))
            grad_w += 2 / k ** 2 * slope * math.copysign(1.0, d) * (meta[i] - meta[j])
    w_adapted, b_adapted = w + eta * grad_w, before["bias"]
    # ∇_w L(θ') = mean_b −σ(−Δ'_b)(x_c,b − x_r,b), ∇_b L = 0
    margins = (chosen - rejected) @ w_adapted
    expected_w = (-torch.sigmoid(-margins)[:, None] * (chosen - rejected)).mean(0)
    torch.testing.assert_close(step.gradients["weight"][0], expected_w, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(step.gradients["bias"], torch.zeros(1, dtype=torch.float64))

    # same on an autograd copy: ascend J, then take the BT gradient there
    replica = copy.deepcopy(model)
    score = score_fn(replica)
    torch.testing.assert_close(step.difference_score, score.detach())
    grads = torch.autograd.grad(score, list(replica.parameters()))
    with torch.no_grad():
        for p, g in zip(replica.parameters(), grads):
            p.add_(eta * g)
    torch.testing.assert_close(replica.weight.detach()[0], w_adapted, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(replica.bias.detach(), b_adapted)
    loss = loss_fn(replica)
    torch.testing.assert_close(step.loss, loss.detach())
    for (name, _), g in zip(replica.named_parameters(), torch.autograd.grad(loss, list(replica.parameters()))):
        torch.testing.assert_close(step.gradients[name], g, rtol=1e-12, atol=1e-14)

    # the model itself is untouched
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name]) and p.grad is None


def test_metarm_second_order_step_differentiates_through_the_ascent():
    model, meta, chosen, rejected, score_fn, loss_fn = _linear_setup()
    eta = 0.5
    step = metarm_step(model, score_fn, loss_fn, meta_lr=eta, second_order=True)
    params = {name: p.detach().clone() for name, p in model.named_parameters()}

    def bound(values):
        return lambda x: torch.func.functional_call(model, values, (x,))

    def outer(values):
        ascent = torch.func.grad(lambda v: score_fn(bound(v)))(values)
        return loss_fn(bound({name: values[name] + eta * ascent[name] for name in values}))

    expected = torch.func.grad(outer)(params)
    for name in params:
        torch.testing.assert_close(step.gradients[name], expected[name], rtol=1e-10, atol=1e-12)
    first = metarm_step(model, score_fn, loss_fn, meta_lr=eta)
    assert not torch.allclose(step.gradients["weight"], first.gradients["weight"], rtol=1e-6, atol=1e-9)
    # η = 0 is plain BT at θ, in both orders
    plain = metarm_step(model, score_fn, loss_fn, meta_lr=0.0, second_order=True)
    torch.testing.assert_close(plain.gradients["weight"], torch.autograd.grad(loss_fn(model), model.weight)[0])
