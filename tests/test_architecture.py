"""Rules of the layout that a refactoring could break silently."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EMULATED = sorted((REPO / "conformance" / "backends" / "emulated").glob("*.py"))


def test_the_emulated_backend_never_loads_the_spec() -> None:
    """Outcomes must come from sockets and the kernel, never from the expected table."""
    modules = [f"conformance.backends.emulated.{p.stem}" for p in EMULATED if p.stem != "__init__"]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print(sorted(m for m in sys.modules if m.startswith('conformance.spec') or m in "
        + "('conformance.world.layout', 'conformance.world.namespaces', 'conformance.world.ports', "
        + "'conformance.world.probe_pods')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "path",
    [
        REPO / "workloads" / "echo" / "echo.py",
        REPO / "workloads" / "echo" / "echo_serve.py",
        REPO / "workloads" / "echo" / "echo_probe.py",
        REPO / "workloads" / "echo" / "echo_socket.py",
        REPO / "conformance" / "backends" / "emulated" / "sidecar.py",
        REPO / "conformance" / "backends" / "emulated" / "original_src.py",
        REPO / "conformance" / "backends" / "emulated" / "relay.py",
        REPO / "conformance" / "backends" / "emulated" / "status_agent.py",
        REPO / "conformance" / "backends" / "emulated" / "ztunnel.py",
        REPO / "conformance" / "backends" / "emulated" / "forkserver.py",
    ],
    ids=lambda p: p.name,
)
def test_programs_run_with_the_standard_library_only(path: Path) -> None:
    """The echo image has no site-packages, and both programs start with `python3 -I -S`.

    A program may import the files beside it (the echo program its two halves), nothing else outside the stdlib.
    What an `if TYPE_CHECKING:` block imports never runs: the type checker's view of a file beside it.
    """
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    beside = {p.stem for p in path.parent.glob("*.py")}
    assert imported - set(sys.stdlib_module_names) - {"__future__"} - beside == set()


# --- the layout's rules: arrows one way, one idea a file, each folder says what it holds ----------------------

PACKAGE = REPO / "conformance"
MODULE_FILES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
LAYERS = ("spec", "world", "backends", "engine", "report", "run", "impact", "results", "suite", "entry")
"""Lowest first: a module imports only from its own layer or a lower one.

`impact` sits below `suite`: the command reads a cluster through the backends alone, and the suite's
ImpactCoversPrecheck case (suite/test_impact.py) runs it against the world it deployed.
"""
ENTRY_POINTS = ("plugin", "cli", "__main__")
"""The top-level modules, one layer together above `impact`: pytest's plugin, the command line, `python -m`."""
MAX_LINES = 500
LONG_MODULES: dict[str, str] = {}
"""Modules allowed over MAX_LINES, each with the reason it is one file (none: every idea fits in 500 lines)."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in MODULE_FILES}


def _imports(path: Path) -> set[str]:
    """The package's modules this file imports, anywhere in it (in functions and TYPE_CHECKING blocks too).

    `from conformance.x import y` is the module conformance.x.y when that is a module, else conformance.x.
    """
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            # `import conformance.a.b` names the module itself; anything else resolves to its longest module prefix.
            module = target
            while module and module not in MODULES:
                module = module.rpartition(".")[0]
            if module.startswith("conformance") and module != name:
                found.add(module)
    return found


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _layer(module: str) -> str | None:
    """The layer of a module; None for the package's own __init__ (neutral)."""
    if module == "conformance":
        return None
    top = module.split(".")[1]
    return "entry" if top in ENTRY_POINTS else top


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_import_graph_is_read_whole() -> None:
    """The graph the rules below read sees function-level imports and resolves imported names to their modules."""
    assert "conformance.backends.kind.options" in GRAPH["conformance.plugin"]  # imported inside pytest_addoption
    assert "conformance.suite.checks" in GRAPH["conformance.plugin"]  # from conformance.suite.checks import ...
    assert "conformance.run.diagnostics" in GRAPH["conformance.plugin"]  # from conformance.run import diagnostics
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_one_that_imports_it_back() -> None:
    """No import cycle among the package's modules, however long."""
    cycles = _cycles(GRAPH)
    assert cycles == [], "modules that import each other: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "conformance"))
def test_imports_go_down_the_layers(module: str) -> None:
    """spec < world < backends < engine < report < run < impact < suite < {plugin, cli, __main__}."""
    layer = _layer(module)
    assert layer in LAYERS, f"{module}: in no layer; place it in one of {', '.join(LAYERS[:-1])} or an entry point"
    upward = sorted(m for m in GRAPH[module] if (t := _layer(m)) is not None and LAYERS.index(t) > LAYERS.index(layer))
    assert upward == [], f"{module} ({layer}) imports from above its layer"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("conformance.spec")))
def test_the_spec_imports_nothing_else_of_the_package(module: str) -> None:
    """The oracle stands alone: what a mesh must do never depends on how the suite observes it."""
    assert sorted(m for m in GRAPH[module] if not m.startswith("conformance.spec")) == []


ECHO_FILES = sorted((REPO / "workloads" / "echo").glob("*.py"))
"""The echo program's files (the program and its two halves): the same rule."""


@pytest.mark.parametrize("path", MODULE_FILES + ECHO_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_each_module_holds_one_idea_in_at_most_500_lines(path: Path) -> None:
    """A long module is split by idea; an exception is named in LONG_MODULES with its reason."""
    lines = len(path.read_text().splitlines())
    if _module_name(path) in LONG_MODULES:
        return
    assert lines <= MAX_LINES, f"{path.relative_to(REPO)}: {lines} lines (at most {MAX_LINES})"


def test_the_allowed_long_modules_are_still_long() -> None:
    """An exception that no longer needs to be one is removed from LONG_MODULES."""
    short = [m for m in LONG_MODULES if m not in MODULES or len(MODULES[m].read_text().splitlines()) <= MAX_LINES]
    assert short == []


@pytest.mark.parametrize(
    "folder",
    sorted({p.parent for p in MODULE_FILES}),
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_each_package_folder_says_what_lives_there(folder: Path) -> None:
    """Every folder of the package is a package whose __init__.py says, in its docstring, what lives there."""
    init = folder / "__init__.py"
    assert init.is_file(), f"{folder.relative_to(REPO)}: no __init__.py"
    assert ast.get_docstring(ast.parse(init.read_text())), f"{init.relative_to(REPO)}: no docstring"
