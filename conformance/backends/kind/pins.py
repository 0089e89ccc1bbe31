"""Where kind and istioctl releases are downloaded from, and the sha256 each download must have.

fixtures/tools.yaml pins each tool's URL template and, per version and platform, the sha256 of its download; a
version it does not pin is verified against the publisher's own checksum file instead (download.py says which).
A custom build's own istioctl (`--istioctl-url`) is a pin made from its URL. Every problem is a `ToolError` with a
one-line message (what, from where, why).

Downloads can be pointed at a local or air-gapped mirror (`mirror=` or `MIC_TOOLS_MIRROR`): the mirror replaces the
scheme and host of every URL and keeps the path, so a mirror serves e.g.
`<mirror>/kubernetes-sigs/kind/releases/download/v0.17.0/kind-linux-amd64`.
The suite's own tests use this to download from a server on 127.0.0.1.
"""

from __future__ import annotations

import os
import platform as _platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml
from packaging.version import InvalidVersion, Version

from conformance.backends.base import BackendError
from conformance.world import resources

TOOLS = ("kind", "istioctl")
PLATFORMS = ("linux-amd64", "linux-arm64", "darwin-amd64", "darwin-arm64")
MIRROR_ENV = "MIC_TOOLS_MIRROR"
PINS_FORMAT = "mesh-inbound-conformance/tools"

SHA256 = re.compile(r"[0-9a-f]{64}")
RELEASE = re.compile(r"v?\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?")


class ToolError(BackendError):
    """kind or istioctl could not be had; the one-line message says which, from where and why."""


@dataclass(frozen=True)
class ToolPin:
    """Where one tool release for one platform is downloaded from, and how its bytes are verified."""

    tool: str
    version: str
    url: str
    sha256: str | None
    checksum_url: str | None
    member: str | None

    @property
    def asset(self) -> str:
        """The downloaded file's name (the last segment of the URL), as named in messages and checksum files."""
        return PurePosixPath(urlsplit(self.url).path).name or self.tool

    @property
    def executable_name(self) -> str:
        """The name the executable gets in the cache: the archive member's for istioctl, the tool's otherwise."""
        return PurePosixPath(self.member).name if self.member else self.tool


def load_pins(path: Path | None = None) -> dict[str, Any]:
    """fixtures/tools.yaml (or `path`), checked enough that a typo fails here rather than as a bad download."""
    source = path if path is not None else resources.fixture("tools.yaml")
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ToolError(f"cannot read the tool pins {source}: {one_line(exc)}") from exc
    if not isinstance(data, dict) or data.get("format") != PINS_FORMAT or data.get("version") != 1:
        raise ToolError(f"{source} is not a {PINS_FORMAT} version 1 document")
    tools = data.get("tools")
    if not isinstance(tools, dict) or any(not isinstance(tools.get(tool), dict) for tool in TOOLS):
        raise ToolError(f"{source}: `tools` must describe {', '.join(TOOLS)}")
    for tool in TOOLS:
        if not isinstance(tools[tool].get("url"), str):
            raise ToolError(f"{source}: tools.{tool}.url is missing")
        member = tools[tool].get("member")
        if member is not None and not safe_member(str(member)):
            raise ToolError(f"{source}: tools.{tool}.member {member!r} is not a plain relative path")
    table = data.get("sha256") or {}
    if not isinstance(table, dict):
        raise ToolError(f"{source}: `sha256` must map tool -> version -> platform -> sha256")
    for tool, versions in table.items():
        for version, platforms in (versions or {}).items():
            for plat, digest in (platforms or {}).items():
                if plat not in PLATFORMS:
                    raise ToolError(f"{source}: sha256.{tool}.{version} names unknown platform {plat!r}")
                if digest is not None and not SHA256.fullmatch(str(digest)):
                    raise ToolError(f"{source}: sha256.{tool}.{version}.{plat} is not 64 lowercase hex digits")
    return data


def current_platform() -> str:
    """The running machine as the pins name it (linux-amd64, linux-arm64, darwin-amd64, darwin-arm64)."""
    if sys.platform.startswith("linux"):
        os_name = "linux"
    elif sys.platform == "darwin":
        os_name = "darwin"
    else:
        raise ToolError(f"no kind/istioctl downloads for {sys.platform}: pass the binaries by path")
    machine = _platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    if arch is None:
        raise ToolError(f"no kind/istioctl downloads for CPU {machine}: pass the binaries by path")
    return f"{os_name}-{arch}"


