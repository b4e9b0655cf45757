"""The loop optimize, reward-model training and the CFN share (models/loop.py): the batch order and the steps."""

from __future__ import annotations

import math

import pytest
import torch

from alignloop.models.loop import BatchOrder, train_steps


def test_batch_order_covers_every_item_once_per_pass_and_spans_passes() -> None:
    order = BatchOrder(5, 2, torch.Generator().manual_seed(3))
    batches = [order.take() for _ in range(5)]  # 10 indices: two whole passes
    assert [len(batch) for batch in batches] == [2] * 5
    flat = [index for batch in batches for index in batch]
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:]) == list(range(5))
    # the third batch holds the last of pass one and the first of pass two: the refill came only when needed
    first = torch.randperm(5, generator=torch.Generator().manual_seed(3)).tolist()
    assert flat[:5] == first


def test_batch_order_depends_on_the_generator_alone() -> None:
    def first_batches(seed: int) -> list[list[int]]:
        order = BatchOrder(7, 3, torch.Generator().manual_seed(seed))
        return [order.take() for _ in range(4)]

    assert first_batches(11) == first_batches(11)
    assert first_batches(11) != first_batches(12)


class Boom(Exception):
    pass


def _trainer(losses: list[float]):
    weight = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = torch.optim.SGD([weight], lr=0.5)

    def step(index: int):
        loss = weight.sum() * losses[index]
        loss.backward()  # the gradient is the step's loss factor
        return loss.item(), {"factor": losses[index]}

    return weight, optimizer, step


def test_steps_apply_the_gradient_and_record_one_row_each() -> None:
    weight, optimizer, step = _trainer([1.0, 2.0])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 1.0 / (k + 1))
    history = train_steps(2, step, optimizer, non_finite=lambda i, loss: Boom(), scheduler=scheduler,
                          clip=lambda: torch.nn.utils.clip_grad_norm_([weight], 10.0))
    # step 0: w = 1 - 0.5 * 1 = 0.5 (loss 1 * 1); step 1 at half the rate: w = 0.5 - 0.25 * 2 = 0.0 (loss 0.5 * 2)
    assert weight.item() == pytest.approx(0.0)
    assert history == [{"step": 0, "loss": 1.0, "grad_norm": 1.0, "factor": 1.0},
                       {"step": 1, "loss": 1.0, "grad_norm": 2.0, "factor": 2.0}]


def test_a_non_finite_loss_stops_before_the_optimizer_moves() -> None:
    weight, optimizer, step = _trainer([1.0, math.nan])
    with pytest.raises(Boom, match="step 1: nan"):
        train_steps(2, step, optimizer, non_finite=lambda i, loss: Boom(f"step {i}: {loss}"))
    assert weight.item() == pytest.approx(0.5)  # step 0 applied, step 1 not
