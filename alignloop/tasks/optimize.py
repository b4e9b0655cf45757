"""Stage `optimize`: preference optimization of the previous policy on this iteration's pairs.

The loop is plain PyTorch, visible top to bottom: reference log-probs once under `no_grad` (the reference is fixed
for the iteration), then epochs of shuffled mini-batches with chosen and rejected in one concatenated forward. The
loss (`optimize.loss`) comes from `models.losses.LOSSES`, and only what it needs is computed: no reference model for
SimPO, reference logits per batch for TDPO's full-vocabulary KL, the quality-prompted passes for Sr-DPO / Sr-IPO.
With `optimize.exploration: copo`, COPO's term (models.exploration) is added on the cfn stage's bonuses.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass

import torch

from alignloop.config import Config, OptimizeConfig
from alignloop.io import atomic_path, read_jsonl, write_json
from alignloop.models.exploration import copo_term
from alignloop.models.generation import derive_seed
from alignloop.models.logprobs import Tokenized, collate, sequence_logps, to_device, token_logps, tokenize_response
from alignloop.models.losses import LOSSES, LossParams, PairBatch, nll_anchor, sequence_sum, sequential_kl_from_hidden
from alignloop.models.policy import load_policy
from alignloop.paths import Layout
from alignloop.progress import progress

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    pass


def tokenize_pairs(pairs: list[dict], tokenizer, max_length: int) -> list[tuple[Tokenized, Tokenized]]:
    return [(tokenize_response(tokenizer, p["prompt"], p["chosen"], p["chosen_finished"], max_length),
             tokenize_response(tokenizer, p["prompt"], p["rejected"], p["rejected_finished"], max_length))
            for p in pairs]


def pair_batch(pairs: list[tuple[Tokenized, Tokenized]], indices: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen rows first, then rejected rows: one forward pass for both."""
    return collate([pairs[k][0] for k in indices] + [pairs[k][1] for k in indices], pad_id)


