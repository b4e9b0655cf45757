"""Preference losses: one pure function per `optimize.loss`, each `(PairBatch, LossParams) -> LossOutput`.

Each function's docstring gives its formula and paper; the defaults are argued in `LossParams`
(alignloop/config/losses.py, which the `optimize` section extends).
Notation, per pair b (every sequence quantity is (batch,)):
    S(π, y|x) = Σ_t m_t log π(y_t | x, y_<t)          `sequence_sum`
    A(π, y|x) = S / max(1, Σ_t m_t)                  `sequence_mean`
    ρ_w = S(π_θ, y_w|x) − S(π_ref, y_w|x), ρ_l likewise, h = ρ_w − ρ_l, sg[·] = stop-gradient.
The optimize stage looks a loss up in `LOSSES` and computes only what its `LossSpec` says it needs (no reference
forward for SimPO, no full-vocabulary KL unless TDPO, no quality-prompt passes unless Sr-*).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from alignloop.config.losses import LossParams  # the parameters, declared once with their bounds

Tensor = torch.Tensor


# ---------------------------------------------------------------- inputs, parameters, outputs

@dataclass(frozen=True)
class PairBatch:
    """One mini-batch of preference pairs as per-token log-probs over response positions.

    Token tensors are (batch, seq) and aligned with their side's mask: 1/True on response tokens (EOS included),
    0/False on prompt and padding — `logprobs.token_logps` gives exactly this layout. Masked positions are ignored
    even when they hold inf or NaN. Chosen and rejected may have different seq lengths.
    """

    policy_chosen_logps: Tensor     # (batch, seq_w) log π_θ(y_w,t | x, y_w,<t)
    policy_rejected_logps: Tensor   # (batch, seq_l)
    chosen_mask: Tensor             # (batch, seq_w) bool or 0/1 float
    rejected_mask: Tensor           # (batch, seq_l)
    reference_chosen_logps: Tensor | None = None    # (batch, seq_w) per token, or (batch,) already summed S(π_ref)
    reference_rejected_logps: Tensor | None = None  # None for SimPO, which never reads them
    chosen_kl: Tensor | None = None     # TDPO: (batch, seq_w) `token_forward_kl` on y_w, or (batch,) K_w already summed
    rejected_kl: Tensor | None = None   # TDPO: K_l likewise
    # Sr-*: (batch,) h recomputed with the quality prompt p before the query, under no_grad:
    # (S(π_θ,y_w|p⊕x) − S(π_ref,y_w|p⊕x)) − (S(π_θ,y_l|p⊕x) − S(π_ref,y_l|p⊕x)), i.e. `log_ratio_margin` of a
    # PairBatch of those four passes. The loss scales it to Δ = β·prompted_margin and stops its gradient.
    prompted_margin: Tensor | None = None


@dataclass(frozen=True)
class LossOutput:
    losses: Tensor             # (batch,) per pair, with gradient; the trainer averages
    chosen_rewards: Tensor     # (batch,) detached implicit reward: β·ρ_w (SimPO: β·A_w)
    rejected_rewards: Tensor   # (batch,) β·ρ_l (SimPO: β·A_l)
    metrics: dict[str, Tensor]  # detached scalars: reward_accuracy, reward_margin and the loss's own


LossFn = Callable[[PairBatch, LossParams], LossOutput]


@dataclass(frozen=True)
class LossSpec:
    """A loss and the inputs it needs beyond the policy's per-token log-probs and masks."""

    fn: LossFn
    needs_reference: bool
    needs_kl: bool = False
    needs_refinement: bool = False


# ---------------------------------------------------------------- sequence helpers

def sequence_sum(token_values: Tensor, mask: Tensor) -> Tensor:
    """S = Σ_t m_t · v_t over (batch, seq) -> (batch,). Masked positions count as 0 even if inf/NaN."""
    return torch.where(mask.bool(), token_values, torch.zeros_like(token_values)).sum(-1)


def sequence_mean(token_values: Tensor, mask: Tensor) -> Tensor:
    """A = S / max(1, Σ_t m_t) -> (batch,)."""
    return sequence_sum(token_values, mask) / token_count(mask)


def token_count(mask: Tensor) -> Tensor:
    """|y| = max(1, Σ_t m_t), (batch,) integer: an empty response counts as one token."""
    return mask.bool().sum(-1).clamp(min=1)


def _per_sequence(values: Tensor, mask: Tensor) -> Tensor:
    """(batch, seq) per-token values summed under the mask; (batch,) values are taken as already summed."""
    return values if values.dim() == 1 else sequence_sum(values, mask)


