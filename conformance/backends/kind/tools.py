"""kind and istioctl for the kind backend: given by path, found on PATH, or downloaded at a pinned version.

(No kubectl: the API work goes through the official Python client, so kubectl's version skew does not matter.)
A run must be reproducible on a laptop and in CI alike, so a tool that is neither given (`--kind-bin`,
`--istioctl`) nor on PATH is downloaded at the version fixtures/tools.yaml pins, verified by
sha256 before it is ever made executable, and cached under the user's cache directory
(`<user cache>/mesh-inbound-conformance/tools/<tool>/<version>/`). The sha256 comes from fixtures/tools.yaml when
it pins one; otherwise from the publisher's own checksum file, and the log line says so and prints the computed
value so it can be pinned. Every failure is a `ToolError` with a one-line message (what, from where, why).

Downloads can be pointed at a local or air-gapped mirror (`mirror=` or `MIC_TOOLS_MIRROR`): the mirror replaces the
scheme and host of every URL and keeps the path, so a mirror serves e.g.
`<mirror>/kubernetes-sigs/kind/releases/download/v0.17.0/kind-linux-amd64`.
The suite's own tests use this to download from a server on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform as _platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx
import platformdirs
import yaml
from packaging.version import InvalidVersion, Version

from conformance.backends.base import BackendError
from conformance.world import resources

log = logging.getLogger(__name__)

TOOLS = ("kind", "istioctl")
# The option that names each tool's binary, so an error about an explicit path quotes what the user typed.
FLAGS = {"kind": "--kind-bin", "istioctl": "--istioctl"}
PLATFORMS = ("linux-amd64", "linux-arm64", "darwin-amd64", "darwin-arm64")
MIRROR_ENV = "MIC_TOOLS_MIRROR"
TIMEOUT_ENV = "MIC_TOOLS_TIMEOUT"
# A slow CI runner fetching a 100 MB istioctl archive through a proxy needs minutes, not the seconds httpx defaults to.
DEFAULT_TIMEOUT = 300.0
PINS_FORMAT = "mesh-inbound-conformance/tools"
CACHE_APP = "mesh-inbound-conformance"
# `istioctl version --remote=false` loads no kubeconfig, but a broken binary must not hang tool resolution.
VERSION_PROBE_TIMEOUT = 60.0

_SHA256 = re.compile(r"[0-9a-f]{64}")
_RELEASE = re.compile(r"v?\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?")
_CHUNK = 1 << 16
_METER_INTERVAL = 0.1


class ToolError(BackendError):
    """kind or istioctl could not be had; the one-line message says which, from where and why."""


class ChecksumMismatch(ToolError):
    """A download's sha256 is not the expected one: nothing was installed, and both sums are in the message."""

    def __init__(self, file: str, expected: str, actual: str) -> None:
        super().__init__(f"checksum mismatch for {file}: expected sha256 {expected}, got {actual}")
        self.file = file
        self.expected = expected
        self.actual = actual


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


# --- the pins -----------------------------------------------------------------------------------------------------


def load_pins(path: Path | None = None) -> dict[str, Any]:
    """fixtures/tools.yaml (or `path`), checked enough that a typo fails here rather than as a bad download."""
    source = path if path is not None else resources.fixture("tools.yaml")
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ToolError(f"cannot read the tool pins {source}: {_one_line(exc)}") from exc
    if not isinstance(data, dict) or data.get("format") != PINS_FORMAT or data.get("version") != 1:
        raise ToolError(f"{source} is not a {PINS_FORMAT} version 1 document")
    tools = data.get("tools")
    if not isinstance(tools, dict) or any(not isinstance(tools.get(tool), dict) for tool in TOOLS):
        raise ToolError(f"{source}: `tools` must describe {', '.join(TOOLS)}")
    for tool in TOOLS:
        if not isinstance(tools[tool].get("url"), str):
            raise ToolError(f"{source}: tools.{tool}.url is missing")
        member = tools[tool].get("member")
        if member is not None and not _safe_member(str(member)):
            raise ToolError(f"{source}: tools.{tool}.member {member!r} is not a plain relative path")
    table = data.get("sha256") or {}
    if not isinstance(table, dict):
        raise ToolError(f"{source}: `sha256` must map tool -> version -> platform -> sha256")
    for tool, versions in table.items():
        for version, platforms in (versions or {}).items():
            for plat, digest in (platforms or {}).items():
                if plat not in PLATFORMS:
                    raise ToolError(f"{source}: sha256.{tool}.{version} names unknown platform {plat!r}")
                if digest is not None and not _SHA256.fullmatch(str(digest)):
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
    if not _RELEASE.fullmatch(version):
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
        url = _mirrored(url, mirror)
        checksum_url = _mirrored(checksum_url, mirror) if checksum_url else None
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


