"""The package's imports form no cycle: its module-level imports, type-only ones included; and every import that
runs, the ones inside functions included (a deferred import is how a module avoids loading a heavy or optional
dependency, never how it hides a cycle). Type-only imports never run and are left out of the second graph."""

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


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _executed(tree: ast.Module):
    """Every node that runs: everything but the bodies of `if TYPE_CHECKING:`."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        todo.extend(child for child in ast.iter_child_nodes(node) if not _is_type_checking(child))


def _top_level_imports(path: Path, nodes=_module_level) -> set[str]:
    found = set()
    for node in nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("alignloop"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from alignloop import cache`
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("alignloop"))
    return found


def _find_cycle(nodes) -> None:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {name: {m for m in _top_level_imports(path, nodes) if m in modules and m != name}
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


def test_no_import_cycle_at_module_level():
    _find_cycle(_module_level)


def test_no_import_cycle_even_through_imports_inside_functions():
    """The config package's checks once reached the vLLM environment and the launcher, which import the config:
    a cycle that only deferred imports kept alive (issue 26)."""
    _find_cycle(_executed)
