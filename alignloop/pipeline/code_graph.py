"""The source files a stage's results depend on, derived from its imports: every alignloop module reachable from the
stage's task module (`tasks/<name>.py`), imports inside functions included. The config modules count like any
other (a default or a name there can change what a stage writes, e.g. the judges' metric names); only modules that
cannot change a number are left out (progress bars, the digest memo, the test hook)."""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
NOT_COMPUTING = ("alignloop.progress", "alignloop.pipeline.digests", "alignloop.pipeline.stop_points")


def module_path(module: str) -> Path | None:
    """`alignloop.models.losses` → the file that defines it (a module or a package's __init__), None if neither."""
    base = PACKAGE_DIR.joinpath(*module.split(".")[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_modules(path: Path) -> set[str]:
    """Every alignloop module named by an import statement anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "alignloop":
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from alignloop import cache`
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "alignloop")
    return {module for module in found if module_path(module) is not None}


def _counts(module: str) -> bool:
    return module not in NOT_COMPUTING


@lru_cache(maxsize=None)
def code_files(entry: str) -> tuple[Path, ...]:
    """The files of every computing module reachable from `entry` (a dotted module name), sorted."""
    todo, seen = [entry], set()
    while todo:
        module = todo.pop()
        if module in seen or not _counts(module):
            continue
        seen.add(module)
        path = module_path(module)
        if path is None:
            raise ValueError(f"{module}: no such module in the alignloop package")
        todo.extend(imported_modules(path))
    return tuple(sorted({module_path(module) for module in seen if module != "alignloop"}))