def _needed(value: Tensor | None, field: str, loss: str) -> Tensor:
    if value is None:
        raise ValueError(f"loss '{loss}' needs PairBatch.{field}, which is None (see LOSSES['{loss}'])")
    return value


def log_ratios(batch: PairBatch, loss: str = "dpo") -> tuple[Tensor, Tensor]:
    """ρ_w, ρ_l: the policy-to-reference log-ratios of the chosen and rejected responses, (batch,) each."""
    reference_chosen = _needed(batch.reference_chosen_logps, "reference_chosen_logps", loss)
    reference_rejected = _needed(batch.reference_rejected_logps, "reference_rejected_logps", loss)
    chosen_ratio = (sequence_sum(batch.policy_chosen_logps, batch.chosen_mask)
                    - _per_sequence(reference_chosen, batch.chosen_mask))
    rejected_ratio = (sequence_sum(batch.policy_rejected_logps, batch.rejected_mask)
                      - _per_sequence(reference_rejected, batch.rejected_mask))
    return chosen_ratio, rejected_ratio


def log_ratio_margin(batch: PairBatch) -> Tensor:
    """h = ρ_w − ρ_l, (batch,). On the quality-prompted passes (under no_grad) it is Sr-*'s `prompted_margin`."""
    chosen_ratio, rejected_ratio = log_ratios(batch)
    return chosen_ratio - rejected_ratio


def _output(losses: Tensor, chosen_rewards: Tensor, rejected_rewards: Tensor, **extra: Tensor) -> LossOutput:
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    metrics = {"reward_accuracy": (chosen_rewards > rejected_rewards).float().mean(),
               "reward_margin": (chosen_rewards - rejected_rewards).mean()}
    metrics.update({name: value.detach().mean() for name, value in extra.items()})
    return LossOutput(losses, chosen_rewards, rejected_rewards, metrics)


def _reference_output(losses: Tensor, chosen_ratio: Tensor, rejected_ratio: Tensor, beta: float,
                      **extra: Tensor) -> LossOutput:
    """Implicit rewards β·ρ, plus the chosen log-prob change against the reference (a fall of more than ~1 nat per
    iteration preceded every collapse on the testbed)."""
    return _output(losses, beta * chosen_ratio, beta * rejected_ratio, chosen_logp_change=chosen_ratio,
                   rejected_logp_change=rejected_ratio, **extra)


# ---------------------------------------------------------------- the losses

def dpo(batch: PairBatch, params: LossParams) -> LossOutput:
    """DPO (Rafailov et al. 2023, eq. 7): L = −log σ(β·h)."""
    chosen_ratio, rejected_ratio = log_ratios(batch, "dpo")
    losses = -F.logsigmoid(params.beta * (chosen_ratio - rejected_ratio))
    return _reference_output(losses, chosen_ratio, rejected_ratio, params.beta)


def cdpo(batch: PairBatch, params: LossParams) -> LossOutput:
    """Conservative DPO, labels flipped with probability ε (Mitchell 2023, "A note on DPO with noisy preferences"):
    L = −(1−ε)·log σ(β·h) − ε·log σ(−β·h)."""
    chosen_ratio, rejected_ratio = log_ratios(batch, "cdpo")
    logits = params.beta * (chosen_ratio - rejected_ratio)
    eps = params.label_smoothing
    losses = -(1 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)
    return _reference_output(losses, chosen_ratio, rejected_ratio, params.beta)


def ipo(batch: PairBatch, params: LossParams) -> LossOutput:
    """IPO (Azar et al. 2024, eq. 17) on per-token-averaged log-ratios, as TRL and the IPO authors use it:
    L = (h̄ − 1/(2τ))²,  h̄ = ρ_w/|y_w| − ρ_l/|y_l|."""
    chosen_ratio, rejected_ratio = log_ratios(batch, "ipo")
    token_margin = chosen_ratio / token_count(batch.chosen_mask) - rejected_ratio / token_count(batch.rejected_mask)
    losses = (token_margin - 1 / (2 * params.ipo_tau)) ** 2
    return _reference_output(losses, chosen_ratio, rejected_ratio, params.beta, token_margin=token_margin)


def simpo(batch: PairBatch, params: LossParams) -> LossOutput:
    """SimPO (Meng, Xia & Chen 2024), reference-free and length-normalised: L = −log σ(β·(A_w − A_l) − γ),
    β = simpo_beta, γ = simpo_gamma_ratio·β. Never reads the reference fields."""
    chosen_mean = sequence_mean(batch.policy_chosen_logps, batch.chosen_mask)
    rejected_mean = sequence_mean(batch.policy_rejected_logps, batch.rejected_mask)
    beta = params.simpo_beta
    losses = -F.logsigmoid(beta * (chosen_mean - rejected_mean) - params.simpo_gamma)
    return _output(losses, beta * chosen_mean, beta * rejected_mean, chosen_mean_logp=chosen_mean,
                   rejected_mean_logp=rejected_mean)


