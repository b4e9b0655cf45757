"""The testbed's tiny GPT-2, created from a config and saved like any Hugging Face model."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from alignloop.config import ModelConfig
from alignloop.io import atomic_path
from alignloop.testbed.tokenizer import build_tokenizer


def create_base_model(cfg: ModelConfig, seed: int, out_dir: Path) -> Path:
    """Write an untrained model + tokenizer to `out_dir` (safetensors) and return it."""
    tokenizer = build_tokenizer(cfg.max_length)
    torch.manual_seed(seed)
    model = _llama(cfg, tokenizer) if cfg.architecture == "llama" else _gpt2(cfg, tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out_dir


def _llama(cfg: ModelConfig, tokenizer) -> PreTrainedModel:
    """Rotary positions learn copy-like skills (reverse, shift) far faster than learned absolute positions."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.n_embd,
        intermediate_size=2 * cfg.n_embd,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_head,
        max_position_embeddings=cfg.max_length,
        tie_word_embeddings=True,
        attention_dropout=0.0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def _gpt2(cfg: ModelConfig, tokenizer) -> PreTrainedModel:
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=cfg.max_length,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        # Dropout off: policy and reference log-probs stay deterministic.
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)
