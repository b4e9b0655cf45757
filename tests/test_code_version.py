"""Code versions (alignloop/pipeline/code_graph.py, cache.code_version): a stage's code is what its task imports, and
editing any of it changes the stage's cache key."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from alignloop.pipeline import code_graph
from alignloop.pipeline.cache import code_version
from alignloop.pipeline.code_graph import PACKAGE_DIR
from alignloop.pipeline.stages import STAGES

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
    """A stage's code is what its task imports, transitively and inside functions too, config included (a default or
    a metric name there changes what a stage writes); progress bars are not code versions."""
    _fake_package(tmp_path)
    monkeypatch.setattr(code_graph, "PACKAGE_DIR", tmp_path)
    code_graph.code_files.cache_clear()
    try:
        assert code_graph.code_files("alignloop.tasks.fake") == tuple(
            tmp_path / module for module in ("config.py", "io.py", "models/helper.py", "paths.py", "tasks/fake.py"))
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
        code_version.cache_clear()
        assert code_version(stage) == edited
        rewrite(tmp_path / "config.py", b"# edited\n")
        code_version.cache_clear()
        assert code_version(stage) != edited  # e.g. a renamed judge renames the benchmark's metrics
    finally:
        code_graph.code_files.cache_clear()
        code_version.cache_clear()


def test_optimize_code_paths_include_its_helpers():
    paths = STAGES["optimize"].code_paths()
    for module in ("models/losses.py", "models/logprobs.py", "models/policy.py", "models/generation.py",
                   "tasks/optimize.py", "io.py", "paths.py", "config/__init__.py"):
        assert PACKAGE_DIR / module in paths


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_code_path_exists(name):
    paths = STAGES[name].code_paths()
    assert paths and all(path.is_file() for path in paths), [p for p in paths if not p.is_file()]
    assert len(code_version(STAGES[name])) == 64


def _alignloop_imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("alignloop"):
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names if alias.name.startswith("alignloop."))
    return modules


# Modules that cannot change a stage's results: progress bars, a memo of sha256 digests, the test hook.
NOT_COMPUTING = ("alignloop.progress", "alignloop.pipeline.digests", "alignloop.pipeline.stop_points")


def _file(module: str) -> Path | None:
    base = PACKAGE_DIR.joinpath(*module.split(".")[1:])
    return next((path for path in (base.with_suffix(".py"), base / "__init__.py") if path.is_file()), None)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_paths_cover_every_computing_module_the_task_imports(name):
    """Every module of alignloop reachable from the stage's task is hashed in its code version (tasks, models,
    methods, testbed, config, sources, io.py, ...), except progress bars, the digest memo and the test hook. Walked
    here independently of code_graph: `from alignloop.pipeline import cache` names a module too."""
    todo, seen = [f"alignloop.tasks.{name}"], set()
    while todo:
        module = todo.pop()
        if module in seen or module in NOT_COMPUTING:
            continue
        seen.add(module)
        path = _file(module)
        if path is not None:
            todo.extend(_alignloop_imports(path))
    needed = {path for module in seen if (path := _file(module)) is not None}
    assert needed - set(STAGES[name].code_paths()) == set()