@torch.no_grad()
def reference_logps(model, pairs, pad_id: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    chosen, rejected = [], []
    for start in progress(range(0, len(pairs), batch_size), "reference log-probs",
                          total=math.ceil(len(pairs) / batch_size)):
        indices = list(range(start, min(start + batch_size, len(pairs))))
        logps, _ = sequence_logps(model, to_device(pair_batch(pairs, indices, pad_id), model.device))
        chosen.append(logps[: len(indices)].cpu())
        rejected.append(logps[len(indices):].cpu())
    return torch.cat(chosen), torch.cat(rejected)


def loss_params(opt: OptimizeConfig) -> LossParams:
    return LossParams(beta=opt.beta, label_smoothing=opt.label_smoothing, ipo_tau=opt.ipo_tau,
                      simpo_beta=opt.simpo_beta, simpo_gamma_ratio=opt.simpo_gamma_ratio, tdpo_alpha=opt.tdpo_alpha,
                      sr_lambda=opt.sr_lambda)


def with_refinement_prompt(pairs_rows: list[dict], refinement_prompt: str) -> list[dict]:
    """Sr-DPO's p ⊕ x: the quality prompt before the query, inside the same user turn of the chat template."""
    return [{**row, "prompt": f"{refinement_prompt}\n\n{row['prompt']}"} for row in pairs_rows]


def forward_logits(policy, batch: dict[str, torch.Tensor], keep_hidden: bool
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The policy's logits, and its last hidden states when TDPO's chunked KL needs them."""
    if not keep_hidden:
        return policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, None
    hidden = policy.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return policy.get_output_embeddings()(hidden), hidden


def tdpo_reference(policy, reference, batch: dict[str, torch.Tensor], hidden: torch.Tensor, mask: torch.Tensor,
                   chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's per-token log-probs and the per-token KL(π_ref ‖ π_θ), both (batch, seq − 1), aligned with
    `token_logps`. Only hidden states are kept; both output heads run chunk by chunk."""
    with torch.no_grad():
        reference_hidden = reference.base_model(input_ids=batch["input_ids"],
                                                attention_mask=batch["attention_mask"]).last_hidden_state
    return sequential_kl_from_hidden(hidden[:, :-1], policy.get_output_embeddings(), reference_hidden[:, :-1],
                                     reference.get_output_embeddings(), batch["input_ids"][:, 1:], mask, chunk_size)


def prompted_fits(pairs, prompted, max_length: int) -> torch.Tensor:
    """(pairs,) bool: the quality prompt leaves both responses whole. A cut response would make Δ compare different
    texts, so a pair that does not fit gets Δ = 0 (its loss is the base DPO / IPO term); past half, it is an error."""
    fits = torch.tensor([len(p[0].response_ids) == len(q[0].response_ids) and
                         len(p[1].response_ids) == len(q[1].response_ids) for p, q in zip(prompted, pairs)])
    if fits.sum() * 2 < len(pairs):
        longest = max(len(p[0].prompt_ids) for p in prompted)
        raise ValueError(
            f"optimize.refinement_prompt leaves too little room: {len(pairs) - int(fits.sum())} of {len(pairs)} pairs "
            f"would have a response cut to fit model.max_length ({max_length}; prompted prompts take up to {longest} "
            "tokens). Shorten optimize.refinement_prompt or raise model.max_length")
    return fits


@torch.no_grad()
def prompted_margin(policy, prompted, indices: list[int], pad_id: int,
                    reference_sums: tuple[torch.Tensor, torch.Tensor], fits: torch.Tensor) -> torch.Tensor:
    """Sr-*'s h on the quality-prompted pairs: the current policy's two passes now, the reference's precomputed;
    0 for pairs whose prompted sequences do not fit."""
    sums, _ = sequence_logps(policy, to_device(pair_batch(prompted, indices, pad_id), policy.device))
    n = len(indices)
    ref_chosen, ref_rejected = (part[indices].to(policy.device) for part in reference_sums)
    margin = (sums[:n] - ref_chosen) - (sums[n:] - ref_rejected)
    return torch.where(fits[indices].to(policy.device), margin, torch.zeros_like(margin))


@dataclass(frozen=True)
class Exploration:
    """COPO's inputs for every pair: the explored response y_e, its bonus, and S(π_start, y_e) for the importance
    weight (π_start is the policy before this iteration's first step, which sampled y_e)."""

    responses: list[Tokenized]
    bonus: torch.Tensor
    start_logps: torch.Tensor
    is_chosen: bool  # y_e is the chosen response: its log-prob is already in the step's forward pass


def load_exploration(cfg: Config, layout: Layout, iteration: int, pairs_rows: list[dict], policy, tokenizer
                     ) -> Exploration:
    by_pair = {row["pair_id"]: row for row in read_jsonl(layout.cfn_bonuses(iteration))}
    missing = [row["pair_id"] for row in pairs_rows if row["pair_id"] not in by_pair]
    if missing:
        raise ValueError(f"optimize.exploration=copo: {len(missing)} pairs have no bonus in "
                         f"{layout.cfn_bonuses(iteration)} (e.g. {missing[0]}); re-run the cfn stage")
    rows = [by_pair[row["pair_id"]] for row in pairs_rows]
    responses = [tokenize_response(tokenizer, pair["prompt"], row["explore_response"], row["explore_finished"],
                                   cfg.model.max_length) for pair, row in zip(pairs_rows, rows)]
    start_logps = torch.cat([sequence_logps(policy, to_device(collate(responses[k:k + 256], tokenizer.pad_token_id),
                                                              policy.device))[0].cpu()
                             for k in range(0, len(responses), 256)]) if responses else torch.empty(0)
    return Exploration(responses, torch.tensor([row["bonus"] for row in rows]), start_logps,
                       is_chosen=cfg.cfn.explore == "chosen")


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    progress_fraction = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_fraction)))


