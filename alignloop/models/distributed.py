"""Training across processes with accelerate: one process (the default) or several under `accelerate launch`.

The training loops see one `Accelerator` and a few helpers: which share of a list this process computes, gathering
those shares back in order, and writing the trained weights once. With a single process each helper is the identity,
so the one-process result is exactly what the loop computed before it learned about processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch

from alignloop.models.shares import share


def make_accelerator(device: torch.device, accumulation_steps: int = 1):
    """The run's Accelerator. On CPU, accelerate runs an FSDP launch config as plain data parallelism (it only
    shards on accelerators); the launcher's FSDP settings are applied here instead, so the FSDP path runs on CPU too."""
    from accelerate import Accelerator, FullyShardedDataParallelPlugin
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    accelerator = Accelerator(cpu=device.type == "cpu", gradient_accumulation_steps=accumulation_steps)
    wants_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if wants_fsdp and accelerator.distributed_type == DistributedType.MULTI_CPU:
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        accelerator.state.distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # reads the launcher's FSDP_* settings
    return accelerator


def process_device(device: torch.device) -> torch.device:
    """This process's device: under `accelerate launch` on GPUs, process k (LOCAL_RANK) uses GPU k, not GPU 0."""
    local_rank = os.environ.get("LOCAL_RANK")
    if device.type == "cuda" and device.index is None and local_rank is not None:
        return torch.device("cuda", int(local_rank))
    return device


def shards_weights(accelerator) -> bool:
    """FSDP and DeepSpeed hold each weight in pieces across processes; DDP holds whole copies."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def sharded(accelerator, items: Sequence, compute: Callable[[Sequence], tuple[torch.Tensor, ...]]
            ) -> tuple[torch.Tensor, ...]:
    """`compute` on this process's share of `items`, the shares gathered back in order on every process: what one
    process computing all of `items` returns (each item's value does not depend on the others)."""
    if accelerator.num_processes == 1:
        return compute(items)
    from accelerate.utils import gather_object

    part = share(len(items), accelerator.process_index, accelerator.num_processes)
    local = compute(items[part.start:part.stop])
    parts = gather_object([tuple(tensor.cpu() for tensor in local)])
    return tuple(torch.cat([values[k] for values in parts]) for k in range(len(local)))


def mean_over_processes(accelerator, values: dict[str, float]) -> dict[str, float]:
    """Per-process means of equal-sized shares, averaged over the processes (the whole batch's mean)."""
    if accelerator.num_processes == 1 or not values:
        return values
    names = list(values)  # the same insertion order on every process
    local = torch.tensor([values[name] for name in names], dtype=torch.float64, device=accelerator.device)
    total = accelerator.reduce(local, reduction="mean")
    return {name: float(total[k]) for k, name in enumerate(names)}


def trained_model(accelerator, prepared, fresh: Callable[[], torch.nn.Module]):
    """The trained model as a whole on the main process (None elsewhere). Data-parallel copies are whole already; a
    sharded model's full weights are gathered (every process takes part) into a `fresh` copy of the same structure."""
    if not shards_weights(accelerator):
        return accelerator.unwrap_model(prepared) if accelerator.is_main_process else None
    state = accelerator.get_state_dict(prepared)
    if not accelerator.is_main_process:
        return None
    model = fresh()
    model.load_state_dict(state)
    return model
