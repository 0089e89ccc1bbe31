"""Echo workload of the inbound-networking conformance suite: one server and one prober in a single file.

Why one stdlib-only file: the same program runs in a tiny container image (`python:3.12-alpine`, nothing
installed) and directly on a host with `python3 -I -S echo.py ...` (the emulated backend), so it must not
depend on anything but the standard library, and the harness imports it by path to reuse the probe code.

`serve` listens on application ports exactly as told (loopback, pod IP, wildcard, dual wildcard or a literal
address), because *which address an application binds* is the very thing Istio's inbound semantics change. The
two wildcards differ on IPv6: `wildcard` opens `[::]` IPv6-only (IPV6_V6ONLY on, next to a separate 0.0.0.0 in a
dual-stack pod), whereas `dual_wildcard` opens the one socket Go's `net.Listen("tcp", ":8080")` opens, `[::]` with
IPV6_V6ONLY off, which accepts IPv4 too (as ::ffff:a.b.c.d, reported as a.b.c.d, the way Go prints it). In a pod
without IPv6 (IPv4-only, or no pod IPs told) `dual_wildcard` is the same as `wildcard`: 0.0.0.0. Every
answer says which pod answered and which local address accepted the connection, and every request is
recorded so the harness can later ask "did request X reach this pod, and on which address?" through the
control port, which is never recorded itself. Every accepted connection is recorded too, with its peer
(`/connections`): a health probe that connects and hangs up says who probed only there.

`probe` dials targets and classifies each outcome into a small, fixed vocabulary (ok, http_status, refused,
reset_or_eof, timeout, error), because a conformance verdict compares outcomes, not error strings. Besides http and
tcp it speaks `connect`: a plaintext `CONNECT HOST:PORT` to HOST's tunnel port 15008 (the emulated ztunnel's), then
tcp through the tunnel, so a plain pod can ask a node proxy's tunnel for its own answer.

A user mistake (bad arguments, bad JSON, an address already in use) is reported as one line on stderr with
exit status 2 (usage) or 1 (runtime); never as a traceback.
"""

import argparse
import asyncio
import collections
import contextlib
import ipaddress
import itertools
import json
import math
import os
import re
import signal
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple, NoReturn
from urllib.parse import parse_qs, quote, urlsplit

# NB: no `from __future__ import annotations`. With it, @dataclass looks the defining module up in
# sys.modules, which fails when a harness loads this file with importlib without registering it there.

PROTOCOLS = ("http", "tcp")
PROBE_PROTOCOLS = (*PROTOCOLS, "connect")
"""What a probe speaks: `connect` asks HOST:15008 (ztunnel's tunnel port) for `CONNECT HOST:PORT`, then speaks tcp
through the tunnel: the node proxy's own answer, asked directly (plain HTTP/1.1 CONNECT, the emulated mesh's)."""
TUNNEL_PORT = 15008
BIND_KEYWORDS = ("loopback", "pod_ip", "wildcard", "dual_wildcard")
OUTCOMES = ("ok", "http_status", "refused", "reset_or_eof", "timeout", "error")
DEFAULT_CONTROL_PORT = 19000
DEFAULT_TIMEOUT = 2.0
DEFAULT_CONCURRENCY = 64
MAX_RECORDS = 100_000

_PORT_SPEC_HINT = f"expected PORT:BIND:PROTO with BIND {'|'.join(BIND_KEYWORDS)}|<address> and PROTO http|tcp"
_TARGET_HINT = (
    "expected http://HOST:PORT, tcp://HOST:PORT or connect://HOST:PORT, optionally #REQUEST_ID (IPv6 hosts in brackets)"
)
_LOOPBACK = {4: "127.0.0.1", 6: "::1"}
_WILDCARD = {4: "0.0.0.0", 6: "::"}
_LISTEN_BACKLOG = 1024
_MAX_HEADERS = 100
_MAX_CONTROL_BODY = 16 * 1024 * 1024  # a probe batch of ~100k targets
_MAX_PROBE_BODY = 1024 * 1024  # an echo answer is ~300 bytes; anything this large is not an echo
_DETAIL_MAX = 200

_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_HTTP_VERSION_RE = re.compile(r"HTTP/1\.[0-9]\Z")
_HEX_RE = re.compile(rb"[0-9A-Fa-f]+\Z")
_STATUS_RE = re.compile(rb"HTTP/[0-9]\.[0-9] ([0-9]{3})(?:[ \t]([^\r\n]*))?\r?\n\Z")
_REQUEST_ID_RE = re.compile(r"[\x21-\x7e]{1,512}\Z")  # visible ASCII: safe in a header, a query and a line
_HOST_RE = re.compile(r"[\x21-\x7e]{1,255}\Z")


class UsageError(Exception):
    """A mistake in the command line or input: reported as one line, exit status 2."""


class StartupError(Exception):
    """The environment refused what was asked (e.g. address in use): reported as one line, exit status 1."""


