"""The optimize stage's objective as a sum of named terms, and the inputs they need.

    L = L_pref(PairBatch) + w_nll · L_nll + L_copo

Each term reads one `Forward` of the policy on a micro-batch of pairs (chosen rows, then rejected rows) and returns
per-pair losses and detached metrics. What a term needs beyond the policy's log-probs comes from a provider built
once before training: the reference's sequence sums (`ReferenceSums`), the reference's per-token distribution for
TDPO (`ReferenceModel`), Sr-*'s quality-prompted margin (`PromptedMargin`), COPO's explored responses
(`Exploration`). The loss spec (`LossSpec`) says which; nothing else branches on the loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from alignloop.models.exploration import copo_term
from alignloop.models.logprobs import Tokenized, collate, model_device, sequence_logps, to_device, token_logps
from alignloop.models.losses import LossParams, LossSpec, PairBatch, nll_anchor, sequence_sum, sequential_kl_from_hidden
from alignloop.models.training import adapter_disabled, decoder
from alignloop.progress import progress

Pair = tuple[Tokenized, Tokenized]


def pair_batch(pairs: list[Pair], indices: list[int], pad_id: int) -> dict[str, Tensor]:
    """Chosen rows first, then rejected rows: one forward pass for both."""
    return collate([pairs[k][0] for k in indices] + [pairs[k][1] for k in indices], pad_id)


@dataclass
class Forward:
    """The policy on one micro-batch: per-token log-probs and masks (2n rows), and the last hidden states when a
    term needs them (TDPO's chunked KL). `model` is the policy as trained (wrapped for data parallelism when there
    are several processes): a term's own passes go through it, so their gradients are synchronized too."""

    model: torch.nn.Module
    indices: list[int]
    batch: dict[str, Tensor]
    logps: Tensor  # (2n, seq − 1)
    mask: Tensor  # (2n, seq − 1)
    hidden: Tensor | None

    @property
    def n(self) -> int:
        return len(self.indices)

    @property
    def chosen_sums(self) -> Tensor:
        return sequence_sum(self.logps[: self.n], self.mask[: self.n])


def forward(policy, pairs: list[Pair], indices: list[int], pad_id: int, keep_hidden: bool) -> Forward:
    batch = to_device(pair_batch(pairs, indices, pad_id), model_device(policy))
    if keep_hidden:
        hidden = decoder(policy)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        logits = policy.get_output_embeddings()(hidden)
    else:
        hidden = None
        logits = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps, mask = token_logps(logits, batch["input_ids"], batch["response_mask"])
    return Forward(policy, indices, batch, logps, mask, hidden)


# ---------------------------------------------------------------- providers: inputs built once per iteration

@torch.no_grad()
def sequence_sums(model, pairs: list[Pair], pad_id: int, batch_size: int, description: str) -> tuple[Tensor, Tensor]:
    """S(model, y_w | x) and S(model, y_l | x) for every pair, (pairs,) each, on the CPU."""
    chosen, rejected = [], []
    for start in progress(range(0, len(pairs), batch_size), description, total=math.ceil(len(pairs) / batch_size)):
        indices = list(range(start, min(start + batch_size, len(pairs))))
        logps, _ = sequence_logps(model, to_device(pair_batch(pairs, indices, pad_id), model.device))
        chosen.append(logps[: len(indices)].float().cpu())
        rejected.append(logps[len(indices):].float().cpu())
    return torch.cat(chosen), torch.cat(rejected)


@dataclass
class ReferenceSums:
    """S(π_ref, ·) of every pair, computed once before training (the reference is fixed for the iteration)."""

    chosen: Tensor
    rejected: Tensor

    def fields(self, fwd: Forward) -> dict[str, Tensor]:
        device = fwd.logps.device
        return {"reference_chosen_logps": self.chosen[fwd.indices].to(device),
                "reference_rejected_logps": self.rejected[fwd.indices].to(device)}


@dataclass
class ReferenceModel:
    """TDPO's reference per batch: its per-token log-probs and KL(π_ref ‖ π_θ) from hidden states, chunk by chunk.
    `model` is a frozen copy, or the policy itself when the reference is its LoRA-disabled base."""

    model: torch.nn.Module
    policy: torch.nn.Module
    chunk_size: int

    def fields(self, fwd: Forward) -> dict[str, Tensor]:
        with torch.no_grad(), adapter_disabled(self.model):
            reference_hidden = decoder(self.model)(input_ids=fwd.batch["input_ids"],
                                                   attention_mask=fwd.batch["attention_mask"]).last_hidden_state
        # With LoRA the reference head is the policy's own: output heads are never adapted.
        ref_logps, kl = sequential_kl_from_hidden(
            fwd.hidden[:, :-1], self.policy.get_output_embeddings(), reference_hidden[:, :-1],
            self.model.get_output_embeddings(), fwd.batch["input_ids"][:, 1:], fwd.mask, self.chunk_size)
        n = fwd.n
        return {"reference_chosen_logps": ref_logps[:n], "reference_rejected_logps": ref_logps[n:],
                "chosen_kl": kl[:n], "rejected_kl": kl[n:]}


