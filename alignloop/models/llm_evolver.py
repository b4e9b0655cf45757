"""eva's evolver with a causal LM: rewrite a seed prompt from a meta-instruction, sampled through the same code as
the `sample` stage.

The meta-instructions are short on purpose: a small model's context must hold the instruction, the seed prompt and
the rewrite. In-depth ones ask for a harder task, in-breadth ones for a different task of the same kind.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from alignloop.models.generation import generate, max_positions_of, prompt_token_ids

IN_DEPTH_INSTRUCTIONS = {
    "llm_harder": "Make this task harder, keeping it answerable:",
    "llm_add_step": "Add one more step to this task:",
    "llm_longer_input": "Rewrite this task with a longer input:",
}
IN_BREADTH_INSTRUCTIONS = {
    "llm_rephrase": "Say this task in other words:",
    "llm_sibling": "Write a different task of the same kind:",
}
MIN_REWRITE_TOKENS = 8  # a meta-prompt that leaves less room than this is not sent


@dataclass(frozen=True)
class Rewrite:
    seed_index: int
    operator: str
    text: str | None  # None: the meta-prompt did not fit the evolver's context


def meta_prompt(instruction: str, prompt: str) -> str:
    return f"{instruction}\n{prompt}"


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def plan_rewrites(num_seeds: int, variants: int, in_depth_probability: float,
                  rng: random.Random) -> list[tuple[int, str]]:
    """(seed index, operator) for every variant to write."""
    plan = []
    for seed_index in range(num_seeds):
        for _ in range(variants):
            family = IN_DEPTH_INSTRUCTIONS if rng.random() < in_depth_probability else IN_BREADTH_INSTRUCTIONS
            plan.append((seed_index, rng.choice(sorted(family))))
    return plan


def llm_rewrites(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, seed_prompts: list[str],
                 plan: list[tuple[int, str]], *, temperature: float, top_p: float, max_new_tokens: int,
                 batch_size: int, seed: int, kv_cache: str = "static") -> list[Rewrite]:
    """One sampled rewrite per planned (seed, operator), in plan order."""
    instructions = IN_DEPTH_INSTRUCTIONS | IN_BREADTH_INSTRUCTIONS
    metas = [meta_prompt(instructions[operator], seed_prompts[index]) for index, operator in plan]
    room = max_positions_of(model) - MIN_REWRITE_TOKENS
    fits = [len(prompt_token_ids(tokenizer, meta)) <= room for meta in metas]
    sendable = [k for k, ok in enumerate(fits) if ok]
    texts: dict[int, str] = {}
    if sendable:
        generations = generate(model, tokenizer, [metas[k] for k in sendable], num_samples=1,
                               temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                               batch_size=batch_size, seed=seed, description="evolve (llm)", kv_cache=kv_cache)
        texts = {k: first_line(gens[0].text) for k, gens in zip(sendable, generations)}
    return [Rewrite(index, operator, texts.get(k)) for k, (index, operator) in enumerate(plan)]