def _sequential_kls(batch: PairBatch, loss: str) -> tuple[Tensor, Tensor]:
    """K_w, K_l: per-token forward KL(π_ref ‖ π_θ) summed over each response, (batch,) each."""
    chosen_kl = _per_sequence(_needed(batch.chosen_kl, "chosen_kl", loss), batch.chosen_mask)
    rejected_kl = _per_sequence(_needed(batch.rejected_kl, "rejected_kl", loss), batch.rejected_mask)
    return chosen_kl, rejected_kl


def tdpo1(batch: PairBatch, params: LossParams) -> LossOutput:
    """TDPO1 (Zeng et al. 2024, "Token-level Direct Preference Optimization"): L = −log σ(β·h − β·(K_l − K_w)),
    K = Σ_t m_t KL(π_ref(·|x,y_<t) ‖ π_θ(·|x,y_<t)); gradient flows through both KL terms."""
    chosen_ratio, rejected_ratio = log_ratios(batch, "tdpo1")
    chosen_kl, rejected_kl = _sequential_kls(batch, "tdpo1")
    beta = params.beta
    losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio) - beta * (rejected_kl - chosen_kl))
    return _reference_output(losses, chosen_ratio, rejected_ratio, beta, kl_chosen=chosen_kl,
                             kl_rejected=rejected_kl)


def tdpo2(batch: PairBatch, params: LossParams) -> LossOutput:
    """TDPO2 (Zeng et al. 2024): L = −log σ(β·h − α·β·(K_l − sg[K_w])); the chosen KL is a fixed offset."""
    chosen_ratio, rejected_ratio = log_ratios(batch, "tdpo2")
    chosen_kl, rejected_kl = _sequential_kls(batch, "tdpo2")
    beta = params.beta
    kl_term = params.tdpo_alpha * beta * (rejected_kl - chosen_kl.detach())
    losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio) - kl_term)
    return _reference_output(losses, chosen_ratio, rejected_ratio, beta, kl_chosen=chosen_kl,
                             kl_rejected=rejected_kl)


def _refinement(batch: PairBatch, params: LossParams, loss: str) -> Tensor:
    """sg[Δ] = β·prompted_margin, detached."""
    return params.beta * _needed(batch.prompted_margin, "prompted_margin", loss).detach()


def srdpo(batch: PairBatch, params: LossParams) -> LossOutput:
    """Sr-DPO (Yu et al. 2024, "Direct Alignment of Language Models via Quality-Aware Self-Refinement"):
    L = −log σ(β·h − λ·sg[Δ]),  Δ = β·h(p⊕x), the margin recomputed with the quality prompt p."""
    chosen_ratio, rejected_ratio = log_ratios(batch, "srdpo")
    refinement = _refinement(batch, params, "srdpo")
    losses = -F.logsigmoid(params.beta * (chosen_ratio - rejected_ratio) - params.sr_lambda * refinement)
    return _reference_output(losses, chosen_ratio, rejected_ratio, params.beta, refinement_margin=refinement)


def sripo(batch: PairBatch, params: LossParams) -> LossOutput:
    """Sr-IPO (Yu et al. 2024): L = (h − λ·sg[Δ] − 1/(2β))², on sequence sums h (not IPO's token means), with
    β in IPO's τ role."""
    chosen_ratio, rejected_ratio = log_ratios(batch, "sripo")
    refinement = _refinement(batch, params, "sripo")
    margin = chosen_ratio - rejected_ratio
    losses = (margin - params.sr_lambda * refinement - 1 / (2 * params.beta)) ** 2
    return _reference_output(losses, chosen_ratio, rejected_ratio, params.beta, refinement_margin=refinement)


LOSSES: dict[str, LossSpec] = {
    "dpo": LossSpec(dpo, needs_reference=True),
    "cdpo": LossSpec(cdpo, needs_reference=True),
    "ipo": LossSpec(ipo, needs_reference=True),
    "simpo": LossSpec(simpo, needs_reference=False),
    "tdpo1": LossSpec(tdpo1, needs_reference=True, needs_kl=True),
    "tdpo2": LossSpec(tdpo2, needs_reference=True, needs_kl=True),
    "srdpo": LossSpec(srdpo, needs_reference=True, needs_refinement=True),
    "sripo": LossSpec(sripo, needs_reference=True, needs_refinement=True),
}


# ---------------------------------------------------------------- TDPO's per-token KL