@dataclass
class PromptedMargin:
    """Sr-*'s h on the quality-prompted pairs: the current policy's passes per batch, the reference's precomputed;
    0 for pairs whose prompted sequences do not fit (`fits`)."""

    pairs: list[Pair]
    reference: ReferenceSums
    fits: Tensor  # (pairs,) bool
    pad_id: int

    @torch.no_grad()
    def fields(self, fwd: Forward) -> dict[str, Tensor]:
        sums, _ = sequence_logps(fwd.model, to_device(pair_batch(self.pairs, fwd.indices, self.pad_id),
                                                      model_device(fwd.model)))
        ref = self.reference.fields(fwd)
        n = fwd.n
        margin = ((sums[:n] - ref["reference_chosen_logps"]) - (sums[n:] - ref["reference_rejected_logps"]))
        fits = self.fits[fwd.indices].to(margin.device)
        return {"prompted_margin": torch.where(fits, margin, torch.zeros_like(margin))}


class Provider(Protocol):
    def fields(self, fwd: Forward) -> dict[str, Tensor]: ...


# ---------------------------------------------------------------- terms

class Term(Protocol):
    name: str
    weight: float  # the term enters the objective as weight · mean over pairs

    def __call__(self, fwd: Forward) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-pair losses (n,) with gradient, and detached scalar metrics."""
        ...


@dataclass
class PreferenceTerm:
    """The base preference loss (`optimize.loss`), fed by the providers its spec asks for."""

    spec: LossSpec
    params: LossParams
    providers: list[Provider]
    name: str = "preference"
    weight: float = 1.0

    def __call__(self, fwd: Forward) -> tuple[Tensor, dict[str, Tensor]]:
        n = fwd.n
        fields = {"policy_chosen_logps": fwd.logps[:n], "policy_rejected_logps": fwd.logps[n:],
                  "chosen_mask": fwd.mask[:n], "rejected_mask": fwd.mask[n:]}
        for provider in self.providers:
            fields |= provider.fields(fwd)
        out = self.spec.fn(PairBatch(**fields), self.params)
        return out.losses, out.metrics


@dataclass
class NLLTerm:
    """RPO's anchor on the chosen response: −S(π_θ, y_w) / |y_w|, weighted by `optimize.nll_weight`."""

    weight: float
    name: str = "nll"

    def __call__(self, fwd: Forward) -> tuple[Tensor, dict[str, Tensor]]:
        return nll_anchor(fwd.chosen_sums, fwd.mask[: fwd.n].sum(-1)), {}


@dataclass
class Exploration:
    """COPO's inputs for every pair: the explored response y_e, its bonus, and S(π_start, y_e) for the importance
    weight (π_start is the policy before this iteration's first step, which sampled y_e)."""

    responses: list[Tokenized]
    bonus: Tensor
    start_logps: Tensor
    is_chosen: bool  # y_e is the chosen response: its log-prob is already in the step's forward pass


@dataclass
class CopoTerm:
    """COPO's count-based exploration term (models/exploration.py) on the cfn stage's bonuses."""

    explore: Exploration
    alpha: float
    scale: float
    clip: float
    pad_id: int
    name: str = "copo"
    weight: float = 1.0  # α is inside the term, as in the paper

    def __call__(self, fwd: Forward) -> tuple[Tensor, dict[str, Tensor]]:
        if self.explore.is_chosen:
            explored = fwd.chosen_sums
        else:
            batch = collate([self.explore.responses[k] for k in fwd.indices], self.pad_id)
            explored = sequence_logps(fwd.model, to_device(batch, model_device(fwd.model)))[0]
        bonus = self.explore.bonus[fwd.indices].to(explored)
        start = self.explore.start_logps[fwd.indices].to(explored)
        term = copo_term(explored, start, bonus, self.alpha, self.scale, self.clip)
        return term, {"copo_term": term.detach().mean(), "copo_bonus": bonus.mean()}


def objective(terms: list[Term], fwd: Forward) -> tuple[Tensor, dict[str, Tensor]]:
    """Σ_terms weight · mean per-pair loss over this micro-batch, and every term's metrics."""
    total, metrics = None, {}
    for term in terms:
        losses, term_metrics = term(fwd)
        value = losses.mean() if term.weight == 1.0 else term.weight * losses.mean()
        total = value if total is None else total + value
        metrics |= term_metrics
    return total, metrics
