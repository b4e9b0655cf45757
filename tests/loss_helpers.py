"""DPO on per-sequence log-probs, the form the original papers write it in, for tests that check by hand."""

from __future__ import annotations

import torch
from torch import Tensor

from alignloop.models.losses import LossParams, PairBatch, dpo


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, reference_chosen: Tensor, reference_rejected: Tensor,
             beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """DPO on per-sequence log-probs S, each (batch,): (losses, β·ρ_w, β·ρ_l). A wrapper of `dpo`."""
    single_token = torch.ones_like(policy_chosen, dtype=torch.bool).unsqueeze(-1)
    batch = PairBatch(policy_chosen.unsqueeze(-1), policy_rejected.unsqueeze(-1), single_token, single_token,
                      reference_chosen, reference_rejected)
    out = dpo(batch, LossParams(beta=beta))
    return out.losses, out.chosen_rewards, out.rejected_rewards
