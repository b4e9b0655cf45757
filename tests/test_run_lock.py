"""One run per project directory: a second run refuses at once naming the holder; a lock left by a killed run is
taken over."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from alignloop.pipeline.run_lock import RunLockedError, lock_path, run_lock

from pipeline_helpers import ALIGNLOOP, env_for


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    with run_lock(tmp_path, "alignloop run"):
        holder = json.loads(lock_path(tmp_path).read_text())
        with pytest.raises(RunLockedError, match=rf"pid {holder['pid']} \(`alignloop run`"):
            with run_lock(tmp_path, "alignloop stage sft"):
                pass
        assert lock_path(tmp_path).is_file()  # the refused one did not remove the holder's lock
    assert not lock_path(tmp_path).exists()  # released on exit


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    lock_path(tmp_path).parent.mkdir(parents=True)
    import socket

    lock_path(tmp_path).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(),
                                               "command": "alignloop run", "started": "then"}))
    with run_lock(tmp_path, "alignloop run"):
        assert json.loads(lock_path(tmp_path).read_text())["command"] == "alignloop run"
    lock_path(tmp_path).write_text("{half-writ")  # a lock damaged mid-write is stale too
    with run_lock(tmp_path, "alignloop run"):
        pass


@pytest.mark.parametrize("command", [["run"], ["stage", "prepare"]])
def test_alignloop_refuses_to_start_while_another_run_holds_the_directory(tmp_path, command):
    (tmp_path / "params.yaml").write_text("iterations: 1\n")
    with run_lock(tmp_path, "alignloop run"):
        result = subprocess.run([ALIGNLOOP, *command], cwd=tmp_path, env=env_for(tmp_path), capture_output=True,
                                text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "another alignloop process is running" in lines[0], result.stderr
    assert not (tmp_path / "data").exists()
