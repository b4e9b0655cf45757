"""Reward-model losses of "Secrets of RLHF in Large Language Models Part II: Reward Modeling" (Wang et al. 2024,
arXiv:2401.06080), as pure tensor functions.

Notation, per preference pair b (every quantity is (batch,) unless said otherwise):
    r_c, r_r      rewards the trained reward model gives the chosen and the rejected response
    Δ = r_c − r_r the reward margin
    d_m = r_m(c) − r_m(r)  the margin of ensemble member m ∈ 1..M (M reward models trained on the same data)
    μ, σ          mean and standard deviation of d_m over m: the pair's *preference strength* (§2.1)
    ℓ(z) = −log σ(z) = softplus(−z), evaluated as −logsigmoid(z) for stability.

Denoising variants (§2.2) all share the signature `(r_c, r_r, μ, DenoisingParams) -> (batch,)` and live in the
`DENOISING` registry; μ is a fixed statistic of a frozen ensemble, so every variant detaches it. The contrastive
auxiliary loss (§3.1, SimCSE) and the MetaRM difference score and meta-step (§3.2) complete the module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call

Tensor = torch.Tensor


# ---------------------------------------------------------------- Bradley–Terry and its two generalisations

def bradley_terry(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """Bradley–Terry reward-model loss (Wang et al. 2024, eq. 1; Ouyang et al. 2022): L = −log σ(r_c − r_r).

    (batch,), (batch,) -> (batch,) per pair; the caller averages.
    """
    return -F.logsigmoid(chosen_rewards - rejected_rewards)


def margin_bradley_terry(chosen_rewards: Tensor, rejected_rewards: Tensor, margin: Tensor | float) -> Tensor:
    """BT with a margin (Wang et al. 2024 §2.2, adaptive margin; Touvron et al. 2023): L = −log σ(r_c − r_r − m).

    `margin` is (batch,) or a scalar and is used as given (no detach, no clipping). -> (batch,).
    """
    return -F.logsigmoid(chosen_rewards - rejected_rewards - margin)


def soft_label_bradley_terry(chosen_rewards: Tensor, rejected_rewards: Tensor, margin: Tensor | float,
                             soft_label: Tensor | float) -> Tensor:
    """BT with a soft label a and a margin m (Wang et al. 2024 §2.2, soft labels / label smoothing):
    L = −(1−a)·log σ(z) − a·log σ(−z),  z = r_c − r_r − m.

    a = 0 is `margin_bradley_terry`; a = 1/2 gives L(z) = L(−z) (the pair's direction is ignored, z is pulled to 0);
    a = 1 is BT on the swapped pair (with margin −m). `soft_label` is a scalar or (batch,) in [0, 1]. -> (batch,).
    """
    logits = chosen_rewards - rejected_rewards - margin  # (batch,) z
    return -(1 - soft_label) * F.logsigmoid(logits) - soft_label * F.logsigmoid(-logits)


# ---------------------------------------------------------------- preference strength from an ensemble

def preference_strength(ensemble_margins: Tensor, unbiased: bool = True) -> tuple[Tensor, Tensor]:
    """Preference strength of each pair from M reward models (Wang et al. 2024 §2.1):
    μ_b = (1/M) Σ_m d_{m,b},  σ_b = sqrt( Σ_m (d_{m,b} − μ_b)² / (M − 1) ),  d_{m,b} = r_m(x_b, y_c) − r_m(x_b, y_r).

    `ensemble_margins` is (M, batch). σ is the *sample* standard deviation (divisor M − 1, Bessel-corrected) by
    default, which needs M ≥ 2; `unbiased=False` gives the population one (divisor M). Returns (μ, σ), (batch,) each.
    """
    if ensemble_margins.dim() != 2:
        raise ValueError(f"ensemble_margins must be (M, batch), got shape {tuple(ensemble_margins.shape)}")
    members = ensemble_margins.shape[0]
    if members < (2 if unbiased else 1):
        raise ValueError(f"preference_strength needs M >= {2 if unbiased else 1} reward models, got {members}")
    mean = ensemble_margins.mean(dim=0)                              # (batch,) μ
    std = ensemble_margins.std(dim=0, correction=int(unbiased))  # (batch,) σ
    return mean, std


def flip_labels(chosen_rewards: Tensor, rejected_rewards: Tensor,
                strength: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Flip the pairs the ensemble calls mislabelled (Wang et al. 2024 §2.2, "flip"): where μ < 0, chosen and rejected
    swap; μ = 0 is left as labelled.

    Returns (r_c', r_r', flipped), (batch,) each; `flipped` is the bool mask μ < 0. On flipped pairs the preference
    strength of the new labelling is −μ = |μ|.
    """
    flipped = strength.detach() < 0                                  # (batch,) bool
    new_chosen = torch.where(flipped, rejected_rewards, chosen_rewards)
    new_rejected = torch.where(flipped, chosen_rewards, rejected_rewards)
    return new_chosen, new_rejected, flipped


# ---------------------------------------------------------------- denoising variants (one signature, a registry)

@dataclass(frozen=True)
class DenoisingParams:
    """Parameters of the `DENOISING` variants; each reads only its own fields."""

    soft_label: float = 0.3
    """a of `soft_label_margin`, applied to pairs with μ < 0 only: the weight put on the opposite label. 0 trusts the
    given label (→ `margin`), 1/2 ignores the pair's direction, 1 trusts the ensemble fully (→ a flip with margin 0).
    No value in the paper to copy; 0.3 is a middle guess of the 0.1–0.5 range. Measure."""
    margin_scale: float = 1.0
    """s in the adaptive margin m = s·max(μ, 0); 1 is the paper's m = μ̂."""
    clip_margin: bool = True
    """m = s·max(μ, 0) if True; m = s·μ (the paper's eq. written literally, a negative margin on μ < 0 pairs that
    *lowers* the target margin) if False. Only matters where μ < 0 is not flipped first (`margin`,
    `soft_label_margin`)."""

    def __post_init__(self):
        if not 0.0 <= self.soft_label <= 1.0:
            raise ValueError(f"denoising soft_label must be in [0, 1], got {self.soft_label}")
        if not self.margin_scale >= 0:
            raise ValueError(f"denoising margin_scale must be >= 0, got {self.margin_scale}")


def adaptive_margin(strength: Tensor, params: DenoisingParams) -> Tensor:
    """Adaptive margin (Wang et al. 2024 §2.2): m = s·max(μ, 0) (or s·μ if `clip_margin` is False), detached.
    (batch,) -> (batch,)."""
    strength = strength.detach()
    return params.margin_scale * (strength.clamp(min=0) if params.clip_margin else strength)


def bt_loss(chosen_rewards: Tensor, rejected_rewards: Tensor, strength: Tensor, params: DenoisingParams) -> Tensor:
    """No denoising: L = −log σ(r_c − r_r); μ and params are ignored."""
    return bradley_terry(chosen_rewards, rejected_rewards)


def flip_loss(chosen_rewards: Tensor, rejected_rewards: Tensor, strength: Tensor, params: DenoisingParams) -> Tensor:
    """Flip (Wang et al. 2024 §2.2): BT after `flip_labels`, L = −log σ(g·(r_c − r_r)), g = −1 where μ < 0, else +1."""
    new_chosen, new_rejected, _ = flip_labels(chosen_rewards, rejected_rewards, strength)
    return bradley_terry(new_chosen, new_rejected)


def margin_loss(chosen_rewards: Tensor, rejected_rewards: Tensor, strength: Tensor,
                params: DenoisingParams) -> Tensor:
    """Adaptive margin, no flip (Wang et al. 2024 §2.2): L = −log σ(r_c − r_r − m), m = s·max(μ, 0).

    With the default clipping a pair with μ < 0 gets m = 0, i.e. plain BT on its given label; `clip_margin=False`
    uses m = s·μ as written in the paper.
    """
    return margin_bradley_terry(chosen_rewards, rejected_rewards, adaptive_margin(strength, params))


def flip_margin_loss(chosen_rewards: Tensor, rejected_rewards: Tensor, strength: Tensor,
                     params: DenoisingParams) -> Tensor:
    """Flip, then adaptive margin (Wang et al. 2024 §2.2): with (r_c', r_r') = `flip_labels` and μ' = |μ| the strength
    of the flipped labelling, L = −log σ(r_c' − r_r' − s·μ'). μ' ≥ 0, so clipping never acts here."""
    new_chosen, new_rejected, _ = flip_labels(chosen_rewards, rejected_rewards, strength)
    return margin_bradley_terry(new_chosen, new_rejected, adaptive_margin(strength.abs(), params))


def soft_label_margin_loss(chosen_rewards: Tensor, rejected_rewards: Tensor, strength: Tensor,
                           params: DenoisingParams) -> Tensor:
    """Soft labels on suspect pairs, adaptive margin on all (Wang et al. 2024 §2.2), no flip:
    L = −(1−a_b)·log σ(z) − a_b·log σ(−z),  z = r_c − r_r − m,  m = s·max(μ, 0),  a_b = a if μ < 0 else 0.

    So pairs with μ ≥ 0 get exactly `margin`'s loss, and pairs with μ < 0 the soft-label loss around their own
    (unflipped) margin — 0 with the default clipping, s·μ < 0 with `clip_margin=False`. a = 0 reproduces `margin`.
    """
    strength = strength.detach()
    soft = torch.where(strength < 0, params.soft_label, 0.0).to(chosen_rewards.dtype)  # (batch,) a_b
    return soft_label_bradley_terry(chosen_rewards, rejected_rewards, adaptive_margin(strength, params), soft)


DenoisingFn = Callable[[Tensor, Tensor, Tensor, DenoisingParams], Tensor]

DENOISING: dict[str, DenoisingFn] = {
    "none": bt_loss,
    "flip": flip_loss,
    "margin": margin_loss,
    "flip_margin": flip_margin_loss,
    "soft_label_margin": soft_label_margin_loss,
}


def denoising_loss(name: str) -> DenoisingFn:
    """`DENOISING[name]`, with an error that lists the known names."""
    if name not in DENOISING:
        raise ValueError(f"denoising '{name}' is not one of {', '.join(DENOISING)}")
    return DENOISING[name]


# ---------------------------------------------------------------- contrastive auxiliary loss (SimCSE)

def simcse_contrastive(first_view: Tensor, second_view: Tensor, temperature: float = 0.05) -> Tensor:
    """SimCSE InfoNCE (Gao et al. 2021), the contrastive auxiliary loss of Wang et al. 2024 §3.1:
    L = −(1/N) Σ_i log( exp(cos(z1_i, z2_i)/τ) / Σ_j exp(cos(z1_i, z2_j)/τ) ).

    z1, z2 are (N, dim): two dropout-perturbed forward passes of the same N instances; row i of z2 is the positive of
    row i of z1, the other rows of z2 its negatives. The instances may be the reward model's representations of the
    chosen and rejected responses (stacked, 2·batch rows) or their differences h(x, y_c) − h(x, y_r) (batch rows),
    the two choices the paper compares. τ = 0.05 is SimCSE's default. Returns a scalar (mean over rows).
    """
    if first_view.dim() != 2 or first_view.shape != second_view.shape:
        raise ValueError(f"views must both be (N, dim), got {tuple(first_view.shape)} and {tuple(second_view.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    first, second = F.normalize(first_view, dim=-1), F.normalize(second_view, dim=-1)  # (N, dim) unit rows
    logits = first @ second.T / temperature                                             # (N, N) cos/τ
    targets = torch.arange(first.shape[0], device=first.device)                         # (N,) positive = diagonal
    return F.cross_entropy(logits, targets)


# ---------------------------------------------------------------- MetaRM

def metarm_difference_score(rewards: Tensor) -> Tensor:
    """MetaRM difference score (Wang et al. 2024 §3.2; Dou et al. 2024, "MetaRM"), to be *maximised*:
    J = (2/k²) Σ_{i<j} σ(|r(x_i, s_i) − r(x_j, s_j)|)  over the k responses s of the current policy in a meta-batch.

    `rewards` is (k,) for one meta-batch or (groups, k) for several, whose J are averaged (mean over groups). k ≥ 2.
    Each σ(|·|) ≥ 1/2, so J ∈ [(k−1)/(2k), (k−1)/k). Returns a scalar.
    """
    if rewards.dim() not in (1, 2):
        raise ValueError(f"rewards must be (k,) or (groups, k), got shape {tuple(rewards.shape)}")
    grouped = rewards if rewards.dim() == 2 else rewards.unsqueeze(0)  # (groups, k)
    k = grouped.shape[-1]
    if k < 2:
        raise ValueError(f"metarm_difference_score needs k >= 2 rewards per group, got {k}")
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=grouped.device), diagonal=1)  # (k, k) i < j
    gaps = (grouped.unsqueeze(-1) - grouped.unsqueeze(-2))[..., upper].abs()                  # (groups, k(k−1)/2)
    return (2.0 / k ** 2 * torch.sigmoid(gaps).sum(-1)).mean()


