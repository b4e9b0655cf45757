"""COPO's count-based exploration term (Bai et al., ICLR 2025; docs/copo.md): the loss term that raises the
likelihood of the policy's own rarely-seen responses (the CFN's features are in models/cfn_features.py).

    L_cnt = −α · sg[ min(exp(S(π_θ, y_e) − S(π_sampler, y_e)), clip) · s · b(x, y_e) ] · S(π_θ, y_e | x)

S is the summed response log-prob, y_e the explored response (the chosen one by default), b the CFN bonus ≈ 1/√n,
and the clipped ratio an importance weight because y_e was sampled by the iteration-start model. It composes with
any base loss; α = 0 leaves the base loss exactly as it is.
"""

from __future__ import annotations

import torch
from torch import Tensor


def copo_term(policy_logps: Tensor, sampler_logps: Tensor, bonus: Tensor, alpha: float, scale: float = 0.1,
              clip: float = 5.0) -> Tensor:
    """Per-pair L_cnt, (batch,). Only S(π_θ, y_e) carries gradient; the weight is stopped."""
    weight = torch.clamp(torch.exp(policy_logps - sampler_logps), max=clip) * scale * bonus
    return -alpha * weight.detach() * policy_logps
