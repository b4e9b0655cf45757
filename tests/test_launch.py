"""The accelerate launcher's plain parts: how batches split over processes, the launch config checks, and how a
launched stage's failure comes back (fast; the multi-process runs are in test_launch_runs.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from alignloop.config import Config, ConfigError, load_config
from alignloop.models.shares import sft_batch_shares, share
from alignloop.pipeline.launch import LaunchedStageError, LaunchedStageUserError, _failure
from alignloop.pipeline.runnable import check_runnable

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "accelerate"


@pytest.mark.parametrize("count,world", [(16, 2), (17, 2), (5, 4), (3, 8), (64, 8)])
def test_shares_partition_in_order(count, world):
    parts = [share(count, rank, world) for rank in range(world)]
    assert [k for part in parts for k in part] == list(range(count))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_sft_batch_shares():
    assert sft_batch_shares(64, 32, 1) == (32, 2)  # one process: as before
    assert sft_batch_shares(64, 32, 2) == (32, 1)
    assert sft_batch_shares(64, 32, 8) == (8, 1)  # the micro-batch shrinks to the process's share
    assert sft_batch_shares(64, None, 4) == (16, 1)
    with pytest.raises(ValueError, match="sft.batch_size: 64 does not split into 3"):
        sft_batch_shares(64, 32, 3)
    with pytest.raises(ValueError, match="sft.micro_batch_size: 12 does not divide"):
        sft_batch_shares(64, 12, 2)


def test_shipped_configs_parse_with_their_process_counts():
    from alignloop.pipeline.runnable import launch_processes

    counts = {path.stem: launch_processes(path) for path in CONFIGS.glob("*.yaml")}
    assert counts == {"single_gpu": 1, "multi_gpu": 8, "fsdp": 8, "deepspeed_zero2": 8, "deepspeed_zero3": 8,
                      "cpu_ddp_2proc": 2, "cpu_fsdp_2proc": 2}
    for path in CONFIGS.glob("*.yaml"):
        launch = yaml.safe_load(path.read_text())
        assert launch["mixed_precision"] == "no", path  # precision comes from params.yaml only


def _config(**pipeline) -> Config:
    return Config.model_validate({"pipeline": {"launcher": "accelerate", **pipeline}})


def test_launcher_needs_a_config_file(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("pipeline:\n  launcher: accelerate\n")
    with pytest.raises(ConfigError, match="accelerate_config"):
        load_config(params)
    with pytest.raises(ConfigError, match="pipeline.accelerate_config: .*missing.yaml does not exist"):
        check_runnable(_config(accelerate_config="missing.yaml"), tmp_path)
    (tmp_path / "bad.yaml").write_text("num_processes: many\n")
    with pytest.raises(ConfigError, match="not an accelerate config with a positive num_processes"):
        check_runnable(_config(accelerate_config="bad.yaml"), tmp_path)


def test_batches_must_split_over_the_processes(tmp_path):
    (tmp_path / "three.yaml").write_text("num_processes: 3\n")
    cfg = _config(accelerate_config="three.yaml")
    with pytest.raises(ConfigError, match="optimize.batch_size: 64 does not split into 3 equal shares"):
        check_runnable(cfg, tmp_path)
    fits = cfg.model_copy(update={"optimize": cfg.optimize.model_copy(update={"batch_size": 63})})
    with pytest.raises(ConfigError, match="sft.batch_size: 64 does not split into 3"):
        check_runnable(fits, tmp_path)
    two = _config(accelerate_config=str(CONFIGS / "cpu_ddp_2proc.yaml"))
    check_runnable(two, tmp_path)  # the defaults split over two processes
    tdpo = two.model_copy(update={"optimize": two.optimize.model_copy(update={"loss": "tdpo2"})})
    with pytest.raises(ConfigError, match="optimize.loss: tdpo2 reads the policy's hidden states"):
        check_runnable(tdpo, tmp_path)


def _report(errors: Path, rank: int, user: bool, message: str) -> None:
    report = {"type": "ValueError" if user else "RuntimeError", "message": message, "user_error": user,
              "traceback": "Traceback ..."}
    (errors / f"rank-{rank}.json").write_text(json.dumps(report))


def test_a_failure_reports_the_first_process_that_failed(tmp_path):
    _report(tmp_path, 1, True, "optimize.batch_size too large")
    time.sleep(0.01)
    _report(tmp_path, 0, False, "Connection closed by peer")
    os.utime(tmp_path / "rank-0.json")  # written after rank 1's: a consequence, not the cause
    error = _failure(tmp_path, 0, "optimize")
    assert isinstance(error, LaunchedStageUserError) and isinstance(error, ValueError)
    assert str(error) == "optimize.batch_size too large"
    (tmp_path / "rank-1.json").unlink()
    error = _failure(tmp_path, 0, "optimize")
    assert isinstance(error, LaunchedStageError) and str(error) == "RuntimeError: Connection closed by peer"


def test_a_launch_that_died_before_reporting(tmp_path):
    error = _failure(tmp_path, -9, "sft")
    assert isinstance(error, LaunchedStageError) and "exited with code -9" in str(error)


def test_each_launched_process_loads_onto_its_own_gpu(monkeypatch):
    import torch

    from alignloop.models.distributed import process_device

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert process_device(torch.device("cuda")) == torch.device("cuda")  # not launched: as configured
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert process_device(torch.device("cuda")) == torch.device("cuda", 3)  # not all eight on GPU 0
    assert process_device(torch.device("cuda", 1)) == torch.device("cuda", 1)  # an explicit GPU is kept
    assert process_device(torch.device("cpu")) == torch.device("cpu")
