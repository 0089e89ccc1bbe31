"""The kind backend's tool downloads, against a real HTTP server on 127.0.0.1 (no network, a few seconds)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import socket
import stat
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from conformance.backends.base import BackendError
from conformance.backends.kind import download, pins, tools
from conformance.backends.kind.download import ChecksumMismatch
from conformance.backends.kind.pins import ToolError, ToolPin

REPO = Path(__file__).resolve().parents[1]
FAKE_KIND = b"#!/bin/sh\necho 'kind v0.17.0 go1.19.2 linux/amd64'\n"
FAKE_ISTIOCTL = b"#!/bin/sh\necho 1.21.6\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Mirror:
    """Files served by path, and every request's path in arrival order."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.delays: dict[str, float] = {}
        self.requests: list[str] = []
        self.url = ""

    def serve(self, url: str, content: bytes) -> None:
        self.files[urlsplit(url).path] = content

    def serve_pin(self, pin: ToolPin, content: bytes, checksum: str | None = None) -> None:
        self.serve(pin.url, content)
        if checksum is not None:
            assert pin.checksum_url is not None
            self.serve(pin.checksum_url, checksum.encode())


class Server:
    """One HTTP server for the module (starting and stopping one per test would dominate the run time)."""

    def __init__(self) -> None:
        self.state = Mirror()
        self.url = ""


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    holder = Server()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state = holder.state
            state.requests.append(self.path)
            time.sleep(state.delays.get(self.path, 0.0))
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Quiet(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that timed out and hung up is what the timeout test wants

    httpd = Quiet(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    holder.url = f"http://127.0.0.1:{httpd.server_address[1]}/mirror"
    try:
        yield holder
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def mirror(server: Server) -> Mirror:
    server.state = Mirror()
    server.state.url = server.url
    return server.state


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    # trust_env=False: a proxy configured on the machine must not intercept requests to 127.0.0.1.
    with httpx.Client(trust_env=False, timeout=5.0) as http:
        yield http


@pytest.fixture(autouse=True)
def _no_mirror_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pins.MIRROR_ENV, raising=False)
    monkeypatch.delenv(download.TIMEOUT_ENV, raising=False)


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*")) if path.exists() else []


def istioctl_archive(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        if symlink is not None:
            link = tarfile.TarInfo(symlink)
            link.type = tarfile.SYMTYPE
            link.linkname = "/etc/passwd"
            tar.addfile(link)
    return buffer.getvalue()


# --- pins ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def unpinned_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """kind v0.21.0 and v0.25.0 without a pinned sha256 (the shipped pins have them): the publisher's checksum file
    is then what a download is verified against, which is the path these tests exercise."""
    shipped = pins.load_pins

    def load_pins(path: Path | None = None) -> dict[str, Any]:
        table = shipped(path)
        for version in ("v0.21.0", "v0.25.0"):
            table["sha256"]["kind"][version] = dict.fromkeys(table["sha256"]["kind"][version])
        return table

    monkeypatch.setattr(pins, "load_pins", load_pins)


def test_pins_cover_every_row_of_the_version_matrix() -> None:
    table = pins.load_pins()
    matrix = yaml.safe_load((REPO / "fixtures" / "versions.yaml").read_text())
    istioctl_versions = set(table["tools"]["istioctl"]["versions"])
    for row in matrix["rows"]:
        assert row["kind"] in table["tools"]["kind"]["versions"], row["name"]
        assert all(table["sha256"]["kind"][row["kind"]].values()), f"{row['name']}: kind {row['kind']} is not pinned"
        assert row["istio"] in istioctl_versions, row["name"]
        if "istioctl_precheck" in row:
            assert row["istioctl_precheck"] in istioctl_versions, row["name"]


def test_every_pinned_sha256_belongs_to_a_listed_release() -> None:
    table = pins.load_pins()
    listed = {
        "kind": set(table["tools"]["kind"]["versions"]),
        "istioctl": set(table["tools"]["istioctl"]["versions"]),
    }
    assert set(table["sha256"]) == set(listed)
    for tool, versions in table["sha256"].items():
        assert set(versions) == listed[tool], tool
        for platforms in versions.values():
            assert set(platforms) == set(pins.PLATFORMS)


def test_the_tools_are_kind_and_istioctl_and_no_kubectl_is_pinned() -> None:
    """The API work goes through the official Python client: kubectl is neither downloaded, pinned nor resolved."""
    assert pins.TOOLS == ("kind", "istioctl")
    assert set(tools.FLAGS) == set(pins.TOOLS)
    table = pins.load_pins()
    assert set(table["tools"]) == {"kind", "istioctl"}
    assert set(table["sha256"]) == {"kind", "istioctl"}
    text = (REPO / "fixtures" / "tools.yaml").read_text()
    assert "dl.k8s.io" not in text
    # Only the header's comment may say the word ("No kubectl: ..."); no key or value does.
    assert [line for line in text.splitlines() if "kubectl" in line.split("#", 1)[0]] == []
    assert not hasattr(tools, "kubectl_version_for")
    with pytest.raises(ToolError, match=r"^unknown tool 'kubectl': one of kind, istioctl$"):
        pins.pin_for("kubectl", "v1.20.15", "linux-amd64")
    with pytest.raises(ToolError, match=r"^unknown tool 'kubectl': one of kind, istioctl$"):
        tools.resolve_tool("kubectl", None, "v1.20.15")


def test_load_pins_rejects_a_malformed_sha256(tmp_path: Path) -> None:
    source = (REPO / "fixtures" / "tools.yaml").read_text()
    broken = tmp_path / "tools.yaml"
    broken.write_text(source.replace("a8c045856db33f839908b6acb90dc8ec397253ffdaef7baf058f5a542e009b9c", "a8c0"))
    with pytest.raises(ToolError, match=r"sha256\.kind\.v0\.17\.0\.linux-amd64"):
        pins.load_pins(broken)


def test_pin_urls_follow_each_publishers_naming() -> None:
    kind = pins.pin_for("kind", "0.17.0", "darwin-arm64")
    assert kind.version == "v0.17.0"
    assert kind.url == "https://github.com/kubernetes-sigs/kind/releases/download/v0.17.0/kind-darwin-arm64"
    assert kind.checksum_url == kind.url + ".sha256sum"
    assert kind.sha256 == "b9afee2707e711fb5d39049a361972f8c44ee7ce6145cafd0f7e4b47ceec1409"
    assert kind.member is None
    istioctl = pins.pin_for("istioctl", "v1.10.6", "darwin-amd64")
    assert istioctl.version == "1.10.6"
    assert istioctl.url == "https://github.com/istio/istio/releases/download/1.10.6/istioctl-1.10.6-osx.tar.gz"
    assert istioctl.member == "istioctl"
    assert istioctl.checksum_url == istioctl.url + ".sha256"
    assert istioctl.sha256 is None
    assert pins.pin_for("istioctl", "1.10.6", "darwin-arm64").asset == "istioctl-1.10.6-osx-arm64.tar.gz"


def test_pin_for_refuses_what_cannot_be_downloaded() -> None:
    with pytest.raises(ToolError, match="no darwin-arm64 build"):
        pins.pin_for("istioctl", "1.9.9", "darwin-arm64")
    with pytest.raises(ToolError, match="not a release version"):
        pins.pin_for("kind", "latest", "linux-amd64")
    with pytest.raises(ToolError, match="unknown tool"):
        pins.pin_for("helm", "v3.0.0", "linux-amd64")
    with pytest.raises(ToolError, match="unknown platform"):
        pins.pin_for("kind", "v0.17.0", "windows-amd64")
    with pytest.raises(ToolError, match="not an http"):
        pins.pin_for("kind", "v0.17.0", "linux-amd64", mirror="file:///srv/mirror")


def test_mirror_replaces_scheme_and_host_and_keeps_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    pin = pins.pin_for("kind", "v0.20.0", "linux-amd64", mirror="http://10.0.0.5:8080/tools/")
    assert pin.url == "http://10.0.0.5:8080/tools/kubernetes-sigs/kind/releases/download/v0.20.0/kind-linux-amd64"
    assert pin.checksum_url == pin.url + ".sha256sum"
    assert pin.sha256 == "513a7213d6d3332dd9ef27c24dab35e5ef10a04fa27274fe1c14d8a246493ded"  # the mirror changes no pin
    monkeypatch.setenv(pins.MIRROR_ENV, "https://mirror.example")
    istioctl = pins.pin_for("istioctl", "1.10.6", "linux-amd64")
    assert (
        istioctl.url == "https://mirror.example/istio/istio/releases/download/1.10.6/istioctl-1.10.6-linux-amd64.tar.gz"
    )
    assert istioctl.checksum_url == istioctl.url + ".sha256"


def test_parse_checksum_file_formats() -> None:
    digest = sha256(b"x")
    assert download.parse_checksum_file(f"{digest}  kind-linux-amd64\n", "kind-linux-amd64") == digest
    assert download.parse_checksum_file(f"{digest} *kind-linux-amd64", "kind-linux-amd64") == digest
    assert download.parse_checksum_file(f"{digest.upper()}\n", "kind-linux-amd64") == digest  # a bare hash
    assert (
        download.parse_checksum_file(
            f"{digest} istioctl-1.10.6-linux-amd64.tar.gz\n", "istioctl-1.10.6-linux-amd64.tar.gz"
        )
        == digest
    )
    two = f"{sha256(b'y')}  other\n{digest}  dist/istioctl.tar.gz\n"
    assert download.parse_checksum_file(two, "istioctl.tar.gz") == digest
    with pytest.raises(ValueError, match="it is for other, not kind-linux-amd64"):
        download.parse_checksum_file(f"{digest}  other\n", "kind-linux-amd64")
    with pytest.raises(ValueError, match="not 'SHA256  NAME'"):
        download.parse_checksum_file("<html>Not Found</html>", "kind-linux-amd64")
    with pytest.raises(ValueError, match="no checksum"):
        download.parse_checksum_file("\n", "kind-linux-amd64")


# --- downloads ----------------------------------------------------------------------------------------------------


def test_download_verifies_the_pinned_sha256_and_reuses_the_cache(
    mirror: Mirror, client: httpx.Client, tmp_path: Path
) -> None:
    pin = dataclasses.replace(
        pins.pin_for("kind", "v0.17.0", "linux-amd64", mirror=mirror.url), sha256=sha256(FAKE_KIND)
    )
    mirror.serve_pin(pin, FAKE_KIND)
    cache = tmp_path / "cache"

    first = download.download(pin, cache_dir=cache, client=client, progress=False)

    assert first == cache / "kind" / "v0.17.0" / "kind"
    assert first.read_bytes() == FAKE_KIND
    assert stat.S_IMODE(first.stat().st_mode) == 0o755
    marker = first.with_name("kind.sha256").read_text()
    assert f"{sha256(FAKE_KIND)}  kind\n" in marker
    assert f"{sha256(FAKE_KIND)}  mirror/kubernetes-sigs/kind/releases/download/v0.17.0/kind-linux-amd64\n" in marker
    assert mirror.requests == [urlsplit(pin.url).path]
    assert [p.name for p in files_under(cache) if p.is_file()] == ["kind", "kind.sha256"]

    second = download.download(pin, cache_dir=cache, client=client, progress=False)

    assert second == first
    assert len(mirror.requests) == 1, "a verified copy in the cache is used without asking the server"


def test_a_changed_cached_copy_is_downloaded_again(mirror: Mirror, client: httpx.Client, tmp_path: Path) -> None:
    pin = dataclasses.replace(
        pins.pin_for("kind", "v0.17.0", "linux-amd64", mirror=mirror.url), sha256=sha256(FAKE_KIND)
    )
    mirror.serve_pin(pin, FAKE_KIND)
    path = download.download(pin, cache_dir=tmp_path, client=client, progress=False)
    path.write_bytes(b"#!/bin/sh\necho tampered\n")

    again = download.download(pin, cache_dir=tmp_path, client=client, progress=False)

    assert again.read_bytes() == FAKE_KIND
    assert len(mirror.requests) == 2


def test_pinned_sha256_mismatch_names_the_file_and_both_sums_and_leaves_nothing(
    mirror: Mirror, client: httpx.Client, tmp_path: Path
) -> None:
    pin = pins.pin_for("kind", "v0.17.0", "linux-amd64", mirror=mirror.url)
    assert pin.sha256 == "a8c045856db33f839908b6acb90dc8ec397253ffdaef7baf058f5a542e009b9c"
    mirror.serve_pin(pin, FAKE_KIND)
    cache = tmp_path / "cache"

    with pytest.raises(ChecksumMismatch) as caught:
        download.download(pin, cache_dir=cache, client=client, progress=False)

    message = str(caught.value)
    assert message == f"checksum mismatch for {pin.url}: expected sha256 {pin.sha256}, got {sha256(FAKE_KIND)}"
    assert "kind-linux-amd64" in message
    assert isinstance(caught.value, ToolError)
    assert isinstance(caught.value, BackendError)
    assert files_under(cache) == [], "no half-downloaded or unverified file, no empty directory"


def test_unpinned_download_is_checked_against_the_publishers_checksum_file(
    mirror: Mirror, client: httpx.Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pin = pins.pin_for("kind", "v0.17.0", "linux-amd64", mirror=mirror.url)
    pin = dataclasses.replace(pin, sha256=None)
    mirror.serve_pin(pin, FAKE_KIND, checksum=f"{sha256(FAKE_KIND)}  kind-linux-amd64\n")

    path = download.download(pin, cache_dir=tmp_path, client=client)

    assert path.read_bytes() == FAKE_KIND
    err = capsys.readouterr().err
    assert "publisher's checksum file" in err
    assert f"checksum file {pin.checksum_url} " in err
    assert f"sha256 {sha256(FAKE_KIND)} matches the publisher's checksum file" in err
    assert "not pinned in fixtures/tools.yaml" in err


def test_a_checksum_file_that_holds_a_bare_hash_is_used(
    unpinned_kind: None, mirror: Mirror, client: httpx.Client, tmp_path: Path
) -> None:
    """A checksum file (e.g. on a mirror) may hold only "HASH", with no file name: it is taken for the asset."""
    pin = pins.pin_for("kind", "v0.25.0", "linux-amd64", mirror=mirror.url)
    assert pin.sha256 is None, "unpinned here: the publisher's file is used"
    mirror.serve_pin(pin, FAKE_KIND, checksum=sha256(FAKE_KIND))

    path = download.download(pin, cache_dir=tmp_path, client=client, progress=False)

    assert path == tmp_path / "kind" / "v0.25.0" / "kind"
    assert path.read_bytes() == FAKE_KIND


def test_unpinned_and_no_checksum_file_is_an_error(mirror: Mirror, client: httpx.Client, tmp_path: Path) -> None:
    pin = pins.pin_for("istioctl", "1.10.6", "linux-amd64", mirror=mirror.url)
    mirror.serve_pin(pin, istioctl_archive({"istioctl": FAKE_ISTIOCTL}))  # no .sha256 beside it

    with pytest.raises(ToolError) as caught:
        download.download(pin, cache_dir=tmp_path / "cache", client=client, progress=False)

    assert str(caught.value) == (
        "cannot verify istioctl 1.10.6: no sha256 pinned and the publisher's checksum file "
        f"{pin.checksum_url} could not be fetched: HTTP 404"
    )
    assert files_under(tmp_path / "cache") == []
    assert urlsplit(pin.url).path not in mirror.requests, "nothing unverifiable is downloaded"

    with pytest.raises(ToolError, match="no publisher checksum file"):
        download.download(dataclasses.replace(pin, checksum_url=None), cache_dir=tmp_path, client=client)


def test_checksum_file_for_another_file_is_refused(mirror: Mirror, client: httpx.Client, tmp_path: Path) -> None:
    pin = dataclasses.replace(pins.pin_for("kind", "v0.20.0", "linux-amd64", mirror=mirror.url), sha256=None)
    mirror.serve_pin(pin, FAKE_KIND, checksum=f"{sha256(FAKE_KIND)}  kind-darwin-arm64\n")

    with pytest.raises(ToolError, match="is for kind-darwin-arm64, not kind-linux-amd64"):
        download.download(pin, cache_dir=tmp_path, client=client, progress=False)


def test_http_404_is_a_one_line_error(mirror: Mirror, client: httpx.Client, tmp_path: Path) -> None:
    pin = pins.pin_for("istioctl", "1.10.6", "linux-amd64", mirror=mirror.url)
    assert pin.checksum_url is not None
    mirror.serve(pin.checksum_url, f"{'0' * 64} {pin.asset}\n".encode())  # the archive itself is missing

    with pytest.raises(ToolError) as caught:
        download.download(pin, cache_dir=tmp_path / "cache", client=client, progress=False)

    assert str(caught.value) == f"cannot download istioctl 1.10.6 from {pin.url}: HTTP 404"
    assert files_under(tmp_path / "cache") == []


def test_network_errors_are_one_line(client: httpx.Client, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    pin = dataclasses.replace(
        pins.pin_for("kind", "v0.17.0", "linux-amd64", mirror=f"http://127.0.0.1:{closed_port}"),
        sha256=sha256(FAKE_KIND),
    )

    with pytest.raises(ToolError) as caught:
        download.download(pin, cache_dir=tmp_path / "cache", client=client, progress=False)

    message = str(caught.value)
    assert message.startswith(f"cannot download kind v0.17.0 from {pin.url}: ConnectError")
    assert "\n" not in message
    assert files_under(tmp_path / "cache") == []


def test_timeouts_are_one_line_errors(mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pin = dataclasses.replace(
        pins.pin_for("kind", "v0.17.0", "linux-amd64", mirror=mirror.url), sha256=sha256(FAKE_KIND)
    )
    mirror.serve_pin(pin, FAKE_KIND)
    mirror.delays[urlsplit(pin.url).path] = 0.5
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(download.TIMEOUT_ENV, "0.1")  # the client download() makes itself reads this

    with pytest.raises(ToolError, match=r"^cannot download kind v0\.17\.0 from .*: ReadTimeout"):
        download.download(pin, cache_dir=tmp_path, progress=False)


# --- istioctl archives --------------------------------------------------------------------------------------------


def test_istioctl_is_extracted_from_the_verified_archive(mirror: Mirror, client: httpx.Client, tmp_path: Path) -> None:
    pin = pins.pin_for("istioctl", "1.21.6", "linux-amd64", mirror=mirror.url)
    archive = istioctl_archive({"istioctl": FAKE_ISTIOCTL, "README": b"not wanted"})
    mirror.serve_pin(pin, archive, checksum=f"{sha256(archive)} {pin.asset}\n")

    path = download.download(pin, cache_dir=tmp_path, client=client, progress=False)

    assert path == tmp_path / "istioctl" / "1.21.6" / "istioctl"
    assert path.read_bytes() == FAKE_ISTIOCTL
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert sorted(p.name for p in path.parent.iterdir()) == ["istioctl", "istioctl.sha256"]
    marker = path.with_name("istioctl.sha256").read_text()
    assert f"{sha256(FAKE_ISTIOCTL)}  istioctl\n" in marker
    assert f"{sha256(archive)}  mirror/istio/istio/releases/download/1.21.6/{pin.asset}\n" in marker


def test_a_traversing_member_name_is_rejected_before_any_download(
    mirror: Mirror, client: httpx.Client, tmp_path: Path
) -> None:
    archive = istioctl_archive({"../istioctl": FAKE_ISTIOCTL})
    pin = dataclasses.replace(
        pins.pin_for("istioctl", "1.21.6", "linux-amd64", mirror=mirror.url),
        sha256=sha256(archive),
        member="../istioctl",
    )
    mirror.serve_pin(pin, archive)

    with pytest.raises(ToolError, match="not a plain relative path"):
        download.download(pin, cache_dir=tmp_path / "cache", client=client, progress=False)

    assert mirror.requests == []
    assert not (tmp_path / "istioctl").exists()


def test_only_the_named_member_is_written(mirror: Mirror, client: httpx.Client, tmp_path: Path) -> None:
    archive = istioctl_archive({"../../escaped": b"x", "/tmp/absolute": b"y", "istioctl": FAKE_ISTIOCTL})
    pin = dataclasses.replace(
        pins.pin_for("istioctl", "1.21.6", "linux-amd64", mirror=mirror.url), sha256=sha256(archive)
    )
    mirror.serve_pin(pin, archive)
    cache = tmp_path / "a" / "b" / "cache"

    path = download.download(pin, cache_dir=cache, client=client, progress=False)

    assert path.read_bytes() == FAKE_ISTIOCTL
    written = {p.name for p in files_under(tmp_path) if p.is_file()}
    assert written == {"istioctl", "istioctl.sha256"}


def test_a_symlink_member_is_refused(mirror: Mirror, client: httpx.Client, tmp_path: Path) -> None:
    archive = istioctl_archive({}, symlink="istioctl")
    pin = dataclasses.replace(
        pins.pin_for("istioctl", "1.21.6", "linux-amd64", mirror=mirror.url), sha256=sha256(archive)
    )
    mirror.serve_pin(pin, archive)

    with pytest.raises(ToolError, match="not a regular file"):
        download.download(pin, cache_dir=tmp_path / "cache", client=client, progress=False)

    assert files_under(tmp_path / "cache") == []


def test_an_archive_without_the_member_is_refused(mirror: Mirror, client: httpx.Client, tmp_path: Path) -> None:
    archive = istioctl_archive({"bin/istioctl": FAKE_ISTIOCTL})
    pin = dataclasses.replace(
        pins.pin_for("istioctl", "1.21.6", "linux-amd64", mirror=mirror.url), sha256=sha256(archive)
    )
    mirror.serve_pin(pin, archive)

    with pytest.raises(ToolError, match=f"{pin.asset} has no member istioctl"):
        download.download(pin, cache_dir=tmp_path / "cache", client=client, progress=False)

    assert files_under(tmp_path / "cache") == []


# --- progress -----------------------------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_is_one_updating_line(
    mirror: Mirror, client: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pin = dataclasses.replace(
        pins.pin_for("kind", "v0.17.0", "linux-amd64", mirror=mirror.url), sha256=sha256(FAKE_KIND)
    )
    mirror.serve_pin(pin, FAKE_KIND)
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)

    download.download(pin, cache_dir=tmp_path, client=client)

    progress_line, verdict = terminal.getvalue().split("\n")[:2]
    assert progress_line.startswith("\rkind v0.17.0: downloading")
    assert "(100%)" in progress_line
    assert verdict.endswith("matches the sha256 pinned in fixtures/tools.yaml")
    assert terminal.getvalue().count("\n") == 2


def test_progress_in_a_log_is_a_line_at_start_and_end(
    mirror: Mirror, client: httpx.Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pin = dataclasses.replace(
        pins.pin_for("kind", "v0.17.0", "linux-amd64", mirror=mirror.url), sha256=sha256(FAKE_KIND)
    )
    mirror.serve_pin(pin, FAKE_KIND)

    download.download(pin, cache_dir=tmp_path, client=client)

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0] == f"kind v0.17.0: downloading {pin.url} (0.0 MB)"
    assert lines[1].startswith(f"kind v0.17.0: kind-linux-amd64 (0.0 MB) sha256 {sha256(FAKE_KIND)} matches")
    assert "\r" not in capsys.readouterr().err


# --- resolving ----------------------------------------------------------------------------------------------------


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_explicit_path_must_exist_and_be_executable(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match=r"^--kind-bin /nonexistent/kind: no such file$"):
        tools.resolve_tool("kind", "/nonexistent/kind", "v0.17.0")
    plain = tmp_path / "kind"
    plain.write_text("not executable")
    with pytest.raises(ToolError, match=r"^--kind-bin .*/kind: not an executable file$"):
        tools.resolve_tool("kind", str(plain), "v0.17.0")
    with pytest.raises(ToolError, match=r"^--istioctl .*: not an executable file$"):
        tools.resolve_tool("istioctl", str(tmp_path), "1.10.6")
    given = executable(tmp_path / "istioctl-custom", "#!/bin/sh\necho 9.9.9\n")
    assert tools.resolve_tool("istioctl", str(given), "1.10.6") == given


def test_a_tool_on_path_is_used(
    mirror: Mirror, client: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kind = executable(bin_dir / "kind", FAKE_KIND.decode())
    monkeypatch.setenv("PATH", str(bin_dir))

    assert tools.find_on_path("kind") == kind
    assert tools.find_on_path("istioctl") is None
    found = tools.resolve_tool("kind", None, "v0.17.0", cache_dir=tmp_path / "cache", client=client, mirror=mirror.url)

    assert found == kind
    assert mirror.requests == []


def test_path_is_skipped_when_told(
    unpinned_kind: None, mirror: Mirror, client: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable(bin_dir / "kind", FAKE_KIND.decode())
    monkeypatch.setenv("PATH", str(bin_dir))
    pin = pins.pin_for("kind", "v0.21.0", mirror=mirror.url)  # not pinned: the checksum file is used
    mirror.serve_pin(pin, FAKE_KIND, checksum=f"{sha256(FAKE_KIND)}  {pin.asset}\n")

    found = tools.resolve_tool(
        "kind", None, "v0.21.0", cache_dir=tmp_path / "cache", client=client, mirror=mirror.url, use_path=False
    )

    assert found == tmp_path / "cache" / "kind" / "v0.21.0" / "kind"


def test_istioctl_on_path_of_another_release_is_ignored(
    mirror: Mirror, client: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable(bin_dir / "istioctl", "#!/bin/sh\necho 'client version: 1.20.0'\n")
    monkeypatch.setenv("PATH", str(bin_dir))
    pin = pins.pin_for("istioctl", "1.21.6", mirror=mirror.url)
    archive = istioctl_archive({"istioctl": FAKE_ISTIOCTL})
    mirror.serve_pin(pin, archive, checksum=f"{sha256(archive)} {pin.asset}\n")

    found = tools.resolve_tool(
        "istioctl", None, "1.21.6", cache_dir=tmp_path / "cache", client=client, mirror=mirror.url
    )

    assert found == tmp_path / "cache" / "istioctl" / "1.21.6" / "istioctl"
    assert found.read_bytes() == FAKE_ISTIOCTL


def test_istioctl_on_path_of_the_requested_release_is_used(
    mirror: Mirror, client: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    on_path = executable(bin_dir / "istioctl", "#!/bin/sh\necho 'client version: 1.21.6'\n")
    old_style = executable(tmp_path / "istioctl-1.10", "#!/bin/sh\necho 1.10.6\n")
    monkeypatch.setenv("PATH", str(bin_dir))

    found = tools.resolve_tool(
        "istioctl", None, "1.21.6", cache_dir=tmp_path / "cache", client=client, mirror=mirror.url
    )

    assert found == on_path
    assert mirror.requests == []
    assert tools.istioctl_version(old_style) == "1.10.6"
    assert tools.istioctl_version(executable(tmp_path / "broken", "#!/bin/sh\nexit 3\n")) is None


def test_cache_dir_defaults_to_the_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if os.uname().sysname == "Linux":
        assert download.default_cache_dir() == tmp_path / "mesh-inbound-conformance" / "tools"
    else:
        assert download.default_cache_dir().parts[-2:] == ("mesh-inbound-conformance", "tools")


def test_kind_on_path_of_another_version_is_not_used(
    unpinned_kind: None, mirror: Mirror, client: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GitHub runner ships kind 0.32; a 1.20 node image needs kind 0.17. Only the exact release is taken."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    runner_kind = b"#!/bin/sh\necho 'kind v0.32.0 go1.25.1 linux/amd64'\n"
    executable(bin_dir / "kind", runner_kind.decode())
    monkeypatch.setenv("PATH", str(bin_dir))
    pin = pins.pin_for("kind", "v0.21.0", mirror=mirror.url)
    mirror.serve_pin(pin, FAKE_KIND, checksum=f"{sha256(FAKE_KIND)}  {pin.asset}\n")

    found = tools.resolve_tool("kind", None, "v0.21.0", cache_dir=tmp_path / "cache", client=client, mirror=mirror.url)

    assert found == tmp_path / "cache" / "kind" / "v0.21.0" / "kind"
    assert tools.path_choice("kind", "v0.21.0") == (
        None,
        f"kind: {bin_dir / 'kind'} on PATH is v0.32.0, not v0.21.0: using the pinned kind v0.21.0",
    )
    # The exact release, with or without the "v": the same minor of another patch is not the row's kind.
    assert tools.path_choice("kind", "v0.32.1")[0] is None
    assert tools.path_choice("kind", "0.32.0") == (
        bin_dir / "kind",
        f"kind: using {bin_dir / 'kind'} from PATH (v0.32.0, the row's version)",
    )


def test_a_custom_build_istioctl_url_is_verified_by_its_sha256(
    mirror: Mirror, client: httpx.Client, tmp_path: Path
) -> None:
    archive = istioctl_archive({"istioctl": FAKE_ISTIOCTL})
    pin = pins.url_pin("https://builds.example/istioctl-1.32-dev.tar.gz", sha256(archive), "1.32-dev", mirror.url)
    mirror.serve_pin(pin, archive)

    found = download.download(pin, cache_dir=tmp_path / "cache", client=client, progress=False)

    assert found == tmp_path / "cache" / "istioctl" / "custom-1.32-dev" / "istioctl"
    assert found.read_bytes() == FAKE_ISTIOCTL
    bad = pins.url_pin("https://builds.example/istioctl-1.32-dev.tar.gz", "0" * 64, "1.32-dev", mirror.url)
    with pytest.raises(ChecksumMismatch):
        download.download(bad, cache_dir=tmp_path / "other", client=client, progress=False)
