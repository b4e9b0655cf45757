"""Scoring many inputs with a model in batches of similar length, results back in input order."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from alignloop.errors import NonFiniteError
from alignloop.progress import progress

Item = TypeVar("Item")


def batched_by_length(items: Sequence[Item], forward_batch: Callable[[list[Item]], list[float]], batch_size: int,
                      sort_key: Callable[[Item], Hashable], description: str) -> list[float]:
    """`forward_batch` over `items` in batches ordered by `sort_key` (callers put the longest first, so running out
    of memory shows at once), one float per item, returned in input order."""
    order = sorted(range(len(items)), key=lambda index: sort_key(items[index]))
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    values: list[float] = [0.0] * len(items)
    for batch in progress(batches, description, total=len(batches)):
        for index, value in zip(batch, forward_batch([items[index] for index in batch])):
            values[index] = value
    return values


def check_finite(values: Sequence[float], labels: Sequence[str], what: str, unit: str) -> None:
    """A model that produced inf/NaN stops its stage, naming how many and one example:
    `{what} for {count} {unit} (e.g. {label})`."""
    bad = [label for label, value in zip(labels, values) if not math.isfinite(value)]
    if bad:
        raise NonFiniteError(f"{what} for {len(bad)} {unit} (e.g. {bad[0]})")
