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
        REPO / "conformance" / "backends" / "emulated" / "sidecar.py",
        REPO / "conformance" / "backends" / "emulated" / "ztunnel.py",
        REPO / "conformance" / "backends" / "emulated" / "forkserver.py",
    ],
    ids=lambda p: p.name,
)
def test_programs_run_with_the_standard_library_only(path: Path) -> None:
    """The echo image has no site-packages, and both programs start with `python3 -I -S`."""
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported - set(sys.stdlib_module_names) - {"__future__"} == set()
