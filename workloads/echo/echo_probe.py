"""The echo program's prober: dial targets and classify each outcome (`echo.py probe`, and the harness's probes).

A conformance verdict compares outcomes, not error strings, so every dial ends in one word of a small, fixed
vocabulary (ok, http_status, refused, reset_or_eof, timeout, error), with what was learned (status, peer, pod).
Besides http and tcp a probe speaks `connect`: a plaintext `CONNECT HOST:PORT` to HOST's tunnel port 15008 (the
emulated ztunnel's), then tcp through the tunnel, so a plain pod can ask a node proxy's tunnel for its own answer.

Why a file of its own: the harness imports it by path (conformance/world/echo_client.py) and runs its probes from
inside pod network namespaces with its own connector, so an outcome is classified by this one piece of code on
every backend (in a kind pod it runs as `echo.py probe`). It needs nothing but the standard library, the
program's socket I/O beside it (echo_socket.py), and nothing of the server (echo_serve.py), which uses its small
shared helpers (one_line, hostport, ...) and its batch probe (the control port's POST /probe).
"""

import asyncio
import json
import math
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from urllib.parse import quote

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # echo_socket.py beside it, however it was loaded
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echo_socket import BufferedSocket, dial

# NB: no `from __future__ import annotations`. With it, @dataclass looks the defining module up in
# sys.modules, which fails when a harness loads this file with importlib without registering it there.

PROTOCOLS = ("http", "tcp")
"""What the server speaks on an application port (and a probe too)."""
PROBE_PROTOCOLS = (*PROTOCOLS, "connect")
"""What a probe speaks: `connect` asks HOST:15008 (ztunnel's tunnel port) for `CONNECT HOST:PORT`, then speaks tcp
through the tunnel: the node proxy's own answer, asked directly (plain HTTP/1.1 CONNECT, the emulated mesh's)."""
TUNNEL_PORT = 15008
OUTCOMES = ("ok", "http_status", "refused", "reset_or_eof", "timeout", "error")
DEFAULT_TIMEOUT = 2.0
DEFAULT_CONCURRENCY = 64
MAX_HEADERS = 100
"""The most header fields a request or response may have (the server's limit too)."""

_TARGET_HINT = (
    "expected http://HOST:PORT, tcp://HOST:PORT or connect://HOST:PORT, optionally #REQUEST_ID (IPv6 hosts in brackets)"
)
_MAX_PROBE_BODY = 1024 * 1024  # an echo answer is ~300 bytes; anything this large is not an echo
_DETAIL_MAX = 200

HEX_RE = re.compile(rb"[0-9A-Fa-f]+\Z")
_STATUS_RE = re.compile(rb"HTTP/[0-9]\.[0-9] ([0-9]{3})(?:[ \t]([^\r\n]*))?\r?\n\Z")
_REQUEST_ID_RE = re.compile(r"[\x21-\x7e]{1,512}\Z")  # visible ASCII: safe in a header, a query and a line
_HOST_RE = re.compile(r"[\x21-\x7e]{1,255}\Z")


# --------------------------------------------------------------------------------------------------------
# helpers shared with the server (echo_serve.py)
# --------------------------------------------------------------------------------------------------------


def one_line(text: str) -> str:
    """Collapse whitespace so that every message we emit is exactly one line."""
    return " ".join(text.split())


def quoted(text: str) -> str:
    """Quote user input for a message; JSON escaping keeps control characters from breaking the line."""
    return json.dumps(text)


def hostport(address: str, port: int) -> str:
    """Format address:port, bracketing IPv6 literals the way URLs and logs expect."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def parse_port_number(text: str) -> int | None:
    """Return the port 1-65535 written in plain ASCII digits, else None (no signs, spaces or underscores)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        return None
    port = int(text)
    return port if 1 <= port <= 65535 else None


