"""What a run of a config cannot do on this machine, refused by the commands that run stages (`run`, `stage`,
`serve`) before any work, as a ConfigError naming the key: a device it does not have, a missing vLLM environment,
an accelerate config whose processes cannot split the batches, and testbed prompts that leave the model no position
to answer in. A Config that only names a model or a tokenizer (in tests, in tools) may still hold these."""

from __future__ import annotations

from pathlib import Path

import yaml

from alignloop.config import Config, ConfigError
from alignloop.models.shares import sft_batch_shares
from alignloop.models.vllm_env import uses_vllm, vllm_python
from alignloop.pipeline.launch import accelerate_config_file
from alignloop.testbed.geometry import check_prompts_fit


def check_runnable(cfg: Config, root: Path = Path(".")) -> None:
    """Refuse what a run of `cfg` cannot do on this machine (ConfigError naming the key); see the module docstring."""
    try:
        _device_exists(cfg.model.device)
        if uses_vllm(cfg):
            vllm_python(cfg, root)
        if cfg.pipeline.launcher == "accelerate":
            path = accelerate_config_file(cfg, root)
            _launch_fits(cfg, launch_processes(path), path)
        if cfg.data.is_testbed:
            check_prompts_fit(cfg.testbed, cfg.model.max_length)
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(str(exc)) from None


def launch_processes(path: Path) -> int:
    """The number of training processes an accelerate config file starts (`num_processes`, 1 when absent)."""
    if not path.is_file():
        raise ValueError(f"pipeline.accelerate_config: {path} does not exist (configs/accelerate/ has examples)")
    try:
        launch = yaml.safe_load(path.read_text()) or {}
        processes = int(launch.get("num_processes", 1)) if isinstance(launch, dict) else None
    except (yaml.YAMLError, TypeError, ValueError):
        processes = None
    if processes is None or processes < 1:
        raise ValueError(f"pipeline.accelerate_config: {path} is not an accelerate config with a positive "
                         "num_processes (write one with `accelerate config --config_file <path>`)")
    return processes


def _reward_launch_fits(cfg: Config, processes: int, path: Path) -> None:
    """Reward-model training splits each batch between data-parallel processes; what couples a whole batch (MetaRM's
    meta step, SimCSE's in-batch negatives) or shards the weights it does not do."""
    if processes == 1:
        return
    if cfg.reward.batch_size % processes:
        raise ValueError(f"reward.batch_size: {cfg.reward.batch_size} does not split into {processes} equal shares "
                         f"(pipeline.accelerate_config starts {processes} processes)")
    for key, on in (("reward.metarm", cfg.reward.metarm), ("reward.contrastive_weight", cfg.reward.contrastive_weight)):
        if on:
            raise ValueError(f"{key}: its loss couples the whole batch, which reward-model training does not split "
                             "between processes; use pipeline.launcher: python (one process) with it")
    distributed = (yaml.safe_load(path.read_text()) or {}).get("distributed_type")
    if distributed in ("FSDP", "DEEPSPEED"):
        raise ValueError(f"pipeline.accelerate_config: {path} shards the weights ({distributed}); reward-model "
                         "training runs data-parallel only (a MULTI_GPU or MULTI_CPU config), or in one process with "
                         "pipeline.launcher: python")


def _launch_fits(cfg: Config, processes: int, path: Path) -> None:
    """Every process takes an equal share of each batch: the batch sizes must split evenly."""
    if cfg.optimize.batch_size % processes:
        raise ValueError(f"optimize.batch_size: {cfg.optimize.batch_size} does not split into {processes} equal "
                         f"shares (pipeline.accelerate_config starts {processes} processes)")
    if cfg.sft.enabled:
        sft_batch_shares(cfg.sft.batch_size, cfg.sft.micro_batch_size, processes)
    if cfg.reward.enabled:
        _reward_launch_fits(cfg, processes, path)
    from alignloop.models.losses import LOSSES  # torch: only for a launch of several processes

    if processes > 1 and LOSSES[cfg.optimize.loss].needs_kl:
        raise ValueError(f"optimize.loss: {cfg.optimize.loss} reads the policy's hidden states outside its forward "
                         "pass, which data-parallel training does not synchronize; use pipeline.launcher: python (one "
                         "process) for it")


def _device_exists(name: str) -> None:
    if name in ("auto", "cpu"):
        return
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"model.device: not a device: {name!r} (auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"model.device: {name} is not available here (torch {torch.__version__} sees no CUDA "
                             "device); use auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"model.device: {name} does not exist here ({torch.cuda.device_count()} CUDA device(s))")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"model.device: {name} is not available here; use auto or cpu")
    elif device.type not in ("cuda", "mps", "cpu"):
        raise ValueError(f"model.device: {name!r} is not supported (auto, cpu, cuda, cuda:N or mps)")


