"""Downloading a pinned tool: verified by sha256 before it is ever made executable, and cached.

A run must be reproducible on a laptop and in CI alike, so a tool that is neither given nor on PATH (tools.py) is
downloaded as its pin says (pins.py), verified by sha256 and cached under the user's cache directory
(`<user cache>/mesh-inbound-conformance/tools/<tool>/<version>/`). The sha256 comes from fixtures/tools.yaml when
it pins one; otherwise from the publisher's own checksum file, and the log line says so and prints the computed
value so it can be pinned. Every failure is a `ToolError` with a one-line message (what, from where, why).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import httpx
import platformdirs

from conformance.backends.kind.pins import SHA256, ToolError, ToolPin, one_line, safe_member
from conformance.backends.kind.progress import Meter, megabytes, say

log = logging.getLogger(__name__)

TIMEOUT_ENV = "MIC_TOOLS_TIMEOUT"
# A slow CI runner fetching a 100 MB istioctl archive through a proxy needs minutes, not the seconds httpx defaults to.
DEFAULT_TIMEOUT = 300.0
CACHE_APP = "mesh-inbound-conformance"

_CHUNK = 1 << 16


class ChecksumMismatch(ToolError):
    """A download's sha256 is not the expected one: nothing was installed, and both sums are in the message."""

    def __init__(self, file: str, expected: str, actual: str) -> None:
        super().__init__(f"checksum mismatch for {file}: expected sha256 {expected}, got {actual}")
        self.file = file
        self.expected = expected
        self.actual = actual


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
    if pin.member is not None and not safe_member(pin.member):
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
    say(progress, f"{pin.tool} {pin.version}: {pin.asset} ({megabytes(size)}) sha256 {actual} {how}")
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
        if not SHA256.fullmatch(digest):
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
            meter = Meter(f"{pin.tool} {pin.version}", pin.url, _content_length(response), progress)
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
        raise ToolError(f"cannot extract {wanted} from {pin.asset}: {one_line(exc)}") from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


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
        if len(fields) == 2 and SHA256.fullmatch(fields[0]):
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
        raise ToolError(f"cannot create the tool cache {directory}: {one_line(exc)}") from exc
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


def _content_length(response: httpx.Response) -> int | None:
    try:
        length = int(response.headers.get("content-length", ""))
    except ValueError:
        return None
    return length if length > 0 else None


def _describe(exc: BaseException) -> str:
    text = one_line(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text and text != name else name
