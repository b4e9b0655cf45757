"""The suite's own guard (tests/conftest.py, `pipeline_budget`): pipelines a test file starts are counted, and every
pipeline starts through the helpers that count it."""

from __future__ import annotations

import ast
from pathlib import Path

import pipeline_helpers
from pipeline_helpers import ALIGNLOOP, DVC, count_start, is_pipeline, prepare_stamp, shared_run

TESTS = Path(__file__).resolve().parent
PIPELINE_VERBS = {"ALIGNLOOP": {"run", "serve"}, "DVC": {"repro", "exp"}}


def _starts_a_pipeline_itself(call: ast.Call) -> bool:
    """`subprocess.run([ALIGNLOOP, "run", ...])` and the like: a pipeline the budget would not see."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "subprocess"):
        return False
    if not call.args or not isinstance(call.args[0], ast.List) or len(call.args[0].elts) < 2:
        return False
    program, verb = call.args[0].elts[:2]
    if isinstance(program, ast.Call) and program.args:  # str(ALIGNLOOP)
        program = program.args[0]
    return (isinstance(program, ast.Name) and isinstance(verb, ast.Constant)
            and verb.value in PIPELINE_VERBS.get(program.id, ()))


def test_no_test_file_starts_a_pipeline_outside_the_helpers() -> None:
    offenders = []
    for path in sorted(TESTS.glob("*.py")):
        if path.name == "pipeline_helpers.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and _starts_a_pipeline_itself(node):
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, f"start pipelines with pipeline_helpers.run / run_cli / start_cli: {offenders}"


def test_the_guard_sees_a_direct_start() -> None:
    tree = ast.parse('subprocess.run([ALIGNLOOP, "run"], cwd=p)\nsubprocess.Popen([str(DVC), "repro"])\n'
                     'subprocess.run([ALIGNLOOP, "report"])\n')
    found = [_starts_a_pipeline_itself(node) for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute)]
    assert found == [True, True, False]


def test_runs_from_nothing_are_counted_per_file_unless_refused_or_shared(monkeypatch, tmp_path) -> None:
    assert is_pipeline([ALIGNLOOP, "run"]) and is_pipeline([DVC, "repro"]) and is_pipeline([DVC, "exp", "run"])
    assert not is_pipeline([ALIGNLOOP, "report"]) and not is_pipeline([DVC, "status"])
    monkeypatch.setattr(pipeline_helpers, "PIPELINE_STARTS", pipeline_helpers.Counter())
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/test_x.py::test_y (call)")
    stamp = tmp_path / ".alignloop" / "stamps" / "prepare.json"

    def ran_prepare() -> None:  # what a run from nothing does to the project
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        stamp.write_text("{}")

    before = prepare_stamp(tmp_path)
    ran_prepare()
    count_start([ALIGNLOOP, "run"], tmp_path, before, 0)  # counted
    before = prepare_stamp(tmp_path)
    count_start([ALIGNLOOP, "run"], tmp_path, before, 0)  # prepare came back cached: a continued run
    ran_prepare()
    count_start([ALIGNLOOP, "run"], tmp_path, before, 1)  # failed later, but it did the work: counted
    before = prepare_stamp(tmp_path)
    count_start([ALIGNLOOP, "run"], tmp_path, before, 2)  # refused before any work
    ran_prepare()
    count_start([ALIGNLOOP, "report"], tmp_path, before, 0)  # not a pipeline
    with shared_run():
        before = prepare_stamp(tmp_path)
        ran_prepare()
        count_start([DVC, "repro"], tmp_path, before, 0)  # a shared run
    assert pipeline_helpers.PIPELINE_STARTS == {"tests/test_x.py": 2}
