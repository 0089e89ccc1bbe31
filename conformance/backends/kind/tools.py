"""kind and istioctl for the kind backend: given by path, found on PATH at the row's version, or downloaded.

(No kubectl: the API work goes through the official Python client, so kubectl's version skew does not matter.)
A tool given by path (`--kind-bin`, `--istioctl`) is used as it is; one on PATH only when it reports the row's
version; otherwise the pinned release is downloaded and verified (pins.py, download.py). The log says which was
chosen and why. Every failure is a `ToolError` with a one-line message.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import httpx

from conformance.backends.kind.download import download
from conformance.backends.kind.pins import RELEASE, TOOLS, ToolError, pin_for

log = logging.getLogger(__name__)

# The option that names each tool's binary, so an error about an explicit path quotes what the user typed.
FLAGS = {"kind": "--kind-bin", "istioctl": "--istioctl"}
# `istioctl version --remote=false` loads no kubeconfig, but a broken binary must not hang tool resolution.
VERSION_PROBE_TIMEOUT = 60.0


def find_on_path(tool: str) -> Path | None:
    """The executable `tool` on PATH, or None."""
    found = shutil.which(tool)
    return Path(found) if found else None


def resolve_tool(
    tool: str,
    explicit: str | None,
    version: str,
    *,
    cache_dir: Path | None = None,
    client: httpx.Client | None = None,
    mirror: str | None = None,
    use_path: bool = True,
) -> Path:
    """The binary for `tool`: the explicit path, else the one on PATH if it is the row's version, else a download.

    The download is verified; the log says which was chosen and why (see `path_choice`).
    """
    if tool not in TOOLS:
        raise ToolError(f"unknown tool {tool!r}: one of {', '.join(TOOLS)}")
    if explicit:
        return _explicit(tool, explicit)
    if use_path:
        found, reason = path_choice(tool, version)
        log.info("%s", reason)
        if found is not None:
            return found
    return download(pin_for(tool, version, mirror=mirror), cache_dir=cache_dir, client=client)


def path_choice(tool: str, version: str) -> tuple[Path | None, str]:
    """The tool on PATH if its version is the wanted one, and a sentence saying what was found and why.

    A tool on PATH is only right at the row's version: kind's node images are promised to work only with the kind
    release that built them (the GitHub runner ships kind 0.32, a 1.20 image needs 0.17), and istioctl's checks
    differ between releases. So both must be the exact release.
    """
    found = find_on_path(tool)
    if found is None:
        return None, f"{tool}: none on PATH, using the pinned {tool} {version}"
    have = tool_version(tool, found)
    if have is not None and _same(have, version):
        return found, f"{tool}: using {found} from PATH ({have}, the row's version)"
    return None, (
        f"{tool}: {found} on PATH is {have or 'of unknown version'}, not {version}: using the pinned {tool} {version}"
    )


def _same(have: str, want: str) -> bool:
    return have.removeprefix("v") == want.removeprefix("v")


def tool_version(tool: str, binary: Path) -> str | None:
    """The version a kind or istioctl binary reports about itself, or None if it cannot say."""
    if tool == "istioctl":
        return istioctl_version(binary)
    argv = [str(binary), "version"]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=VERSION_PROBE_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    # `kind v0.17.0 go1.19.2 linux/amd64`
    match = RELEASE.search(result.stdout)
    return match.group(0) if match else None


def istioctl_version(binary: Path) -> str | None:
    """The client version `istioctl version --remote=false` reports ("1.10.6"), or None if it cannot say."""
    try:
        result = subprocess.run(
            [str(binary), "version", "--remote=false"],
            capture_output=True,
            text=True,
            timeout=VERSION_PROBE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    # 1.9/1.10 print just "1.10.6"; newer releases print "client version: 1.21.6".
    match = RELEASE.search(result.stdout) if result.returncode == 0 else None
    return match.group(0).removeprefix("v") if match else None


def _explicit(tool: str, given: str) -> Path:
    path = Path(given).expanduser()
    if not path.exists():
        raise ToolError(f"{FLAGS[tool]} {given}: no such file")
    if not path.is_file() or not os.access(path, os.X_OK):
        raise ToolError(f"{FLAGS[tool]} {given}: not an executable file")
    return path.absolute()
