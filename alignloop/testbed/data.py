"""The testbed's data: SFT demonstrations, the training prompt pool and the evaluation splits.

Evaluation prompts are drawn first and excluded from everything training sees.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from alignloop.testbed.scorer import demonstration
from alignloop.testbed.world import Distribution, Task, sample_tasks

if TYPE_CHECKING:  # only a type: the config's checks read the distributions below
    from alignloop.config import TestbedConfig


def training_distribution(cfg: TestbedConfig) -> Distribution:
    return Distribution(cfg.min_length, cfg.max_length, cfg.depth_weights)


def eval_distributions(cfg: TestbedConfig) -> dict[str, Distribution]:
    return {
        "in_distribution": training_distribution(cfg),
        # Composes up to three skills (training: mostly one or two) on inputs up to harder_max_length.
        "harder": Distribution(cfg.min_length, max(cfg.max_length, cfg.harder_max_length), (0.0, 0.5, 0.5)),
        # Two-skill chains that training never composes.
        "unseen_composition": Distribution(cfg.min_length, cfg.max_length, (0.0, 1.0), held_out_only=True),
    }


def task_row(task: Task, **extra: Any) -> dict[str, Any]:
    return {"prompt_id": task.task_id, "prompt": task.prompt, "answer": task.answer, "skills": list(task.skills),
            "input": task.input, "depth": task.depth, **extra}


def build_testbed_data(cfg: TestbedConfig, seed: int) -> dict[str, list[dict[str, Any]]]:
    """All rows of data/: `{"sft": [...], "train_prompts": [...], "eval/<split>": [...]}`."""
    files: dict[str, list[dict[str, Any]]] = {}
    held_out: set[str] = set()
    for offset, (split, dist) in enumerate(eval_distributions(cfg).items()):
        tasks = sample_tasks(dist, cfg.eval_size, seed=seed * 1000 + 101 + offset, exclude=held_out)
        held_out.update(task.prompt for task in tasks)
        files[f"eval/{split}"] = [task_row(task, split=split) for task in tasks]

    train = training_distribution(cfg)
    pool = sample_tasks(train, cfg.prompt_pool_size, seed=seed * 1000 + 201, exclude=held_out)
    files["train_prompts"] = [task_row(task, pool_index=index) for index, task in enumerate(pool)]

    demo_rng = random.Random(seed * 1000 + 301)
    sft_rows = []
    for task in _draw_with_repeats(train, cfg.sft_examples, seed * 1000 + 302, held_out):
        response, corrupted = demonstration(task.answer, demo_rng, cfg.error_rate, cfg.check_rate, cfg.filler_rate)
        sft_rows.append(task_row(task, response=response, corrupted=corrupted))
    files["sft"] = sft_rows
    return files


def _draw_with_repeats(dist: Distribution, count: int, seed: int, exclude: set[str]) -> list[Task]:
    """SFT prompts may repeat (the world is small at short lengths); evaluation prompts never appear."""
    from alignloop.testbed.world import sample_task

    rng = random.Random(seed)
    tasks: list[Task] = []
    while len(tasks) < count:
        task = sample_task(dist, rng)
        if task.prompt not in exclude:
            tasks.append(task)
    return tasks
