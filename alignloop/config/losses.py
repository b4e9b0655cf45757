"""The preference loss and its parameters, declared once: the `optimize` section extends `LossParams`, and the losses
(alignloop/models/losses.py) read it, so each parameter has one default and one bound."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alignloop.config.base import Section


class LossParams(Section):
    """Which loss, and every loss parameter with the papers' defaults. Each loss reads only its own fields."""

    loss: Literal["dpo", "cdpo", "ipo", "simpo", "tdpo1", "tdpo2", "srdpo", "sripo"] = "dpo"
    """The preference loss (formulas and papers in alignloop/models/losses.py)."""
    beta: float = Field(0.1, gt=0)
    """β of dpo, cdpo, tdpo1/2, srdpo, sripo; also the scale of every reference-based implicit reward β·ρ."""
    label_smoothing: float = Field(0.1, ge=0, lt=0.5)
    """cdpo's ε: the assumed probability that a pair's label is flipped; 0 ≤ ε < 0.5."""
    ipo_tau: float = Field(0.1, gt=0)
    """IPO's τ; the regression target for the per-token margin h̄ is 1/(2τ). Of the usual 0.01–0.1, 0.1 puts the
    target at 5 nats per token, already a strong separation; 0.01 would ask for 50 per token, out of reach, so the
    squared loss would push without ever being satisfied, like an unregularised objective. 0.1 is also TRL's default
    β, which TRL's IPO uses as τ, so runs compare with TRL's."""
    simpo_beta: float = Field(2.0, gt=0)
    """SimPO's β, on token-mean log-probs A, so a scale of its own: 2.0 (SimPO paper), not the DPO β of 0.1."""
    simpo_gamma_ratio: float = Field(0.5, ge=0)
    """SimPO's target margin as a fraction of its β: γ = simpo_gamma_ratio · simpo_beta (as the SimPO paper)."""
    tdpo_alpha: float = Field(0.5, ge=0)
    """tdpo2's α, the weight of the sequential-KL difference."""
    sr_lambda: float = Field(0.5, ge=0)
    """Sr-DPO/Sr-IPO's λ, from the paper's grid {0.1, 0.3, 0.5, 1}. Δ has the same β-scale as the DPO logit, and on
    on-policy pairs the prompted and plain margins rise together: λ = 1 would cancel the margin and keep the DPO
    weight σ(−·) near 1/2 (an unbounded push), λ = 0.1 is hard to tell from DPO; 0.5 is the middle. Measure."""

    @property
    def simpo_gamma(self) -> float:
        return self.simpo_gamma_ratio * self.simpo_beta
