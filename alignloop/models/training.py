"""What every training stage shares: LoRA adapters, gradient checkpointing, mixed precision, and saving a policy.

A saved policy is always a plain model (a LoRA adapter is merged first), so the next `sample` — or any other tool —
loads it with `AutoModelForCausalLM.from_pretrained` as it is.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from alignloop.config import LoraConfig
from alignloop.errors import NonFiniteError
from alignloop.io import atomic_path

AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


class NonFiniteWeightsError(NonFiniteError):
    pass


def peft_config(lora: LoraConfig, task_type: str = "CAUSAL_LM"):
    """peft's LoraConfig from ours (dropout 0 by default: the adapter-disabled reference must stay exact)."""
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
                          target_modules=lora.target_modules, task_type=task_type)


def with_lora(model: PreTrainedModel, lora: LoraConfig | None, seed: int) -> PreTrainedModel:
    """The model wrapped with a fresh adapter (only its weights train), or the model itself. The adapter's random
    init draws from `seed` alone, so a resumed run builds the same adapter whatever ran before it in the process."""
    if lora is None:
        return model
    from peft import get_peft_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, peft_config(lora))


def is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "merge_and_unload")


def causal_lm(model) -> PreTrainedModel:
    """The transformers model under a peft wrapper (its LoRA layers still follow `disable_adapter`)."""
    return model.get_base_model() if is_peft(model) else model


def decoder(model) -> torch.nn.Module:
    """The transformer body (last hidden states, after the final norm), without the output head."""
    return causal_lm(model).base_model


def adapter_disabled(model):
    """A context in which a LoRA policy computes the reference (its base weights); a plain model is unchanged."""
    return model.disable_adapter() if is_peft(model) else contextlib.nullcontext()


def enable_gradient_checkpointing(model) -> None:
    inner = causal_lm(model)
    kwargs = {"use_reentrant": False}
    if hasattr(inner, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name warns
        inner.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    inner.config.use_cache = False  # a cache is useless while training and conflicts with recompute


def autocast(device: torch.device, name: str):
    """bf16/fp16 autocast for forward passes; `none` is a no-op."""
    if name == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[name])


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    progress_fraction = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_fraction)))


def check_finite_weights(model, where: str) -> None:
    bad = [name for name, param in model.named_parameters() if not torch.isfinite(param).all()]
    if bad:
        raise NonFiniteWeightsError(f"{where}: {len(bad)} weight tensors hold inf/NaN (e.g. {bad[0]}); nothing was "
                                    "saved. Lower the learning rate")


def save_policy(model, tokenizer: PreTrainedTokenizerBase, out_dir: Path, where: str) -> PreTrainedModel:
    """Merge any adapter, check the weights, and write a plain model + tokenizer atomically; returns the model."""
    if is_peft(model):
        model = model.merge_and_unload()
    check_finite_weights(model, where)
    model.eval()
    if getattr(model.config, "use_cache", None) is False:
        model.config.use_cache = True  # training turned it off; generation wants it
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return model
