"""Stage `optimize`: preference optimization of the previous policy on this iteration's pairs.

The loop is plain PyTorch, visible top to bottom, and reads as a recipe:
1) tokens: each pair is the prompt's chat-formatted ids + the response ids exactly as sampled;
2) the policy: the previous one, with a LoRA adapter (`optimize.lora`) and gradient checkpointing when configured;
3) the objective: the base loss (`optimize.loss`), the NLL anchor and COPO's term, each fed by the inputs its spec
   declares (models/objective.py), built once here — the reference's sums before the first step, with the reference
   being the starting policy itself (or, with LoRA, its adapter-disabled base), so no second copy is loaded unless
   the reference is another model or TDPO needs a frozen one per batch;
4) steps: shuffled batches of `batch_size` pairs, split into micro-batches whose gradients accumulate (the same
   update as one big batch), under optional autocast; under `accelerate launch` each process takes an equal,
   contiguous share of every batch, and the gradients are averaged across processes (the same update again);
5) save: the adapter merged, weights checked finite, a plain model written atomically by the main process.
"""

from __future__ import annotations

import logging
import math
import shutil
import time

import torch

from alignloop.config import Config, OptimizeConfig
from alignloop.errors import InputError, NonFiniteError
from alignloop.io import atomic_path, read_jsonl, write_json
from alignloop.models.device import resolve_device
from alignloop.models.distributed import make_accelerator, mean_over_processes, sharded, trained_model
from alignloop.models.logprobs import collate, sequence_logps, to_device, tokenize_ids
from alignloop.models.loop import BatchOrder, StepResult, train_steps
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
from alignloop.models.shares import share
from alignloop.models.training import (
    adapter_disabled,
    autocast,
    enable_gradient_checkpointing,
    lr_factor,
    save_policy,
    with_lora,
)
from alignloop.paths import Layout
from alignloop.seeds import derive_seed
from alignloop.sources.models import policy_dir
from alignloop.stage_rows import PairRow, read_rows

log = logging.getLogger(__name__)


class NonFiniteLossError(NonFiniteError):
    pass


def loss_params(opt: OptimizeConfig) -> LossParams:
    """The loss and its parameters as the `optimize` section holds them (OptimizeConfig extends LossParams)."""
    return LossParams.model_validate(opt.model_dump(include=set(LossParams.model_fields)))


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
        raise InputError(
            f"optimize.refinement_prompt leaves too little room: {len(pairs) - int(fits.sum())} of {len(pairs)} pairs "
            f"would have a response cut to fit model.max_length ({max_length}; prompted prompts take up to {longest} "
            "tokens). Shorten optimize.refinement_prompt or raise model.max_length")
    return fits


def load_exploration(cfg: Config, layout: Layout, iteration: int, pairs_rows: list[dict], policy, tokenizer,
                     accelerator) -> Exploration:
    by_pair = {row["pair_id"]: row for row in read_jsonl(layout.cfn_bonuses(iteration))}
    missing = [row["pair_id"] for row in pairs_rows if row["pair_id"] not in by_pair]
    if missing:
        raise InputError(f"optimize.exploration=copo: {len(missing)} pairs have no bonus in "
                         f"{layout.cfn_bonuses(iteration)} (e.g. {missing[0]}); re-run the cfn stage")
    rows = [by_pair[row["pair_id"]] for row in pairs_rows]
    responses = tokenize_ids(tokenizer, [(pair["prompt"], row["explore_ids"]) for pair, row in zip(pairs_rows, rows)],
                             cfg.model.max_length)

    @torch.no_grad()
    def start_logps(part):
        return (torch.cat([sequence_logps(policy, to_device(collate(part[k:k + 256], tokenizer.pad_token_id),
                                                            policy.device))[0].float().cpu()
                           for k in range(0, len(part), 256)]) if part else torch.empty(0),)

    return Exploration(responses, torch.tensor([row["bonus"] for row in rows]),
                       sharded(accelerator, responses, start_logps)[0],
                       is_chosen=cfg.cfn.explore == "chosen")


