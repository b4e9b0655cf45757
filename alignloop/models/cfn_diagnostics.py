"""Checks of what a trained CFN counts: rank correlation of its pseudo-counts with exact repeats and with the number
of nearby visits in the replay buffer (used by tests and `benchmarks/cfn_counts.py`)."""

from __future__ import annotations

import torch
from torch import Tensor


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda k: values[k])
    out = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in order[start:end + 1]:
            out[k] = (start + end) / 2 + 1
        start = end + 1
    return out


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation with average ranks for ties."""
    ra, rb = torch.tensor(ranks(a)), torch.tensor(ranks(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def neighbour_counts(queries: Tensor, points: Tensor, radii: list[float], chunk: int = 1024) -> Tensor:
    """(len(queries), len(radii)): how many `points` lie within each radius (Euclidean) of each query, itself
    included when it is one of the points. Chunked so memory stays at chunk × len(points)."""
    out = torch.zeros(len(queries), len(radii), dtype=torch.long)
    bounds = torch.tensor(radii)
    for start in range(0, len(queries), chunk):
        distances = torch.cdist(queries[start:start + chunk].double(), points.double())
        out[start:start + chunk] = (distances[:, :, None] <= bounds).sum(1)
    return out