def _one_line(text: str) -> str:
    """Collapse whitespace so that every message we emit is exactly one line."""
    return " ".join(text.split())


def _quoted(text: str) -> str:
    """Quote user input for a message; JSON escaping keeps control characters from breaking the line."""
    return json.dumps(text)


def _hostport(address: str, port: int) -> str:
    """Format address:port, bracketing IPv6 literals the way URLs and logs expect."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _normalise_ip(address: str) -> str:
    """Report an IPv4-mapped IPv6 peer (``::ffff:1.2.3.4``) as the IPv4 address it really is."""
    if address.startswith("::ffff:") and "." in address:
        return address[7:]
    return address


def _parse_port_number(text: str) -> int | None:
    """Return the port 1-65535 written in plain ASCII digits, else None (no signs, spaces or underscores)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        return None
    port = int(text)
    return port if 1 <= port <= 65535 else None


def _new_request_id(prefix: str = "probe") -> str:
    """Return a request id that is unique enough to find one request among a test run's records."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------------------------------------
# serve: configuration
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortSpec:
    """One application port to serve: PORT:BIND:PROTO from the command line."""

    port: int
    bind: str  # a BIND keyword, or a normalised literal IP address
    protocol: str


def parse_port_spec(text: str) -> PortSpec:
    """Parse PORT:BIND:PROTO; BIND may itself contain colons (IPv6), so split at the first and last colon."""

    def bad(reason: str = "") -> UsageError:
        detail = f"{reason}; {_PORT_SPEC_HINT}" if reason else _PORT_SPEC_HINT
        return UsageError(f"bad port spec {_quoted(text)}: {detail}")

    first, last = text.find(":"), text.rfind(":")
    if first < 0 or last == first:
        raise bad()
    port_text, bind, protocol = text[:first], text[first + 1 : last], text[last + 1 :]
    port = _parse_port_number(port_text)
    if port is None:
        raise bad(f"PORT {_quoted(port_text)} is not a number 1-65535")
    if protocol not in PROTOCOLS:
        raise bad(f"unknown PROTO {_quoted(protocol)}")
    if not bind:
        raise bad("empty BIND")
    if bind not in BIND_KEYWORDS:
        literal = bind[1:-1] if bind.startswith("[") and bind.endswith("]") else bind
        try:
            address = ipaddress.ip_address(literal)
        except ValueError:
            raise bad(f"BIND {_quoted(bind)} is neither a keyword nor an IP address") from None
        if literal != bind and address.version != 6:
            raise bad("only IPv6 addresses may be bracketed")
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        bind = f"::ffff:{mapped}" if mapped else str(address)  # Python 3.11 would print ::ffff:7f00:1
    return PortSpec(port, bind, protocol)


def pod_ips_from_env(env: Mapping[str, str]) -> list[str]:
    """Read the pod IPs the downward API gives ($INSTANCE_IPS from status.podIPs, $INSTANCE_IP from podIP)."""
    found: list[str] = []
    for name in ("INSTANCE_IPS", "INSTANCE_IP"):
        for raw in env.get(name, "").split(","):
            item = raw.strip()
            if not item:
                continue
            try:
                address = str(ipaddress.ip_address(item))
            except ValueError:
                raise UsageError(f"bad ${name} entry {_quoted(item)}: not an IP address") from None
            if address not in found:
                found.append(address)
    return found


def _families(pod_ips: Sequence[str]) -> list[int]:
    """The IP families the pod has; a pod that does not tell us its IPs is taken to be IPv4-only."""
    versions = {ipaddress.ip_address(ip).version for ip in pod_ips}
    return sorted(versions) if versions else [4]


class ListenAddress(NamedTuple):
    """One socket a BIND resolves to: its address, and for an IPv6 one whether IPV6_V6ONLY is on.

    `v6only` is decided by the BIND keyword, not read off the address: `[::]` is IPv6-only for `wildcard` and
    IPv4-too for `dual_wildcard`. A literal IPv4-mapped BIND (::ffff:a.b.c.d) needs it off (it is IPv4 traffic).
    An IPv4 socket has no such option; its `v6only` is True and means nothing.
    """

    address: str
    v6only: bool = True


def listen_addresses(spec: PortSpec, pod_ips: Sequence[str]) -> list[ListenAddress]:
    """Resolve a PortSpec's BIND into concrete sockets, one per served family where that applies.

    `dual_wildcard` is one socket whatever the families: `[::]` with IPV6_V6ONLY off in a pod with IPv6 (it
    serves both, as Go's `net.Listen("tcp", ":P")` does), and 0.0.0.0, as `wildcard`, in a pod without IPv6.
    """
    families = _families(pod_ips)
    if spec.bind == "loopback":
        return [ListenAddress(_LOOPBACK[f]) for f in families]
    if spec.bind == "wildcard":
        return [ListenAddress(_WILDCARD[f]) for f in families]
    if spec.bind == "dual_wildcard":
        return [ListenAddress(_WILDCARD[6], v6only=False) if 6 in families else ListenAddress(_WILDCARD[4])]
    if spec.bind == "pod_ip":
        if not pod_ips:
            needs = "needs $INSTANCE_IP or $INSTANCE_IPS (the pod IPs from the downward API)"
            raise UsageError(f"bind pod_ip on port {spec.port} {needs}")
        return [ListenAddress(ip) for ip in pod_ips]
    literal = ipaddress.ip_address(spec.bind)
    mapped = isinstance(literal, ipaddress.IPv6Address) and literal.ipv4_mapped is not None
    return [ListenAddress(spec.bind, v6only=not mapped)]


def _open_listener(address: str, port: int, v6only: bool = True) -> socket.socket:
    """Create a listening socket; an IPv6 one gets IPV6_V6ONLY set as told, never the host's default.

    IPv6-only by default, so that v4 and v6 are separate, observable sockets; off for the dual wildcard.
    """
    flags = socket.AI_NUMERICHOST | socket.AI_PASSIVE
    family, _, _, _, sockaddr = socket.getaddrinfo(address, port, 0, socket.SOCK_STREAM, 0, flags)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        sock.bind(sockaddr)
        sock.listen(_LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class _Listener:
    kind: str  # "http", "tcp" or "control"
    address: str
    port: int
    v6only: bool = True  # IPV6_V6ONLY on an IPv6 socket (see ListenAddress)

    def describe(self) -> str:
        """address:port for the startup line, marking an IPv6 socket that takes IPv4 too (IPV6_V6ONLY off)."""
        where = _hostport(self.address, self.port)
        return where if self.v6only or ":" not in self.address else f"{where} (IPV6_V6ONLY=0)"


def _plan(specs: Sequence[PortSpec], control_port: int, pod_ips: Sequence[str]) -> list[_Listener]:
    """Every socket to open, application ports first, so that all checks happen before anything binds."""
    seen: set[int] = set()
    plan: list[_Listener] = []
    for spec in specs:
        if spec.port == control_port:
            raise UsageError(f"duplicate port {spec.port}: it is the control port (change it with --control-port)")
        if spec.port in seen:
            raise UsageError(f"duplicate port {spec.port}: each application port may appear once")
        seen.add(spec.port)
        plan.extend(_Listener(spec.protocol, a.address, spec.port, a.v6only) for a in listen_addresses(spec, pod_ips))
    plan.extend(_Listener("control", _WILDCARD[f], control_port) for f in _families(pod_ips))
    return plan


# --------------------------------------------------------------------------------------------------------
# serve: a minimal HTTP/1.1 server on asyncio streams
# --------------------------------------------------------------------------------------------------------


class _BadRequest(Exception):
    """The client sent something that is not HTTP/1.x; answer 400 and close."""


@dataclass
class _Request:
    method: str
    path: str
    query: str
    keep_alive: bool
    headers: dict[str, str]
    body: bytes


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    """Read one line; an over-long line is a bad request rather than a crash."""
    try:
        return await reader.readline()
    except ValueError:  # asyncio.LimitOverrunError surfaces from readline() as ValueError
        raise _BadRequest("line too long") from None


async def _read_body_bytes(reader: asyncio.StreamReader, length: int, keep: bool, into: bytearray) -> None:
    """Read exactly `length` bytes, keeping them only when asked (app ports discard bodies unbuffered)."""
    while length > 0:
        chunk = await reader.read(min(length, 65536))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", length)
        length -= len(chunk)
        if keep:
            into.extend(chunk)


async def _read_chunked(reader: asyncio.StreamReader, keep: bool, limit: int) -> bytes:
    """Decode (or discard) a chunked request body, so that keep-alive stays in sync with the client."""
    body = bytearray()
    total = 0
    while True:
        line = await _read_line(reader)
        size_text = line.split(b";", 1)[0].strip()
        if not line.endswith(b"\n") or not _HEX_RE.match(size_text):
            raise _BadRequest("bad chunk size line")
        size = int(size_text, 16)
        if size == 0:
            break
        total += size
        if keep and total > limit:
            raise _BadRequest("request body too large")
        await _read_body_bytes(reader, size, keep, body)
        if await _read_line(reader) not in (b"\r\n", b"\n"):
            raise _BadRequest("chunk not followed by CRLF")
    for _ in range(_MAX_HEADERS):  # trailer fields, ignored
        line = await _read_line(reader)
        if line in (b"\r\n", b"\n"):
            return bytes(body)
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
    raise _BadRequest("too many trailer fields")


async def _read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keep_body: bool) -> _Request | None:
    """Read one HTTP/1.x request; None on a clean end of connection between requests."""
    line = await _read_line(reader)
    for _ in range(4):  # RFC 9112 2.2: tolerate stray CRLFs before a request line
        if line not in (b"\r\n", b"\n"):
            break
        line = await _read_line(reader)
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if not line.endswith(b"\n") or len(parts) != 3:
        raise _BadRequest("bad request line")
    method, target, version = parts
    if not _TOKEN_RE.match(method) or not _HTTP_VERSION_RE.match(version):
        raise _BadRequest("bad request line")
    try:  # origin-form (/p?q) as well as absolute-form (http://h/p?q), as proxies send it
        url = urlsplit(target)
    except ValueError:
        raise _BadRequest("bad request target") from None
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS + 1):
        raw = await _read_line(reader)
        if raw in (b"\r\n", b"\n"):
            break
        if not raw.endswith(b"\n"):
            raise _BadRequest("truncated header section")
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep or not _TOKEN_RE.match(name):
            raise _BadRequest("bad header field")
        name, value = name.lower(), value.strip()
        if name in headers and name in ("content-length", "transfer-encoding") and headers[name] != value:
            raise _BadRequest(f"conflicting {name} fields")
        headers.setdefault(name, value)
    else:
        raise _BadRequest("too many header fields")

    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "close" not in tokens if version != "HTTP/1.0" else "keep-alive" in tokens

    chunked = False
    length = 0
    if "transfer-encoding" in headers:
        codings = [c.strip().lower() for c in headers["transfer-encoding"].split(",")]
        if codings[-1] != "chunked" or "content-length" in headers:
            raise _BadRequest("unsupported transfer-encoding")
        chunked = True
    elif "content-length" in headers:
        cl = headers["content-length"]
        if not (cl.isascii() and cl.isdigit()):
            raise _BadRequest("bad content-length")
        length = int(cl)
        if keep_body and length > _MAX_CONTROL_BODY:
            raise _BadRequest("request body too large")
    if (chunked or length) and version != "HTTP/1.0" and headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if chunked:
        body = await _read_chunked(reader, keep_body, _MAX_CONTROL_BODY)
    else:
        buf = bytearray()
        await _read_body_bytes(reader, length, keep_body, buf)
        body = bytes(buf)
    return _Request(method, url.path, url.query, keep_alive, headers, body)


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
}


def _response(
    status: int, content_type: str, body: bytes, keep_alive: bool, *, head: bool = False, extra: str = ""
) -> bytes:
    """Serialise a complete response; Content-Length always set so keep-alive clients find the end."""
    head_text = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n"
        f"{extra}\r\n"
    )
    return head_text.encode("latin-1") + (b"" if head else body)


def _json_bytes(value: object) -> bytes:
    return json.dumps(value).encode()


def _error_response(status: int, message: str, keep_alive: bool = False, *, extra: str = "") -> bytes:
    return _response(status, "application/json", _json_bytes({"error": message}), keep_alive, extra=extra)


def _connection_info(writer: asyncio.StreamWriter) -> tuple[str, str, int]:
    """(local ip, peer ip, peer port) of an accepted connection, IPv4-mapped addresses unmapped."""
    sockname = writer.get_extra_info("sockname") or ("", 0)
    peername = writer.get_extra_info("peername") or ("", 0)
    return _normalise_ip(str(sockname[0])), _normalise_ip(str(peername[0])), int(peername[1])


class RequestRecord(NamedTuple):
    """One request seen on an application port; a tuple because up to MAX_RECORDS of them stay in memory."""

    request_id: str
    port: int
    protocol: str
    local: str
    peer: str
    peer_port: int
    time: float


class ConnectionRecord(NamedTuple):
    """One connection accepted on an application port, whether or not a request followed.

    A kubelet TCP probe (or pilot-agent's) connects and hangs up without a byte: only this record shows who
    probed. `seq` grows by one per connection, so a reader can ask for what came after what it saw last.
    """

    seq: int
    port: int
    protocol: str
    local: str
    peer: str
    peer_port: int
    time: float


class EchoServer:
    """State shared by every listener of one `serve` process: identity, request records, open connections."""

    def __init__(self, pod: str, namespace: str, verbose: bool = False) -> None:
        self.pod = pod
        self.namespace = namespace
        self.verbose = verbose
        self.records: collections.deque[RequestRecord] = collections.deque(maxlen=MAX_RECORDS)
        self._ids = itertools.count(1)
        self.connections: collections.deque[ConnectionRecord] = collections.deque(maxlen=MAX_RECORDS)
        self._seq = itertools.count(1)
        self._writers: set[asyncio.StreamWriter] = set()

    def _log(self, message: str) -> None:
        if self.verbose:
            print(f"echo: {message}", file=sys.stderr, flush=True)

    def _echo(self, port: int, protocol: str, conn: tuple[str, str, int], request_id: str) -> bytes:
        """Record one application request and return the JSON that tells the client who answered.

        `conn` is (local ip, peer ip, peer port) of the connection that carried the request.
        """
        local, peer, peer_port = conn
        if not request_id:
            request_id = f"gen-{next(self._ids)}"
        self.records.append(RequestRecord(request_id, port, protocol, local, peer, peer_port, time.time()))
        self._log(f"{protocol} {_hostport(local, port)} <- {_hostport(peer, peer_port)} id={request_id}")
        return _json_bytes(
            {
                "pod": self.pod,
                "namespace": self.namespace,
                "port": port,
                "protocol": protocol,
                "local": local,
                "peer": peer,
                "peer_port": peer_port,
                "request_id": request_id,
            }
        )

    def handler(self, kind: str, port: int) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        """Return the connection callback for a listener of the given kind."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.add(writer)
            if kind != "control":
                local, peer, peer_port = _connection_info(writer)
                self.connections.append(
                    ConnectionRecord(next(self._seq), port, kind, local, peer, peer_port, time.time())
                )
            try:
                if kind == "tcp":
                    await self._serve_tcp(reader, writer, port)
                else:
                    await self._serve_http(reader, writer, port, control=kind == "control")
            except (OSError, asyncio.IncompleteReadError):
                pass  # the client went away (or reset us); nothing to answer
            except Exception as exc:  # a bug must not kill the server or print a traceback
                print(f"echo: connection on port {port} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            finally:
                self._writers.discard(writer)
                writer.close()

        return handle

    def close_connections(self) -> None:
        """Close every open client connection (used at shutdown so that nothing is left half open)."""
        for writer in list(self._writers):
            writer.close()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        """One JSON line per received line, until EOF; the line itself (stripped) is the request id."""
        conn = _connection_info(writer)
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # a line longer than the stream limit: not our protocol
                return
            if not line:
                return
            request_id = line.decode("utf-8", "replace").strip()
            writer.write(self._echo(port, "tcp", conn, request_id) + b"\n")
            await writer.drain()

    async def _serve_http(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, control: bool
    ) -> None:
        """HTTP/1.x with keep-alive and pipelining; app ports echo, the control port routes."""
        conn = _connection_info(writer)
        while True:
            try:
                request = await _read_request(reader, writer, keep_body=control)
            except _BadRequest as exc:
                writer.write(_error_response(400, str(exc)))
                await writer.drain()
                return
            if request is None:
                return
            if control:
                response = await self._control(request)
            else:
                query = parse_qs(request.query, keep_blank_values=True)
                request_id = next((v for v in query.get("id", []) if v), "") or request.headers.get("x-request-id", "")
                body = self._echo(port, "http", conn, request_id)
                head = request.method == "HEAD"
                response = _response(200, "application/json", body, request.keep_alive, head=head)
            writer.write(response)
            await writer.drain()
            if not request.keep_alive:
                return

    async def _control(self, request: _Request) -> bytes:
        """Route a control-port request: /healthz, /requests, /probe."""
        keep = request.keep_alive
        head = request.method == "HEAD"
        if request.path == "/healthz":
            if request.method not in ("GET", "HEAD"):
                return _error_response(405, "use GET", keep, extra="Allow: GET, HEAD\r\n")
            return _response(200, "text/plain; charset=utf-8", b"ok", keep, head=head)
        if request.path == "/requests":
            if request.method not in ("GET", "HEAD"):
                return _error_response(405, "use GET", keep, extra="Allow: GET, HEAD\r\n")
            wanted = set(parse_qs(request.query, keep_blank_values=True).get("id", []))
            records = [r._asdict() for r in self.records if not wanted or r.request_id in wanted]
            document = {"pod": self.pod, "namespace": self.namespace, "requests": records}
            return _response(200, "application/json", _json_bytes(document), keep, head=head)
        if request.path == "/connections":
            if request.method not in ("GET", "HEAD"):
                return _error_response(405, "use GET", keep, extra="Allow: GET, HEAD\r\n")
            query = parse_qs(request.query, keep_blank_values=True)
            try:
                ports = {int(p) for p in query.get("port", [])}
                after = int(query.get("after", ["0"])[0] or 0)
            except ValueError:
                return _error_response(400, "port and after must be integers", keep)
            conns = [c._asdict() for c in self.connections if c.seq > after and (not ports or c.port in ports)]
            document = {"pod": self.pod, "namespace": self.namespace, "connections": conns}
            return _response(200, "application/json", _json_bytes(document), keep, head=head)
        if request.path == "/probe":
            if request.method != "POST":
                return _error_response(405, "use POST with a JSON probe batch", keep, extra="Allow: POST\r\n")
            try:
                targets, timeout, concurrency = parse_batch(json.loads(request.body))
            except ValueError as exc:  # includes JSONDecodeError and UnicodeDecodeError
                return _error_response(400, _one_line(f"bad probe batch: {exc}"), keep)
            results = await probe_batch(
                targets,
                DEFAULT_TIMEOUT if timeout is None else timeout,
                DEFAULT_CONCURRENCY if concurrency is None else concurrency,
            )
            document = {"results": [r.to_json() for r in results]}
            return _response(200, "application/json", _json_bytes(document), keep)
        return _error_response(
            404, f"no such path {request.path!r}; try /healthz, /requests, /connections or /probe", keep
        )


def _say(line: str) -> None:
    """Print a startup line at once; a closed stdout (e.g. piped into `head`) must not stop the server."""
    with contextlib.suppress(OSError, ValueError):
        print(line, flush=True)


async def _serve(server: EchoServer, plan: Sequence[_Listener]) -> int:
    """Bind everything (or nothing), announce readiness, run until SIGTERM/SIGINT, then exit cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Not available off the main thread (a harness may run serve in a thread): then run until cancelled.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)

    def on_loop_error(_loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        exc = context.get("exception")
        print(_one_line(f"echo: {context.get('message')}: {exc!r}"), file=sys.stderr, flush=True)

    loop.set_exception_handler(on_loop_error)

    sockets: list[socket.socket] = []
    try:
        for item in plan:
            try:
                sockets.append(_open_listener(item.address, item.port, item.v6only))
            except OSError as exc:
                raise StartupError(f"cannot listen on {_hostport(item.address, item.port)}: {exc}") from None
    except BaseException:
        for sock in sockets:
            sock.close()
        raise

    servers = [
        await asyncio.start_server(server.handler(item.kind, item.port), sock=sock, backlog=_LISTEN_BACKLOG)
        for item, sock in zip(plan, sockets, strict=True)
    ]
    try:
        for item in plan:
            _say(f"echo: listening {item.kind} {item.describe()}")
        _say("echo: ready")
        await stop.wait()
    finally:
        for srv in servers:
            srv.close()
        server.close_connections()
        await asyncio.sleep(0)  # let the transports run their close callbacks before the loop goes away
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    specs = [parse_port_spec(text) for text in args.portspecs]
    pod_ips = pod_ips_from_env(os.environ)
    control_port: int = args.control_port
    plan = _plan(specs, control_port, pod_ips)
    server = EchoServer(
        os.environ.get("POD_NAME") or socket.gethostname(), os.environ.get("POD_NAMESPACE", ""), args.verbose
    )
    try:
        return asyncio.run(_serve(server, plan))
    except KeyboardInterrupt:  # SIGINT before the handler was installed: still a clean stop
        return 0


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


Connector = Callable[[ProbeTarget], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def parse_target(text: str) -> ProbeTarget:
    """Parse a command-line TARGET: http://HOST:PORT or tcp://HOST:PORT, optionally #REQUEST_ID."""

    def bad() -> ValueError:
        return ValueError(f"bad probe target {_quoted(text)}: {_TARGET_HINT}")

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
    port = _parse_port_number(port_text)
    if port is None or not host:
        raise bad()
    try:
        return ProbeTarget(scheme, host, port, request_id or _new_request_id())
    except ValueError as exc:
        raise ValueError(f"bad probe target {_quoted(text)}: {exc}") from None


def _check_timeout(timeout: object) -> float:
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
    timeout = None if data.get("timeout") is None else _check_timeout(data["timeout"])
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


async def _probe_line(reader: asyncio.StreamReader, what: str, looks_like: Callable[[bytes], bool]) -> bytes:
    """Read one complete line of an answer; EOF before it completes is reset_or_eof, junk is error."""
    try:
        line = await reader.readline()
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


async def _read_http_body(reader: asyncio.StreamReader, status: int, headers: Mapping[str, str]) -> bytes:
    """Read a response body framed by chunked encoding, Content-Length, or the end of the connection."""
    if status in (204, 304):
        return b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size_line = await _probe_line(reader, "a chunk size", lambda _b: True)
            size_text = size_line.split(b";", 1)[0].strip()
            if not _HEX_RE.match(size_text):
                raise _ProbeFailure("error", f"bad chunk size line {_preview(size_line)}")
            size = int(size_text, 16)
            if size == 0:
                return bytes(body)
            if len(body) + size > _MAX_PROBE_BODY:
                raise _ProbeFailure("error", "response body too large for an echo answer")
            body.extend(await reader.readexactly(size))
            await reader.readexactly(2)  # CRLF after the chunk
    length_text = headers.get("content-length")
    if length_text is not None:
        if not (length_text.isascii() and length_text.isdigit()):
            raise _ProbeFailure("error", f"bad Content-Length {length_text!r}")
        length = int(length_text)
        if length > _MAX_PROBE_BODY:
            raise _ProbeFailure("error", "response body too large for an echo answer")
        return await reader.readexactly(length)
    data = await reader.read(_MAX_PROBE_BODY + 1)
    body = bytearray(data)
    while data and len(body) <= _MAX_PROBE_BODY:
        data = await reader.read(_MAX_PROBE_BODY + 1 - len(body))
        body.extend(data)
    if len(body) > _MAX_PROBE_BODY:
        raise _ProbeFailure("error", "response body too large for an echo answer")
    return bytes(body)


def _looks_like_status(line: bytes) -> bool:
    return line.startswith(b"HTTP/") or b"HTTP/".startswith(line)


async def _http_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: ProbeTarget
) -> tuple[str, int, str | None, str | None, str]:
    """GET /?id=..., then classify: 200 with an echo body is ok, another status is http_status."""
    request = (
        f"GET /?id={quote(target.request_id, safe='')} HTTP/1.1\r\n"
        f"Host: {_hostport(target.address, target.port)}\r\n"
        f"x-request-id: {target.request_id}\r\n"
        "User-Agent: echo-probe\r\n"
        "Accept: */*\r\n"
        "Connection: close\r\n\r\n"
    )
    writer.write(request.encode("ascii"))
    await writer.drain()
    while True:
        line = await _probe_line(reader, "the status line", _looks_like_status)
        match = _STATUS_RE.match(line)
        if not match:
            raise _ProbeFailure("error", f"not an HTTP status line: {_preview(line)}")
        status = int(match.group(1))
        reason = (match.group(2) or b"").decode("latin-1").strip()
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            raw = await _probe_line(reader, "the end of the response headers", lambda _b: True)
            if raw in (b"\r\n", b"\n"):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        else:
            raise _ProbeFailure("error", "too many response header fields")
        if not 100 <= status < 200 or status == 101:
            break  # 1xx interim responses (100 Continue, 103 Early Hints) precede the real one
    if status == 200:
        body = await _read_http_body(reader, status, headers)
        peer, pod, note = _echo_fields(body, "the HTTP 200 body", target)
        return "ok", status, peer, pod, note
    try:
        body = await _read_http_body(reader, status, headers)
    except (_ProbeFailure, asyncio.IncompleteReadError, ConnectionError) as exc:
        body = exc.partial if isinstance(exc, asyncio.IncompleteReadError) else b""
    first = body.decode("utf-8", "replace").strip().splitlines()
    return "http_status", status, None, None, _truncate(first[0].strip() if first else reason)


async def _tcp_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: ProbeTarget
) -> tuple[str, int | None, str | None, str | None, str]:
    """Send the request id as one line; a JSON echo line back is ok."""
    writer.write(target.request_id.encode("ascii") + b"\n")
    await writer.drain()
    line = await _probe_line(reader, "the echo line", lambda b: b.lstrip().startswith(b"{"))
    peer, pod, note = _echo_fields(line, "the answer line", target)
    return "ok", None, peer, pod, note


async def _connect_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: ProbeTarget
) -> tuple[str, int | None, str | None, str | None, str]:
    """CONNECT HOST:PORT on the tunnel port; behind a 200 the tcp exchange (ok, status 200), else http_status."""
    authority = _hostport(target.address, target.port)
    writer.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode("ascii"))
    await writer.drain()
    line = await _probe_line(reader, "the tunnel's status line", _looks_like_status)
    match = _STATUS_RE.match(line)
    if not match:
        raise _ProbeFailure("error", f"not an HTTP status line: {_preview(line)}")
    status = int(match.group(1))
    for _ in range(_MAX_HEADERS + 1):
        if await _probe_line(reader, "the end of the tunnel's headers", lambda _b: True) in (b"\r\n", b"\n"):
            break
    else:
        raise _ProbeFailure("error", "too many response header fields")
    if status != 200:
        return "http_status", status, None, None, (match.group(2) or b"").decode("latin-1").strip()
    _, _, peer, pod, note = await _tcp_exchange(reader, writer, target)
    return "ok", status, peer, pod, note


