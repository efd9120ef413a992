"""The package's structure: no import cycle, counting every import (module level, inside
functions, under TYPE_CHECKING); the lower layers never import the manager or the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "rushhpc"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(f): f for f in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")
                    up = up[: len(up) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                if t in files and t != mod:
                    # a package re-exporting its own submodules (lazily or not) is not a dependency of design
                    if path.name == "__init__.py" and t.startswith(mod + "."):
                        continue
                    graph[mod].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_lower_layers_do_not_import_higher_ones():
    graph = import_graph()
    high = {"rushhpc.rush", "rushhpc.cli", "rushhpc.sweeps", "rushhpc.dashboard"}
    low = ["rushhpc.network", "rushhpc.tasks", "rushhpc.protocol", "rushhpc.layout", "rushhpc.config",
           "rushhpc.worker", "rushhpc.reconcile", "rushhpc.monitor", "rushhpc.heartbeat", "rushhpc.launchers.base",
           "rushhpc.launchers.local", "rushhpc.launchers.batch", "rushhpc.launchers.slurm", "rushhpc.launchers.pbs",
           "rushhpc.launchers.ssh", "rushhpc.launchers.submitit"]

    def reach(m: str) -> set[str]:
        seen, todo = set(), [m]
        while todo:
            for n in graph.get(todo.pop(), ()):
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return seen

    for m in low:
        bad = {h for h in reach(m) if any(h == x or h.startswith(x + ".") for x in high)}
        assert not bad, f"{m} reaches {sorted(bad)}"
    launchers = [m for m in graph if m.startswith("rushhpc.launchers")]
    for m in launchers + ["rushhpc.reconcile", "rushhpc.monitor"]:
        assert "rushhpc.rush" not in reach(m), m


def test_the_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
