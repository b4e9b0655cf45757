"""`alignloop serve` against a real local Prefect server: scheduled runs keep adding iterations (slow).

Starts `prefect server start` on a free port, serves the tiny preset every few seconds, and waits until two scheduled
runs have completed; each must have grown the pipeline by `schedule.iterations_per_run` (1).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

import prefect_server as prefect_server_process
from pipeline_helpers import copy_project, env_for, start_cli

pytestmark = pytest.mark.slow


@pytest.fixture()
def prefect_server(tmp_path: Path):
    try:
        process, api = prefect_server_process.start(tmp_path / "server-home", tmp_path / "server.log")
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield api
    prefect_server_process.stop(process)


def _completed_runs(api: str) -> int:
    response = httpx.post(f"{api}/flow_runs/filter", timeout=60, json={  # a busy server (2 cores, 2 workers) is slow
        "flows": {"name": {"any_": ["alignloop"]}},
        "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}})
    response.raise_for_status()
    return len(response.json())


def test_serve_runs_on_schedule_and_grows_iterations(prefect_server: str, tiny_run: Path, tmp_path: Path) -> None:
    project = copy_project(tiny_run, tmp_path / "project", dvc=False, mlflow=False)  # iteration 1 done
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        serve = start_cli(["serve", "--interval", "5"], project, env=env_for(project, PREFECT_API_URL=prefect_server),
                          stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 900
            while _completed_runs(prefect_server) < 2 and time.monotonic() < deadline:
                assert serve.poll() is None, log_path.read_text()[-4000:]
                time.sleep(2)
            completed = _completed_runs(prefect_server)
        finally:
            prefect_server_process.stop(serve)
    assert completed >= 2, log_path.read_text()[-4000:]

    iterations = yaml.safe_load((project / "params.yaml").read_text())["iterations"]
    # Each completed run added one iteration to the copied run's one; a run cut off by the stop may have raised it
    # once more.
    assert completed + 1 <= iterations <= completed + 2
    for iteration in range(1, completed + 2):
        assert (project / "artifacts" / f"iter-{iteration}" / "metrics.json").is_file()