def _chunk_forward_kl(policy_logits: Tensor, reference_logits: Tensor) -> Tensor:
    policy_logp = F.log_softmax(policy_logits.float(), dim=-1)
    reference_logp = F.log_softmax(reference_logits.float(), dim=-1)
    # A -inf log-prob (masked vocabulary entry) would make kl_div's p·(log p − log q) = 0·(−inf) or 0·inf = NaN;
    # at the most negative float the probability is still exactly 0, so the term is 0 and the gradient finite.
    lowest = torch.finfo(policy_logp.dtype).min
    return F.kl_div(policy_logp.clamp(min=lowest), reference_logp.clamp(min=lowest), reduction="none",
                    log_target=True).sum(-1)


def token_forward_kl(policy_logits: Tensor, reference_logits: Tensor, mask: Tensor | None = None,
                     chunk_size: int = 128) -> Tensor:
    """Per-token KL(π_ref(·|c,y_<t) ‖ π_θ(·|c,y_<t)) over the full vocabulary, (batch, seq) in fp32.

    Logits are (batch, seq, vocab), aligned position by position with the per-token log-probs (for
    `logprobs.token_logps` that is `logits[:, :-1]`); the reference side is detached. Computed with
    `kl_div(log p_θ, log p_ref, log_target=True)` from log_softmax in fp32 — the TDPO code's `softmax().log()` gives
    NaN on underflow — `chunk_size` positions at a time; under autograd each chunk is checkpointed, so only one
    chunk's fp32 (batch, chunk, vocab) tensors exist at once in the forward and the backward. Positions outside
    `mask` are set to 0.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    reference_logits = reference_logits.detach()
    recompute = torch.is_grad_enabled() and policy_logits.requires_grad
    pieces = []
    for start in range(0, policy_logits.shape[1], chunk_size):
        chunk = (policy_logits[:, start:start + chunk_size], reference_logits[:, start:start + chunk_size])
        pieces.append(checkpoint(_chunk_forward_kl, *chunk, use_reentrant=False) if recompute
                      else _chunk_forward_kl(*chunk))
    kl = torch.cat(pieces, dim=1)
    return kl if mask is None else torch.where(mask.bool(), kl, torch.zeros_like(kl))


def _chunk_forward_kl_from_hidden(policy_hidden: Tensor, reference_hidden: Tensor, policy_head,
                                  reference_head) -> Tensor:
    policy_logits = policy_head(policy_hidden)
    with torch.no_grad():
        reference_logits = reference_head(reference_hidden)
    return _chunk_forward_kl(policy_logits, reference_logits)


def sequential_kl_from_hidden(policy_hidden: Tensor, policy_head, reference_hidden: Tensor, reference_head,
                              targets: Tensor, mask: Tensor, chunk_size: int = 128) -> tuple[Tensor, Tensor]:
    """TDPO's inputs from last hidden states and output heads: the reference's per-token log-probs of `targets` and
    the per-token KL(π_ref ‖ π_θ), both (batch, seq), masked.

    Same numbers as `token_forward_kl(policy_head(policy_hidden), reference_head(reference_hidden))`, but neither
    model's full (batch, seq, vocab) logits are needed: the heads run `chunk_size` positions at a time, and each
    chunk is checkpointed (recomputed in the backward), so the KL's memory is one chunk's fp32 logits of each model,
    and its gradient reaches the policy through the (batch, seq, hidden) states, not a vocabulary-sized tensor.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    reference_hidden = reference_hidden.detach()
    recompute = torch.is_grad_enabled() and policy_hidden.requires_grad
    kl_pieces, logp_pieces = [], []
    for start in range(0, policy_hidden.shape[1], chunk_size):
        chunk = slice(start, start + chunk_size)
        with torch.no_grad():
            logp = F.log_softmax(reference_head(reference_hidden[:, chunk]).float(), dim=-1)
            logp_pieces.append(logp.gather(-1, targets[:, chunk, None]).squeeze(-1))
            del logp
        args = (policy_hidden[:, chunk], reference_hidden[:, chunk], policy_head, reference_head)
        kl_pieces.append(checkpoint(_chunk_forward_kl_from_hidden, *args, use_reentrant=False) if recompute
                         else _chunk_forward_kl_from_hidden(*args))
    kl, reference_logps = torch.cat(kl_pieces, dim=1), torch.cat(logp_pieces, dim=1)
    return reference_logps, torch.where(mask.bool(), kl, torch.zeros_like(kl))


# ---------------------------------------------------------------- per-sequence conveniences (tests, scripts)

def nll_anchor(policy_chosen: Tensor, chosen_tokens: Tensor) -> Tensor:
    """RPO's anchor (Pang et al. 2024): −S(π_θ, y_w|x) / |y_w|, per pair."""
    return -policy_chosen / chosen_tokens.clamp(min=1)
