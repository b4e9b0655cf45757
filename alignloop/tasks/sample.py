"""Stage `sample`: N responses per prompt from the previous iteration's policy."""

from __future__ import annotations

import logging
from pathlib import Path

from alignloop.config import Config
from alignloop.errors import InputError
from alignloop.io import read_jsonl, write_jsonl
from alignloop.models.backends import generate_jobs
from alignloop.models.generation import Generation, GenerationJob
from alignloop.models.policy import policy_hash
from alignloop.paths import Layout
from alignloop.seeds import derive_seed
from alignloop.sources.models import policy_dir
from alignloop.stage_rows import SampleRow

log = logging.getLogger(__name__)


def prompts_for_iteration(pool: list[dict], iteration: int, count: int) -> list[dict]:
    """Iteration i takes the next `count` prompts of the pool, wrapping around; fresh prompts each iteration."""
    if not pool:
        raise InputError("the training prompt pool is empty")
    start = (iteration - 1) * count
    return [pool[(start + offset) % len(pool)] for offset in range(min(count, len(pool)))]


def iteration_prompts(cfg: Config, layout: Layout, iteration: int) -> list[dict]:
    """Under eva (from iteration 2), the previous creator's `next_prompts.jsonl`; otherwise the pool's next slice."""
    source = layout.sample_prompts(iteration, cfg.evolve.enabled)
    if source == layout.train_prompts:
        return prompts_for_iteration(read_jsonl(source), iteration, cfg.sample.num_prompts)
    rows = read_jsonl(source)
    if not rows:
        raise InputError(f"{source} is empty; re-run evolve {iteration - 1}")
    return rows


def generate_samples(cfg: Config, layout: Layout, source: Path, prompts: list[dict], seed: int,
                     description: str) -> list[list[Generation]]:
    """`sample.num_samples` responses per prompt from the policy at `source`, with `sample.backend`."""
    job = GenerationJob([row["prompt"] for row in prompts], [row["prompt_id"] for row in prompts], greedy=False,
                        max_new_tokens=cfg.sample.max_new_tokens, num_samples=cfg.sample.num_samples,
                        temperature=cfg.sample.temperature, top_p=cfg.sample.top_p, seed=seed, description=description)
    return generate_jobs(cfg, layout.root, source, [job], cfg.sample.backend, cfg.sample.batch_size)[0]


def run_sample(cfg: Config, layout: Layout, iteration: int) -> None:
    prompts = [{**row, "iteration": iteration} for row in iteration_prompts(cfg, layout, iteration)]
    source = policy_dir(cfg, layout, iteration - 1)
    producer = policy_hash(source)  # the vllm backend checks its engine loaded exactly these weights
    seed = derive_seed(cfg.seed, "sample", iteration)
    generations = generate_samples(cfg, layout, source, prompts, seed, f"sample iter {iteration}")
    rows = [
        SampleRow(prompt_id=row["prompt_id"], sample_index=index, prompt=row["prompt"], response=gen.text,
                  response_ids=list(gen.token_ids), num_tokens=gen.num_tokens, finished=gen.finished, seed=gen.seed,
                  policy=producer)
        for row, gens in zip(prompts, generations) for index, gen in enumerate(gens)
    ]
    write_jsonl(layout.prompts(iteration), prompts)
    write_jsonl(layout.samples(iteration), rows)
    log.info("sample: %d responses for %d prompts from policy %s", len(rows), len(prompts), producer)
