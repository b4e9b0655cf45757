"""Stage `optimize`: preference optimization of the previous policy on this iteration's pairs.

The loop is plain PyTorch, visible top to bottom, and reads as a recipe:
1) tokens: each pair is the prompt's chat-formatted ids + the response ids exactly as sampled;
2) the policy: the previous one, with a LoRA adapter (`optimize.lora`) and gradient checkpointing when configured;
3) the objective: the base loss (`optimize.loss`), the NLL anchor and COPO's term, each fed by the inputs its spec
   declares (models/objective.py), built once here — the reference's sums before the first step, with the reference
   being the starting policy itself (or, with LoRA, its adapter-disabled base), so no second copy is loaded unless
   the reference is another model or TDPO needs a frozen one per batch;
4) steps: shuffled batches of `batch_size` pairs, split into micro-batches whose gradients accumulate (the same
   update as one big batch), under optional autocast;
5) save: the adapter merged, weights checked finite, a plain model written atomically.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import fields

import torch

from alignloop.config import Config, OptimizeConfig
from alignloop.io import atomic_path, read_jsonl, write_json
from alignloop.model_source import policy_dir
from alignloop.models.generation import derive_seed
from alignloop.models.logprobs import collate, sequence_logps, to_device, tokenize_ids
from alignloop.models.losses import LOSSES, LossParams
from alignloop.models.objective import (
    CopoTerm,
    Exploration,
    NLLTerm,
    Pair,
    PreferenceTerm,
    PromptedMargin,
    ReferenceModel,
    ReferenceSums,
    Term,
    forward,
    objective,
    sequence_sums,
)
from alignloop.models.policy import load_policy
from alignloop.models.training import (
    adapter_disabled,
    autocast,
    enable_gradient_checkpointing,
    lr_factor,
    save_policy,
    with_lora,
)
from alignloop.paths import Layout
from alignloop.progress import progress

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    pass


def loss_params(opt: OptimizeConfig) -> LossParams:
    """LossParams from the config section: every LossParams field has a same-named key in `optimize`."""
    return LossParams(**{field.name: getattr(opt, field.name) for field in fields(LossParams)})


def tokenize_pairs(rows: list[dict], tokenizer, max_length: int, cut: bool = False) -> list[Pair]:
    sequences = tokenize_ids(tokenizer, [(row["prompt"], row[side]) for row in rows
                                         for side in ("chosen_ids", "rejected_ids")], max_length, cut=cut)
    return list(zip(sequences[0::2], sequences[1::2]))


def with_refinement_prompt(pairs_rows: list[dict], refinement_prompt: str) -> list[dict]:
    """Sr-DPO's p ⊕ x: the quality prompt before the query, inside the same user turn of the chat template."""
    return [{**row, "prompt": f"{refinement_prompt}\n\n{row['prompt']}"} for row in pairs_rows]


def prompted_fits(pairs: list[Pair], prompted: list[Pair], max_length: int) -> torch.Tensor:
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


def load_exploration(cfg: Config, layout: Layout, iteration: int, pairs_rows: list[dict], policy, tokenizer
                     ) -> Exploration:
    by_pair = {row["pair_id"]: row for row in read_jsonl(layout.cfn_bonuses(iteration))}
    missing = [row["pair_id"] for row in pairs_rows if row["pair_id"] not in by_pair]
    if missing:
        raise ValueError(f"optimize.exploration=copo: {len(missing)} pairs have no bonus in "
                         f"{layout.cfn_bonuses(iteration)} (e.g. {missing[0]}); re-run the cfn stage")
    rows = [by_pair[row["pair_id"]] for row in pairs_rows]
    responses = tokenize_ids(tokenizer, [(pair["prompt"], row["explore_ids"]) for pair, row in zip(pairs_rows, rows)],
                             cfg.model.max_length)
    with torch.no_grad():
        start_logps = torch.cat([
            sequence_logps(policy, to_device(collate(responses[k:k + 256], tokenizer.pad_token_id), policy.device))[0]
            .float().cpu() for k in range(0, len(responses), 256)]) if responses else torch.empty(0)
    return Exploration(responses, torch.tensor([row["bonus"] for row in rows]), start_logps,
                       is_chosen=cfg.cfn.explore == "chosen")


def build_terms(cfg: Config, layout: Layout, iteration: int, rows: list[dict], pairs: list[Pair], policy,
                tokenizer) -> tuple[list[Term], dict[str, int]]:
    """The objective's terms with every input they declare, built once before the first step."""
    opt, spec = cfg.optimize, LOSSES[cfg.optimize.loss]
    # Reference passes hold no activations for a backward, so twice a training micro-batch fits where it does.
    pad_id, batch = tokenizer.pad_token_id, 2 * (opt.micro_batch_size or opt.batch_size)
    providers, extra = [], {}
    if spec.needs_reference:
        # The starting policy is the reference unless `reference: sft` names another model (iteration > 1).
        separate = opt.reference == "sft" and iteration > 1
        reference = (load_policy(policy_dir(cfg, layout, 0), cfg.model, policy.device)[0] if separate else policy)
        if spec.needs_kl:
            if not separate and opt.lora is None:  # a frozen copy: the policy itself moves
                reference = load_policy(policy_dir(cfg, layout, iteration - 1), cfg.model, policy.device)[0]
            providers.append(ReferenceModel(reference, policy, opt.kl_chunk_size))
        else:  # under the training steps' autocast, so that policy and reference agree at step 0
            with adapter_disabled(reference), autocast(policy.device, opt.autocast):
                providers.append(ReferenceSums(*sequence_sums(reference, pairs, pad_id, batch, "reference log-probs")))
        if spec.needs_refinement:
            prompted = tokenize_pairs(with_refinement_prompt(rows, opt.refinement_prompt), tokenizer,
                                      cfg.model.max_length, cut=True)
            fits = prompted_fits(pairs, prompted, cfg.model.max_length)
            if not fits.all():
                log.warning("optimize: the quality prompt cuts a response of %d of %d pairs; they use Δ = 0",
                            len(pairs) - int(fits.sum()), len(pairs))
            with adapter_disabled(reference), autocast(policy.device, opt.autocast):
                prompted_reference = ReferenceSums(*sequence_sums(reference, prompted, pad_id, batch,
                                                                  "reference log-probs (quality prompt)"))
            providers.append(PromptedMargin(prompted, prompted_reference, fits, pad_id, policy))
            extra["refinement_unfit_pairs"] = len(pairs) - int(fits.sum())
    terms: list[Term] = [PreferenceTerm(spec, loss_params(opt), providers)]
    if opt.nll_weight:
        terms.append(NLLTerm(opt.nll_weight))
    if opt.exploration == "copo":
        with autocast(policy.device, opt.autocast):
            explore = load_exploration(cfg, layout, iteration, rows, policy, tokenizer)
        terms.append(CopoTerm(explore, opt.copo_alpha, opt.copo_scale, opt.copo_clip, policy, pad_id))
    return terms, extra