_EXCHANGES = {"http": _http_exchange, "tcp": _tcp_exchange, "connect": _connect_exchange}


async def _default_connect(target: ProbeTarget) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(target.address, target.port)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return _truncate(_one_line(f"{type(exc).__name__}: {text}" if text else type(exc).__name__))


async def probe_one(target: ProbeTarget, timeout: float, connect: Connector | None = None) -> ProbeResult:
    """Dial one target within `timeout` seconds overall and classify what happened; never raises for I/O.

    Classification is by exception type, wherever it comes from (our dialler, a harness's connector that
    dials from another network namespace, or the exchange), so that the outcome vocabulary stays exact.
    """
    timeout = _check_timeout(timeout)
    dial = _default_connect if connect is None else connect
    status: int | None = None
    peer: str | None = None
    pod: str | None = None
    writer: asyncio.StreamWriter | None = None
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            # A tunnel probe dials the tunnel port of the target's address; the exchange names the port.
            dialled = replace(target, port=TUNNEL_PORT) if target.protocol == "connect" else target
            reader, writer = await dial(dialled)
            exchange = _EXCHANGES[target.protocol]
            outcome, status, peer, pod, detail = await exchange(reader, writer, target)
    except _ProbeFailure as failure:
        outcome, detail = failure.outcome, failure.detail
    except TimeoutError:  # our deadline, a connector's own timeout, or ETIMEDOUT from the kernel
        stage = "connecting" if writer is None else "waiting for the answer"
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
        # abort(), not close(): the answer (if any) is complete, and a peer that stopped reading must not keep
        # us (or a cancelled caller) waiting for a flush. The transport finishes closing on the next loop turn.
        if writer is not None:
            writer.transport.abort()
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
    timeout = _check_timeout(timeout)
    semaphore = asyncio.Semaphore(_check_concurrency(concurrency))

    async def one(target: ProbeTarget) -> ProbeResult:
        async with semaphore:
            return await probe_one(target, timeout, connect)

    return list(await asyncio.gather(*(one(t) for t in targets)))


