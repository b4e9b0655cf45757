"""PairRM (`llm-blender/PairRM-hf`) natively on transformers: a pairwise ranker that reads two responses side by side.

The published `llm-blender` package no longer imports on transformers 5, so the model is rebuilt here from its
architecture and loaded from the published checkpoint format (DeBERTa-v2 config.json plus `source_prefix_id`,
`cand1_prefix_id`, `cand2_prefix_id`, `n_tasks`, `drop_out`; weights `pretrained_model.*` and `head_layer.{1,4}.*`).
With h the backbone's last hidden states at the three prefix tokens and head(x) = W2·tanh(W1·x + b1) + b2,

    logit(A beats B) = mean over n_tasks of head([h_source; h_A]) − head([h_source; h_B]).

scripts/pairrm_reference.py records the original implementation's logits; tests/test_pairrm.py matches them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoTokenizer, DebertaV2Config, DebertaV2Model, PreTrainedTokenizerBase

from alignloop.config import ConfigError
from alignloop.errors import InputError
from alignloop.models.batching import batched_by_length, check_finite
from alignloop.models.device import resolve_device
from alignloop.models.policy import DTYPES, ModelLoadError
from alignloop.sources.models import read_model_config

SOURCE, CAND1, CAND2 = "<|source|>", "<|candidate1|>", "<|candidate2|>"
PREFIX_IDS = ("source_prefix_id", "cand1_prefix_id", "cand2_prefix_id")
TOKENIZER_FILES = ("tokenizer.json", "spm.model", "tokenizer_config.json")


def _segments(tokenizer: PreTrainedTokenizerBase, prompt: str, a: str, b: str, source_max_length: int,
              max_length: int) -> list[list[int]]:
    """The model card's `tokenize_pair`: each segment is encoded with its own [CLS] … [SEP] and cut at its tail;
    the source keeps ≤ source_max_length tokens and each candidate ≤ (max_length − len(source)) // 2."""
    source = tokenizer.encode(SOURCE + prompt, max_length=source_max_length, truncation=True)
    budget = (max_length - len(source)) // 2
    return [source] + [tokenizer.encode(prefix + text, max_length=budget, truncation=True)
                       for prefix, text in ((CAND1, a), (CAND2, b))]


def format_pair(tokenizer: PreTrainedTokenizerBase, prompt: str, a: str, b: str, source_max_length: int = 1224,
                max_length: int = 2048) -> list[int]:
    """Token ids of `<|source|>prompt`, `<|candidate1|>a`, `<|candidate2|>b` as PairRM-hf was trained on them."""
    return [token for segment in _segments(tokenizer, prompt, a, b, source_max_length, max_length)
            for token in segment]


