"""The layering DESIGN.md and README promise, checked over every import in the code (module level
and inside functions): dependencies point ops -> connectors -> streams, the stages stay pure, no
import cycle between modules, and no module reaches for another module's private names."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("streams", "connectors", "ops")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports(name: str) -> Iterator[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import statement of a module."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [a.name for a in node.names]
            # `from pkg import module` imports the module pkg.module.
            subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES]
            if subs:
                for sub in subs:
                    yield sub, [], node.lineno
                names = [n for n in names if f"{base}.{n}" not in MODULES]
                if not names:
                    continue
            yield base, names, node.lineno


def ours(target: str) -> str | None:
    """The module of ours an import names (a name inside a module counts as the module)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def in_package(target: str, package: str) -> bool:
    return target == package or target.startswith(package + ".")


RULES = [
    (
        "streams.stages",
        ("faust", "aiokafka", "confluent_kafka", "kafka", "mode"),
        "stages are pure: no Faust, no Kafka",
    ),
    ("streams.stages", ("streams.processors", "streams.agents"), "stages know nothing of agents"),
    ("streams", ("connectors", "ops"), "streams never imports connectors or ops"),
    ("connectors", ("ops",), "connectors never import ops"),
]


@pytest.mark.parametrize(("scope", "forbidden", "why"), RULES, ids=[r[2] for r in RULES])
def test_dependencies_point_one_way(scope: str, forbidden: tuple[str, ...], why: str) -> None:
    broken = [
        f"{name}:{line} imports {target}"
        for name in MODULES
        if in_package(name, scope)
        for target, _, line in imports(name)
        if any(in_package(target, f) for f in forbidden)
    ]
    assert broken == [], why


def test_no_module_imports_another_modules_private_names() -> None:
    broken = [
        f"{name}:{line} takes {', '.join(n for n in names if n.startswith('_'))} from {target}"
        for name in MODULES
        for target, names, line in imports(name)
        if ours(target) not in (None, name)
        and any(n.startswith("_") and not n.startswith("__") for n in names)
    ]
    assert broken == []


def test_there_is_no_import_cycle() -> None:
    graph = {
        name: sorted(
            {m for t, _, _ in imports(name) if (m := ours(t)) and m != name and not name.startswith(m + ".")}
        )
        for name in MODULES
    }
    # Tarjan's strongly connected components: every component of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_checker_sees_what_it_checks() -> None:
    # Guard against a checker that passes because it reads nothing.
    assert len(MODULES) > 100
    taken = {t for t, _, _ in imports("ops.commands.gate")}
    assert "ops.runtime" in taken and "streams.stages.changes.gate" in taken  # a function-level import
    assert ours("streams.core.models.Alert") == "streams.core.models"
