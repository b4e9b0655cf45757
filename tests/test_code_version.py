"""Code versions (alignloop/code_graph.py, cache.code_version): a stage's code is what its task imports, and
editing any of it changes the stage's cache key."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from alignloop import code_graph
from alignloop.cache import code_version
from alignloop.code_graph import PACKAGE_DIR
from alignloop.stages import STAGES

from cache_helpers import rewrite, touch


def _fake_package(root: Path) -> None:
    files = {
        "tasks/fake.py": "from alignloop.models.helper import f\nfrom alignloop.config import Config\n"
                         "from alignloop import progress\n\n\ndef run():\n    from alignloop.paths import Layout\n",
        "models/helper.py": "import alignloop.io\n",
        "io.py": "# io\n", "paths.py": "# paths\n", "config.py": "# config\n", "progress.py": "# bars\n",
        "unrelated.py": "# not imported\n",
    }
    for module, text in files.items():
        touch(root / module, text)


def test_code_files_follow_the_task_imports(tmp_path, monkeypatch):
    """A stage's code is what its task imports, transitively and inside functions too; config and progress bars
    are not code versions (the params slice and nothing)."""
    _fake_package(tmp_path)
    monkeypatch.setattr(code_graph, "PACKAGE_DIR", tmp_path)
    code_graph.code_files.cache_clear()
    try:
        assert code_graph.code_files("alignloop.tasks.fake") == tuple(
            tmp_path / module for module in ("io.py", "models/helper.py", "paths.py", "tasks/fake.py"))
        with pytest.raises(ValueError, match="alignloop.tasks.missing"):
            code_graph.code_files("alignloop.tasks.missing")
    finally:
        code_graph.code_files.cache_clear()


def test_code_version_hashes_module_contents(tmp_path, monkeypatch):
    """Editing a module the task reaches changes the version; editing one it does not reach leaves it."""
    _fake_package(tmp_path)
    monkeypatch.setattr(code_graph, "PACKAGE_DIR", tmp_path)
    code_graph.code_files.cache_clear()
    code_version.cache_clear()
    stage = dataclasses.replace(STAGES["rank"], name="fake")
    try:
        first = code_version(stage)
        rewrite(tmp_path / "models" / "helper.py", b"import alignloop.io\n# edited\n")
        assert code_version(stage) == first  # memoised for the life of the process ...
        code_version.cache_clear()
        edited = code_version(stage)
        assert edited != first  # ... and a helper module's content is part of it
        rewrite(tmp_path / "unrelated.py", b"# edited\n")
        rewrite(tmp_path / "config.py", b"# edited\n")
        code_version.cache_clear()
        assert code_version(stage) == edited
    finally:
        code_graph.code_files.cache_clear()
        code_version.cache_clear()


def test_optimize_code_paths_include_its_helpers():
    paths = STAGES["optimize"].code_paths()
    for module in ("models/losses.py", "models/logprobs.py", "models/policy.py", "models/generation.py",
                   "tasks/optimize.py", "io.py", "paths.py"):
        assert PACKAGE_DIR / module in paths


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_code_path_exists(name):
    paths = STAGES[name].code_paths()
    assert paths and all(path.is_file() for path in paths), [p for p in paths if not p.is_file()]
    assert len(code_version(STAGES[name])) == 64


def _alignloop_imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("alignloop."):
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names if alias.name.startswith("alignloop."))
    return modules


# Root modules that cannot change a stage's results: progress bars, and a memo of sha256 digests.
NOT_COMPUTING = ("progress", "digests")


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_paths_cover_every_computing_module_the_task_imports(name):
    """Every module of alignloop reachable from the stage's task is hashed in its code version: tasks, models,
    testbed, methods and root modules such as io.py (config*.py enter through the params slice; progress.py only draws
    progress bars)."""
    todo, seen = [f"alignloop.tasks.{name}"], set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        if module.split(".")[1].startswith("config"):  # params validation, not computation (the slice is hashed)
            continue
        path = PACKAGE_DIR.joinpath(*module.split(".")[1:]).with_suffix(".py")
        if path.is_file():
            todo.extend(_alignloop_imports(path))
    def computing(module: str) -> bool:
        top = module.split(".")[1]
        if top in ("tasks", "models", "testbed", "methods"):
            return True
        return module.count(".") == 1 and top not in NOT_COMPUTING and not top.startswith("config")

    needed = {PACKAGE_DIR.joinpath(*m.split(".")[1:]).with_suffix(".py") for m in seen if computing(m)}
    assert needed - set(STAGES[name].code_paths()) == set()
