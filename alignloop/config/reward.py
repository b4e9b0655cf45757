"""The `reward:` section of params.yaml: a reward model trained from preference pairs (the `reward_model` stage)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from alignloop.config.base import Section


class PreferenceSetConfig(Section):
    """Preference pairs read with `datasets.load_dataset`: a local .jsonl/.json/.parquet/.csv file or a dataset name.
    Each row has a prompt and a chosen and a rejected response, as text or as chat messages."""

    path: str
    """A local file, or a dataset name (downloaded by `prepare` only)."""
    split: str = "train"
    prompt_column: str | None = "prompt"
    """The prompt (text, or messages whose first user turn is the prompt); null takes the first user turn of the
    chosen column's messages (UltraFeedback-binarized style)."""
    chosen_column: str = "chosen"
    """The preferred response: text, or chat messages whose last assistant turn is the response."""
    rejected_column: str = "rejected"
    max_rows: int | None = Field(None, ge=1)
    """Read at most this many rows (the first ones)."""


class RewardConfig(Section):
    """A Bradley–Terry reward model trained once after SFT, with the noisy-preference methods of "Secrets of RLHF,
    Part II" as options. With `rank.ranker: reward_model` and no `rank.reward_model`, it ranks and judges the loop."""

    enabled: bool = False
    """Add the `reward_model` stage (after SFT, before the first benchmark)."""
    init: str = "policy"
    """The model the reward model starts from: `policy` (policy 0: the SFT model, or the base model without SFT) or
    a local directory / hub id of a model whose backbone loads into AutoModelForSequenceClassification."""
    data: PreferenceSetConfig | None = None
    """Preference pairs to train on; required with data.train. On the testbed (no data.train), pairs are built
    from policy 0's samples ranked by the gold scorer, with `testbed.label_noise` of their labels flipped; with
    data.sharegpt, ranked by the verifier (the fraction of constraints followed), with `label_noise` flipped."""
    label_noise: float = Field(0.0, ge=0, le=0.5)
    """data.sharegpt: the share of training pairs whose verifier labels are flipped at random (the noisy-preference
    study; held-out pairs keep true labels). On the testbed the same is `testbed.label_noise`."""
    eval_fraction: float = Field(0.1, gt=0, lt=1)
    """`data`: share of the pairs held out for accuracy (chosen by a hash of the prompt, so a prompt's pairs stay
    together)."""
    num_prompts: int = Field(2000, ge=1)
    """Testbed and data.sharegpt: training prompts (from the end of the prompt pool, away from the iterations'
    slices); with `data` and MetaRM: prompts whose policy samples form MetaRM's meta-batches."""
    eval_prompts: int = Field(300, ge=1)
    """Testbed and data.sharegpt: held-out prompts whose pairs keep their true labels (clean accuracy)."""
    num_samples: int = Field(4, ge=2)
    """Responses per prompt sampled from policy 0 (testbed pairs: best vs worst by gold score)."""
    temperature: float = Field(1.0, gt=0)
    max_new_tokens: int = Field(24, ge=1)
    epochs: float = Field(2.0, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    """On the testbed, 1e-3 for 2 epochs beat 3e-4 (held-out accuracy 0.68 vs 0.66 on clean labels) and 4 epochs
    at batch 32 (0.66, overfitting)."""
    batch_size: int = Field(64, ge=2)
    """Pairs per optimizer step (and the SimCSE negatives' pool)."""
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    autocast: Literal["none", "bfloat16", "float16"] = "none"
    """Autocast for the training steps' forward passes, as `optimize.autocast` (margins and accuracies are scored in
    the model's dtype). On a CPU with bf16 instructions a 135M model's training runs about 1.8× as fast in bfloat16
    (docs/performance.md); a tiny model runs slower."""
    ensemble_size: int = Field(3, ge=0)
    """M reward models (plain Bradley–Terry, different seeds) whose margins give each pair's preference strength
    μ and σ; 0 trains none (then `denoising` must be none). M = 1 gives μ but no σ."""
    denoising: Literal["none", "flip", "margin", "flip_margin", "soft_label_margin"] = "none"
    """How μ is used: flip pairs with μ < 0, an adaptive margin max(μ, 0), both, or a soft label on μ < 0 pairs plus
    the margin (alignloop/models/reward_losses.py)."""
    soft_label: float = Field(0.3, ge=0, le=1)
    """soft_label_margin: the weight given to the opposite label on pairs with μ < 0."""
    margin_scale: float = Field(1.0, ge=0)
    """margin variants: m = margin_scale · max(μ, 0)."""
    contrastive_weight: float = Field(0.0, ge=0)
    """β of the SimCSE auxiliary loss (0 is off; the paper uses 1)."""
    contrastive_on: Literal["difference", "responses"] = "difference"
    """SimCSE instances: h(chosen) − h(rejected) per pair, or every response's representation."""
    contrastive_temperature: float = Field(0.05, gt=0)
    contrastive_dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout set in the model's config while training with SimCSE, so the two passes differ."""
    metarm: bool = False
    """MetaRM: before each step, move the weights up the gradient of the difference score J on policy 0's samples,
    and apply the preference loss's gradient taken there (first order)."""
    metarm_lr: float = Field(0.01, gt=0)
    """MetaRM's η, the ascent step on J (not published; tune it)."""
    metarm_groups: int = Field(8, ge=1)
    """Prompts per meta-batch; each contributes its `num_samples` responses."""

    @model_validator(mode="after")
    def _ensemble_for_denoising(self) -> RewardConfig:
        if self.denoising != "none" and self.ensemble_size < 1:
            raise ValueError(f"ensemble_size: denoising {self.denoising} needs the ensemble's preference strength; "
                             "set ensemble_size >= 1 (3 or more is sensible)")
        return self
