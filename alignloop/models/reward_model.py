"""A learned ranker: a one-label sequence classifier (reward model) scores each (prompt, response).

Decoder reward models read their score at the last real token. transformers finds that token by searching for the
rightmost id that is not `pad_token_id`, which is wrong whenever the pad id also occurs at the end of the text (pad ==
eos is common). So for classifiers with a `score` head we right-pad, run the base model, apply the head to every
position and gather at each row's true last index ourselves; right padding keeps every real token's positions and
attention identical to an unbatched pass.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from alignloop.config import ConfigError
from alignloop.models.batching import batched_by_length, check_finite
from alignloop.models.device import resolve_device
from alignloop.models.policy import DTYPES, ModelLoadError
from alignloop.sources.models import read_model_config

logger = logging.getLogger(__name__)

SANE_MAX_LENGTH = 1_000_000  # tokenizers without a limit report model_max_length ≈ 1e30


def check_reward_model(path: str | Path, key: str = "rank.reward_model") -> None:
    """Fail fast, before any stage runs, from config.json and the tokenizer files alone (no weights loaded)."""
    path = Path(path)
    raw = read_model_config(path, key, "a saved sequence classifier")
    architectures = raw.get("architectures") or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        found = ", ".join(architectures) or "model without architectures in config.json"
        raise ConfigError(f"{key}: {path} is a {found}, not a sequence classifier")
    labels = raw.get("num_labels") or len(raw.get("id2label") or {}) or 2  # transformers' default is 2 labels
    if labels != 1:
        raise ConfigError(f"{key}: {path} has {labels} labels; a reward model is a sequence classifier with one label")
    tokenizer_config = path / "tokenizer_config.json"
    has_template = (path / "chat_template.jinja").is_file() or (
        tokenizer_config.is_file()
        and bool(json.loads(tokenizer_config.read_text(encoding="utf-8")).get("chat_template")))
    if not has_template:
        raise ConfigError(f"{key}: {path} has no chat template; a reward model must format (prompt, response) "
                          "as it was trained, so its tokenizer needs one")


class RewardModelRanker:
    """Scores with the reward model's OWN chat template ([user prompt, assistant response]), batched by length."""

    def __init__(self, path: str | Path, *, dtype: str = "float32", device: str = "auto", batch_size: int = 32,
                 max_length: int | None = None, trust_remote_code: bool = False):
        if dtype not in DTYPES:
            raise ConfigError(f"reward model dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(
                str(path), use_safetensors=True, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code)
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path}: could not load the reward model ({exc})".splitlines()[0]) from None
        if self.model.config.num_labels != 1:
            raise ModelLoadError(f"{path} has {self.model.config.num_labels} labels; a reward model has one")
        if not self.tokenizer.chat_template:
            raise ModelLoadError(f"{path}: the reward model's tokenizer has no chat template")
        self.device = resolve_device(device)
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.max_length = max_length or self._default_max_length()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def _default_max_length(self) -> int | None:
        limit = self.tokenizer.model_max_length
        if isinstance(limit, int) and 0 < limit <= SANE_MAX_LENGTH:
            return limit
        return getattr(self.model.config.get_text_config(), "max_position_embeddings", None)

    def score(self, prompts: list[dict], responses: list[list[str]]) -> list[list[float]]:
        """The Ranker protocol: flattens, scores, and regroups per prompt."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} response lists")
        pairs = [(row["prompt"], text) for row, texts in zip(prompts, responses) for text in texts]
        labels = [f"prompt {row['prompt_id']}" for row, texts in zip(prompts, responses) for _ in texts]
        flat = iter(self._score(pairs, labels))
        return [[next(flat) for _ in texts] for texts in responses]

    def score_pairs(self, texts: list[tuple[str, str]]) -> list[float]:
        """One score per (prompt, response), in input order."""
        return self._score(texts, [f"pair {index}" for index in range(len(texts))])

    def encode(self, prompt: str, response: str) -> list[int]:
        return encode_pair(self.tokenizer, prompt, response)

    def _score(self, pairs: list[tuple[str, str]], labels: list[str]) -> list[float]:
        encoded = [self.encode(prompt, response) for prompt, response in pairs]
        if self.max_length is not None:
            cut = sum(len(ids) > self.max_length for ids in encoded)
            if cut:  # keeps the prompt start and cuts the response's tail
                logger.warning("reward model: %d of %d inputs exceed %d tokens and were cut to their first %d",
                               cut, len(encoded), self.max_length, self.max_length)
                encoded = [ids[: self.max_length] for ids in encoded]
        scores = batched_by_length(encoded, self.forward_batch, self.batch_size, lambda ids: -len(ids), "reward model")
        check_finite(scores, labels, "reward model produced non-finite scores", "responses")
        return scores

    @torch.inference_mode()
    def forward_batch(self, sequences: list[list[int]]) -> list[float]:
        """Scores of right-padded sequences, each read at its own last real token."""
        input_ids, attention_mask, lengths = right_padded(sequences, self.pad_id, self.device)
        return pooled_forward(self.model, input_ids, attention_mask, lengths)[0].float().tolist()


def encode_pair(tokenizer, prompt: str, response: str) -> list[int]:
    """Token ids of one (prompt, response) in the reward model's own chat template ([user, assistant]); the template
    carries its own special tokens, so none are added. Training and scoring both format through here."""
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def right_padded(sequences: list[list[int]], pad_id: int, device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, lengths): (batch, width), (batch, width), (batch,); padding after each row."""
    lengths = torch.tensor([len(ids) for ids in sequences], device=device)
    width = int(lengths.max())
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long, device=device)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    attention_mask = (torch.arange(width, device=device) < lengths[:, None]).long()
    return input_ids, attention_mask, lengths


def pooled_forward(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, lengths: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(rewards (batch,), representations (batch, hidden)) of right-padded sequences: a decoder classifier's `score`
    head read at each row's last real token (pooling done here, not by transformers' pad search), an encoder
    classifier's logits with its first token's final hidden state (which padding cannot move)."""
    head = getattr(model, "score", None)
    if isinstance(head, torch.nn.Module):
        base = getattr(model, model.base_model_prefix)
        hidden = base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = hidden[torch.arange(len(lengths), device=hidden.device), lengths - 1]  # (batch, hidden)
        return head(pooled)[:, 0], pooled
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    return out.logits[:, 0], out.hidden_states[-1][:, 0]
