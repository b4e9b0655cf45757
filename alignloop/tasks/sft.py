"""Stage `sft`: supervised fine-tuning on the demonstrations, with TRL's SFTTrainer (loss on the response only)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from datasets import Dataset

from alignloop.config import Config
from alignloop.io import atomic_path, read_jsonl, write_json
from alignloop.models.policy import load_policy, resolve_device
from alignloop.paths import Layout

log = logging.getLogger(__name__)


def sft_dataset(rows: list[dict]) -> Dataset:
    """Conversational prompt-completion rows: TRL applies the chat template and masks the prompt."""
    return Dataset.from_dict({
        "prompt": [[{"role": "user", "content": row["prompt"]}] for row in rows],
        "completion": [[{"role": "assistant", "content": row["response"]}] for row in rows],
    })


def run_sft(cfg: Config, layout: Layout) -> Path:
    from trl import SFTConfig, SFTTrainer  # heavy import, only here

    out_dir = layout.policy(0)
    start = layout.base_model if cfg.model.name_or_path == "testbed" else Path(cfg.model.name_or_path)
    if not cfg.sft.enabled:
        model, tokenizer = load_policy(start, cfg.model, torch.device("cpu"))
        with atomic_path(out_dir) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        write_json(layout.train_log(0), {"skipped": True})
        return out_dir

    rows = read_jsonl(layout.sft_data)
    if not rows:
        raise ValueError(f"{layout.sft_data}: no demonstrations")
    device = resolve_device(cfg.model.device)
    model, tokenizer = load_policy(start, cfg.model, device)
    model.train()
    work_dir = layout.sft / ".trainer"
    args = SFTConfig(
        output_dir=str(work_dir),
        num_train_epochs=cfg.sft.epochs,
        learning_rate=cfg.sft.learning_rate,
        per_device_train_batch_size=cfg.sft.batch_size,
        warmup_steps=cfg.sft.warmup_ratio,
        weight_decay=cfg.sft.weight_decay,
        lr_scheduler_type="cosine",
        max_length=cfg.model.max_length,
        completion_only_loss=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=False,
        fp16=False,
        activation_checkpointing=False,
        use_cpu=device.type == "cpu",
        save_strategy="no",
        report_to="none",
        logging_steps=25,
        disable_tqdm=False,
        dataloader_num_workers=0,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=sft_dataset(rows), processing_class=tokenizer)
    result = trainer.train()
    model.eval()
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    write_json(layout.train_log(0), {"train_loss": result.training_loss, "steps": result.global_step,
                                               "history": history})
    shutil.rmtree(work_dir, ignore_errors=True)
    return out_dir
