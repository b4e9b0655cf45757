"""Tokenizing prompt–response pairs for training and the per-sequence log-probs every loss is built from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from alignloop.errors import InputError
from alignloop.models.generation import prompt_token_ids


@dataclass(frozen=True)
class Tokenized:
    """A prompt and a response as token ids; the response mask covers the response (EOS included)."""

    prompt_ids: list[int]
    response_ids: list[int]


class SequenceTooLongError(InputError):
    pass


def tokenize_ids(tokenizer: PreTrainedTokenizerBase, rows: list[tuple[str, Sequence[int]]], max_length: int,
                 cut: bool = False) -> list[Tokenized]:
    """The chat-formatted prompt's ids followed by the response's ids exactly as they were sampled (the stop token
    included when there was one), for every (prompt, response_ids) row; each distinct prompt is formatted once.

    Sampling keeps prompt + response within `max_length`, so a longer sequence is an error, unless `cut` (the
    quality-prompted passes of Sr-*, which detect and count cut responses themselves).
    """
    prompts: dict[str, list[int]] = {}
    out = []
    for prompt, response_ids in rows:
        prompt_ids = prompts.get(prompt)
        if prompt_ids is None:
            prompt_ids = prompts[prompt] = prompt_token_ids(tokenizer, prompt)
        room = max(0, max_length - len(prompt_ids))
        if len(response_ids) > room and not cut:
            raise SequenceTooLongError(
                f"a prompt of {len(prompt_ids)} tokens and a response of {len(response_ids)} exceed model.max_length "
                f"({max_length}); were the samples made with another model.max_length? Re-run sample")
        out.append(Tokenized(prompt_ids, list(response_ids[:room])))
    return out


def collate(sequences: list[Tokenized], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded `input_ids`, `attention_mask` and `response_mask`, each (batch, seq)."""
    width = max(len(s.prompt_ids) + len(s.response_ids) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    response_mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    for row, seq in enumerate(sequences):
        ids = seq.prompt_ids + seq.response_ids
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        response_mask[row, len(seq.prompt_ids): len(ids)] = True
    return {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask}


def token_logps(logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log π(y_t | c, y_<t) in fp32, and the mask of response tokens; both (batch, seq - 1).

    The gathered logit minus the logsumexp: no full log-softmax tensor is kept.
    """
    logits = logits[:, :-1].float()
    targets = input_ids[:, 1:]
    gathered = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return gathered - torch.logsumexp(logits, dim=-1), response_mask[:, 1:]


def sequence_logps(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """S(π, y | c) = Σ_t m_t log π(y_t | c, y_<t) and the response token counts; both (batch,)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps, mask = token_logps(logits, batch["input_ids"], batch["response_mask"])
    return (logps * mask).sum(-1), mask.sum(-1)


def model_device(model: torch.nn.Module) -> torch.device:
    """Where a model's weights live; also for wrappers (data-parallel, sharded) that have no `.device`."""
    return next(model.parameters()).device


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def mean_token_entropy(logits: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Mean over response positions of H(π(· | c, y_<t)), per sequence, from a causal LM's (batch, seq, vocab)
    logits and the batch's response mask; (batch,)."""
    log_probs = F.log_softmax(logits[:, :-1].float(), dim=-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    mask = response_mask[:, 1:]
    return (entropy * mask).sum(-1) / mask.sum(-1).clamp(min=1)


@torch.no_grad()
def text_logprob_per_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[tuple[str, str]],
                           max_length: int, batch_size: int) -> float:
    """Σ log π(answer | chat-formatted prompt) over every row's answer tokens, divided by their number: the mean
    per-token log-likelihood of reference text (answers cut to fit `max_length`). Batched by length."""
    answers = [tokenizer(answer, add_special_tokens=False)["input_ids"] for _, answer in rows]
    sequences = tokenize_ids(tokenizer, [(prompt, ids) for (prompt, _), ids in zip(rows, answers)], max_length,
                             cut=True)
    sequences = sorted((s for s in sequences if s.response_ids), key=lambda s: len(s.prompt_ids) + len(s.response_ids))
    total, count = 0.0, 0
    for start in range(0, len(sequences), batch_size):
        batch = to_device(collate(sequences[start:start + batch_size], tokenizer.pad_token_id), model_device(model))
        sums, counts = sequence_logps(model, batch)
        total += sums.double().sum().item()
        count += int(counts.sum().item())
    return total / count if count else float("nan")