def run_optimize(cfg: Config, layout: Layout, iteration: int) -> None:
    opt = cfg.optimize
    out_dir = layout.policy(iteration)
    pairs_rows = read_jsonl(layout.pairs(iteration))
    policy, tokenizer = load_policy(layout.policy(iteration - 1), cfg.model)
    if not pairs_rows:
        log.warning("optimize: iteration %d has no pairs (every prompt's responses tied); the policy is unchanged",
                    iteration)
        with atomic_path(out_dir) as tmp:
            shutil.copytree(layout.policy(iteration - 1), tmp)
        write_json(layout.train_log(iteration), {"pairs": 0, "steps": 0})
        return

    spec, params = LOSSES[opt.loss], loss_params(opt)
    pairs = tokenize_pairs(pairs_rows, tokenizer, cfg.model.max_length)
    prompted = (tokenize_pairs(with_refinement_prompt(pairs_rows, opt.refinement_prompt), tokenizer,
                               cfg.model.max_length) if spec.needs_refinement else None)
    fits = prompted_fits(pairs, prompted, cfg.model.max_length) if prompted is not None else None
    if fits is not None and not fits.all():
        log.warning("optimize: the quality prompt cuts a response of %d of %d pairs; they use Δ = 0",
                    len(pairs) - int(fits.sum()), len(pairs))
    pad_id = tokenizer.pad_token_id
    reference = ref_chosen = ref_rejected = ref_prompted = None
    if spec.needs_reference:
        reference_dir = layout.policy(0 if opt.reference == "sft" else iteration - 1)
        reference, _ = load_policy(reference_dir, cfg.model, policy.device)
        if not spec.needs_kl:  # sequence sums suffice: compute them once, then free the model
            ref_chosen, ref_rejected = reference_logps(reference, pairs, pad_id, opt.batch_size * 2)
        if prompted is not None:
            ref_prompted = reference_logps(reference, prompted, pad_id, opt.batch_size * 2)
        if not spec.needs_kl:
            reference = None

    explore = None
    if opt.exploration == "copo":
        with torch.no_grad():
            explore = load_exploration(cfg, layout, iteration, pairs_rows, policy, tokenizer)

    generator = torch.Generator().manual_seed(derive_seed(cfg.seed, "optimize", iteration))
    steps_per_epoch = math.ceil(len(pairs) / opt.batch_size)
    total_steps = max(1, round(opt.epochs * steps_per_epoch))
    warmup = round(opt.warmup_ratio * total_steps)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=opt.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup))

    log.info("optimize iteration %d: %s on %d pairs, %d steps", iteration, opt.loss, len(pairs), total_steps)
    order: list[int] = []
    history = []
    policy.train()
    for step in progress(range(total_steps), f"optimize iter {iteration}"):
        if len(order) < opt.batch_size:
            order += torch.randperm(len(pairs), generator=generator).tolist()
        indices, order = order[: opt.batch_size], order[opt.batch_size:]
        batch = to_device(pair_batch(pairs, indices, pad_id), policy.device)
        logits, hidden = forward_logits(policy, batch, keep_hidden=spec.needs_kl)
        logps, mask = token_logps(logits, batch["input_ids"], batch["response_mask"])
        n = len(indices)
        fields = {"policy_chosen_logps": logps[:n], "policy_rejected_logps": logps[n:],
                  "chosen_mask": mask[:n], "rejected_mask": mask[n:]}
        if spec.needs_kl:  # TDPO: the reference's full distribution at every response position, per batch
            ref_logps, kl = tdpo_reference(policy, reference, batch, hidden, mask, opt.kl_chunk_size)
            fields |= {"reference_chosen_logps": ref_logps[:n], "reference_rejected_logps": ref_logps[n:],
                       "chosen_kl": kl[:n], "rejected_kl": kl[n:]}
        elif spec.needs_reference:
            fields |= {"reference_chosen_logps": ref_chosen[indices].to(policy.device),
                       "reference_rejected_logps": ref_rejected[indices].to(policy.device)}
        if prompted is not None:
            fields["prompted_margin"] = prompted_margin(policy, prompted, indices, pad_id, ref_prompted, fits)
        out = spec.fn(PairBatch(**fields), params)
        loss = out.losses.mean()
        if opt.nll_weight:
            loss = loss + opt.nll_weight * nll_anchor(sequence_sum(logps[:n], mask[:n]), mask[:n].sum(-1)).mean()
        copo_metrics = {}
        if explore is not None:
            explored = (sequence_sum(logps[:n], mask[:n]) if explore.is_chosen else
                        sequence_logps(policy, to_device(collate([explore.responses[k] for k in indices], pad_id),
                                                         policy.device))[0])
            bonus, start = explore.bonus[indices].to(explored), explore.start_logps[indices].to(explored)
            term = copo_term(explored, start, bonus, opt.copo_alpha, opt.copo_scale, opt.copo_clip)
            loss = loss + term.mean()
            copo_metrics = {"copo_term": term.mean().item(), "copo_bonus": bonus.mean().item()}
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"optimize iteration {iteration}, step {step}: loss is {loss.item()}; lower optimize.learning_rate "
                f"or optimize.beta (nothing was saved; iteration {iteration - 1}'s policy is intact)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), opt.max_grad_norm)
        optimizer.step()
        scheduler.step()
        # chosen_logp_change (reference-based losses): a fall of > ~1 nat came before every collapse seen on the
        # testbed (notes/testbed_findings.md).
        history.append({"step": step, "loss": loss.item(), "grad_norm": grad_norm.item(),
                        **{name: value.item() for name, value in out.metrics.items()}, **copo_metrics})
    policy.eval()
    with atomic_path(out_dir) as tmp:
        policy.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    last = history[-max(1, steps_per_epoch // 2):]  # the final half epoch
    summary = {key: sum(h[key] for h in last) / len(last) for key in last[0] if key != "step"}
    extra = {"refinement_unfit_pairs": len(pairs) - int(fits.sum())} if fits is not None else {}
    write_json(layout.train_log(iteration), {"loss": opt.loss, "pairs": len(pairs), "steps": total_steps, **extra,
                                             "final": summary, "history": history})
    log.info("optimize: %d pairs, %d steps; final %s", len(pairs), total_steps,
             ", ".join(f"{k}={v:.3f}" for k, v in summary.items()))
