"""Tokenizing hand-written (prompt, response text) rows as the sample stage would have produced them."""

from __future__ import annotations

from alignloop.models.logprobs import Tokenized, tokenize_ids


def response_ids(tokenizer, response: str, finished: bool) -> list[int]:
    """The ids a model writing `response` (and then stopping, when finished) produces with this tokenizer."""
    ids = tokenizer.encode(response, add_special_tokens=False)
    return ids + [tokenizer.eos_token_id] if finished else ids


def tokenize_text(tokenizer, prompt: str, response: str, finished: bool, max_length: int) -> Tokenized:
    return tokenize_ids(tokenizer, [(prompt, response_ids(tokenizer, response, finished))], max_length, cut=True)[0]
