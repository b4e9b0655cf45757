"""Loading a policy (any causal LM + tokenizer on disk), its stop tokens, and identifying it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from alignloop.config import ModelConfig
from alignloop.errors import UserError
from alignloop.models.device import resolve_device
from alignloop.pipeline.digests import file_digest

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


class ModelLoadError(UserError, RuntimeError):
    pass


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, path: str | Path) -> None:
    """Refuse a tokenizer alignloop cannot format or pad with, saying how to fix it."""
    if tokenizer.chat_template is None:
        raise ModelLoadError(
            f"{path}: the tokenizer has no chat template; alignloop formats every prompt with one. Use a chat or "
            "instruct model, or set `tokenizer.chat_template` and save_pretrained it")
    if tokenizer.eos_token_id is None:
        raise ModelLoadError(f"{path}: the tokenizer has no EOS token; set `tokenizer.eos_token` and "
                             "save_pretrained it")


def load_tokenizer(path: str | Path, cfg: ModelConfig) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=cfg.trust_remote_code)
    check_tokenizer(tokenizer, path)
    if tokenizer.pad_token is None:  # padding is always masked, so EOS is a safe stand-in
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_policy(path: str | Path, cfg: ModelConfig, device: torch.device | None = None,
                ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model in eval mode on `device` in `model.dtype`, and its tokenizer. Weights come from safetensors only."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path}: no model here (expected config.json + model.safetensors); "
                             "run the stage that writes it, or fix model.name_or_path")
    tokenizer = load_tokenizer(path, cfg)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), trust_remote_code=cfg.trust_remote_code, use_safetensors=True, dtype=DTYPES[cfg.dtype])
    except OSError as exc:
        raise ModelLoadError(f"{path}: could not load the model ({exc})") from None
    model.to(device or resolve_device(cfg.device)).eval()
    return model, tokenizer


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Tokens that end a response: the generation config's EOS (one id or a list, e.g. a chat model's end-of-turn
    token) and the tokenizer's EOS, in that order, without repeats."""
    return stop_ids(getattr(model.generation_config, "eos_token_id", None), tokenizer)


def stop_ids(configured: int | list[int] | None, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """`configured` (a generation config's EOS: none, one id or several), then the tokenizer's EOS, without repeats."""
    configured = [] if configured is None else [configured] if isinstance(configured, int) else list(configured)
    return list(dict.fromkeys([*configured, tokenizer.eos_token_id]))


def policy_hash(path: str | Path) -> str:
    """A short content hash of a model's weights: which policy produced a sample."""
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{path}: no .safetensors weights")
    digest = hashlib.sha256()
    for file in files:  # the digest cache makes a large, unchanged policy cheap to identify again
        digest.update(file.name.encode() + b"\0" + file_digest(file).encode())
    return digest.hexdigest()[:16]