RewardFn = Callable[..., Tensor]  # the model's forward, run with some parameter values


@dataclass(frozen=True)
class MetaRMStep:
    gradients: dict[str, Tensor]  # per trainable parameter name: the gradient to apply at θ
    difference_score: Tensor      # J(θ) on the meta-batch, detached scalar
    loss: Tensor                  # L(θ') on the preference batch, detached scalar


def metarm_step(model: torch.nn.Module, difference_score_fn: Callable[[RewardFn], Tensor],
                preference_loss_fn: Callable[[RewardFn], Tensor], meta_lr: float,
                second_order: bool = False) -> MetaRMStep:
    """One MetaRM step (Wang et al. 2024 §3.2, Algorithm 1; Dou et al. 2024), without touching the model:
    θ' = θ + η·∇_θ J(θ; X_s)    (gradient *ascent* on the difference score of the policy's samples X_s),
    g  = ∇_θ' L(θ'; X_t)        (first order, default: the preference loss's gradient at θ', applied at θ), or
    g  = d L(θ'(θ); X_t) / dθ   (`second_order=True`: through θ', i.e. (I + η·∇²J)·∇_θ' L).

    `difference_score_fn(reward)` and `preference_loss_fn(reward)` get the model's forward bound to some parameter
    values (via `torch.func.functional_call`) and return scalars — e.g.
    `lambda reward: metarm_difference_score(reward(meta_inputs).squeeze(-1))` and
    `lambda reward: bradley_terry(reward(chosen).squeeze(-1), reward(rejected).squeeze(-1)).mean()`.
    The model's parameters and `.grad` are left as they are; the caller writes `gradients[name]` into
    `param.grad` and steps its optimizer (θ ← θ − α·g). Parameters that J or L does not reach get zero gradients.
    """
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}  # θ, the trainable leaves

    def bound(values: dict[str, Tensor]) -> RewardFn:
        return lambda *args, **kwargs: functional_call(model, values, args, kwargs)

    score = difference_score_fn(bound(params))                                       # J(θ), scalar
    score_grads = torch.autograd.grad(score, list(params.values()), create_graph=second_order, allow_unused=True)
    adapted = {}                                                                     # θ' = θ + η ∇J
    for (name, p), g in zip(params.items(), score_grads):
        step = torch.zeros_like(p) if g is None else meta_lr * g
        adapted[name] = p + step if second_order else (p.detach() + step.detach()).requires_grad_(True)
    loss = preference_loss_fn(bound(adapted))                                        # L(θ'), scalar
    wrt = list(params.values()) if second_order else list(adapted.values())
    loss_grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    gradients = {name: torch.zeros_like(p) if g is None else g.detach()
                 for (name, p), g in zip(params.items(), loss_grads)}
    return MetaRMStep(gradients, score.detach(), loss.detach())
