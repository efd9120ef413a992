"""The package's structure: no import cycle, counting every import (module level, inside
functions, under TYPE_CHECKING); a layer never imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

from support import REPO

PKG = REPO / "rushhpc"


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


# The layers, lowest first: a module imports its own layer or lower ones only (docs/architecture.md).
LAYERS = [
    {"rushhpc._version", "rushhpc.defaults", "rushhpc.errors", "rushhpc.lifecycle", "rushhpc.processes"},
    {"rushhpc.core"},
    {"rushhpc.store"},
    {"rushhpc.server"},
    {"rushhpc.network"},
    {"rushhpc.launchers"},
    {"rushhpc.worker"},
    {"rushhpc.manager"},
    {"rushhpc.sweeps"},
    {"rushhpc.ui"},
    {"rushhpc", "rushhpc.__main__"},
]


def layer_of(module: str) -> int:
    best = -1
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if module == prefix or (prefix != "rushhpc" and module.startswith(prefix + ".")):
                best = i
    assert best >= 0, f"{module} is in no layer: add it to LAYERS (tests/unit/test_structure.py) and docs/architecture.md"
    return best


def test_layers():
    """No import goes up a layer (none is excused: the list of known ones ended empty with issue 18)."""
    graph = import_graph()
    bad = sorted((m, n) for m, targets in graph.items() for n in targets if layer_of(n) > layer_of(m))
    assert not bad, (
        "lower layers import higher ones (a module may import its own layer or lower ones, see LAYERS here and "
        "docs/architecture.md): " + "; ".join(f"{m} (layer {layer_of(m)}) -> {n} (layer {layer_of(n)})" for m, n in bad)
        + ". Move what the lower module needs down to its layer or below (as rushhpc.processes holds the process "
        "helpers the launchers, the embedded Redis and the heartbeat share), or pass it in from above."
    )


def test_the_layer_check_finds_an_import_going_up():
    assert layer_of("rushhpc.processes") == 0 and layer_of("rushhpc.server.embedded") == 3
    assert layer_of("rushhpc.worker.heartbeat") > layer_of("rushhpc.launchers.local")


def test_the_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_test_reaches_into_the_manager():
    """Tests use the manager's public API (issue 18): no ``rush._...`` and no ``._launchers``;
    `Rush.launcher(name)`, `Rush.launchers()` and `Rush.monitor` are there for what tests need.
    IPython's display hooks (``_repr_html_``) are a public protocol, not private state."""
    import re

    private = re.compile(r"\brush\._(?!repr_\w*_\b)|\._launchers\b")
    tests = REPO / "tests"
    found = [f"{p.relative_to(tests)}:{n}" for p in sorted(tests.rglob("*.py")) if p.name != "test_structure.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if private.search(line)]
    assert not found, "tests reach private attributes of Rush: " + ", ".join(found)


def test_the_worker_api_is_small_and_cannot_manage_the_network():
    """A worker loop receives a `RushWorker`: the worker's API only (issue 18), nothing that deletes a
    network, stores launch records, kills or marks workers; at most 30 public members."""
    from rushhpc.network.view import Network
    from rushhpc.worker.api import RushWorker

    public = [m for m in dir(RushWorker) if not m.startswith("_")]
    assert len(public) <= 30, f"RushWorker has {len(public)} public members: {public}"
    forbidden = {"delete", "reset", "send_kill", "mark_workers", "store_records", "save_record", "request_terminate",
                 "stop_workers", "remove_run_dir", "connector", "protocol"}
    assert not forbidden & set(public), sorted(forbidden & set(public))
    assert not issubclass(RushWorker, Network)  # composed over a view, not one