# --- finding and resolving ----------------------------------------------------------------------------------------


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
    match = _RELEASE.search(result.stdout)
    return match.group(0) if match else None


def url_pin(url: str, sha256: str | None, version: str, mirror: str | None = None) -> ToolPin:
    """A custom build's own istioctl at `url` (`--istioctl-url`): a binary, or a .tar.gz holding `istioctl`.

    Verified by `sha256` when given, else by the publisher's `<url>.sha256` beside it (Istio's own convention).
    Cached under the version the build claims.
    """
    if sha256 is not None and not _SHA256.fullmatch(sha256.lower()):
        raise ToolError(f"--istioctl-sha256 {sha256!r} is not 64 hex digits")
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    checksum_url = f"{url}.sha256"
    if mirror:
        url, checksum_url = _mirrored(url, mirror), _mirrored(checksum_url, mirror)
    path = urlsplit(url).path
    member = "istioctl" if path.endswith((".tar.gz", ".tgz")) else None
    return ToolPin("istioctl", f"custom-{version}", url, sha256.lower() if sha256 else None, checksum_url, member)


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
    match = _RELEASE.search(result.stdout) if result.returncode == 0 else None
    return match.group(0).removeprefix("v") if match else None


def _explicit(tool: str, given: str) -> Path:
    path = Path(given).expanduser()
    if not path.exists():
        raise ToolError(f"{FLAGS[tool]} {given}: no such file")
    if not path.is_file() or not os.access(path, os.X_OK):
        raise ToolError(f"{FLAGS[tool]} {given}: not an executable file")
    return path.absolute()


# --- downloading --------------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Where downloads are kept: `<user cache dir>/mesh-inbound-conformance/tools` (XDG_CACHE_HOME on Linux)."""
    return Path(platformdirs.user_cache_dir(CACHE_APP)) / "tools"


def download(
    pin: ToolPin,
    cache_dir: Path | None = None,
    client: httpx.Client | None = None,
    progress: bool = True,
) -> Path:
    """The executable for `pin` in the cache, downloading and verifying it unless a verified copy is there.

    The file is written to a temporary name in the cache and renamed into place only after its sha256 matched,
    so an interrupted or tampered download never leaves an executable behind. A `<name>.sha256` marker (in
    `sha256sum` format: the executable's sum, then the downloaded file's) is written after verification; a later
    call re-hashes the local file against it instead of downloading again. Timeouts: the `client`'s, else
    MIC_TOOLS_TIMEOUT seconds (default 300).
    """
    if pin.member is not None and not _safe_member(pin.member):
        raise ToolError(f"{pin.tool} {pin.version}: archive member {pin.member!r} is not a plain relative path")
    root = cache_dir if cache_dir is not None else default_cache_dir()
    directory = root / pin.tool / pin.version
    executable = directory / pin.executable_name
    marker = directory / f"{pin.executable_name}.sha256"
    if _cached(pin, executable, marker):
        log.debug("%s %s: using the verified copy %s", pin.tool, pin.version, executable)
        return executable

    http = client if client is not None else _new_client()
    created: list[Path] = []
    scratch: list[Path] = []
    try:
        created = _make_dirs(directory)
        expected, checksum_source = _expected_sha256(pin, http)
        downloaded, actual, size = _fetch(pin, http, directory, progress)
        scratch.append(downloaded)
        if actual != expected:
            raise ChecksumMismatch(pin.url, expected, actual)
        staged = downloaded
        if pin.member is not None:
            staged = _extract(pin, downloaded, directory)
            scratch.append(staged)
        staged.chmod(0o755)
        executable_sha = actual if staged == downloaded else _sha256_file(staged)
        marker.unlink(missing_ok=True)
        os.replace(staged, executable)
        _write_marker(marker, {executable.name: executable_sha, _source_id(pin): actual})
    except BaseException:
        for path in scratch:
            path.unlink(missing_ok=True)
        for path in reversed(created):
            _rmdir_if_empty(path)
        raise
    finally:
        if client is None:
            http.close()
        for path in scratch:
            path.unlink(missing_ok=True)

    if checksum_source is None:
        how = "matches the sha256 pinned in fixtures/tools.yaml"
    else:
        how = (
            f"matches the publisher's checksum file {checksum_source} "
            "(not pinned in fixtures/tools.yaml: add this sha256 there to pin it)"
        )
    _say(progress, f"{pin.tool} {pin.version}: {pin.asset} ({_megabytes(size)}) sha256 {actual} {how}")
    return executable


