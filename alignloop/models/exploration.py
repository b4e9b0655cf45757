"""COPO's count-based exploration (Bai et al., ICLR 2025; ALGORITHMS.md §2): the CFN's features and the loss term
that raises the likelihood of the policy's own rarely-seen responses.

    L_cnt = −α · sg[ min(exp(S(π_θ, y_e) − S(π_sampler, y_e)), clip) · s · b(x, y_e) ] · S(π_θ, y_e | x)

S is the summed response log-prob, y_e the explored response (the chosen one by default), b the CFN bonus ≈ 1/√n,
and the clipped ratio an importance weight because y_e was sampled by the iteration-start model. It composes with
any base loss; α = 0 leaves the base loss exactly as it is.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import PreTrainedModel

from alignloop.models.logprobs import Tokenized, collate, to_device


def copo_term(policy_logps: Tensor, sampler_logps: Tensor, bonus: Tensor, alpha: float, scale: float = 0.1,
              clip: float = 5.0) -> Tensor:
    """Per-pair L_cnt, (batch,). Only S(π_θ, y_e) carries gradient; the weight is stopped."""
    weight = torch.clamp(torch.exp(policy_logps - sampler_logps), max=clip) * scale * bonus
    return -alpha * weight.detach() * policy_logps


@torch.no_grad()
def last_token_features(model: PreTrainedModel, sequences: list[Tokenized], pad_id: int,
                        batch_size: int = 256) -> Tensor:
    """(len(sequences), hidden): the final-layer hidden state (after the final norm) at the last non-padding token
    of each chat-formatted prompt + response (+ EOS), from a frozen model in eval mode. Batches are grouped by length
    (less padding); rows come back in input order."""
    model.eval()
    order = sorted(range(len(sequences)), key=lambda k: len(sequences[k].prompt_ids) + len(sequences[k].response_ids))
    out = torch.empty(len(sequences), model.config.hidden_size)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = to_device(collate([sequences[k] for k in rows], pad_id), model.device)
        hidden = model.base_model(input_ids=batch["input_ids"],
                                  attention_mask=batch["attention_mask"]).last_hidden_state
        last = batch["attention_mask"].sum(-1) - 1  # right padding: the last real token
        out[rows] = hidden[torch.arange(len(last), device=hidden.device), last].float().cpu()
    return out