def build_terms(cfg: Config, layout: Layout, iteration: int, rows: list[dict], pairs: list[Pair], policy,
                tokenizer, accelerator) -> tuple[list[Term], dict[str, int]]:
    """The objective's terms with every input they declare, built once before the first step; the reference's sums
    are computed share by share across processes and gathered."""
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
                providers.append(ReferenceSums(*sharded(accelerator, pairs, lambda part: sequence_sums(
                    reference, part, pad_id, batch, "reference log-probs"))))
        if spec.needs_refinement:
            prompted = tokenize_pairs(with_refinement_prompt(rows, opt.refinement_prompt), tokenizer,
                                      cfg.model.max_length, cut=True)
            fits = prompted_fits(pairs, prompted, cfg.model.max_length)
            if not fits.all():
                log.warning("optimize: the quality prompt cuts a response of %d of %d pairs; they use Δ = 0",
                            len(pairs) - int(fits.sum()), len(pairs))
            with adapter_disabled(reference), autocast(policy.device, opt.autocast):
                prompted_reference = ReferenceSums(*sharded(accelerator, prompted, lambda part: sequence_sums(
                    reference, part, pad_id, batch, "reference log-probs (quality prompt)")))
            providers.append(PromptedMargin(prompted, prompted_reference, fits, pad_id))
            extra["refinement_unfit_pairs"] = len(pairs) - int(fits.sum())
    terms: list[Term] = [PreferenceTerm(spec, loss_params(opt), providers)]
    if opt.nll_weight:
        terms.append(NLLTerm(opt.nll_weight))
    if opt.exploration == "copo":
        with autocast(policy.device, opt.autocast):
            explore = load_exploration(cfg, layout, iteration, rows, policy, tokenizer, accelerator)
        terms.append(CopoTerm(explore, opt.copo_alpha, opt.copo_scale, opt.copo_clip, pad_id))
    return terms, extra


def micro_batches(indices: list[int], size: int | None) -> list[list[int]]:
    size = size or len(indices)
    return [indices[start:start + size] for start in range(0, len(indices), size)]


def accumulation_steps(opt: OptimizeConfig, processes: int, num_pairs: int) -> int:
    """Micro-batches per process and step: each process's equal share of a batch, cut to `micro_batch_size`. Every
    batch has the same size, `batch_size` or all the pairs when there are fewer; accelerate steps the optimizer only
    after exactly this many."""
    if opt.batch_size % processes:
        raise InputError(f"optimize.batch_size ({opt.batch_size}) must be a multiple of the number of training "
                         f"processes ({processes}), so that every process takes an equal share of each batch")
    local = min(opt.batch_size, num_pairs) // processes
    return len(micro_batches(list(range(local)), opt.micro_batch_size))