def micro_batches(indices: list[int], size: int | None) -> list[list[int]]:
    size = size or len(indices)
    return [indices[start:start + size] for start in range(0, len(indices), size)]


def train_step(policy, terms: list[Term], pairs: list[Pair], indices: list[int], opt: OptimizeConfig, pad_id: int,
               keep_hidden: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward and backward over the micro-batches of one batch; gradients accumulate to the batch's mean loss.
    Returns the batch loss (detached) and the metrics, each weighted by micro-batch size."""
    total, metrics = torch.zeros(()), {}
    for micro in micro_batches(indices, opt.micro_batch_size):
        share = len(micro) / len(indices)
        with autocast(policy.device, opt.autocast):
            fwd = forward(policy, pairs, micro, pad_id, keep_hidden)
            loss, micro_metrics = objective(terms, fwd)
        (loss * share if share != 1.0 else loss).backward()
        total = total + loss.detach().float().cpu() * share
        for name, value in micro_metrics.items():
            metrics[name] = metrics.get(name, 0.0) + value.item() * share
    return total, metrics


def run_optimize(cfg: Config, layout: Layout, iteration: int) -> None:
    opt = cfg.optimize
    out_dir = layout.policy(iteration)
    start_dir = policy_dir(cfg, layout, iteration - 1)
    pairs_rows = read_jsonl(layout.pairs(iteration))
    policy, tokenizer = load_policy(start_dir, cfg.model)
    if not pairs_rows:
        log.warning("optimize: iteration %d has no pairs (every prompt's responses tied); the policy is unchanged",
                    iteration)
        with atomic_path(out_dir) as tmp:
            shutil.copytree(start_dir, tmp)
        write_json(layout.train_log(iteration), {"pairs": 0, "steps": 0})
        return

    # 1) tokens, 2) the policy, 3) the objective
    pairs = tokenize_pairs(pairs_rows, tokenizer, cfg.model.max_length)
    policy = with_lora(policy, opt.lora, derive_seed(cfg.seed, "lora", iteration))
    if cfg.model.gradient_checkpointing:
        enable_gradient_checkpointing(policy)
    terms, extra = build_terms(cfg, layout, iteration, pairs_rows, pairs, policy, tokenizer)
    keep_hidden = LOSSES[opt.loss].needs_kl

    generator = torch.Generator().manual_seed(derive_seed(cfg.seed, "optimize", iteration))
    steps_per_epoch = math.ceil(len(pairs) / opt.batch_size)
    total_steps = max(1, round(opt.epochs * steps_per_epoch))
    warmup = round(opt.warmup_ratio * total_steps)
    trainable = [param for param in policy.parameters() if param.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=opt.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup))

    # 4) steps
    log.info("optimize iteration %d: %s on %d pairs, %d steps (%s)", iteration, opt.loss, len(pairs), total_steps,
             " + ".join(term.name for term in terms))
    order: list[int] = []
    history = []
    policy.train()
    for step in progress(range(total_steps), f"optimize iter {iteration}"):
        if len(order) < opt.batch_size:
            order += torch.randperm(len(pairs), generator=generator).tolist()
        indices, order = order[: opt.batch_size], order[opt.batch_size:]
        optimizer.zero_grad(set_to_none=True)
        loss, metrics = train_step(policy, terms, pairs, indices, opt, tokenizer.pad_token_id, keep_hidden)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"optimize iteration {iteration}, step {step}: loss is {loss.item()}; lower optimize.learning_rate "
                f"or optimize.beta (nothing was saved; iteration {iteration - 1}'s policy is intact)")
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, opt.max_grad_norm)
        optimizer.step()
        scheduler.step()
        # chosen_logp_change (reference-based losses): a fall of > ~1 nat came before every collapse seen on the
        # testbed (docs/results.md, "Choosing the defaults").
        history.append({"step": step, "loss": loss.item(), "grad_norm": grad_norm.item(), **metrics})

    # 5) save
    save_policy(policy, tokenizer, out_dir, f"optimize iteration {iteration}")
    last = history[-max(1, steps_per_epoch // 2):]  # the final half epoch
    summary = {key: sum(h[key] for h in last) / len(last) for key in last[0] if key != "step"}
    write_json(layout.train_log(iteration), {"loss": opt.loss, "pairs": len(pairs), "steps": total_steps, **extra,
                                             "final": summary, "history": history})
    log.info("optimize: %d pairs, %d steps; final %s", len(pairs), total_steps,
             ", ".join(f"{k}={v:.3f}" for k, v in summary.items()))