def parse_checksum_file(text: str, asset: str) -> str:
    """The sha256 a publisher's checksum file gives for `asset`: "HASH  NAME" lines (sha256sum) or a bare "HASH".

    ValueError (with the reason) when the file is not in that format or names another file, because a checksum
    for the wrong file would verify nothing.
    """
    entries: list[tuple[str, str | None]] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        digest = fields[0].lower()
        if not _SHA256.fullmatch(digest):
            raise ValueError(f"{line.strip()[:80]!r} is not 'SHA256  NAME'")
        name = PurePosixPath(fields[1].lstrip("*")).name if len(fields) > 1 else None
        entries.append((digest, name))
    if not entries:
        raise ValueError("it holds no checksum")
    for digest, name in entries:
        if name == asset:
            return digest
    if len(entries) == 1 and entries[0][1] is None:
        return entries[0][0]
    if len(entries) == 1:
        raise ValueError(f"it is for {entries[0][1]}, not {asset}")
    raise ValueError(f"it has no line for {asset}")


def _cached(pin: ToolPin, executable: Path, marker: Path) -> bool:
    """Whether the cache holds a copy of this download that was verified and has not changed since."""
    try:
        recorded = _read_marker(marker)
    except (OSError, UnicodeDecodeError):
        return False
    executable_sha = recorded.get(executable.name)
    source_sha = recorded.get(_source_id(pin))
    if executable_sha is None or source_sha is None or not executable.is_file():
        return False
    if pin.sha256 is not None and source_sha != pin.sha256.lower():
        log.info("%s %s: the cached copy was verified against another sha256; downloading again", pin.tool, pin.version)
        return False
    try:
        unchanged = _sha256_file(executable) == executable_sha
    except OSError:
        return False
    if not unchanged:
        log.warning("%s: changed since it was verified; downloading it again", executable)
        return False
    return os.access(executable, os.X_OK)


def _expected_sha256(pin: ToolPin, http: httpx.Client) -> tuple[str, str | None]:
    """The sha256 to check the download against, and the checksum file it came from (None: pinned)."""
    if pin.sha256:
        return pin.sha256.lower(), None
    if not pin.checksum_url:
        raise ToolError(
            f"cannot verify {pin.tool} {pin.version}: no sha256 pinned in fixtures/tools.yaml "
            "and no publisher checksum file to check it against"
        )
    try:
        response = http.get(pin.checksum_url, follow_redirects=True)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise ToolError(
            f"cannot verify {pin.tool} {pin.version}: no sha256 pinned and the publisher's checksum file "
            f"{pin.checksum_url} could not be fetched: {_describe(exc)}"
        ) from exc
    if response.status_code != 200:
        raise ToolError(
            f"cannot verify {pin.tool} {pin.version}: no sha256 pinned and the publisher's checksum file "
            f"{pin.checksum_url} could not be fetched: HTTP {response.status_code}"
        )
    try:
        return parse_checksum_file(response.text, pin.asset), pin.checksum_url
    except ValueError as exc:
        raise ToolError(f"cannot verify {pin.tool} {pin.version}: checksum file {pin.checksum_url}: {exc}") from exc