def pin_for(tool: str, version: str, platform: str | None = None, mirror: str | None = None) -> ToolPin:
    """The download of `tool` at `version` for `platform` (default: this machine), through `mirror` if any.

    Any release version is accepted, pinned in fixtures/tools.yaml or not: an unpinned one is verified against the
    publisher's checksum file, which is how a new release gets tried before its sha256 is pinned.
    """
    return _pin_from(load_pins(), tool, version, platform, mirror)


def _pin_from(pins: dict[str, Any], tool: str, version: str, platform: str | None, mirror: str | None) -> ToolPin:
    if tool not in TOOLS:
        raise ToolError(f"unknown tool {tool!r}: one of {', '.join(TOOLS)}")
    spec: dict[str, Any] = pins["tools"][tool]
    if not RELEASE.fullmatch(version):
        raise ToolError(f"{tool} version {version!r} is not a release version (like 1.10.6 or v0.17.0)")
    bare = version.removeprefix("v")
    version = f"{spec.get('version_prefix') or ''}{bare}"
    plat = platform or current_platform()
    if plat not in PLATFORMS:
        raise ToolError(f"unknown platform {plat!r}: one of {', '.join(PLATFORMS)}")
    for gap in spec.get("unavailable") or []:
        if gap.get("platform") == plat and _older(bare, str(gap.get("before"))):
            raise ToolError(f"{tool} {version} has no {plat} build: {gap.get('why', 'not published')}")
    os_name, arch = plat.split("-")
    names: dict[str, str] = spec.get("asset_platform") or {}
    fields = {"version": version, "os": os_name, "arch": arch, "asset_platform": names.get(plat, plat)}
    url = str(spec["url"]).format(**fields)
    template = spec.get("checksum_url")
    checksum_url = str(template).format(url=url, **fields) if template else None
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    if mirror:
        url = mirrored(url, mirror)
        checksum_url = mirrored(checksum_url, mirror) if checksum_url else None
    digest = (((pins.get("sha256") or {}).get(tool) or {}).get(version) or {}).get(plat)
    member = spec.get("member")
    return ToolPin(
        tool=tool,
        version=version,
        url=url,
        sha256=str(digest) if digest else None,
        checksum_url=checksum_url,
        member=str(member) if member else None,
    )


def url_pin(url: str, sha256: str | None, version: str, mirror: str | None = None) -> ToolPin:
    """A custom build's own istioctl at `url` (`--istioctl-url`): a binary, or a .tar.gz holding `istioctl`.

    Verified by `sha256` when given, else by the publisher's `<url>.sha256` beside it (Istio's own convention).
    Cached under the version the build claims.
    """
    if sha256 is not None and not SHA256.fullmatch(sha256.lower()):
        raise ToolError(f"--istioctl-sha256 {sha256!r} is not 64 hex digits")
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    checksum_url = f"{url}.sha256"
    if mirror:
        url, checksum_url = mirrored(url, mirror), mirrored(checksum_url, mirror)
    path = urlsplit(url).path
    member = "istioctl" if path.endswith((".tar.gz", ".tgz")) else None
    return ToolPin("istioctl", f"custom-{version}", url, sha256.lower() if sha256 else None, checksum_url, member)


def safe_member(member: str) -> bool:
    """A member name that stays inside the archive: relative, no `..`, not empty."""
    pure = PurePosixPath(member)
    return bool(member) and not pure.is_absolute() and ".." not in pure.parts and bool(pure.parts)


def mirrored(url: str, mirror: str) -> str:
    """`url` with its scheme and host replaced by `mirror` (which may carry a path prefix); the path is kept."""
    base = urlsplit(mirror)
    if base.scheme not in ("http", "https") or not base.netloc:
        raise ToolError(f"tools mirror {mirror!r} is not an http(s) URL")
    parts = urlsplit(url)
    return mirror.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


def _older(version: str, than: str) -> bool:
    try:
        return Version(version) < Version(than)
    except InvalidVersion:
        return False


def one_line(value: object) -> str:
    """A message or exception on one line (whitespace runs collapsed)."""
    return " ".join(str(value).split())
