"""Imports flow one way: read with ``ast`` (no project code runs), no cycles, no import against the layers.

The layers, lowest first (a module may import its own package's modules and any lower layer):

    config                      settings and logging
    worker root                 errors, dataplane (keys, scripts, ids, marks), store, failpoints: the shared ground
    worker.model                the event model: fields, calls, conversions, kinds, the inbound call
    worker.accounts             the account registry: clients, tokens, counters, providers; OAuth
    worker.delivery             producer, drain, upload, reconcile, quota, the Metrica client
    worker.intake               routing, held calls, caller history, call refs, pools, intake
    worker.ops                  metrics, health, exporter, overview, Flower
    worker.runtime              the composition root: builds what the layers below need
    worker.app, worker.main     the Celery app and its process entry
    tasks                       thin Celery tasks
    ingest                      the HTTP ingestion service and PBX readers
    ctl                         the operator CLI

An import under ``if TYPE_CHECKING:`` does not run, so it may point upward (every layer annotates with
``Runtime``); it still counts for cycles.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "worker", "tasks", "ingest", "ctl")

LAYERS: list[tuple[str, ...]] = [
    ("config",),
    (
        "worker.errors",
        "worker.dataplane",
        "worker.store",
        "worker.failpoints",
        "worker",
    ),
    ("worker.model",),
    ("worker.accounts",),
    ("worker.delivery",),
    ("worker.intake",),
    ("worker.ops",),
    ("worker.notify",),
    ("worker.runtime",),
    ("worker.app", "worker.main"),
    ("tasks",),
    ("ingest",),
    ("ctl",),
]


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    type_only: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted(ROOT.joinpath(package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def edges_of(name: str, path: Path, modules: dict[str, Path]) -> Iterator[Edge]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    type_only = _type_checking_lines(tree)
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        targets: list[str] = []
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for named in targets:
            target = named
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and target.split(".")[0] in PACKAGES:
                yield Edge(name, target, node.lineno, node.lineno in type_only)


def layer_of(module: str) -> tuple[int, str]:
    """The layer's index and the group a module belongs to (its longest matching prefix)."""
    best: tuple[int, str, int] | None = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                # The bare "worker" prefix only claims the root modules, not the subpackages.
                if prefix == "worker" and module.count(".") > 1:
                    continue
                if best is None or len(prefix) > best[2]:
                    best = (index, prefixes[0], len(prefix))
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best[0], best[1]


def graph() -> list[Edge]:
    modules = all_modules()
    return [edge for name, path in modules.items() for edge in edges_of(name, path, modules)]


def find_cycle(edges: list[Edge]) -> list[str] | None:
    adjacency: dict[str, set[str]] = {}
    for edge in edges:
        adjacency.setdefault(edge.source, set()).add(edge.target)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(adjacency.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(adjacency):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def violations(edges: list[Edge]) -> list[str]:
    found = []
    for edge in edges:
        if edge.type_only:
            continue
        (source_layer, source_group), (target_layer, target_group) = layer_of(edge.source), layer_of(edge.target)
        if source_group == target_group:
            continue
        if target_layer >= source_layer:
            found.append(f"{edge.source}:{edge.line} imports {edge.target} (layer {source_group} -> {target_group})")
    return found


def test_every_module_has_a_layer() -> None:
    for module in all_modules():
        layer_of(module)


def test_no_import_cycle_between_modules() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_run_only_downward() -> None:
    assert violations(graph()) == []


def test_the_checker_sees_a_cycle_and_an_upward_import() -> None:
    # The checks themselves must be able to fail: a made-up cycle and a model module importing delivery.
    made_up = [
        Edge("worker.ops.metrics", "worker.delivery.quota", 1, False),
        Edge("worker.delivery.quota", "worker.runtime", 1, True),
        Edge("worker.runtime", "worker.ops.metrics", 1, False),
    ]
    assert find_cycle(made_up) is not None
    upward = [Edge("worker.model.calls", "worker.delivery.producer", 3, False)]
    assert violations(upward) == [
        "worker.model.calls:3 imports worker.delivery.producer (layer worker.model -> worker.delivery)"
    ]
    assert violations([Edge("worker.delivery.quota", "worker.runtime", 1, True)]) == []


@pytest.mark.parametrize("package", ["worker", "config", "ingest"])
def test_no_module_over_400_lines(package: str) -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in ROOT.joinpath(package).rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert long == {}
