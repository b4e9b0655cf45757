"""How a batch splits over training processes and micro-batches (plain integers; the config checks use it too)."""

from __future__ import annotations

from alignloop.errors import InputError


def share(count: int, rank: int, world: int) -> range:
    """The contiguous part of `count` items that process `rank` of `world` computes (sizes differ by at most one)."""
    base, extra = divmod(count, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def sft_batch_shares(batch_size: int, micro_batch_size: int | None, processes: int) -> tuple[int, int]:
    """(micro-batch per process, accumulation steps) that make one SFT batch of `batch_size` over `processes`."""
    if batch_size % processes:
        raise InputError(f"sft.batch_size: {batch_size} does not split into {processes} equal shares "
                         f"(pipeline.accelerate_config starts {processes} processes)")
    local = batch_size // processes
    micro = min(micro_batch_size or local, local)
    if local % micro:
        raise InputError(f"sft.micro_batch_size: {micro} does not divide each process's share of sft.batch_size "
                         f"({batch_size} / {processes} processes = {local})")
    return micro, local // micro
