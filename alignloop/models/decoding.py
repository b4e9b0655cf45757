"""alignloop's own decode loop (`sample.backend: native`, `benchmark.backend: native`) on any transformers causal LM.

It does what `model.generate` does for sampling and greedy decoding, with three savings that matter on a CPU, where
a small model's decoding is bound by matrix products and by per-token work on the whole vocabulary:
1) the prompt is read once and its key/value cache copied for its N samples (`generate` reads it N times);
2) a sequence that has produced a stop token leaves the batch (`generate` keeps computing it until the whole batch
   ends, about a third of the steps at 128 new tokens on real prompts);
3) nucleus (top-p) sampling draws from the few most probable tokens by the inverse of their cumulative distribution,
   the same distribution as sorting the whole vocabulary and drawing with `torch.multinomial` (two passes over
   49k logits per token, more time than the model's forward pass on SmolLM2).
The same prompts, seed and settings give the same tokens; responses differ from `generate`'s (another random stream).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, DynamicLayer

_FIRST_CANDIDATES = 64  # tokens looked at first for the nucleus; widened until they hold top_p of the mass
_COMPACT_SHARE = 0.125  # finished sequences leave the batch once they are this share of it (each removal copies
# the cache, so removing every step costs more than computing a few finished rows)


class _PreallocatedLayer(DynamicLayer):
    """A key/value cache layer with room for `capacity` positions: a new token is written in place, where the
    dynamic cache copies the whole layer to append it."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity, self.length = capacity, 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.device, self.is_initialized = key_states.device, True
            batch, heads, _, width = key_states.shape
            self.key_buffer = key_states.new_empty((batch, heads, self.capacity, width))
            self.value_buffer = value_states.new_empty((batch, heads, self.capacity, value_states.shape[-1]))
        end = self.length + key_states.shape[-2]
        self.key_buffer[:, :, self.length:end] = key_states
        self.value_buffer[:, :, self.length:end] = value_states
        self.length = end
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
        self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]


def nucleus_sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator
                   ) -> torch.Tensor:
    """One token per row from softmax(logits / temperature) restricted to its nucleus: the most probable tokens
    whose mass before them is < top_p (Holtzman et al. 2020; what transformers' TopPLogitsWarper keeps). (rows,)"""
    scaled = logits.float() / temperature
    log_normalizer = torch.logsumexp(scaled, dim=-1, keepdim=True)
    vocabulary = scaled.shape[-1]
    if top_p >= 1.0:  # the whole vocabulary, in any order: no sorting needed
        return _inverse_cdf((scaled - log_normalizer).exp().double(), generator)
    count = min(_FIRST_CANDIDATES, vocabulary)
    while True:  # the nucleus is a prefix of the tokens by probability: widen the prefix until it holds top_p
        values, indices = scaled.topk(count, dim=-1)
        probs = (values - log_normalizer).exp().double()
        cumulative = probs.cumsum(dim=-1)
        if count == vocabulary or bool((cumulative[:, -1] >= top_p).all()):
            break
        count = min(vocabulary, count * 4)
    kept = torch.cat([torch.ones_like(cumulative[:, :1], dtype=torch.bool), cumulative[:, :-1] < top_p], dim=-1)
    return indices.gather(-1, _inverse_cdf(probs * kept, generator)[:, None]).squeeze(-1)


def _inverse_cdf(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One index per row drawn with probability proportional to `probs` (rows, n): the first index whose cumulative
    mass exceeds u · (row mass), u uniform. (rows,)"""
    cumulative = probs.cumsum(dim=-1)
    draws = torch.rand((len(probs), 1), generator=generator, device=probs.device, dtype=torch.float64)
    positions = torch.searchsorted(cumulative, draws * cumulative[:, -1:], right=True)
    return positions.clamp(max=probs.shape[-1] - 1).squeeze(-1)


@torch.no_grad()
def decode(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, num_samples: int,
           greedy: bool, temperature: float, top_p: float, max_new_tokens: int, stop_ids: list[int], seed: int
           ) -> list[list[int]]:
    """New tokens for each of the left-padded prompts (batch, seq), `num_samples` rows per prompt in prompt order,
    each up to and including its first stop token (or `max_new_tokens` long)."""
    device = model.device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    layers = model.config.get_text_config(decoder=True).num_hidden_layers
    cache = Cache(layers=[_PreallocatedLayer(input_ids.shape[1] + max_new_tokens) for _ in range(layers)])
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, cache=cache,
                   use_cache=True, logits_to_keep=1).logits[:, -1]
    repeats = 1 if greedy else num_samples
    if repeats > 1:  # the prompt was read once; each sample continues from a copy of its cache
        cache.batch_repeat_interleave(repeats)
        logits, attention_mask = logits.repeat_interleave(repeats, 0), attention_mask.repeat_interleave(repeats, 0)
        positions = positions.repeat_interleave(repeats, 0)
    next_position = positions[:, -1:] + 1
    stops = torch.tensor(stop_ids, device=device)
    live = torch.arange(len(logits), device=device)  # the output row of each sequence in the batch
    finished = torch.zeros(len(logits), dtype=torch.bool, device=device)
    tokens: list[list[int]] = [[] for _ in range(len(logits))]
    for step in range(max_new_tokens):
        chosen = logits.argmax(-1) if greedy else nucleus_sample(logits, temperature, top_p, generator)
        for row, token, done in zip(live.tolist(), chosen.tolist(), finished.tolist()):
            if not done:  # a finished sequence still in the batch computes tokens nobody keeps
                tokens[row].append(token)
        finished |= torch.isin(chosen, stops)
        if step == max_new_tokens - 1 or bool(finished.all()):
            break
        if float(finished.float().mean()) >= _COMPACT_SHARE:  # finished sequences leave the batch and its cache
            keep = (~finished).nonzero().squeeze(-1)
            finished = finished[keep]
            cache.batch_select_indices(keep)
            chosen, live, attention_mask, next_position = chosen[keep], live[keep], attention_mask[keep], \
                next_position[keep]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(live), 1))], dim=-1)
        logits = model(input_ids=chosen[:, None], attention_mask=attention_mask, position_ids=next_position,
                       cache=cache, use_cache=True).logits[:, -1]
        next_position = next_position + 1
    return tokens
