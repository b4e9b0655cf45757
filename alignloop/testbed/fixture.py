"""A small, local "bring your own model" setup: a chat policy, a reward model and UltraFeedback-style prompt files.

Everything is built here from a seed in a few seconds, with no model hub and no network, so tests and the README
walkthrough exercise the same code paths a real Hugging Face checkpoint would. The fixture deliberately carries the
quirks real checkpoints have and that pipelines get wrong:

* the policy's end-of-turn token `<|im_end|>` is not its EOS token `<|endoftext|>` (generation must stop on both);
* the tokenizer is a real byte-level BPE, so token ids do not always survive decode -> encode;
* the reward model has its own tokenizer and chat template, so policy samples must be re-rendered before scoring;
* the training prompts contain exact duplicates, prompts that leak from the test split and two over-long prompts.

Usage: `python -m alignloop.testbed.fixture OUT_DIR [--seed N]`, or `build_fixture(root, seed)` from Python.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.utils import logging as hf_logging

from alignloop.errors import InputError
from alignloop.io import atomic_path
from alignloop.testbed import fixture_text

# Policy special tokens, Qwen/ChatML style: EOS (also pad) is not the end-of-turn token.
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# Reward-model special tokens, Llama-2 style; its pad differs from `</s>` so last-non-pad pooling sees `</s>`.
RM_BOS, RM_EOS, RM_INST, RM_END_INST, RM_PAD = "<s>", "</s>", "[INST]", "[/INST]", "<pad>"

MAX_LENGTH = 512  # tokenizer.model_max_length and max_position_embeddings
VOCAB_SIZE = 1500  # BPE target; merges stop earlier if the corpus runs out of frequent pairs

# Words the reward model is planted to like: its score rises with their share of the tokens it reads.
REWARD_KEYWORDS = ("helpful", "clear")

# Qwen2's pre-tokenizer regex. transformers 5 loads any `model_type: qwen2` directory with `Qwen2Tokenizer`, which
# rebuilds NFC + this split + ByteLevel around the saved vocab and merges; training with the same pipeline keeps
# the trained tokenizer and the reloaded one identical.
QWEN2_SPLIT_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                     r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")

POLICY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ message['content'] + '<|im_end|>' + '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# `<s>[INST] system\n\nuser [/INST] assistant</s>`: a different layout and different markers from the policy's.
REWARD_CHAT_TEMPLATE = (
    "{{ '<s>' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '[INST] ' + message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'user' %}"
    "{% if loop.first or messages[loop.index0 - 1]['role'] != 'system' %}{{ '[INST] ' }}{% endif %}"
    "{{ message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + '</s>' }}"
    "{% endif %}{% endfor %}"
)

@dataclass(frozen=True)
class Fixture:
    """Where build_fixture wrote each part; point params.yaml (or a README walkthrough) at these paths."""

    root: Path
    policy: Path  # root / "policy": a causal LM directory
    reward_model: Path  # root / "reward_model": a sequence classifier directory
    train_prompts: Path  # root / "prompts" / "train.parquet"
    eval_prompts: Path  # root / "prompts" / "test.parquet"
    sft_data: Path  # root / "prompts" / "sft.parquet"


def build_fixture(root: Path, seed: int = 0, num_train: int = 240, num_eval: int = 24) -> Fixture:
    """Write policy/, reward_model/ and prompts/ under `root`; the same seed gives byte-identical files.

    Each of the three directories is replaced in one rename, so an interrupted build never leaves a half-written
    model that looks finished. Anything else under `root` is left alone.
    """
    root = Path(root)
    pool = fixture_text.prompt_pool()
    num_fresh = num_train - fixture_text.PLANTED_TRAIN_ROWS
    if num_fresh < 1 or num_eval < fixture_text.NUM_LEAKED:
        raise InputError(f"num_train must be >= {fixture_text.PLANTED_TRAIN_ROWS + 1} "
                         f"and num_eval >= {fixture_text.NUM_LEAKED} (got {num_train}, {num_eval})")
    if num_fresh + num_eval > len(pool):
        raise InputError(f"num_train + num_eval too large: only {len(pool)} distinct prompts exist")

    rng = random.Random(seed)
    tokenizer = _train_tokenizer(fixture_text.corpus())
    splits = fixture_text.prompt_splits(rng, pool, num_fresh, num_eval, tokenizer)
    fixture = Fixture(root=root, policy=root / "policy", reward_model=root / "reward_model",
                      train_prompts=root / "prompts" / "train.parquet", eval_prompts=root / "prompts" / "test.parquet",
                      sft_data=root / "prompts" / "sft.parquet")
    with atomic_path(root / "prompts") as tmp:
        tmp.mkdir()
        for name, rows in splits.items():
            pq.write_table(pa.Table.from_pylist(rows, schema=fixture_text.ROW_SCHEMA), tmp / f"{name}.parquet")
    _save_policy(tokenizer, seed, fixture.policy)
    _save_reward_model(tokenizer, seed, fixture.reward_model)
    return fixture


# --- tokenizers ---------------------------------------------------------------------------------------------------


def _train_tokenizer(corpus: Sequence[str]) -> PreTrainedTokenizerFast:
    """A Qwen2-style byte-level BPE: any byte string encodes, and merges make ids non-unique per text."""
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, show_progress=False,
                                  special_tokens=[ENDOFTEXT, IM_START, IM_END],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=ENDOFTEXT, pad_token=ENDOFTEXT,
                                        bos_token=None, unk_token=None, model_max_length=MAX_LENGTH,
                                        additional_special_tokens=[IM_START, IM_END])
    tokenizer.chat_template = POLICY_CHAT_TEMPLATE
    return tokenizer


def _reward_tokenizer(policy_tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """The same BPE vocabulary plus Llama-2-style markers appended after it: ids of ordinary text agree with the
    policy's, chat markup does not."""
    backend = Tokenizer.from_str(policy_tokenizer.backend_tokenizer.to_str())
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t in (RM_BOS, RM_EOS, RM_INST, RM_END_INST, RM_PAD)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=RM_BOS, eos_token=RM_EOS,
                                        pad_token=RM_PAD, unk_token=None, model_max_length=MAX_LENGTH,
                                        additional_special_tokens=[RM_INST, RM_END_INST])
    tokenizer.chat_template = REWARD_CHAT_TEMPLATE
    return tokenizer


