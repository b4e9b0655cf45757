"""How a run executes, none of which changes what a stage computes (so none of it is in a cache key): the vLLM
engine's settings (`vllm:`), the launcher and retries (`pipeline:`), and scheduled runs (`schedule:`)."""

from __future__ import annotations

import pkgutil
from typing import Literal

from pydantic import Field, model_validator

from alignloop.config.base import Section, require


class VllmConfig(Section):
    """The vLLM engine of `sample.backend: vllm` / `benchmark.backend: vllm`. How fast it generates, not what:
    none of it is in a cache key."""

    python: str | None = None
    """The vLLM environment's interpreter; empty: the checkout's `.venv-vllm/bin/python` (scripts/setup_vllm.sh)."""
    tensor_parallel_size: int = Field(1, ge=1)
    """GPUs one engine spreads the policy over."""
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    """Share of GPU memory the engine may take (weights + KV cache); it runs before training, alone on the GPU."""
    cpu_kv_cache_gib: float = Field(1.0, gt=0)
    """KV-cache size on a CPU-only machine (vLLM's CPU build would otherwise reserve most of the RAM)."""
    max_num_seqs: int = Field(256, ge=1)
    """Sequences the engine runs at once."""
    enforce_eager: bool | None = None
    """No compiled graphs: a faster start, slower generation. Empty: eager on CPU (compiling takes longer than it
    saves there), compiled on GPUs."""


def _task_modules() -> tuple[str, ...]:
    """The stages' names: each stage is one module in alignloop/tasks/ (stages.STAGES declares what it reads and
    writes). Read from the package's folder, so validating params imports no stage code and a new stage is not
    spelled here again."""
    import alignloop.tasks

    return tuple(sorted(module.name for module in pkgutil.iter_modules(alignloop.tasks.__path__)))


STAGE_NAMES = _task_modules()


class PipelineConfig(Section):
    """How stages are run; none of this changes what a stage computes, so none of it is in a cache key."""

    retries: dict[str, int] = {"sample": 1}
    """Extra attempts per stage after a failure (sampling is the usual flaky one), e.g. `{sample: 2, optimize: 1}`."""
    retry_delay_seconds: float = Field(10.0, ge=0)
    """Wait before each retry."""
    dvc_commit: bool = True
    """After a run, record every finished stage in dvc.lock (`dvc commit`) when the project has `.dvc/`, so `dvc
    status` is clean and `dvc repro` runs nothing."""
    launcher: Literal["python", "accelerate"] = "python"
    """How the training stages (sft, optimize) run: `python`, in the pipeline's own process; `accelerate`, under
    `accelerate launch --config_file <accelerate_config>` (several GPUs: DDP, FSDP or DeepSpeed). One process and
    several give the same updates up to float rounding, so switching does not re-run finished stages."""
    accelerate_config: str | None = None
    """The accelerate config file for `launcher: accelerate` (configs/accelerate/ has one GPU, multi-GPU DDP, FSDP,
    DeepSpeed ZeRO-2 and ZeRO-3, and 2-process CPU ones), relative to the project directory."""

    @model_validator(mode="after")
    def _launcher_config(self) -> PipelineConfig:
        if self.launcher == "accelerate":
            require(self.accelerate_config, "accelerate_config", "launcher is accelerate",
                    "an accelerate config file, e.g. configs/accelerate/multi_gpu.yaml")
        return self

    @model_validator(mode="after")
    def _known_stages(self) -> PipelineConfig:
        for name, count in self.retries.items():
            if name not in STAGE_NAMES:
                raise ValueError(f"retries: unknown stage {name!r}; stages are {', '.join(STAGE_NAMES)}")
            if count < 0:
                raise ValueError(f"retries: {name} must be >= 0, got {count}")
        return self


class ScheduleConfig(Section):
    iterations_per_run: int = Field(1, ge=1)
    """Iterations each scheduled run (`alignloop serve`) adds after the last completed one."""
