"""Shared helpers of the slow pipeline tests: tiny projects, running the CLI, snapshots of artifacts."""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from alignloop.models.vllm_env import DEFAULT_ENV
from alignloop.pipeline.stop_points import MARKER, STOP_AT

import prefect_server

REPO = Path(__file__).resolve().parents[1]
# The vLLM environment's tests skip without it, except under ALIGNLOOP_REQUIRE_VLLM=1 (CI), where it must exist.
HAVE_VLLM = (DEFAULT_ENV / "bin" / "python").is_file()
requires_vllm = pytest.mark.skipif(not HAVE_VLLM and not os.environ.get("ALIGNLOOP_REQUIRE_VLLM"),
                                   reason="no vLLM environment (scripts/setup_vllm.sh)")
BIN = Path(sys.executable).parent
ALIGNLOOP = str(BIN / "alignloop")
DVC = str(BIN / "dvc")


# The runs a test process starts share one Prefect server (started on first use, stopped at exit): a run without
# PREFECT_API_URL starts and migrates a temporary server of its own, seconds of CPU each time. Each project still keeps
# its own Prefect home (task cache, results). `temporary_prefect_server()` gives runs their own temporary server, as a
# user's `alignloop run` has it: the shared tiny run and the interrupt tests use it.
_prefect: dict[str, Any] = {"shared": True}


def shared_prefect_api() -> str:
    if "api" not in _prefect:
        home = Path(tempfile.mkdtemp(prefix="alignloop-test-prefect-"))
        process, api = prefect_server.start(home / "home", home / "server.log")
        atexit.register(lambda: (prefect_server.stop(process), shutil.rmtree(home, ignore_errors=True)))
        _prefect["api"] = api
    return _prefect["api"]


@contextmanager
def temporary_prefect_server() -> Iterator[None]:
    """Runs started here get no PREFECT_API_URL and no ready MLflow store: each starts Prefect's temporary server and
    builds its store, as outside the tests."""
    before, _prefect["shared"] = _prefect["shared"], False
    try:
        yield
    finally:
        _prefect["shared"] = before


