"""Where the files that live beside the package are: the echo program and the declarative fixtures.

In a checkout (editable install, or running from the tree) they are the repository's own `workloads/` and
`fixtures/`; a wheel carries byte-identical copies under `conformance/_bundled/` (see pyproject.toml).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_HERE = Path(__file__).resolve().parents[1]  # the package folder


def resource(*parts: str) -> Path:
    """The path of a bundled file or directory, e.g. `resource("workloads", "echo", "echo.py")`."""
    for base in (_HERE / "_bundled", _HERE.parent):
        candidate = base.joinpath(*parts)
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{'/'.join(parts)} is neither bundled with the package nor in the source tree")


ECHO_FILES = ("echo.py", "echo_serve.py", "echo_probe.py", "echo_socket.py")
"""The echo program's files: the program (command line), its server, its prober and their socket I/O. The image
carries these and nothing else (workloads/echo/Dockerfile and .dockerignore)."""


def echo_program() -> Path:
    """The echo program, the very file the container image runs (its halves beside it: ECHO_FILES)."""
    return resource("workloads", "echo", "echo.py")


def echo_prober() -> Path:
    """The echo program's prober, the file the harness imports to probe as `echo.py probe` does."""
    return resource("workloads", "echo", "echo_probe.py")


def echo_digest() -> str:
    """12 hex of the sha256 of the program's files, in ECHO_FILES order: the echo image's tag.

    A change to any of them is a new tag, so a cluster never runs an image built from an older program.
    """
    folder = echo_program().parent
    return hashlib.sha256(b"".join((folder / name).read_bytes() for name in ECHO_FILES)).hexdigest()[:12]


def fixture(*parts: str) -> Path:
    """A file under fixtures/ (kind configs, the version matrix, mesh overlays)."""
    return resource("fixtures", *parts)