# --- models --------------------------------------------------------------------------------------------------------


def _save_policy(tokenizer: PreTrainedTokenizerFast, seed: int, out_dir: Path) -> None:
    """A randomly initialised Qwen2 chat model: head_dim 32 (vLLM's CPU kernels take 32 or 64), GQA, tied embeddings.

    config.eos_token_id is the tokenizer's EOS; generation_config stops on end-of-turn or EOS, like Llama-3-Instruct.
    """
    eos, im_end = tokenizer.convert_tokens_to_ids(ENDOFTEXT), tokenizer.convert_tokens_to_ids(IM_END)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=MAX_LENGTH,
                         tie_word_embeddings=True, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.bos_token_id = eos
    model.generation_config.eos_token_id = [im_end, eos]
    model.generation_config.pad_token_id = eos
    _save(model, tokenizer, out_dir)


def _save_reward_model(policy_tokenizer: PreTrainedTokenizerFast, seed: int, out_dir: Path) -> None:
    """A small Llama classifier, random except for a planted keyword detector (see `_plant_keyword_detector`)."""
    tokenizer = _reward_tokenizer(policy_tokenizer)
    pad = tokenizer.convert_tokens_to_ids(RM_PAD)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=MAX_LENGTH,
                         num_labels=1, problem_type="regression", pad_token_id=pad,
                         bos_token_id=tokenizer.convert_tokens_to_ids(RM_BOS),
                         eos_token_id=tokenizer.convert_tokens_to_ids(RM_EOS))
    torch.manual_seed(seed + 1)  # a different stream from the policy's
    model = LlamaForSequenceClassification(config)
    _plant_keyword_detector(model, keyword_token_ids(tokenizer))
    _save(model, tokenizer, out_dir)


def _save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, out_dir: Path) -> None:
    """save_pretrained into a temporary sibling, renamed into place; quiet, and readable by other users."""
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards" bars on every build would drown test output
    try:
        with atomic_path(out_dir) as tmp:
            model.save_pretrained(tmp)  # transformers 5 writes safetensors only (no safe_serialization switch)
            tokenizer.save_pretrained(tmp)
            for path in tmp.iterdir():
                path.chmod(0o644)  # the safetensors shard comes out 0600; a server running as another user reads it
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def keyword_token_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """Ids of the single tokens that spell a REWARD_KEYWORD (with or without the leading space, any case)."""
    ids: set[int] = set()
    for word in REWARD_KEYWORDS:
        for variant in (word, " " + word, word.capitalize(), " " + word.capitalize()):
            encoded = tokenizer(variant, add_special_tokens=False)["input_ids"]
            if len(encoded) == 1:
                ids.add(encoded[0])
    if not ids:
        raise RuntimeError(f"no reward keyword is a single token: {REWARD_KEYWORDS}")
    return sorted(ids)


@torch.no_grad()
def _plant_keyword_detector(model: LlamaForSequenceClassification, keyword_ids: list[int]) -> None:
    """Make the score rise with the share of keyword tokens in the input, keeping the other random weights.

    Hidden dim 0 marks keyword tokens; layer 0's first head attends uniformly (q = k = 0) and copies the mean of that
    mark into dim 1, which nothing else writes; the score head reads dim 1 at the pooled last token. The remaining
    random weights add a small, input-dependent term so that any two different texts score differently.
    """
    embed = model.model.embed_tokens.weight
    embed[:, :2] = 0.0
    embed[keyword_ids, 0] = 1.0
    first = model.model.layers[0].self_attn
    first.q_proj.weight.zero_()
    first.k_proj.weight.zero_()
    first.v_proj.weight[0] = 0.0
    first.v_proj.weight[0, 0] = 1.0
    for layer in model.model.layers:
        layer.self_attn.o_proj.weight[1] = 0.0
        layer.mlp.down_proj.weight[1] = 0.0
    first.o_proj.weight[1, 0] = 0.1  # small next to the residual norm, so the final RMSNorm does not saturate
    model.score.weight[0, 1] = 1.0


# --- command line --------------------------------------------------------------------------------------------------


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; a one-line error is easier to read in scripts and CI logs."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _OneLineParser(prog="python -m alignloop.testbed.fixture",
                            description="Build a small local policy, reward model and prompt files.")
    parser.add_argument("out_dir", type=Path, help="directory to write policy/, reward_model/ and prompts/ into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=240)
    parser.add_argument("--num-eval", type=int, default=24)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        fixture = build_fixture(args.out_dir, seed=args.seed, num_train=args.num_train, num_eval=args.num_eval)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    for name in ("policy", "reward_model", "train_prompts", "eval_prompts", "sft_data"):
        print(f"{name}: {getattr(fixture, name)}")
    print(f"built in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
