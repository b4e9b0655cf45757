"""Preference losses: pure functions on per-sequence log-probs (ALGORITHMS.md §1).

Shared notation: ρ_w = S(π_θ, y_w|x) − S(π_ref, y_w|x), ρ_l likewise, h = ρ_w − ρ_l; every input is (batch,).
Each loss returns (per-pair losses, chosen implicit rewards β·ρ_w, rejected implicit rewards β·ρ_l).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO (Rafailov et al. 2023, eq. 7): L = −log σ(β·h)."""
    chosen_ratio = policy_chosen - reference_chosen
    rejected_ratio = policy_rejected - reference_rejected
    losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def nll_anchor(policy_chosen: torch.Tensor, chosen_tokens: torch.Tensor) -> torch.Tensor:
    """RPO's anchor (Pang et al. 2024): −S(π_θ, y_w|x) / |y_w|, per pair."""
    return -policy_chosen / chosen_tokens.clamp(min=1)