def _fetch(pin: ToolPin, http: httpx.Client, directory: Path, progress: bool) -> tuple[Path, str, int]:
    """Stream the download into a temporary file in `directory`, hashing as it goes: (file, sha256, bytes)."""
    fd, name = tempfile.mkstemp(dir=directory, prefix=f".{pin.asset}.", suffix=".part")
    path = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out, http.stream("GET", pin.url, follow_redirects=True) as response:
            if response.status_code != 200:
                raise ToolError(f"cannot download {pin.tool} {pin.version} from {pin.url}: HTTP {response.status_code}")
            meter = _Meter(f"{pin.tool} {pin.version}", pin.url, _content_length(response), progress)
            for chunk in response.iter_bytes(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                meter.update(size)
            meter.finish(size)
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
        path.unlink(missing_ok=True)
        raise ToolError(f"cannot download {pin.tool} {pin.version} from {pin.url}: {_describe(exc)}") from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, digest.hexdigest(), size


def _extract(pin: ToolPin, archive: Path, directory: Path) -> Path:
    """Copy the pin's member out of a verified .tar.gz into a temporary file, never through `tarfile.extract`.

    Only the one named member is read, and only if it is a regular file: links, devices and any other member
    names (`../x`, `/etc/x`) never reach the file system.
    """
    assert pin.member is not None
    wanted = str(PurePosixPath(pin.member))
    fd, name = tempfile.mkstemp(dir=directory, prefix=f".{pin.executable_name}.", suffix=".part")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, tarfile.open(archive, "r:gz") as tar:
            info = next((m for m in tar if str(PurePosixPath(m.name)) == wanted), None)
            if info is None:
                raise ToolError(f"{pin.asset} has no member {wanted}")
            if not info.isreg():
                raise ToolError(f"{pin.asset}: member {wanted} is not a regular file (links are not followed)")
            source = tar.extractfile(info)
            if source is None:
                raise ToolError(f"{pin.asset}: member {wanted} cannot be read")
            with source:
                shutil.copyfileobj(source, out, _CHUNK)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        path.unlink(missing_ok=True)
        raise ToolError(f"cannot extract {wanted} from {pin.asset}: {_one_line(exc)}") from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _safe_member(member: str) -> bool:
    """A member name that stays inside the archive: relative, no `..`, not empty."""
    pure = PurePosixPath(member)
    return bool(member) and not pure.is_absolute() and ".." not in pure.parts and bool(pure.parts)


def _source_id(pin: ToolPin) -> str:
    """What the marker calls the downloaded file: its URL path, which names the platform.

    An asset's name need not name its platform, and one cache may be shared by machines of different
    architectures (a home directory on NFS).
    """
    return urlsplit(pin.url).path.lstrip("/") or pin.asset


def _read_marker(marker: Path) -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in marker.read_text(encoding="utf-8").splitlines():
        fields = line.split(maxsplit=1)
        if len(fields) == 2 and _SHA256.fullmatch(fields[0]):
            entries[fields[1].strip()] = fields[0]
    return entries


def _write_marker(marker: Path, entries: dict[str, str]) -> None:
    """Write the marker atomically, so a reader sees either no marker or a whole one."""
    text = "".join(f"{digest}  {name}\n" for name, digest in entries.items())
    fd, name = tempfile.mkstemp(dir=marker.parent, prefix=f".{marker.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(name, marker)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _make_dirs(directory: Path) -> list[Path]:
    """Create `directory` and its parents; return the ones created, outermost first, for cleanup on failure."""
    missing: list[Path] = []
    for candidate in (directory, *directory.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolError(f"cannot create the tool cache {directory}: {_one_line(exc)}") from exc
    return list(reversed(missing))


def _rmdir_if_empty(directory: Path) -> None:
    with contextlib.suppress(OSError):
        directory.rmdir()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _new_client() -> httpx.Client:
    raw = os.environ.get(TIMEOUT_ENV)
    try:
        timeout = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        raise ToolError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if timeout <= 0:
        raise ToolError(f"{TIMEOUT_ENV}={raw!r} must be a positive number of seconds")
    return httpx.Client(
        timeout=httpx.Timeout(timeout),
        follow_redirects=True,
        headers={"User-Agent": f"{CACHE_APP} (tool download)"},
    )


def _mirrored(url: str, mirror: str) -> str:
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


def _content_length(response: httpx.Response) -> int | None:
    try:
        length = int(response.headers.get("content-length", ""))
    except ValueError:
        return None
    return length if length > 0 else None


def _describe(exc: BaseException) -> str:
    text = _one_line(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text and text != name else name


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def _stderr() -> TextIO:
    return sys.stderr


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _say(progress: bool, message: str) -> None:
    log.info("%s", message)
    if progress:
        print(message, file=_stderr(), flush=True)


class _Meter:
    """Download progress on stderr: one line rewritten in place on a terminal, else a line when it starts.

    A CI log must not fill with carriage-return frames, and a terminal user wants to see a 100 MB download move.
    """

    def __init__(self, label: str, url: str, total: int | None, enabled: bool) -> None:
        self.stream = _stderr()
        self.enabled = enabled
        self.tty = enabled and _isatty(self.stream)
        self.label = label
        self.total = total
        self.last = 0.0
        if enabled and not self.tty:
            size = f" ({_megabytes(total)})" if total else ""
            print(f"{label}: downloading {url}{size}", file=self.stream, flush=True)

    def update(self, done: int) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if now - self.last < _METER_INTERVAL:
            return
        self.last = now
        self._draw(done)

    def finish(self, done: int) -> None:
        if self.tty:
            self._draw(done)
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, done: int) -> None:
        if self.total:
            share = f"{_megabytes(done)} of {_megabytes(self.total)} ({100 * done // self.total}%)"
        else:
            share = _megabytes(done)
        self.stream.write(f"\r{self.label}: downloading {share}\x1b[K")
        self.stream.flush()
