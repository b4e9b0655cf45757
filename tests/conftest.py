"""Shared fixtures: a small, fixed testbed data set, the reloaded testbed tokenizer, and the pipeline runs several
test files read or copy (each built once per session)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from transformers import AutoTokenizer

from alignloop.config import TestbedConfig
from alignloop.testbed.data import build_testbed_data
from alignloop.testbed.tokenizer import build_tokenizer

from pipeline_helpers import (
    ALIGNLOOP,
    DVC,
    PIPELINE_STARTS,
    copy_project,
    make_project,
    run,
    run_cli,
    set_params,
    shared_run,
    temporary_prefect_server,
)

SMALL_TESTBED = TestbedConfig(sft_examples=200, prompt_pool_size=300, eval_size=50)


@pytest.fixture(scope="session")
def small_testbed_config() -> TestbedConfig:
    return SMALL_TESTBED


@pytest.fixture(scope="session")
def small_testbed_data() -> dict[str, list[dict]]:
    """build_testbed_data(TestbedConfig(sft_examples=200, prompt_pool_size=300, eval_size=50), seed=0)."""
    return build_testbed_data(SMALL_TESTBED, seed=0)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(96).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    """The testbed tokenizer as every stage sees it: saved, then reloaded through AutoTokenizer."""
    return AutoTokenizer.from_pretrained(tokenizer_dir)


# --- Runs many test files share (built once per session, behind a file lock so xdist's workers build each once) ---

def pytest_configure(config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one thread each, for them and their runs
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def _shared(tmp_path_factory, name: str, build) -> Path:
    """The project `name`, built by `build(path)` the first time any worker asks; tests read it or copy it."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-runs"
    root.mkdir(exist_ok=True)
    path, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)
            with shared_run():
                build(path)
            done.touch()
    return path


def _dvc_project(path: Path) -> Path:
    # `dvc exp run -S key=value` overrides keys params.yaml already has: beta is written out.
    project = make_project(path, {"optimize": {"beta": 0.1}}, link_package=True)
    run([DVC, "init", "--no-scm", "-q"], project)
    run([ALIGNLOOP, "dvc-yaml"], project)
    return project


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny preset run by `alignloop run` from nothing, in a DVC project (the package linked in, as in a
    checkout). Read it, or copy it (`copy_project`, `continue_run`) to run anything there."""
    def build(path: Path) -> None:
        project = _dvc_project(path)
        with temporary_prefect_server():  # as a user's first run: Prefect's own temporary server
            (project / "run.stdout").write_text(run([ALIGNLOOP, "run"], project).stdout)

    return _shared(tmp_path_factory, "tiny-run", build)


@pytest.fixture(scope="session")
def tiny_repro(tmp_path_factory) -> Path:
    """The same project made by `dvc repro` instead."""
    return _shared(tmp_path_factory, "tiny-repro", lambda path: run([DVC, "repro"], _dvc_project(path)))


DIVERGING = {"optimize": {"learning_rate": 1.0e9, "epochs": 4}}  # NaN loss by the second step of optimize-1


@pytest.fixture(scope="session")
def diverged_run(tiny_run, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The tiny run again with a learning rate that diverges in optimize-1 (the run fails), and that run's output."""
    def build(path: Path) -> None:
        project = copy_project(tiny_run, path)
        set_params(project, DIVERGING)
        result = run_cli(["run"], project)
        (path / "run.out").write_text(json.dumps({"returncode": result.returncode, "stdout": result.stdout,
                                                  "stderr": result.stderr}))

    path = _shared(tmp_path_factory, "diverged-run", build)
    out = json.loads((path / "run.out").read_text())
    return path, subprocess.CompletedProcess(["alignloop", "run"], out["returncode"], out["stdout"], out["stderr"])


# --- The guard: a test file may run the pipeline from nothing (its own prepare, SFT, benchmark-0: `alignloop run`,
# `dvc repro` or `alignloop serve` in a new project, through pipeline_helpers) at most PIPELINE_BUDGET times; more
# means runs that belong in a shared fixture above, or in a copy of one (pipeline_helpers.continue_run). Counted at run
# time from the project's prepare stamp, so loops, parametrized tests and module fixtures count for what they start;
# continuing a copy is free. Every pipeline goes through the helpers (tests/test_suite_guard.py checks that no test
# file starts one itself).
PIPELINE_BUDGET = 2
# Files allowed more, each with why its runs cannot be shared.
PIPELINE_BUDGET_EXCEPTIONS: dict[str, int] = {
    # on a GPU machine only (skipped in CI): three models of their own on CUDA, each with its own head width or devices
    "tests/test_gpu.py": 3,
}


@pytest.fixture(autouse=True, scope="module")
def pipeline_budget(request):
    yield
    name = Path(str(request.node.fspath)).relative_to(Path(__file__).parent.parent).as_posix()
    started = PIPELINE_STARTS[name]
    allowed = PIPELINE_BUDGET_EXCEPTIONS.get(name, PIPELINE_BUDGET)
    assert started <= allowed, (f"{name} ran the pipeline from nothing {started} times (budget {allowed}): share a "
                                "run (tests/conftest.py) or continue a copy of one (pipeline_helpers.continue_run)")