def check_pairrm(path: str | Path, key: str = "rank.pairrm") -> None:
    """Fail fast from config.json and the file list alone (no weights or tokenizer loaded)."""
    path = Path(path)
    raw = read_model_config(path, key, "a PairRM checkpoint (llm-blender/PairRM-hf)")
    missing = [field for field in (*PREFIX_IDS, "n_tasks") if not isinstance(raw.get(field), int)]
    if missing:
        raise ConfigError(f"{key}: {path}: config.json lacks {', '.join(missing)} (not a PairRM checkpoint)")
    if raw.get("model_type") != "deberta-v2":
        raise ConfigError(f"{key}: {path}: model_type is {raw.get('model_type')!r}; PairRM is a deberta-v2 model")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(f"{key}: {path} has no tokenizer (none of {', '.join(TOKENIZER_FILES)})")
    if not any((path / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")):
        raise ConfigError(f"{key}: {path} has no model.safetensors or pytorch_model.bin")


class PairRMModel(nn.Module):
    """DeBERTa-v2 backbone plus PairRM's head; attribute names follow the checkpoint's state-dict names."""

    def __init__(self, config: DebertaV2Config):
        super().__init__()
        self.config = config
        self.pretrained_model = DebertaV2Model(config)
        hidden, drop = config.hidden_size, config.drop_out
        # indices 1 and 4 are the checkpoint's head_layer.1 / head_layer.4; dropouts are no-ops at inference
        self.head_layer = nn.Sequential(nn.Dropout(drop), nn.Linear(2 * hidden, hidden), nn.Tanh(), nn.Dropout(drop),
                                        nn.Linear(hidden, config.n_tasks))

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | str = "auto") -> PairRMModel:
        """Built on the meta device (no random init of ~435M weights), then given the checkpoint's tensors."""
        path = Path(path)
        config = DebertaV2Config.from_pretrained(str(path))
        with torch.device("meta"):
            model = cls(config)
        if (path / "model.safetensors").is_file():
            from safetensors.torch import load_file

            state = load_file(str(path / "model.safetensors"))
        else:  # older checkpoints: pickles are read as plain tensors only
            state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        state = {name: tensor for name, tensor in state.items() if not name.endswith("position_ids")}
        result = model.load_state_dict(state, strict=False, assign=True)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(f"state dict does not fit PairRM: missing {result.missing_keys[:3]}, "
                             f"unexpected {result.unexpected_keys[:3]}")
        embeddings = model.pretrained_model.embeddings  # the one non-persistent buffer, still on meta
        embeddings.position_ids = torch.arange(embeddings.position_ids.shape[-1]).expand((1, -1))
        empty = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
        if empty:
            raise ValueError(f"PairRM tensors left unset after loading: {empty[:3]}")
        if dtype == "auto":  # the checkpoint's own dtype
            dtype = next(iter(state.values())).dtype if state else torch.float32
        return model.to(dtype).eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """logits[b] = mean_t head([h_src; h_c1])_t − head([h_src; h_c2])_t; positions[b] = (src, c1, c2) indices."""
        hidden = self.pretrained_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        picked = hidden[torch.arange(len(hidden), device=hidden.device)[:, None], positions]  # (B, 3, H)
        left = self.head_layer(torch.cat([picked[:, 0], picked[:, 1]], dim=-1))
        right = self.head_layer(torch.cat([picked[:, 0], picked[:, 2]], dim=-1))
        return (left - right).mean(dim=-1)


def scores_from_matrix(matrix: torch.Tensor) -> list[float]:
    """s_i = mean over j≠i of (C_ij − C_ji): i's average margin over every other response, each pair seen in both
    orders so PairRM's position bias cancels; a lone response scores 0."""
    n = matrix.shape[0]
    if n < 2:
        return [0.0] * n
    margins = (matrix - matrix.T).double()
    return (margins.sum(dim=1) / (n - 1)).tolist()  # the diagonal contributes C_ii − C_ii = 0


class PairRMRanker:
    """The `Ranker` protocol on PairRM: every ordered pair of a prompt's responses is compared, longest first."""

    name = "pairrm"
    pairwise = True  # scores only mean something against other responses: benchmarks compare with SFT's

    def __init__(self, path: str | Path, *, dtype: str = "float32", device: str = "auto", batch_size: int = 32,
                 source_max_length: int = 1224, max_length: int = 2048):
        if dtype not in DTYPES:
            raise ConfigError(f"pairrm dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
        try:
            self.model = PairRMModel.from_pretrained(path, DTYPES[dtype])
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise ModelLoadError(f"{path}: could not load PairRM ({exc})".splitlines()[0]) from None
        config = self.model.config
        self.prefix_ids = [getattr(config, field) for field in PREFIX_IDS]
        found = self.tokenizer.convert_tokens_to_ids([SOURCE, CAND1, CAND2])
        if found != self.prefix_ids:  # the head reads these positions, so a mismatch would score garbage
            raise ModelLoadError(f"{path}: tokenizer maps {SOURCE}, {CAND1}, {CAND2} to {found}, config says "
                                 f"{self.prefix_ids}")
        self.device = resolve_device(device)
        self.model.to(self.device)
        self.batch_size = batch_size
        self.source_max_length, self.max_length = source_max_length, max_length
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def encode(self, prompt: str, a: str, b: str) -> tuple[list[int], list[int]]:
        """format_pair's ids and the (source, candidate1, candidate2) prefix positions, each found inside its own
        segment so a prefix string typed in a prompt or response cannot move them."""
        segments = _segments(self.tokenizer, prompt, a, b, self.source_max_length, self.max_length)
        positions, offset = [], 0
        for segment, prefix_id in zip(segments, self.prefix_ids):
            if prefix_id not in segment:
                raise InputError(f"pairrm: prefix token {prefix_id} was cut off (max_length {self.max_length})")
            positions.append(offset + segment.index(prefix_id))
            offset += len(segment)
        return [token for segment in segments for token in segment], positions

    def compare(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        """(logit(A, B) − logit(B, A)) / 2 per row: > 0 means A is preferred, position bias cancelled."""
        if not len(prompts) == len(a) == len(b):
            raise ValueError(f"{len(prompts)} prompts, {len(a)} A responses, {len(b)} B responses")
        triples = [*zip(prompts, a, b), *zip(prompts, b, a)]
        logits = self._logits(triples, [f"pair {index}" for index in range(len(prompts))] * 2)
        n = len(prompts)
        return [(logits[index] - logits[n + index]) / 2 for index in range(n)]

    def comparison_matrix(self, prompt: str, responses: list[str]) -> torch.Tensor:
        """C (N×N, float64): C_ij = logit that response i beats j with i as candidate 1; C_ii = 0."""
        return self._matrices([prompt], [responses], ["prompt"])[0]

    def score(self, prompts: list[dict], responses: list[list[str]]) -> list[list[float]]:
        """The Ranker protocol: s_i = mean over j≠i of (C_ij − C_ji) per prompt (scores_from_matrix)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} response lists")
        labels = [f"prompt {row['prompt_id']}" for row in prompts]
        matrices = self._matrices([row["prompt"] for row in prompts], responses, labels)
        return [scores_from_matrix(matrix) for matrix in matrices]

    def _matrices(self, prompts: list[str], responses: list[list[str]], labels: list[str]) -> list[torch.Tensor]:
        cells = [(k, i, j) for k, texts in enumerate(responses) for i in range(len(texts))
                 for j in range(len(texts)) if i != j]
        logits = self._logits([(prompts[k], responses[k][i], responses[k][j]) for k, i, j in cells],
                              [labels[k] for k, _, _ in cells])
        matrices = [torch.zeros(len(texts), len(texts), dtype=torch.float64) for texts in responses]
        for (k, i, j), value in zip(cells, logits):
            matrices[k][i, j] = value
        return matrices

    def _logits(self, triples: list[tuple[str, str, str]], labels: list[str]) -> list[float]:
        encoded = [self.encode(*triple) for triple in triples]
        # longest first, ties by content: the same inputs in any order batch identically
        logits = batched_by_length(encoded, self.forward_batch, self.batch_size,
                                   lambda item: (-len(item[0]), item[0]), "pairrm")
        check_finite(logits, labels, "pairrm produced non-finite logits", "comparisons")
        return logits

    @torch.inference_mode()
    def forward_batch(self, items: list[tuple[list[int], list[int]]]) -> list[float]:
        """Logits of right-padded pairs; padding is masked and DeBERTa's positions are relative, so a padded row
        equals its unpadded pass."""
        lengths = torch.tensor([len(ids) for ids, _ in items], device=self.device)
        width = int(lengths.max())
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.long, device=self.device)
        for row, (ids, _) in enumerate(items):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask = (torch.arange(width, device=self.device) < lengths[:, None]).long()
        positions = torch.tensor([spots for _, spots in items], dtype=torch.long, device=self.device)
        return self.model(input_ids, attention_mask, positions).float().tolist()