# A project those runs start in without an MLflow store gets a copy of an empty one, made once per test process:
# building a store runs MLflow's schema migrations, seconds of CPU each time (environment.prepare_mlflow_store).
# Runs under `temporary_prefect_server()` build their own, as a user's first run does; tests/test_reliability_store.py
# and the migration-kill test in tests/test_reliability_interrupts.py test the building itself.
@lru_cache(maxsize=None)
def empty_mlflow_store() -> Path:
    home = Path(tempfile.mkdtemp(prefix="alignloop-test-mlflow-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    store = home / "mlflow.db"
    subprocess.run([sys.executable, "-c", "from alignloop.pipeline.environment import prepare_mlflow_store as p; p()"],
                   env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}, check=True, timeout=300,
                   capture_output=True)
    return store


def env_for(project: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "ALIGNLOOP_PROGRESS": "0", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **extra}
    for key in ("MLFLOW_TRACKING_URI", "PREFECT_HOME", "PREFECT_API_URL"):
        if key not in extra:
            env.pop(key, None)  # each project keeps its own stores
    if "PREFECT_API_URL" not in extra and _prefect["shared"]:
        env["PREFECT_API_URL"] = shared_prefect_api()
    if (_prefect["shared"] and "MLFLOW_TRACKING_URI" not in extra and (project / "params.yaml").is_file()
            and not (project / "mlflow.db").exists()):
        shutil.copyfile(empty_mlflow_store(), project / "mlflow.db")
    return env


def merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def make_project(path: Path, overrides: dict[str, Any] | None = None, link_package: bool = False) -> Path:
    """The tiny preset with `overrides` merged in, as params.yaml of a new project directory."""
    path.mkdir(parents=True, exist_ok=True)
    params = merge(yaml.safe_load((REPO / "presets" / "tiny.yaml").read_text()), overrides or {})
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if link_package:  # the package in the project, as in a checkout: DVC tracks the stage code too
        (path / "alignloop").symlink_to(REPO / "alignloop")
    return path


def set_params(project: Path, overrides: dict[str, Any]) -> None:
    params = merge(yaml.safe_load((project / "params.yaml").read_text()), overrides)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run(args: list[str], cwd: Path, timeout: int = 900, **extra_env: str) -> subprocess.CompletedProcess:
    stamp = prepare_stamp(cwd)
    result = subprocess.run(args, cwd=cwd, env=env_for(cwd, **extra_env), capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    count_start(args, cwd, stamp, result.returncode)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def statuses(project: Path) -> dict[str, str]:
    """Stage key → ran / cached / reused, from the last `alignloop run`'s summary."""
    summary = json.loads((project / "reports" / "summary.json").read_text())
    return {key: step["status"] for key, step in summary["stages"].items()}


def is_scratch(name: str) -> bool:
    return name.startswith(".") and name.endswith((".tmp", ".old"))


def artifact_files(project: Path) -> list[Path]:
    """Every file under data/, artifacts/ and reports/iterations.json, temporaries excluded."""
    files = []
    for top in ("data", "artifacts"):
        for path in sorted((project / top).rglob("*")):
            if path.is_file() and not any(is_scratch(part) for part in path.relative_to(project).parts):
                files.append(path)
    table = project / "reports" / "iterations.json"
    return files + ([table] if table.is_file() else [])


def snapshot(project: Path) -> dict[str, str]:
    return {path.relative_to(project).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in artifact_files(project)}


def copy_project(source: Path, target: Path, dvc: bool = True, mlflow: bool = True) -> Path:
    """A copy of a finished project, Prefect's cache and the stamps included (its stages come back cached). Without
    `dvc` it is no longer a DVC project (a run commits nothing); without `mlflow` its next run starts a new store."""
    shutil.copytree(source, target, symlinks=True)
    if not dvc:
        for name in ("dvc.yaml", "dvc.lock", ".dvcignore", "alignloop"):
            (target / name).unlink(missing_ok=True)
        shutil.rmtree(target / ".dvc", ignore_errors=True)
    if not mlflow:
        (target / "mlflow.db").unlink(missing_ok=True)
    return target


def continue_run(source: Path, target: Path, overrides: dict[str, Any], cached: tuple[str, ...]) -> Path:
    """Copy a finished run, change its params and run it: the stages in `cached` must come back from the copy's
    cache (cache keys do not depend on the directory), the others run."""
    project = copy_project(source, target, dvc=False, mlflow=False)
    set_params(project, overrides)
    run([ALIGNLOOP, "run"], project)
    status = statuses(project)
    assert {key: status[key] for key in cached} == dict.fromkeys(cached, "cached"), status
    return project


# Pipelines each test file ran from nothing (its own prepare, SFT, benchmark-0) outside the shared runs;
# tests/conftest.py keeps each file within its budget.
PIPELINE_STARTS: Counter[str] = Counter()
_counting = True


def is_pipeline(args: list[str]) -> bool:
    """A command that runs (part of) the whole pipeline: `alignloop run|serve`, `dvc repro`, `dvc exp run`."""
    head = [Path(str(arg)).name for arg in args[:3]]
    return head[:2] in (["alignloop", "run"], ["alignloop", "serve"], ["dvc", "repro"]) or head == ["dvc", "exp", "run"]


def prepare_stamp(project: Path) -> tuple[int, int] | None:
    """The project's prepare stamp as it is on disk (inode, mtime), None without one: it changes when prepare runs."""
    try:
        stat = (project / ".alignloop" / "stamps" / "prepare.json").stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def count_start(args: list[str], project: Path, stamp_before: tuple[int, int] | None,
                returncode: int | None = None) -> None:
    """Count a pipeline against the current test's file when it ran prepare (a run from nothing, or one whose inputs
    all changed); a copied run continued, or one refused before any work (exit 2), does not count."""
    if is_pipeline(args) and returncode != 2 and prepare_stamp(project) != stamp_before:
        _count()


def _count() -> None:
    current = os.environ.get("PYTEST_CURRENT_TEST", "")
    if _counting and current:
        PIPELINE_STARTS[current.split("::")[0]] += 1


@contextmanager
def shared_run() -> Iterator[None]:
    """Pipelines started here build a run many tests share; they do not count against the file that asked first."""
    global _counting
    _counting = False
    try:
        yield
    finally:
        _counting = True


def run_cli(args: list[str], project: Path, env: dict[str, str] | None = None,
            timeout: int = 900) -> subprocess.CompletedProcess:
    """`alignloop <args>` in the project, whatever its exit status."""
    stamp = prepare_stamp(project)
    result = subprocess.run([ALIGNLOOP, *args], cwd=project, env=env or env_for(project), capture_output=True,
                            text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    count_start([ALIGNLOOP, *args], project, stamp, result.returncode)
    return result


def start_cli(args: list[str], project: Path, **popen: Any) -> subprocess.Popen:
    """`alignloop <args>` started in the background, in its own session (stdin closed); counted as a run from
    nothing when the project has no prepare stamp yet."""
    if is_pipeline([ALIGNLOOP, *args]) and prepare_stamp(project) is None:
        _count()
    return subprocess.Popen([ALIGNLOOP, *args], cwd=project, stdin=subprocess.DEVNULL, start_new_session=True,
                            **popen)


class StoppedRun:
    """`alignloop <args>` with the test hook on: the process stops at `point` (alignloop/pipeline/stop_points.py) and
    waits there, so whatever the test does next (a SIGKILL, SIGINT, SIGTERM) happens inside that point."""

    def __init__(self, project: Path, point: str, args: tuple[str, ...] = ("run",), **extra_env: str):
        self.point, self.args, self.project = point, args, project
        self.stamp = prepare_stamp(project)
        self.process = subprocess.Popen([ALIGNLOOP, *args], cwd=project,
                                        env=env_for(project, **{STOP_AT: point}, **extra_env),
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        text=True, start_new_session=True)
        self.lines: list[str] = []
        self.stopped = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.strip() == f"{MARKER} {self.point}":
                self.stopped.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_until_stopped(self, timeout: float = 600) -> None:
        """Returns once the process waits at the point; fails if it ends (or takes `timeout` s) without reaching it."""
        deadline = time.monotonic() + timeout
        while not self.stopped.wait(timeout=0.1):
            if self.process.poll() is not None:
                self.reader.join(timeout=10)
                if self.stopped.is_set():
                    break
                raise AssertionError(f"the run ended (exit {self.process.returncode}) without reaching the stop point "
                                     f"{self.point}:\n" + "\n".join(self.lines[-40:]))
            assert time.monotonic() < deadline, f"{self.point} not reached in {timeout} s:\n" + self.output[-4000:]
        assert self.process.poll() is None, f"the run left the stop point {self.point}:\n" + self.output[-4000:]

    def finish(self, timeout: float = 120) -> int:
        code = self.process.wait(timeout=timeout)
        self.reader.join(timeout=10)
        count_start([ALIGNLOOP, *self.args], self.project, self.stamp, code)
        return code


def run_until_killed(project: Path, point: str) -> str:
    """Run until the process stops at `point`, then SIGKILL its whole process group there (a power cut: the flow and
    Prefect's server die at once); returns the output."""
    running = StoppedRun(project, point)
    running.wait_until_stopped()
    os.killpg(running.process.pid, signal.SIGKILL)
    running.finish(timeout=60)
    return running.output
