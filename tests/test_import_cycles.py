"""No import cycles between mae3d's modules (``import mae3d...`` / ``from mae3d... import`` lines).

A cycle "works" only as long as the import order happens to fit, so it is kept out structurally.
Imports inside functions (late imports of heavy or optional dependencies) and under
``if TYPE_CHECKING:`` do not run at import time and are not edges of the graph; the two fine-tuning
modules that used to form a cycle through such a late import are also checked line by line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mae3d

SRC = Path(mae3d.__file__).resolve().parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str], *, module_level_only: bool) -> set[str]:
    """mae3d modules imported by ``path``.

    ``from a.b import c`` is an edge to the module ``a.b.c`` when that exists (Python then imports the
    submodule, also while ``a.b`` is still initialising), else to ``a.b``.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if module_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if module_level_only and isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.split(".")[0] == "mae3d")
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module \
                    and child.module.split(".")[0] == "mae3d":
                for a in child.names:
                    sub = f"{child.module}.{a.name}"
                    found.add(sub if sub in modules else child.module)
            visit(child)

    visit(tree)
    return found


def _graph(*, module_level_only: bool) -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        imported = _imports(path, set(files), module_level_only=module_level_only)
        graph[name] = {m for m in imported if m in files} - {name}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None; iterative DFS with colours."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for root in sorted(graph):
        if state.get(root):
            continue
        stack: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        path = [root]
        state[root] = 1
        while stack:
            node, todo = stack[-1]
            if not todo:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            nxt = todo.pop()
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(graph[nxt])))
    return None


def test_the_detector_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_module_level_import_cycle_in_mae3d():
    graph = _graph(module_level_only=True)
    assert "mae3d.finetuning.config" in graph and len(graph) > 50
    assert _find_cycle(graph) is None


def test_finetuning_config_and_schedules_import_one_way_only():
    """config validates schedule names through schedules; schedules never imports config, not even late."""
    graph = _graph(module_level_only=False)
    assert "mae3d.finetuning.schedules" in graph["mae3d.finetuning.config"]
    assert not {"mae3d.finetuning.config", "mae3d.finetuning"} & graph["mae3d.finetuning.schedules"]
    assert "mae3d.pretraining.schedules" not in graph["mae3d.utils.lr"]