def _new_request_id(prefix: str = "probe") -> str:
    """Return a request id that is unique enough to find one request among a test run's records."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------------------------------------
# probe
# --------------------------------------------------------------------------------------------------------


def _check_port(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"{what} must be an integer 1-65535, not {value!r}")
    return value


@dataclass(frozen=True)
class ProbeTarget:
    """One thing to dial: protocol, address, port, and the request id the echo server will record."""

    protocol: str  # "http" | "tcp" | "connect"
    address: str
    port: int
    request_id: str

    def __post_init__(self) -> None:
        """Validate up front: the id goes into a header, a query and a line, so it must be plain ASCII."""
        if self.protocol not in PROBE_PROTOCOLS:
            raise ValueError(f"protocol must be 'http', 'tcp' or 'connect', not {self.protocol!r}")
        if not isinstance(self.address, str):
            raise ValueError(f"address must be a string, not {self.address!r}")
        address = self.address
        if address.startswith("[") and address.endswith("]"):
            address = address[1:-1]
            object.__setattr__(self, "address", address)
        if not _HOST_RE.match(address) or "/" in address:
            raise ValueError(f"address must be a host name or IP address, not {self.address!r}")
        _check_port(self.port, "port")
        if not isinstance(self.request_id, str) or not _REQUEST_ID_RE.match(self.request_id):
            raise ValueError(f"request_id must be 1-512 visible ASCII characters, not {self.request_id!r}")

    def to_json(self) -> dict[str, object]:
        """The batch-format object for this target."""
        return {"protocol": self.protocol, "address": self.address, "port": self.port, "request_id": self.request_id}

    @classmethod
    def from_json(cls, data: object) -> "ProbeTarget":
        """Build from a batch-format object; request_id may be absent (or null) and is then generated."""
        if not isinstance(data, dict):
            raise ValueError(f"a target must be a JSON object, not {data!r}")
        unknown = set(data) - {"protocol", "address", "port", "request_id"}
        if unknown:
            raise ValueError(f"unknown target field(s) {sorted(unknown)}; expected protocol, address, port, request_id")
        for key in ("protocol", "address", "port"):
            if key not in data:
                raise ValueError(f"target {data!r} lacks {key!r}")
        request_id = data.get("request_id")
        if request_id is None:
            request_id = _new_request_id()
        return cls(data["protocol"], data["address"], _check_port(data["port"], "port"), request_id)


@dataclass(frozen=True)
class ProbeResult:
    """What happened when one target was dialled: an outcome from OUTCOMES plus what was learned."""

    target: ProbeTarget
    outcome: str
    status: int | None
    peer: str | None
    pod: str | None
    latency_ms: float
    detail: str

    def to_json(self) -> dict[str, object]:
        """The JSON object `probe` prints for this result."""
        return {
            "target": self.target.to_json(),
            "outcome": self.outcome,
            "status": self.status,
            "peer": self.peer,
            "pod": self.pod,
            "latency_ms": round(self.latency_ms, 3),
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, data: object) -> "ProbeResult":
        """Parse one result object as printed by `probe` (or returned by POST /probe)."""
        if not isinstance(data, dict):
            raise ValueError(f"a result must be a JSON object, not {data!r}")
        missing = {"target", "outcome", "status", "peer", "pod", "latency_ms", "detail"} - set(data)
        if missing:
            raise ValueError(f"result lacks {sorted(missing)}")
        outcome, status, latency, detail = data["outcome"], data["status"], data["latency_ms"], data["detail"]
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
        if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
            raise ValueError(f"status must be an integer or null, not {status!r}")
        if isinstance(latency, bool) or not isinstance(latency, int | float):
            raise ValueError(f"latency_ms must be a number, not {latency!r}")
        if not isinstance(detail, str):
            raise ValueError(f"detail must be a string, not {detail!r}")
        texts: list[str | None] = []
        for key in ("peer", "pod"):
            value = data[key]
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{key} must be a string or null, not {value!r}")
            texts.append(value)
        return cls(ProbeTarget.from_json(data["target"]), outcome, status, texts[0], texts[1], float(latency), detail)


Connector = Callable[[ProbeTarget], Awaitable[socket.socket]]
"""Dials a target: a connected, non-blocking socket (the harness makes it inside a pod's network namespace)."""


def parse_target(text: str) -> ProbeTarget:
    """Parse a command-line TARGET: http://HOST:PORT or tcp://HOST:PORT, optionally #REQUEST_ID."""

    def bad() -> ValueError:
        return ValueError(f"bad probe target {quoted(text)}: {_TARGET_HINT}")

    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in PROBE_PROTOCOLS:
        raise bad()
    hostport, hash_sign, request_id = rest.partition("#")
    if hash_sign and not request_id:
        raise bad()
    if scheme == "http" and hostport.endswith("/"):
        hostport = hostport[:-1]
    if hostport.startswith("["):
        host, bracket, port_text = hostport[1:].partition("]")
        if not bracket or not port_text.startswith(":"):
            raise bad()
        port_text = port_text[1:]
    else:
        host, colon, port_text = hostport.rpartition(":")
        if not colon or ":" in host:
            raise bad()
    port = parse_port_number(port_text)
    if port is None or not host:
        raise bad()
    try:
        return ProbeTarget(scheme, host, port, request_id or _new_request_id())
    except ValueError as exc:
        raise ValueError(f"bad probe target {quoted(text)}: {exc}") from None


def check_timeout(timeout: object) -> float:
    """A probe timeout in seconds, (0, 3600] and finite (the command line's --timeout, a batch's timeout)."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
        raise ValueError(f"timeout must be a number of seconds in (0, 3600], not {timeout!r}")
    if not math.isfinite(timeout):
        raise ValueError(f"timeout must be finite, not {timeout!r}")
    return float(timeout)


def _check_concurrency(concurrency: object) -> int:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be a positive integer, not {concurrency!r}")
    return concurrency


def parse_batch(data: object) -> tuple[list[ProbeTarget], float | None, int | None]:
    """Validate a batch document: {"timeout"?, "concurrency"?, "targets": [...]}; None where not given."""
    if not isinstance(data, dict):
        raise ValueError("a probe batch must be a JSON object with a 'targets' list")
    unknown = set(data) - {"timeout", "concurrency", "targets"}
    if unknown:
        raise ValueError(f"unknown batch field(s) {sorted(unknown)}; expected timeout, concurrency, targets")
    targets = data.get("targets")
    if not isinstance(targets, list):
        raise ValueError("a probe batch needs 'targets': a list of target objects")
    parsed: list[ProbeTarget] = []
    for index, item in enumerate(targets):
        try:
            parsed.append(ProbeTarget.from_json(item))
        except ValueError as exc:
            raise ValueError(f"targets[{index}]: {exc}") from None
    timeout = None if data.get("timeout") is None else check_timeout(data["timeout"])
    concurrency = None if data.get("concurrency") is None else _check_concurrency(data["concurrency"])
    return parsed, timeout, concurrency


class _ProbeFailure(Exception):
    """An exchange ended in a classified non-ok outcome."""

    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


def _truncate(text: str) -> str:
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 3] + "..."


def _preview(data: bytes) -> str:
    return _truncate(repr(data[:_DETAIL_MAX]))


async def _probe_line(conn: BufferedSocket, what: str, looks_like: Callable[[bytes], bool]) -> bytes:
    """Read one complete line of an answer; EOF before it completes is reset_or_eof, junk is error."""
    try:
        line = await conn.readline()
    except ValueError:
        raise _ProbeFailure("error", f"{what} longer than the read limit") from None
    if not line:
        raise _ProbeFailure("reset_or_eof", f"connection closed before {what}")
    if not line.endswith(b"\n"):
        if looks_like(line):
            raise _ProbeFailure("reset_or_eof", f"connection closed in the middle of {what}: {_preview(line)}")
        raise _ProbeFailure("error", f"garbage instead of {what}: {_preview(line)}")
    return line


def _echo_fields(raw: bytes, what: str, target: ProbeTarget) -> tuple[str | None, str | None, str]:
    """(peer, pod, note) from an echo JSON answer; an answer that is not an echo object is an error.

    The note is empty unless the echoed request id differs from ours (a proxy or cache in the way).
    """
    try:
        document = json.loads(raw)
    except ValueError:
        raise _ProbeFailure("error", f"{what} is not JSON: {_preview(raw)}") from None
    if not isinstance(document, dict) or "pod" not in document:
        raise _ProbeFailure("error", f"{what} is not an echo JSON object: {_preview(raw)}")
    peer, pod, echoed = document.get("peer"), document.get("pod"), document.get("request_id")
    note = "" if echoed == target.request_id else _truncate(f"echoed request_id {echoed!r} differs from the one sent")
    return (peer if isinstance(peer, str) else None), (pod if isinstance(pod, str) else None), note


async def _read_http_body(conn: BufferedSocket, status: int, headers: Mapping[str, str]) -> bytes:
    """Read a response body framed by chunked encoding, Content-Length, or the end of the connection."""
    if status in (204, 304):
        return b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size_line = await _probe_line(conn, "a chunk size", lambda _b: True)
            size_text = size_line.split(b";", 1)[0].strip()
            if not HEX_RE.match(size_text):
                raise _ProbeFailure("error", f"bad chunk size line {_preview(size_line)}")
            size = int(size_text, 16)
            if size == 0:
                return bytes(body)
            if len(body) + size > _MAX_PROBE_BODY:
                raise _ProbeFailure("error", "response body too large for an echo answer")
            body.extend(await conn.readexactly(size))
            await conn.readexactly(2)  # CRLF after the chunk
    length_text = headers.get("content-length")
    if length_text is not None:
        if not (length_text.isascii() and length_text.isdigit()):
            raise _ProbeFailure("error", f"bad Content-Length {length_text!r}")
        length = int(length_text)
        if length > _MAX_PROBE_BODY:
            raise _ProbeFailure("error", "response body too large for an echo answer")
        return await conn.readexactly(length)
    data = await conn.read(_MAX_PROBE_BODY + 1)
    body = bytearray(data)
    while data and len(body) <= _MAX_PROBE_BODY:
        data = await conn.read(_MAX_PROBE_BODY + 1 - len(body))
        body.extend(data)
    if len(body) > _MAX_PROBE_BODY:
        raise _ProbeFailure("error", "response body too large for an echo answer")
    return bytes(body)


def _looks_like_status(line: bytes) -> bool:
    return line.startswith(b"HTTP/") or b"HTTP/".startswith(line)


async def _http_exchange(conn: BufferedSocket, target: ProbeTarget) -> tuple[str, int, str | None, str | None, str]:
    """GET /?id=..., then classify: 200 with an echo body is ok, another status is http_status."""
    request = (
        f"GET /?id={quote(target.request_id, safe='')} HTTP/1.1\r\n"
        f"Host: {hostport(target.address, target.port)}\r\n"
        f"x-request-id: {target.request_id}\r\n"
        "User-Agent: echo-probe\r\n"
        "Accept: */*\r\n"
        "Connection: close\r\n\r\n"
    )
    await conn.write(request.encode("ascii"))
    while True:
        line = await _probe_line(conn, "the status line", _looks_like_status)
        match = _STATUS_RE.match(line)
        if not match:
            raise _ProbeFailure("error", f"not an HTTP status line: {_preview(line)}")
        status = int(match.group(1))
        reason = (match.group(2) or b"").decode("latin-1").strip()
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            raw = await _probe_line(conn, "the end of the response headers", lambda _b: True)
            if raw in (b"\r\n", b"\n"):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        else:
            raise _ProbeFailure("error", "too many response header fields")
        if not 100 <= status < 200 or status == 101:
            break  # 1xx interim responses (100 Continue, 103 Early Hints) precede the real one
    if status == 200:
        body = await _read_http_body(conn, status, headers)
        peer, pod, note = _echo_fields(body, "the HTTP 200 body", target)
        return "ok", status, peer, pod, note
    try:
        body = await _read_http_body(conn, status, headers)
    except (_ProbeFailure, asyncio.IncompleteReadError, ConnectionError) as exc:
        body = exc.partial if isinstance(exc, asyncio.IncompleteReadError) else b""
    first = body.decode("utf-8", "replace").strip().splitlines()
    return "http_status", status, None, None, _truncate(first[0].strip() if first else reason)


async def _tcp_exchange(
    conn: BufferedSocket, target: ProbeTarget
) -> tuple[str, int | None, str | None, str | None, str]:
    """Send the request id as one line; a JSON echo line back is ok."""
    await conn.write(target.request_id.encode("ascii") + b"\n")
    line = await _probe_line(conn, "the echo line", lambda b: b.lstrip().startswith(b"{"))
    peer, pod, note = _echo_fields(line, "the answer line", target)
    return "ok", None, peer, pod, note


async def _connect_exchange(
    conn: BufferedSocket, target: ProbeTarget
) -> tuple[str, int | None, str | None, str | None, str]:
    """CONNECT HOST:PORT on the tunnel port; behind a 200 the tcp exchange (ok, status 200), else http_status."""
    authority = hostport(target.address, target.port)
    await conn.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode("ascii"))
    line = await _probe_line(conn, "the tunnel's status line", _looks_like_status)
    match = _STATUS_RE.match(line)
    if not match:
        raise _ProbeFailure("error", f"not an HTTP status line: {_preview(line)}")
    status = int(match.group(1))
    for _ in range(MAX_HEADERS + 1):
        if await _probe_line(conn, "the end of the tunnel's headers", lambda _b: True) in (b"\r\n", b"\n"):
            break
    else:
        raise _ProbeFailure("error", "too many response header fields")
    if status != 200:
        return "http_status", status, None, None, (match.group(2) or b"").decode("latin-1").strip()
    _, _, peer, pod, note = await _tcp_exchange(conn, target)
    return "ok", status, peer, pod, note


_EXCHANGES = {"http": _http_exchange, "tcp": _tcp_exchange, "connect": _connect_exchange}


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return _truncate(one_line(f"{type(exc).__name__}: {text}" if text else type(exc).__name__))


async def probe_one(target: ProbeTarget, timeout: float, connect: Connector | None = None) -> ProbeResult:
    """Dial one target within `timeout` seconds overall and classify what happened; never raises for I/O.

    Classification is by exception type, wherever it comes from (our dialler, a harness's connector that
    dials from another network namespace, or the exchange), so that the outcome vocabulary stays exact.
    """
    timeout = check_timeout(timeout)
    status: int | None = None
    peer: str | None = None
    pod: str | None = None
    sock: socket.socket | None = None
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            # A tunnel probe dials the tunnel port of the target's address; the exchange names the port.
            dialled = replace(target, port=TUNNEL_PORT) if target.protocol == "connect" else target
            sock = await (dial(dialled.address, dialled.port) if connect is None else connect(dialled))
            exchange = _EXCHANGES[target.protocol]
            outcome, status, peer, pod, detail = await exchange(BufferedSocket(sock), target)
    except _ProbeFailure as failure:
        outcome, detail = failure.outcome, failure.detail
    except TimeoutError:  # our deadline, a connector's own timeout, or ETIMEDOUT from the kernel
        stage = "connecting" if sock is None else "waiting for the answer"
        outcome, detail = "timeout", f"no answer within {timeout:g} s ({stage})"
    except ConnectionRefusedError as exc:
        outcome, detail = "refused", _describe(exc)
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as exc:
        outcome, detail = "reset_or_eof", _describe(exc)
    except asyncio.IncompleteReadError as exc:
        outcome, detail = "reset_or_eof", f"connection closed after {len(exc.partial)} of the expected bytes"
    except Exception as exc:  # unreachable networks, DNS failures, a connector's own bugs...
        outcome, detail = "error", _describe(exc)
    finally:
        # The answer (if any) is complete: close at once, flushing nothing, so that a peer that stopped reading
        # keeps no one (a cancelled caller neither) waiting.
        if sock is not None:
            sock.close()
    latency_ms = (time.perf_counter() - start) * 1000.0
    if outcome not in ("ok", "http_status"):
        status = peer = pod = None
    return ProbeResult(target, outcome, status, peer, pod, latency_ms, detail)


async def probe_batch(
    targets: Sequence[ProbeTarget], timeout: float, concurrency: int = 64, connect: Connector | None = None
) -> list[ProbeResult]:
    """Probe all targets concurrently (at most `concurrency` at a time); results in the targets' order.

    Each target's deadline starts when its own probe starts, so queueing behind the concurrency bound
    never turns into a spurious timeout.
    """
    timeout = check_timeout(timeout)
    semaphore = asyncio.Semaphore(_check_concurrency(concurrency))

    async def one(target: ProbeTarget) -> ProbeResult:
        async with semaphore:
            return await probe_one(target, timeout, connect)

    return list(await asyncio.gather(*(one(t) for t in targets)))
