"""Training a scalar reward model from preference pairs: Bradley–Terry, optionally denoised with the ensemble's
preference strength, with the SimCSE auxiliary loss, and with MetaRM's meta step (alignloop/models/reward_losses.py
holds the formulas; this module holds the loop).

The model is an `AutoModelForSequenceClassification` with one label, started from a causal LM's (or a classifier's)
weights; its score is read at each sequence's last real token (models/reward_model.pooled_forward), exactly as the
`reward_model` ranker reads it later, so training and ranking see the same function.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedTokenizerBase

from alignloop.config import ModelConfig
from alignloop.config.reward import RewardConfig
from alignloop.errors import InputError, NonFiniteError
from alignloop.models.batching import batched_by_length
from alignloop.models.device import resolve_device
from alignloop.models.distributed import mean_over_processes
from alignloop.models.loop import BatchOrder, StepResult, train_steps
from alignloop.models.policy import DTYPES, ModelLoadError
from alignloop.models.reward_losses import (
    DenoisingParams,
    denoising_loss,
    metarm_difference_score,
    metarm_step,
    simcse_contrastive,
)
from alignloop.models.reward_model import pooled_forward, right_padded
from alignloop.models.shares import share
from alignloop.models.training import autocast, check_finite_weights, enable_gradient_checkpointing, lr_factor

log = logging.getLogger(__name__)

Sequence = list[int]
TokenPair = tuple[Sequence, Sequence]  # (chosen ids, rejected ids), each a formatted (prompt, response)

# Config fields that set dropout in transformers' common architectures; SimCSE's two views need dropout to differ.
DROPOUT_FIELDS = ("attention_dropout", "hidden_dropout", "attn_pdrop", "resid_pdrop", "embd_pdrop",
                  "hidden_dropout_prob", "attention_probs_dropout_prob")


class NonFiniteRewardLossError(NonFiniteError):
    pass


class PooledReward(torch.nn.Module):
    """The classifier as a function of (input ids, mask, lengths) → (rewards, representations); a plain module so
    that MetaRM's functional calls can run it with other parameter values."""

    def __init__(self, classifier: torch.nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return pooled_forward(self.classifier, input_ids, attention_mask, lengths)


@dataclass
class TrainedReward:
    model: torch.nn.Module  # the classifier, in eval mode
    history: list[dict]     # per step: loss, bt, contrastive, difference_score, grad_norm, lr


def load_classifier(init_dir: str | Path, model_cfg: ModelConfig, pad_token_id: int, seed: int,
                    dropout: float | None = None, device: torch.device | None = None) -> torch.nn.Module:
    """A one-label classifier from `init_dir` (its backbone; a new head drawn from `seed` alone), on `device` (by
    default the one `model.device` names)."""
    try:
        config = AutoConfig.from_pretrained(str(init_dir), num_labels=1, trust_remote_code=model_cfg.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{init_dir}: no model config ({str(exc).splitlines()[0]})") from None
    config.pad_token_id = pad_token_id
    for name in DROPOUT_FIELDS if dropout is not None else ():
        if isinstance(getattr(config, name, None), float):
            setattr(config, name, dropout)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            from transformers.utils import logging as hf_logging

            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # "some weights newly initialized (score)": that is the point
            try:
                model = AutoModelForSequenceClassification.from_pretrained(
                    str(init_dir), config=config, use_safetensors=True, dtype=DTYPES[model_cfg.dtype],
                    trust_remote_code=model_cfg.trust_remote_code)
            finally:
                hf_logging.set_verbosity(verbosity)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{init_dir}: could not load as a sequence classifier ({exc})".splitlines()[0]
                                 ) from None
    return model.to(device or resolve_device(model_cfg.device))


def restore_dropout(model: torch.nn.Module, init_dir: str | Path, model_cfg: ModelConfig) -> None:
    """Put the starting model's dropout values back into the config before saving (training's choice, not the
    model's)."""
    original = AutoConfig.from_pretrained(str(init_dir), trust_remote_code=model_cfg.trust_remote_code)
    for name in DROPOUT_FIELDS:
        if hasattr(model.config, name) and hasattr(original, name):
            setattr(model.config, name, getattr(original, name))


@torch.no_grad()
def score_sequences(model: torch.nn.Module, sequences: list[Sequence], pad_id: int, batch_size: int,
                    description: str) -> list[float]:
    """One reward per sequence, in input order (batched by length, longest first)."""
    model.eval()
    device = next(model.parameters()).device

    def forward(batch: list[Sequence]) -> list[float]:
        return pooled_forward(model, *right_padded(batch, pad_id, device))[0].float().tolist()

    return batched_by_length(sequences, forward, batch_size, lambda ids: -len(ids), description)


def pair_margins(model: torch.nn.Module, pairs: list[TokenPair], pad_id: int, batch_size: int,
                 description: str) -> torch.Tensor:
    """(pairs,) r(chosen) − r(rejected)."""
    scores = score_sequences(model, [ids for pair in pairs for ids in pair], pad_id, batch_size, description)
    return torch.tensor(scores[0::2], dtype=torch.float64) - torch.tensor(scores[1::2], dtype=torch.float64)


def _views(module, batch: dict[str, torch.Tensor], rcfg: RewardConfig, first_hidden: torch.Tensor
           ) -> torch.Tensor:
    """SimCSE on a second dropout pass: instances are per-pair differences h_c − h_r or every response."""
    _, second_hidden = module(batch["input_ids"], batch["attention_mask"], batch["lengths"])
    if rcfg.contrastive_on == "difference":
        half = first_hidden.shape[0] // 2
        first, second = first_hidden[:half] - first_hidden[half:], second_hidden[:half] - second_hidden[half:]
    else:
        first, second = first_hidden, second_hidden
    return simcse_contrastive(first.float(), second.float(), rcfg.contrastive_temperature)


def preference_loss(module, batch: dict[str, torch.Tensor], rcfg: RewardConfig
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The denoised BT loss (mean over pairs) plus β·SimCSE; chosen rows first, then rejected rows. `module` is a
    PooledReward or a functional call of one (MetaRM's θ')."""
    rewards, hidden = module(batch["input_ids"], batch["attention_mask"], batch["lengths"])
    half = rewards.shape[0] // 2
    params = DenoisingParams(soft_label=rcfg.soft_label, margin_scale=rcfg.margin_scale)
    bt = denoising_loss(rcfg.denoising)(rewards[:half].float(), rewards[half:].float(), batch["strength"], params)
    parts = {"bt": bt.mean(), "accuracy": (rewards[:half] > rewards[half:]).float().mean()}
    loss = parts["bt"]
    if rcfg.contrastive_weight:
        parts["contrastive"] = _views(module, batch, rcfg, hidden)
        loss = loss + rcfg.contrastive_weight * parts["contrastive"]
    return loss, parts


def _batch(pairs: list[TokenPair], indices: list[int], strength: torch.Tensor, pad_id: int,
           device: torch.device) -> dict[str, torch.Tensor]:
    sequences = [pairs[k][0] for k in indices] + [pairs[k][1] for k in indices]
    input_ids, attention_mask, lengths = right_padded(sequences, pad_id, device)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "lengths": lengths,
            "strength": strength[indices].to(device)}


def _meta_batch(groups: list[list[Sequence]], picked: list[int], pad_id: int, device: torch.device
                ) -> dict[str, torch.Tensor]:
    sequences = [ids for k in picked for ids in groups[k]]
    input_ids, attention_mask, lengths = right_padded(sequences, pad_id, device)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "lengths": lengths,
            "shape": torch.tensor([len(picked), len(groups[picked[0]])])}


def train_reward_model(init_dir: str | Path, tokenizer: PreTrainedTokenizerBase, pairs: list[TokenPair],
                       rcfg: RewardConfig, model_cfg: ModelConfig, seed: int, strength: torch.Tensor | None = None,
                       meta_groups: list[list[Sequence]] | None = None, denoise: bool = True,
                       description: str = "reward model", accelerator=None) -> TrainedReward:
    """Train one reward model on `pairs` (chosen first in each). `strength` is the ensemble's μ per pair (needed by
    every denoising variant but none); `meta_groups` are the policy's responses grouped per prompt (equal sizes;
    needed by MetaRM). `denoise=False` trains plain BT (no SimCSE, no MetaRM): an ensemble member.
    Head initialisation and data order come from `seed` alone.

    With an `accelerator` of several processes (data parallel: `pipeline.launcher: accelerate`), each process takes
    an equal share of every batch and the gradients are averaged: the steps of one process over the whole batch, up
    to float rounding. Every process returns the trained model. MetaRM and the SimCSE term, whose terms couple the
    whole batch, need one process (pipeline/runnable.py refuses them earlier)."""
    if not pairs:
        raise InputError(f"{description}: no preference pairs to train on")
    settings = rcfg if denoise else rcfg.model_copy(update={"denoising": "none", "contrastive_weight": 0.0,
                                                            "metarm": False})
    if settings.denoising != "none" and strength is None:
        raise ValueError(f"{description}: denoising {settings.denoising} needs the ensemble's preference strength")
    if settings.metarm and not meta_groups:
        raise ValueError(f"{description}: MetaRM needs the policy's responses (meta_groups)")
    processes = accelerator.num_processes if accelerator is not None else 1
    if processes > 1 and (settings.metarm or settings.contrastive_weight):
        raise InputError(f"{description}: MetaRM and the SimCSE term train in one process only")
    if processes > 1 and len(pairs) < settings.batch_size:
        raise InputError(f"{description}: {len(pairs)} pairs, fewer than reward.batch_size ({settings.batch_size}); "
                         f"with {processes} processes every batch must be full. Lower reward.batch_size")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    classifier = load_classifier(init_dir, model_cfg, pad_id, seed,
                                 settings.contrastive_dropout if settings.contrastive_weight else None,
                                 accelerator.device if accelerator is not None else None)
    if model_cfg.gradient_checkpointing:
        enable_gradient_checkpointing(classifier)
    module, device = PooledReward(classifier), next(classifier.parameters()).device
    strength = torch.zeros(len(pairs)) if strength is None else strength.float()

    generator = torch.Generator().manual_seed(seed)
    batch_size = min(settings.batch_size, len(pairs))
    total = max(1, round(settings.epochs * math.ceil(len(pairs) / batch_size)))
    warmup = round(settings.warmup_ratio * total)
    trainable = [param for param in module.parameters() if param.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=0.0)
    if accelerator is not None:
        module, optimizer = accelerator.prepare(module, optimizer)
        trainable = [param for param in module.parameters() if param.requires_grad]
    # Stepped once per batch, not prepared: accelerate would step it once per process.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup))
    own = share(batch_size, accelerator.process_index if accelerator is not None else 0, processes)
    backward = accelerator.backward if accelerator is not None else torch.Tensor.backward
    clip = accelerator.clip_grad_norm_ if accelerator is not None else torch.nn.utils.clip_grad_norm_
    batches = BatchOrder(len(pairs), batch_size, generator)
    meta_batches = BatchOrder(len(meta_groups or ()), min(settings.metarm_groups, len(meta_groups or ())), generator)

    def step(index: int) -> StepResult:
        batch = _batch(pairs, batches.take()[own.start:own.stop], strength, pad_id, device)
        record: dict[str, float] = {}
        if settings.metarm:
            meta = _meta_batch(meta_groups, meta_batches.take(), pad_id, device)
            shape = tuple(meta["shape"].tolist())

            def difference_score(reward):
                rewards, _ = reward(meta["input_ids"], meta["attention_mask"], meta["lengths"])
                return metarm_difference_score(rewards.float().view(shape))

            parts_at_adapted: dict[str, torch.Tensor] = {}

            def loss_at(reward):
                loss, parts = preference_loss(reward, batch, settings)
                parts_at_adapted.update(parts)
                return loss

            with autocast(device, settings.autocast):
                meta_step = metarm_step(module, difference_score, loss_at, settings.metarm_lr)
            for name, param in module.named_parameters():
                if param.requires_grad:
                    param.grad = meta_step.gradients[name]
            loss, parts = meta_step.loss, parts_at_adapted
            record["difference_score"] = meta_step.difference_score.item()
        else:
            with autocast(device, settings.autocast):
                loss, parts = preference_loss(module, batch, settings)
            backward(loss)
        values = {"loss": loss.item(), **{name: value.item() for name, value in parts.items()}, **record}
        if processes > 1:
            values = mean_over_processes(accelerator, values)
        return values.pop("loss"), values

    def non_finite(index: int, loss: float) -> Exception:
        return NonFiniteRewardLossError(f"{description}, step {index}: loss is {loss}; lower reward.learning_rate "
                                        "(nothing was saved)")

    module.train()
    history = train_steps(total, step, optimizer, non_finite=non_finite, scheduler=scheduler, description=description,
                          clip=lambda: clip(trainable, settings.max_grad_norm))
    if accelerator is not None:
        classifier = accelerator.unwrap_model(module).classifier
        accelerator.free_memory()  # the next model (an ensemble member, the final one) is prepared afresh
    classifier.eval()
    check_finite_weights(classifier, description)
    return TrainedReward(classifier, history)

