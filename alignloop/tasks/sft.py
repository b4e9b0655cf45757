"""Stage `sft`: supervised fine-tuning on the demonstrations, with TRL's SFTTrainer (loss on the response only).

With `sft.lora` TRL trains an adapter (its `peft_config`), merged into the saved model. With `sft.enabled: false`
this stage is not in the plan: policy 0 is the base model itself. Under `accelerate launch` the Trainer spreads each
batch over the processes (the same global batch of `sft.batch_size`) and the main process saves.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path

import torch
from datasets import Dataset

from alignloop.config import Config
from alignloop.errors import InputError, NonFiniteError
from alignloop.io import read_jsonl, write_json
from alignloop.models.device import resolve_device
from alignloop.models.distributed import process_device, trained_model
from alignloop.models.policy import load_policy
from alignloop.models.shares import sft_batch_shares
from alignloop.models.training import peft_config, save_policy
from alignloop.paths import Layout
from alignloop.pipeline import stop_points
from alignloop.sources.models import base_model_dir

log = logging.getLogger(__name__)


def sft_dataset(rows: list[dict], tokenizer, max_length: int) -> Dataset:
    """The demonstrations tokenized as TRL's SFTTrainer would (chat template, loss on the response only, cut to
    `max_length` from the start, examples with no response token left dropped), but in two batched tokenizer calls
    instead of two chat-template calls per row through `datasets.map`: the same tensors, several times faster
    (measured in docs/performance.md)."""
    from trl.data_utils import common_prefix_length

    prompts = [[{"role": "user", "content": row["prompt"]}] for row in rows]
    conversations = [p + [{"role": "assistant", "content": row["response"]}] for p, row in zip(prompts, rows)]
    prompt_ids = _token_ids(tokenizer, tokenizer.apply_chat_template(prompts, tokenize=False,
                                                                      add_generation_prompt=True))
    full_ids = _token_ids(tokenizer, tokenizer.apply_chat_template(conversations, tokenize=False))
    input_ids, labels = [], []
    for prompt, full in zip(prompt_ids, full_ids):
        prompt_length = common_prefix_length(prompt, full)
        ids, label = full[:max_length], ([-100] * prompt_length + full[prompt_length:])[:max_length]
        if any(token != -100 for token in label):
            input_ids.append(ids)
            labels.append(label)
    if not input_ids:
        raise InputError(f"sft: no demonstration has a response token within model.max_length ({max_length})")
    return Dataset.from_dict({"input_ids": input_ids, "labels": labels})


def _token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"]  # the template already wrote the special tokens


class NonFiniteSFTLossError(NonFiniteError):
    pass


def check_logged_loss(logs: dict, step: int) -> None:
    """Stop at the first logged non-finite loss, not after the remaining epochs: nothing is saved or stamped."""
    loss = logs.get("loss")
    if loss is not None and not math.isfinite(float(loss)):
        raise NonFiniteSFTLossError(f"sft, step {step}: the training loss is {loss}; nothing was saved. Lower "
                                    "sft.learning_rate")


def stop_on_non_finite_loss():
    from transformers import TrainerCallback

    class StopOnNonFiniteLoss(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            check_logged_loss(logs or {}, state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            stop_points.reach_in_stage(f"step-{state.global_step}")  # a test hook; a no-op in a normal run

    return StopOnNonFiniteLoss()


# Full logits of a micro-batch up to this size (fp32 bytes) are cheaper than TRL's chunked, fused head (which also
# computes entropy and accuracy for its logs); a 7B model's vocabulary far exceeds it and keeps the fused head.
PLAIN_HEAD_MAX_BYTES = 64 * 2**20


def uses_plain_head(vocab_size: int, micro_batch_size: int, max_length: int) -> bool:
    return 4 * vocab_size * micro_batch_size * max_length <= PLAIN_HEAD_MAX_BYTES


def seeded_trainer_class(plain_head: bool = False):
    """TRL's SFTTrainer whose length-balanced batch sampler draws its batches from the run's seed (the Trainer
    builds it with a fixed seed of 42, which would make every seed see the demonstrations in the same order), and
    which, with `plain_head`, takes the loss from the model's own head (the same mean over response tokens)."""
    from transformers import Trainer
    from transformers.trainer_pt_utils import BatchRebalanceSampler
    from trl import SFTTrainer

    class SeededSFTTrainer(SFTTrainer):
        def _get_train_sampler(self, *args, **kwargs):
            sampler = super()._get_train_sampler(*args, **kwargs)
            if isinstance(sampler, BatchRebalanceSampler):
                sampler.seed = self.args.data_seed
            return sampler

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not plain_head:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return Trainer.compute_loss(self, model, {**inputs, "use_cache": False}, return_outputs,
                                        num_items_in_batch)

    return SeededSFTTrainer