def train_step(accelerator, model, terms: list[Term], pairs: list[Pair], indices: list[int], opt: OptimizeConfig,
               pad_id: int, keep_hidden: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward and backward over the micro-batches of this process's share of one batch; gradients accumulate (and
    are averaged across processes) to the batch's mean loss. Returns the share's loss (detached) and metrics, each
    weighted by micro-batch size."""
    total, metrics = torch.zeros(()), {}
    micros = micro_batches(indices, opt.micro_batch_size)
    for micro in micros:
        weight = len(micro) / len(indices)
        with accelerator.accumulate(model):
            with autocast(accelerator.device, opt.autocast):
                fwd = forward(model, pairs, micro, pad_id, keep_hidden)
                loss, micro_metrics = objective(terms, fwd)
            # accelerate divides by its accumulation steps; the weight makes a short last micro-batch count less
            scale = weight * accelerator.gradient_accumulation_steps
            accelerator.backward(loss * scale if scale != 1.0 else loss)
        total = total + loss.detach().float().cpu() * weight
        for name, value in micro_metrics.items():
            metrics[name] = metrics.get(name, 0.0) + value.item() * weight
    return total, metrics


def run_optimize(cfg: Config, layout: Layout, iteration: int) -> None:
    opt = cfg.optimize
    out_dir = layout.policy(iteration)
    start_dir = policy_dir(cfg, layout, iteration - 1)
    pairs_rows = read_rows(layout.pairs(iteration), PairRow)
    accelerator = make_accelerator(resolve_device(cfg.model.device))
    # on this process's own device: under `accelerate launch` on GPUs, process k loads onto GPU k
    policy, tokenizer = load_policy(start_dir, cfg.model, accelerator.device)
    if not pairs_rows:
        log.warning("optimize: iteration %d has no pairs (every prompt's responses tied); the policy is unchanged",
                    iteration)
        if accelerator.is_main_process:
            with atomic_path(out_dir) as tmp:
                shutil.copytree(start_dir, tmp)
            write_json(layout.train_log(iteration), {"pairs": 0, "steps": 0})
        return

    if accelerator.num_processes > 1 and len(pairs_rows) < opt.batch_size:
        raise InputError(f"optimize iteration {iteration}: {len(pairs_rows)} pairs, fewer than optimize.batch_size "
                         f"({opt.batch_size}); with {accelerator.num_processes} processes every batch must be full. "
                         "Lower optimize.batch_size or sample more prompts")

    accelerator.gradient_accumulation_steps = accumulation_steps(opt, accelerator.num_processes, len(pairs_rows))

    # 1) tokens, 2) the policy, 3) the objective
    pairs = tokenize_pairs(pairs_rows, tokenizer, cfg.model.max_length)
    policy = with_lora(policy, opt.lora, derive_seed(cfg.seed, "lora", iteration))
    if cfg.model.gradient_checkpointing:
        enable_gradient_checkpointing(policy)
    terms, extra = build_terms(cfg, layout, iteration, pairs_rows, pairs, policy, tokenizer, accelerator)
    keep_hidden = LOSSES[opt.loss].needs_kl

    generator = torch.Generator().manual_seed(derive_seed(cfg.seed, "optimize", iteration))
    steps_per_epoch = math.ceil(len(pairs) / opt.batch_size)
    total_steps = max(1, round(opt.epochs * steps_per_epoch))
    warmup = round(opt.warmup_ratio * total_steps)
    trainable = [param for param in policy.parameters() if param.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=opt.learning_rate, weight_decay=0.0)
    model, optimizer = accelerator.prepare(policy, optimizer)
    trainable = [param for param in model.parameters() if param.requires_grad]  # sharding replaces them
    # Stepped once per batch, not prepared: accelerate would step it once per process.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup))

    # 4) steps
    if accelerator.is_main_process:
        log.info("optimize iteration %d: %s on %d pairs, %d steps (%s)%s", iteration, opt.loss, len(pairs),
                 total_steps, " + ".join(term.name for term in terms), f", {accelerator.num_processes} processes "
                 f"({accelerator.distributed_type.value})" if accelerator.num_processes > 1 else "")
    model.train()
    started = time.perf_counter()
    own = share(opt.batch_size, accelerator.process_index, accelerator.num_processes)
    batches = BatchOrder(len(pairs), opt.batch_size, generator)

    def step(index: int) -> StepResult:
        indices = batches.take()
        loss, metrics = train_step(accelerator, model, terms, pairs, indices[own.start:own.stop], opt,
                                   tokenizer.pad_token_id, keep_hidden)
        metrics = mean_over_processes(accelerator, {"loss": loss.item(), **metrics})
        return metrics.pop("loss"), metrics

    def non_finite(index: int, loss: float) -> Exception:
        return NonFiniteLossError(
            f"optimize iteration {iteration}, step {index}: loss is {loss}; lower optimize.learning_rate or "
            f"optimize.beta (nothing was saved; iteration {iteration - 1}'s policy is intact)")

    # chosen_logp_change (reference-based losses): a fall of > ~1 nat came before every collapse seen on the testbed
    # (docs/results.md, "Choosing the defaults").
    history = train_steps(total_steps, step, optimizer, non_finite=non_finite, scheduler=scheduler,
                          clip=lambda: accelerator.clip_grad_norm_(trainable, opt.max_grad_norm),
                          description=f"optimize iter {iteration}")

    # 5) save
    seconds = time.perf_counter() - started  # logged, never written: artifacts stay byte-identical across reruns
    trained = trained_model(accelerator, model, lambda: with_lora(load_policy(start_dir, cfg.model)[0], opt.lora,
                                                                  derive_seed(cfg.seed, "lora", iteration)))
    if trained is None:  # not the main process: it has taken its part in gathering the weights
        return
    save_policy(trained, tokenizer, out_dir, f"optimize iteration {iteration}")
    last = history[-max(1, steps_per_epoch // 2):]  # the final half epoch
    summary = {key: sum(h[key] for h in last) / len(last) for key in last[0] if key != "step"}
    write_json(layout.train_log(iteration), {"loss": opt.loss, "pairs": len(pairs), "steps": total_steps, **extra,
                                             "final": summary, "history": history})
    log.info("optimize: %d pairs, %d steps in %.1f s (%.1f pairs/s); final %s", len(pairs), total_steps, seconds,
             total_steps * opt.batch_size / seconds, ", ".join(f"{k}={v:.3f}" for k, v in summary.items()))
