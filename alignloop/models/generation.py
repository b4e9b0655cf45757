"""Batched sampling with Hugging Face `generate`: chat-formatted prompts, left padding, an attention mask.

Prompts are grouped by token length (about 2× faster than padding mixed lengths) and each batch draws from its own
seed, recorded with every response it produced. A response is kept as the token ids the model produced (up to and
including the first stop token): decoding and re-encoding is not exact for BPE tokenizers, so training reads the ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from alignloop.errors import InputError
from alignloop.models.policy import stop_token_ids
from alignloop.progress import progress
from alignloop.seeds import derive_seed


class PromptTooLongError(InputError):
    pass


@dataclass(frozen=True)
class Generation:
    text: str  # decoded without special tokens (for rankers and people)
    token_ids: tuple[int, ...]  # what the model produced, the stop token included when there was one
    finished: bool  # ended with a stop token (not cut by max_new_tokens)
    seed: int  # the seed of the batch (hf) or request (vllm) that produced it; -1 for greedy
    logprob: float | None = None  # Σ log π(token) as the engine computed it (vllm; hf does not report it)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class GenerationJob:
    """One request to a generation backend: these prompts, greedy or sampled, so many responses each."""
    prompts: list[str]
    prompt_ids: list[str]
    greedy: bool
    max_new_tokens: int
    num_samples: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    description: str = "sampling"  # the progress bar's (the vLLM backend shows none)


def prompt_token_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        tokenize=True, return_dict=False)
    return list(ids["input_ids"] if isinstance(ids, dict) else ids)


def check_prompt_lengths(lengths: list[int], ids: list[str], max_positions: int, min_new_tokens: int = 1) -> None:
    too_long = [(pid, n) for pid, n in zip(ids, lengths) if n + min_new_tokens > max_positions]
    if too_long:
        pid, n = too_long[0]
        raise PromptTooLongError(
            f"{len(too_long)} prompt(s) leave no room to answer within the model's {max_positions} positions "
            f"(e.g. prompt {pid}: {n} tokens); shorten them or raise model.max_length")


def max_positions_of(model: PreTrainedModel, max_length: int | None = None) -> int:
    """Positions a prompt + response may use: the model's limit, capped by `model.max_length` when given."""
    return config_positions(model.config, max_length)


def config_positions(config, max_length: int | None = None) -> int:
    """The same from a model config alone (no weights loaded)."""
    positions = getattr(config, "n_positions", None) or config.max_position_embeddings
    return min(positions, max_length) if max_length else positions


def cut_at_stop(tokens: list[int], stop_ids: set[int]) -> tuple[list[int], bool]:
    """The tokens up to and including the first stop token, and whether there was one."""
    for position, token in enumerate(tokens):
        if token in stop_ids:
            return tokens[: position + 1], True
    return tokens, False


@torch.no_grad()
def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], *,
             num_samples: int = 1, greedy: bool = False, temperature: float = 1.0, top_p: float = 1.0,
             max_new_tokens: int = 32, batch_size: int = 256, seed: int = 0, prompt_ids: list[str] | None = None,
             max_length: int | None = None, description: str = "sampling",
             kv_cache: str = "static", engine: str = "hf") -> list[list[Generation]]:
    """`num_samples` responses for each prompt, in prompt order; prompt + response stay within `max_length`.
    `kv_cache` is `model.kv_cache`: a static cache is allocated once per batch instead of copied at every token.
    `engine` is `hf` (transformers' generate) or `native` (alignloop/models/decoding.py: each prompt read once,
    finished sequences leave the batch, nucleus sampling without sorting the vocabulary)."""
    model.eval()
    encoded = [prompt_token_ids(tokenizer, prompt) for prompt in prompts]
    max_positions = max_positions_of(model, max_length)
    check_prompt_lengths([len(e) for e in encoded], prompt_ids or [str(i) for i in range(len(prompts))],
                         max_positions)
    order = sorted(range(len(prompts)), key=lambda index: (len(encoded[index]), index))
    results: list[list[Generation]] = [[] for _ in prompts]
    stop_ids, pad_id = stop_token_ids(model, tokenizer), tokenizer.pad_token_id
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    for batch_index, batch in enumerate(progress(batches, description)):
        width = max(len(encoded[index]) for index in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, index in enumerate(batch):  # left padding
            input_ids[row, width - len(encoded[index]):] = torch.tensor(encoded[index])
            attention_mask[row, width - len(encoded[index]):] = 1
        batch_seed = -1 if greedy else derive_seed(seed, batch_index)
        new_positions = min(max_new_tokens, max_positions - width)
        if engine == "native":
            from alignloop.models.decoding import decode

            rows = decode(model, input_ids.to(model.device), attention_mask.to(model.device),
                          num_samples=num_samples, greedy=greedy, temperature=temperature, top_p=top_p,
                          max_new_tokens=new_positions, stop_ids=stop_ids, seed=max(batch_seed, 0))
            _collect(results, batch, rows, 1 if greedy else num_samples, stop_ids, tokenizer, batch_seed)
            continue
        if not greedy:
            torch.manual_seed(batch_seed)
        output = model.generate(
            input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device),
            do_sample=not greedy, temperature=None if greedy else temperature, top_p=None if greedy else top_p,
            top_k=None, num_return_sequences=1 if greedy else num_samples,
            max_new_tokens=new_positions, pad_token_id=pad_id, eos_token_id=stop_ids,
            cache_implementation="static" if kv_cache == "static" else None,
        )
        _collect(results, batch, output[:, width:].tolist(), 1 if greedy else num_samples, stop_ids, tokenizer,
                 batch_seed)
    return results


def _collect(results: list[list[Generation]], batch: list[int], rows: list[list[int]], per_prompt: int,
             stop_ids: list[int], tokenizer: PreTrainedTokenizerBase, seed: int) -> None:
    """Each batch row's new tokens, cut after the first stop token, as a Generation of its prompt."""
    for seq_index, tokens in enumerate(rows):
        tokens, finished = cut_at_stop(tokens, set(stop_ids))
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        results[batch[seq_index // per_prompt]].append(Generation(text, tuple(tokens), finished, seed))
