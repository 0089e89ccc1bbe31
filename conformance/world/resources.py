"""Where the files that live beside the package are: the echo program and the declarative fixtures.

In a checkout (editable install, or running from the tree) they are the repository's own `workloads/` and
`fixtures/`; a wheel carries byte-identical copies under `conformance/_bundled/` (see pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parents[1]  # the package folder


def resource(*parts: str) -> Path:
    """The path of a bundled file or directory, e.g. `resource("workloads", "echo", "echo.py")`."""
    for base in (_HERE / "_bundled", _HERE.parent):
        candidate = base.joinpath(*parts)
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{'/'.join(parts)} is neither bundled with the package nor in the source tree")


def echo_program() -> Path:
    """The echo program, the very file the container image carries."""
    return resource("workloads", "echo", "echo.py")


def fixture(*parts: str) -> Path:
    """A file under fixtures/ (kind configs, the version matrix, mesh overlays)."""
    return resource("fixtures", *parts)
