"""The `evolve:` (eva's creator) and `cfn:` (COPO's Coin Flipping Network) sections of params.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alignloop.config.base import Section


class EvolveConfig(Section):
    """eva's creator (alignloop/methods/creator.py; docs/eva.md): after `rank`, evolve informative prompts
    into the next iteration's set."""

    enabled: bool = False
    """Evolve the prompt set; false keeps a fixed distribution (fresh prompts from the pool every iteration)."""
    informativeness: Literal["max_min", "max_mean", "variance", "mean", "inverse_mean"] = "max_min"
    """How informative a prompt is, from its N responses' rewards: best − worst (default), best − mean, ..."""
    selection: Literal["weighted", "greedy_topk"] = "weighted"
    """Seeds drawn without replacement ∝ min–max normalised informativeness, or the top-k (the paper's ablation)."""
    seed_fraction: float = Field(0.25, gt=0, le=1)
    """Fraction of this iteration's prompts chosen as seeds."""
    variants_per_seed: int = Field(4, ge=1)
    """Evolved candidates written per seed (before validation)."""
    evolved_fraction: float = Field(0.8, ge=0, le=1)
    """Share of evolved prompts in the next set; the rest come from the buffer of earlier prompts."""
    in_depth_probability: float = Field(0.5, ge=0, le=1)
    """Probability that a variant comes from an in-depth (harder) operator rather than an in-breadth one."""
    evolver: Literal["testbed", "llm", "constraints"] = "testbed"
    """Who rewrites: the testbed's programmatic operators, a causal LM prompted with meta-instructions, or (with
    data.sharegpt) `constraints`: the same user prompt with one more verifiable constraint (in depth) or one swapped
    for another type (in breadth), drawn from data.constraints.train and favouring the types the policy fails."""
    max_depth: int = Field(3, ge=1, le=4)
    """testbed evolver: longest chain of composed skills (the `harder` split composes up to 3)."""
    max_input_length: int = Field(8, ge=1, le=32)
    """testbed evolver: longest input string (keep it within lengths the model can reach)."""
    max_constraints: int = Field(3, ge=1)
    """constraints evolver: the most constraints one evolved prompt may carry."""
    llm_model: str = "policy"
    """llm evolver: `policy` (the iteration-start policy) or a local path / hub id of a causal LM."""
    llm_temperature: float = Field(0.8, gt=0)
    llm_top_p: float = Field(0.95, gt=0, le=1)
    llm_max_new_tokens: int = Field(64, ge=1)


class CFNConfig(Section):
    """COPO's Coin Flipping Network (alignloop/models/coin_flipping.py): pseudo-counts of prompt–response pairs for the
    exploration bonus. Used when `optimize.exploration: copo`."""

    d: int = Field(20, ge=1)
    """Coin flips per visit (output size); more flips, less noisy counts."""
    width: int = Field(32, ge=1)
    """Hidden width of the head."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Input dropout while training (the head is in eval mode when it scores)."""
    prior_scale: float = Field(0.0, ge=0)
    """Scale of a fixed random prior added to the output (optimism for novel pairs); 0 is off."""
    learning_rate: float = Field(3e-3, gt=0)
    steps: int = Field(500, ge=1)
    """Training steps per iteration, on a fresh head over the whole replay buffer. On the testbed's 8,000–24,000
    visits, 500 steps of 1,024 fit as well as 3,000 of 256 (same loss, same rank correlation with the number of
    nearby visits) in a third of the time."""
    batch_size: int = Field(1024, ge=1)
    replay: Literal["all", "current"] = "all"
    """`all`: the buffer keeps every iteration's visits, so counts accumulate; `current`: this iteration's only
    (the released COPO code)."""
    explore: Literal["chosen", "greedy"] = "chosen"
    """The explored response y_e: each pair's chosen response, or the iteration-start model's greedy one."""
    bonus_exponent: float = Field(0.5, ge=0)
    """b = (mean_j f_j²) ** exponent; 0.5 gives 1/√n."""
    feature_batch_size: int = Field(256, ge=1)
    """Responses per forward pass when computing features (each prompt's key/value cache is shared by its
    responses)."""
