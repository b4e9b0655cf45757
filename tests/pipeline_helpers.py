"""Shared helpers of the slow pipeline tests: tiny projects, running the CLI, snapshots of artifacts."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from alignloop.vllm_env import DEFAULT_ENV

REPO = Path(__file__).resolve().parents[1]
# The vLLM environment's tests skip without it, except under ALIGNLOOP_REQUIRE_VLLM=1 (CI), where it must exist.
HAVE_VLLM = (DEFAULT_ENV / "bin" / "python").is_file()
requires_vllm = pytest.mark.skipif(not HAVE_VLLM and not os.environ.get("ALIGNLOOP_REQUIRE_VLLM"),
                                   reason="no vLLM environment (scripts/setup_vllm.sh)")
BIN = Path(sys.executable).parent
ALIGNLOOP = str(BIN / "alignloop")
DVC = str(BIN / "dvc")


def env_for(project: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "ALIGNLOOP_PROGRESS": "0", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **extra}
    for key in ("MLFLOW_TRACKING_URI", "PREFECT_HOME", "PREFECT_API_URL"):
        if key not in extra:
            env.pop(key, None)  # each project keeps its own stores
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
    result = subprocess.run(args, cwd=cwd, env=env_for(cwd, **extra_env), capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
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


def copy_project(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


def run_until_killed(project: Path, marker: str, delay: float) -> str:
    """Start `alignloop run`, SIGKILL its whole process group `delay` s after `marker` is printed."""
    process = subprocess.Popen([ALIGNLOOP, "run"], cwd=project, env=env_for(project), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                               start_new_session=True)
    seen = threading.Event()
    lines: list[str] = []

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if marker in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert seen.wait(timeout=600), "never reached the kill point:\n" + "".join(lines[-40:])
    time.sleep(delay)
    assert process.poll() is None, "the run ended before the kill:\n" + "".join(lines[-40:])
    os.killpg(process.pid, signal.SIGKILL)  # a power cut: the flow and Prefect's server die at once
    process.wait(timeout=60)
    reader.join(timeout=10)
    return "".join(lines)
