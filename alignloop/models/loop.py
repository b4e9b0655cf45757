"""The loop every trainer shares (optimize, reward-model training, the CFN): the order batches are drawn in, and the
steps — zero the gradients, the trainer's forward and backward, the finite-loss guard, clipping, the optimizer and
its schedule, one history row, a stop point a kill test can name.

A trainer supplies only what differs: how one batch's loss and metrics are computed and backpropagated, and how the
gradients are clipped (accelerate's clip under launched training, torch's otherwise, none for the CFN).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from alignloop.pipeline import stop_points
from alignloop.progress import progress

# One step's loss (a float, already averaged over processes where there are several) and its metrics.
StepResult = tuple[float, dict[str, float]]


class BatchOrder:
    """Indices into `size` items, `batch_size` at a time: what is left of one random permutation, then the next
    when fewer than a batch remain (every item once per pass; a batch may span two passes). Each permutation draws
    from `generator` when it is needed, so the order depends on the seed and the step alone."""

    def __init__(self, size: int, batch_size: int, generator: torch.Generator):
        self.size, self.batch_size, self.generator = size, batch_size, generator
        self._left: list[int] = []

    def take(self) -> list[int]:
        if len(self._left) < self.batch_size:
            self._left += torch.randperm(self.size, generator=self.generator).tolist()
        batch, self._left = self._left[:self.batch_size], self._left[self.batch_size:]
        return batch


def train_steps(total_steps: int, step: Callable[[int], StepResult], optimizer: torch.optim.Optimizer, *,
                non_finite: Callable[[int, float], Exception], clip: Callable[[], float | None] | None = None,
                scheduler=None, description: str | None = None) -> list[dict[str, float]]:
    """`total_steps` optimizer steps; returns one row per step: step, loss, grad_norm (with `clip`), then the
    step's metrics. A non-finite loss raises `non_finite(step, loss)` before anything is applied."""
    history = []
    steps = progress(range(total_steps), description) if description else range(total_steps)
    for index in steps:
        optimizer.zero_grad(set_to_none=True)
        loss, metrics = step(index)
        if not math.isfinite(loss):
            raise non_finite(index, loss)
        row: dict[str, float] = {"step": index, "loss": loss}
        if clip is not None:
            grad_norm = clip()
            row["grad_norm"] = float("nan") if grad_norm is None else float(grad_norm)  # DeepSpeed clips itself
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        history.append({**row, **metrics})
        stop_points.reach_in_stage(f"step-{index + 1}")
    return history
