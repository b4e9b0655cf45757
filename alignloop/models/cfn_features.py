"""The CFN's input features: the final-layer hidden state (after the final norm) at the last real token of each
(prompt, response), from the iteration-start model; responses to one prompt share that prompt's key/value cache.
Used by the cfn stage only (the COPO loss term lives in models/exploration.py)."""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import DynamicCache, PreTrainedModel

from alignloop.models.logprobs import Tokenized


@torch.no_grad()
def last_token_features(model: PreTrainedModel, sequences: list[Tokenized], pad_id: int,
                        batch_size: int = 256) -> Tensor:
    """(len(sequences), hidden): the final-layer hidden state (after the final norm) at the last non-padding token
    of each chat-formatted prompt + response (+ EOS), from a frozen model in eval mode; rows in input order.

    Each distinct prompt is run once and its key/value cache shared by all of its distinct responses: with N samples
    per prompt and prompts longer than responses, that is most of the tokens. Prompts are batched by exact length (no
    padding), responses in buckets of similar length.
    """
    model.eval()
    unique: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    slot = [unique.setdefault((tuple(s.prompt_ids), tuple(s.response_ids)), len(unique)) for s in sequences]
    by_prompt: dict[tuple[int, ...], list[tuple[int, tuple[int, ...]]]] = {}
    for (prompt, response), k in unique.items():
        by_prompt.setdefault(prompt, []).append((k, response))
    out = torch.empty(len(unique), model.config.hidden_size)
    for chunk in _prompt_chunks(by_prompt, batch_size):
        _shared_prefix_features(model, chunk, by_prompt, pad_id, out)
    return out[torch.tensor(slot, dtype=torch.long)]


def _prompt_chunks(by_prompt: dict[tuple[int, ...], list], batch_size: int) -> list[list[tuple[int, ...]]]:
    """Prompts of one length together, at most `batch_size` responses per chunk (a prompt's responses stay whole)."""
    chunks: list[list[tuple[int, ...]]] = []
    current: list[tuple[int, ...]] = []
    responses = 0
    for prompt in sorted(by_prompt, key=len):
        full = current and (len(prompt) != len(current[0]) or responses + len(by_prompt[prompt]) > batch_size)
        if full:
            chunks.append(current)
            current, responses = [], 0
        current.append(prompt)
        responses += len(by_prompt[prompt])
    return chunks + [current] if current else chunks


def _shared_prefix_features(model: PreTrainedModel, prompts: list[tuple[int, ...]],
                            by_prompt: dict[tuple[int, ...], list[tuple[int, tuple[int, ...]]]], pad_id: int,
                            out: Tensor) -> None:
    """One forward over the prompts (all of one length), then one per bucket of response lengths (up to the next
    power of two, so at most half of a bucket is padding) over copies of the cached prefixes."""
    device = model.device
    prefix = model.base_model(input_ids=torch.tensor(prompts, device=device), use_cache=True)
    buckets: dict[int, list[tuple[int, int, tuple[int, ...]]]] = {}
    for p, prompt in enumerate(prompts):
        for k, response in by_prompt[prompt]:
            buckets.setdefault(1 << max(0, len(response) - 1).bit_length(), []).append((p, k, response))
    for rows in buckets.values():
        owners = torch.tensor([p for p, _, _ in rows], device=device)
        slots = torch.tensor([k for _, k, _ in rows], dtype=torch.long)
        lengths = torch.tensor([len(response) for _, _, response in rows], device=device)
        last = prefix.last_hidden_state[owners, -1]  # a response cut away entirely ends at the prompt's last token
        width = int(lengths.max())
        if width:
            layers = prefix.past_key_values.layers
            cache = DynamicCache([(layer.keys[owners], layer.values[owners]) for layer in layers], config=model.config)
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            for row, (_, _, response) in enumerate(rows):
                ids[row, :len(response)] = torch.tensor(response, dtype=torch.long)
            # right padding: a causal model's real tokens never attend to it, so no mask is needed
            hidden = model.base_model(input_ids=ids.to(device), past_key_values=cache, use_cache=True).last_hidden_state
            picked = hidden[torch.arange(len(rows), device=device), (lengths - 1).clamp_min(0)]
            last = torch.where((lengths > 0)[:, None], picked, last)
        out[slots] = last.float().cpu()
