"""The shape of the code: layers with one direction of dependency, and no import cycles.

Read from the source with ``ast`` (every ``import``, inside functions and ``TYPE_CHECKING``
blocks included), so nothing is imported to check it, except by the test that looks at
what importing a service really loads (in a fresh interpreter).

Layers, lowest first; a module may import from its own layer and the ones below it:

0. ``_fastpath`` (the engine), ``chaperon.v1`` (generated) and ``chaperon._version``
1. ``chaperon.core``: domain errors, durations, allow-list, load-test model, compiler
2. ``chaperon.rpc``: gRPC status mapping, auth, channels, servers
3. ``master_service``, ``worker_service`` (neither imports the other)
4. the client library and CLI: every other ``chaperon`` module (``embedded`` composes 3)
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("chaperon", "master_service", "worker_service", "_fastpath")
CLIENT_SIDE = (
    "chaperon.cli",
    "chaperon.builder",
    "chaperon.client",
    "chaperon.report",
    "chaperon.exporters",
    "chaperon.html_report",
    "chaperon.watch",
    "chaperon.embedded",
    "chaperon.interrupt",
    "chaperon.outputs",
    "rich",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue
            out[_module_name(path)] = path
    return out


SOURCES = _sources()


def _resolve(name: str) -> str | None:
    """The project module an imported name refers to (a module, or a name in one)."""
    while name:
        if name in SOURCES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> set[str]:
    tree = ast.parse(SOURCES[module].read_text(encoding="utf-8"))
    package = module if SOURCES[module].name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                found.add(target)
    return found


GRAPH = {m: _imports(m) for m in SOURCES}


def _layer(module: str) -> int:
    if module.startswith(("_fastpath", "chaperon.v1")) or module == "chaperon._version":
        return 0
    if module.startswith("chaperon.core"):
        return 1
    if module.startswith("chaperon.rpc"):
        return 2
    if module.startswith(("master_service", "worker_service")):
        return 3
    return 4


def test_the_sources_were_found() -> None:
    assert {"chaperon.core.errors", "master_service.scheduler", "worker_service.plan"} <= set(
        SOURCES
    )


def test_no_module_imports_a_higher_layer() -> None:
    wrong = sorted(
        f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
        for m, targets in GRAPH.items()
        for t in targets
        if _layer(t) > _layer(m)
    )
    assert not wrong, "\n".join(wrong)


def test_no_service_imports_the_other() -> None:
    wrong = sorted(
        f"{m} imports {t}"
        for m, targets in GRAPH.items()
        for t in targets
        if {m.split(".")[0], t.split(".")[0]} == {"master_service", "worker_service"}
    )
    assert not wrong, wrong


@pytest.mark.parametrize("package", ["master_service", "worker_service", "chaperon.core"])
def test_importing_a_service_loads_nothing_of_the_client(package: str) -> None:
    modules = sorted(m for m in SOURCES if m.startswith(package + ".") or m == package)
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(m for m in sys.modules if m.startswith({CLIENT_SIDE!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_importing_chaperon_is_cheap() -> None:
    prefixes = ("chaperon.", "grpc", "rich", "_fastpath")
    code = (
        f"import sys, chaperon\nprint(sorted(m for m in sys.modules if m.startswith({prefixes!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "['chaperon._version']", out.stdout


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
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
                out.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    assert _cycles() == []


MESSAGE_MIN_LEN = 25


def _package(module: str) -> str:
    """The package a module's messages belong to: chaperon.core, chaperon.rpc, chaperon (the
    client), master_service, worker_service or _fastpath."""
    parts = module.split(".")
    if parts[0] == "chaperon" and len(parts) > 1 and parts[1] in ("core", "rpc"):
        return f"chaperon.{parts[1]}"
    return parts[0]


def _literals() -> dict[str, set[str]]:
    """Each package's string literals (f-string pieces included) of 25+ chars."""
    out: dict[str, set[str]] = {}
    for module, path in SOURCES.items():
        found = out.setdefault(_package(module), set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if len(node.value.strip()) >= MESSAGE_MIN_LEN:
                    found.add(node.value.strip())
    return out


def test_no_message_is_written_in_two_packages() -> None:
    literals = _literals()
    assert {"master_service", "worker_service", "chaperon.core"} <= set(literals)
    twice = sorted(
        f"{a} and {b}: {text!r}"
        for a, b in itertools.combinations(sorted(literals), 2)
        for text in literals[a] & literals[b]
    )
    assert not twice, "\n".join(twice)
