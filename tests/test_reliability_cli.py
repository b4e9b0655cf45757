"""Every command ends a failure with one line and a non-zero exit, never a traceback; an unexpected error names the
log file that holds its traceback (issue 14, item 3)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from reliability_helpers import last_line, raising_env

from pipeline_helpers import make_project, run_cli

UNEXPECTED = re.compile(r"^alignloop: unexpected error: (?P<what>.+) \(traceback in (?P<log>\S+\.log)\)$")


def _assert_unexpected(result: subprocess.CompletedProcess, what: str) -> Path:
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr[-3000:]
    match = UNEXPECTED.match(last_line(result.stderr))
    assert match, result.stderr[-3000:]
    assert match["what"] == what
    log = Path(match["log"])
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and what.split(":")[0] in text
    return log


def test_report_unexpected_error_is_one_line_and_a_log(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    env = raising_env(tmp_path, project, "alignloop.tasks.report:run_report", "builtins:KeyError", "boom")
    result = run_cli(["report"], project, env)
    log = _assert_unexpected(result, "KeyError: 'boom'")
    assert log.parent == project / ".alignloop" / "logs" and log.name.endswith("-report-" + log.name.split("-")[-1])
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_dvc_yaml_unexpected_error_is_one_line(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    env = raising_env(tmp_path, project, "alignloop.pipeline.dvcfile:write_dvc_yaml", "builtins:RuntimeError",
                      "disk on fire")
    _assert_unexpected(run_cli(["dvc-yaml"], project, env), "RuntimeError: disk on fire")


def test_serve_unexpected_error_is_one_line(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    env = raising_env(tmp_path, project, "alignloop.pipeline.flow:pipeline_flow.serve", "builtins:RuntimeError",
                      "no server", PREFECT_API_URL="http://127.0.0.1:9/api", PREFECT_HOME=str(project / ".prefect"))
    _assert_unexpected(run_cli(["serve", "--interval", "60"], project, env), "RuntimeError: no server")


def test_fixture_into_a_file_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    result = run_cli(["fixture", str(blocker / "fixture")], tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert last_line(result.stderr).startswith("error: ") and str(blocker) in last_line(result.stderr)


@pytest.mark.parametrize("error, code, expected", [
    ("alignloop.models.policy:ModelLoadError", 1, "error: stage prepare (iteration 0): cannot load"),
    ("alignloop.tasks.optimize:NonFiniteLossError", 1, "error: stage prepare (iteration 0): cannot load"),
    ("alignloop.models.training:NonFiniteWeightsError", 1, "error: stage prepare (iteration 0): cannot load"),
    ("alignloop.config:ConfigError", 2, "error: cannot load"),
    ("alignloop.errors:InputError", 1, "error: stage prepare (iteration 0): cannot load"),
    ("alignloop.errors:MissingInputError", 1, "error: stage prepare (iteration 0): cannot load"),
])
def test_stage_known_errors_are_one_line(tmp_path: Path, error: str, code: int, expected: str) -> None:
    project = make_project(tmp_path / "project")
    env = raising_env(tmp_path, project, "alignloop.tasks.prepare:run_prepare", error, "cannot load")
    result = run_cli(["stage", "prepare"], project, env)
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert last_line(result.stderr) == expected
    assert not (project / ".alignloop" / "logs").exists()  # a known error needs no traceback


@pytest.mark.parametrize("error, message", [
    ("builtins:AttributeError", "'NoneType' object has no attribute 'shape'"),
    # A ValueError from alignloop's own code is a bug, not bad input: only the UserError family is (issue 26)
    ("builtins:ValueError", "too many values to unpack (expected 2)"),
    ("builtins:FileNotFoundError", "artifacts/iter-1/pairs.jsonl"),  # no errno: raised by code, not the OS
])
def test_stage_unexpected_error_is_one_line_and_a_log(tmp_path: Path, error: str, message: str) -> None:
    project = make_project(tmp_path / "project")
    env = raising_env(tmp_path, project, "alignloop.tasks.prepare:run_prepare", error, message)
    _assert_unexpected(run_cli(["stage", "prepare"], project, env), f"{error.split(':')[1]}: {message}")


def test_log_dir_falls_back_to_a_temporary_directory(tmp_path: Path, monkeypatch) -> None:
    from alignloop import cli_errors

    blocker = tmp_path / "project"
    blocker.write_text("a file where the project's .alignloop would go\n")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    directory = cli_errors.log_dir(blocker)
    assert directory.is_dir() and directory.is_relative_to(tmp_path / "tmp")


@pytest.mark.slow
def test_failing_run_ends_with_one_line_and_no_prefect_traceback(diverged_run) -> None:
    # The shared tiny run, then a learning rate that diverges at once (tests/conftest.py)
    project, result = diverged_run
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: stage optimize (iteration 1) failed: NonFiniteLossError: "), lines[-1]
    started = max(i for i, line in enumerate(lines) if "optimize iteration 1:" in line)
    assert lines[started + 1:] == lines[-1:], lines[started:]  # nothing between the stage's start and the error
    assert not any("Finished in state Failed" in line or line.startswith("ERROR prefect") for line in lines)
    logs = sorted((project / ".alignloop" / "logs").glob("*-run-*.log"))
    text = logs[-1].read_text()  # the failed run's (the first is the shared run's)
    assert "Traceback (most recent call last)" in text and "NonFiniteLossError" in text
    assert "optimize iteration 1:" in text  # the whole run is in the log, not only the failure


@pytest.mark.slow
def test_unexpected_error_inside_a_run_names_the_stage_and_the_log(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    env = raising_env(tmp_path, project, "alignloop.tasks.prepare:run_prepare", "builtins:ValueError", "boom")
    log = _assert_unexpected(run_cli(["run"], project, env), "stage prepare failed: ValueError: boom")
    assert log.parent == project / ".alignloop" / "logs" and "-run-" in log.name
