"""The package's module-level imports, type-only ones included, form no cycle (imports inside functions are how a
module defers a heavy or optional dependency, and are not counted)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "alignloop"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level(tree: ast.Module):
    for node in tree.body:  # module level, and inside `if TYPE_CHECKING:`; not inside functions
        yield from node.body if isinstance(node, ast.If) else [node]


def _top_level_imports(path: Path) -> set[str]:
    found = set()
    for node in _module_level(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("alignloop"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from alignloop import cache`
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("alignloop"))
    return found


def test_no_import_cycle():
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {name: {m for m in _top_level_imports(path) if m in modules and m != name}
             for name, path in modules.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            assert state.get(target) != 1, "import cycle: " + " -> ".join([*trail, name, target])
            if target not in state:
                visit(target, [*trail, name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    # the walk saw the package
    assert len(graph) > 40 and "alignloop.pipeline.stages" in graph["alignloop.pipeline.cache"]
