"""The architecture the folders show, checked on the imports themselves (every import, also
those inside functions): no import cycle, `detectors/` free of I/O layers, the worker never
reaching into the tooling, and nothing but the entry points on top of `streams/`."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from streams.settings import REPO_ROOT

# The worker's folders: what a `misuse worker` process runs.
WORKER = ("streams.runtime", "streams.stages", "streams.sinks", "streams.embedding")
ENTRY_POINTS = {"__init__.py", "cli.py", "settings.py", "logs.py"}
FOLDERS = {"runtime", "stages", "sinks", "embedding", "tooling"}
# What detectors/ may import besides itself and the standard library: no Faust, Kafka,
# Elasticsearch, HTTP or settings.
FORBIDDEN_IN_DETECTORS = ("streams", "faust", "kafka", "aiokafka", "elasticsearch", "httpx",
                          "requests", "pydantic_settings", "mode")


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for package in ("streams", "detectors")
            for path in (REPO_ROOT / package).rglob("*.py")}


@cache
def imports(name: str) -> frozenset[str]:
    """Every module `name` imports (a `from package import module` names the module)."""
    found = set()
    for node in ast.walk(ast.parse(modules()[name].read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules()
                         else node.module for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return frozenset(found)


def import_graph() -> dict[str, list[str]]:
    return {name: sorted(m for m in imports(name) if m in modules() and m != name)
            for name in modules()}


def cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while (member := stack.pop()) != node:
                group.append(member)
            if group:
                found.append(sorted([node, *group]))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle_and_sees_imports_inside_functions() -> None:
    assert "streams.embedding.model" in imports("streams.cli")  # imported in a command
    assert cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert cycles({"a": ["b"], "b": []}) == []


def test_the_top_of_streams_holds_only_the_entry_points_and_the_folders() -> None:
    top = {path.name for path in (REPO_ROOT / "streams").iterdir()
           if not path.name.startswith((".", "__pycache__"))}
    assert top == ENTRY_POINTS | FOLDERS


def test_the_worker_never_imports_the_tooling() -> None:
    reaching = {name: sorted(m for m in imports(name) if m.startswith("streams.tooling"))
                for name in modules() if name.startswith(WORKER)}
    assert {name: found for name, found in reaching.items() if found} == {}


def test_detectors_import_no_io_layer() -> None:
    reaching = {name: sorted(m for m in imports(name)
                             if m.split(".")[0] in FORBIDDEN_IN_DETECTORS)
                for name in modules() if name.startswith("detectors")}
    assert {name: found for name, found in reaching.items() if found} == {}