def _cmd_probe(args: argparse.Namespace) -> int:
    given = [args.batch is not None, bool(args.stdin), bool(args.targets)]
    if sum(given) != 1:
        raise UsageError("probe needs exactly one of --batch JSON, --stdin or TARGET...")
    batch_timeout: float | None = None
    batch_concurrency: int | None = None
    if args.targets:
        try:
            targets = [parse_target(text) for text in args.targets]
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    else:
        raw: str | bytes = args.batch if args.batch is not None else sys.stdin.buffer.read()
        try:
            document = json.loads(raw)
        except ValueError as exc:
            raise UsageError(f"bad batch JSON: {exc}") from None
        try:
            targets, batch_timeout, batch_concurrency = parse_batch(document)
        except ValueError as exc:
            raise UsageError(f"bad batch: {exc}") from None
    # Explicit flags win over the batch's own values, which win over the defaults.
    timeout = args.timeout if args.timeout is not None else batch_timeout
    concurrency = args.concurrency if args.concurrency is not None else batch_concurrency
    results = asyncio.run(
        probe_batch(
            targets,
            DEFAULT_TIMEOUT if timeout is None else timeout,
            DEFAULT_CONCURRENCY if concurrency is None else concurrency,
        )
    )
    try:
        sys.stdout.write(json.dumps({"results": [r.to_json() for r in results]}) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into `head`; the reader has what it wanted
        return 0
    return 0


# --------------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one exception (one line in main) instead of usage text and sys.exit."""

    def error(self, message: str) -> NoReturn:
        """Raise instead of printing the two-line usage and exiting."""
        raise UsageError(message)


def _port_arg(text: str) -> int:
    port = _parse_port_number(text)
    if port is None:
        raise argparse.ArgumentTypeError(f"{_quoted(text)} is not a port number 1-65535")
    return port


def _timeout_arg(text: str) -> float:
    try:
        return _check_timeout(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{_quoted(text)} is not a number of seconds in (0, 3600]") from None


def _concurrency_arg(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{_quoted(text)} is not a positive integer")
    return int(text)


_SERVE_BINDS = """\
Serve application ports and the control port. BIND is one of:
  loopback       127.0.0.1 and/or ::1, one socket per family of the pod
  pod_ip         each pod IP ($INSTANCE_IPS, $INSTANCE_IP)
  wildcard       0.0.0.0 and/or [::] (IPV6_V6ONLY on), one socket per family of the pod
  dual_wildcard  one socket [::] with IPV6_V6ONLY off, IPv4 too (Go's net.Listen("tcp", ":P"));
                 in a pod without IPv6 (IPv4-only, or no pod IPs told) the same as wildcard: 0.0.0.0
  <address>      a literal IP address (IPv6 optionally in brackets)
The pod's families come from $INSTANCE_IPS / $INSTANCE_IP; none told means IPv4 only."""


def _build_parser() -> _Parser:
    parser = _Parser(
        prog="echo", description="Echo workload and prober for inbound-networking tests.", allow_abbrev=False
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{serve,probe}")

    serve = commands.add_parser(
        "serve",
        help="serve application ports and the control port",
        description=_SERVE_BINDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    serve.add_argument("--control-port", type=_port_arg, default=DEFAULT_CONTROL_PORT, metavar="N")
    serve.add_argument("--verbose", action="store_true", help="log every request to stderr")
    serve.add_argument("portspecs", nargs="*", metavar="PORTSPEC", help="PORT:BIND:PROTO, PROTO http or tcp")

    probe = commands.add_parser("probe", help="dial targets and print one JSON document", allow_abbrev=False)
    probe.add_argument("--timeout", type=_timeout_arg, default=None, metavar="SECONDS")
    probe.add_argument("--concurrency", type=_concurrency_arg, default=None, metavar="N")
    probe.add_argument("--batch", default=None, metavar="JSON", help="a JSON probe batch")
    probe.add_argument("--stdin", action="store_true", help="read a JSON probe batch from stdin")
    probe.add_argument("targets", nargs="*", metavar="TARGET", help="http://, tcp:// or connect://HOST:PORT[#ID]")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; return the exit status (2 usage error, 1 runtime error, 0 otherwise)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _build_parser().parse_args(arguments)
        if args.command == "serve":
            return _cmd_serve(args)
        return _cmd_probe(args)
    except UsageError as exc:
        print(_one_line(f"echo: {exc}"), file=sys.stderr)
        return 2
    except StartupError as exc:
        print(_one_line(f"echo: {exc}"), file=sys.stderr)
        return 1
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
