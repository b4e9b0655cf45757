"""Loading a policy (any causal LM + tokenizer on disk) and identifying it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from alignloop.config import ModelConfig


class ModelLoadError(RuntimeError):
    pass


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_tokenizer(path: str | Path, cfg: ModelConfig) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=cfg.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ModelLoadError(f"{path}: the tokenizer has no chat template; alignloop formats every prompt with one")
    tokenizer.padding_side = "left"
    return tokenizer


def load_policy(path: str | Path, cfg: ModelConfig, device: torch.device | None = None,
                ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model in eval mode on `device`, and its tokenizer. Weights come from safetensors only."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path}: no model here (expected config.json + model.safetensors); "
                             "run the stage that writes it, or fix model.name_or_path")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), trust_remote_code=cfg.trust_remote_code, use_safetensors=True, dtype=torch.float32)
    except OSError as exc:
        raise ModelLoadError(f"{path}: could not load the model ({exc})") from None
    model.to(device or resolve_device(cfg.device)).eval()
    return model, load_tokenizer(path, cfg)


def policy_hash(path: str | Path) -> str:
    """A short content hash of a model's weights: which policy produced a sample."""
    digest = hashlib.sha256()
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{path}: no .safetensors weights")
    for file in files:
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