def run_sft(cfg: Config, layout: Layout) -> Path:
    from trl import SFTConfig  # heavy import, only here

    out_dir = layout.policy(0)
    if not cfg.sft.enabled:
        raise InputError("sft.enabled is false: policy 0 is the base model itself, there is nothing to train")
    start = base_model_dir(cfg, layout)
    rows = read_jsonl(layout.sft_data)
    if not rows:
        raise InputError(f"{layout.sft_data}: no demonstrations")
    device = process_device(resolve_device(cfg.model.device))
    model, tokenizer = load_policy(start, cfg.model, device)
    model.train()
    work_dir = layout.sft / ".trainer"
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # set by `accelerate launch`
    micro, accumulation = sft_batch_shares(cfg.sft.batch_size, cfg.sft.micro_batch_size, processes)
    if processes > 1 and os.environ.get("RANK", "0") == "0":
        log.info("sft: %d processes, each with micro-batches of %d × %d accumulation steps per batch of %d",
                 processes, micro, accumulation, cfg.sft.batch_size)
    args = SFTConfig(
        output_dir=str(work_dir),
        num_train_epochs=cfg.sft.epochs,
        learning_rate=cfg.sft.learning_rate,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accumulation,
        train_sampling_strategy="batch_rebalance" if micro < cfg.sft.batch_size else "random",
        warmup_steps=cfg.sft.warmup_ratio,
        weight_decay=cfg.sft.weight_decay,
        lr_scheduler_type="cosine",
        max_length=cfg.model.max_length,
        completion_only_loss=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=cfg.model.dtype == "bfloat16",
        fp16=False,
        activation_checkpointing=cfg.model.gradient_checkpointing,
        use_cpu=device.type == "cpu",
        save_strategy="no",
        report_to="none",
        logging_steps=25,
        logging_nan_inf_filter=False,  # the Trainer would otherwise log a diverged loss as the running mean
        disable_tqdm=False,
        dataloader_num_workers=0,
        dataset_num_proc=None,
        dataset_kwargs={"skip_prepare_dataset": True},  # sft_dataset did it
    )
    peft = peft_config(cfg.sft.lora) if cfg.sft.lora is not None else None
    if peft is not None:
        torch.manual_seed(cfg.seed)  # the adapter's init happens before the Trainer seeds itself
    plain_head = uses_plain_head(model.config.vocab_size, micro, cfg.model.max_length)
    dataset = sft_dataset(rows, tokenizer, cfg.model.max_length)
    trainer = seeded_trainer_class(plain_head)(model=model, args=args, train_dataset=dataset,
                                               processing_class=tokenizer, peft_config=peft,
                                               callbacks=[stop_on_non_finite_loss()])
    result = trainer.train()
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    if not math.isfinite(result.training_loss) or any(not math.isfinite(entry["loss"]) for entry in history):
        raise NonFiniteSFTLossError(f"sft: the training loss became non-finite (final {result.training_loss}); nothing "
                                 "was saved. Lower sft.learning_rate")
    def fresh():  # the same structure, for a sharded model's gathered weights
        base = load_policy(start, cfg.model, device)[0]
        if peft is None:
            return base
        from peft import get_peft_model

        return get_peft_model(base, peft)

    trained = trained_model(trainer.accelerator, trainer.model_wrapped, fresh)
    if trained is None:  # not the main process
        return out_dir
    save_policy(trained, tokenizer, out_dir, "sft")
    write_json(layout.train_log(0), {"train_loss": result.training_loss, "steps": result.global_step,
                                               "history": history})
    shutil.rmtree(work_dir, ignore_errors=True)
    return out_dir
