"""The echo program's server (`echo.py serve`): application ports that say who answered whom, and the control port.

Each application socket is bound where the command line said (echo.py resolves the port specs). The two
wildcards differ on IPv6: `wildcard` opens `[::]` IPv6-only, whereas `dual_wildcard` opens the socket Go's
`net.Listen("tcp", ":8080")` opens, `[::]` with IPV6_V6ONLY off, which accepts IPv4 too (as ::ffff:a.b.c.d,
reported as a.b.c.d, the way Go prints it). Every answer says which pod answered and which local address
accepted the connection, and every request is recorded so the harness can later ask "did request X reach this
pod, and on which address?" through the control port, which is never recorded itself. Every accepted connection
is recorded too, with its peer (`/connections`): a health probe that connects and hangs up says who probed only
there. The control port's POST /probe runs the prober (echo_probe.py) from inside the pod.
"""

import asyncio
import collections
import contextlib
import itertools
import json
import re
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

from echo_probe import (
    DEFAULT_CONCURRENCY,
    DEFAULT_TIMEOUT,
    HEX_RE,
    MAX_HEADERS,
    hostport,
    one_line,
    parse_batch,
    probe_batch,
)
from echo_socket import BufferedSocket, accept_forever

# NB: no `from __future__ import annotations` (see echo_probe.py).
MAX_RECORDS = 100_000

WILDCARD = {4: "0.0.0.0", 6: "::"}
"""The wildcard address of each IP version (also the control port's)."""
_LISTEN_BACKLOG = 1024
_MAX_CONTROL_BODY = 16 * 1024 * 1024  # a probe batch of ~100k targets

_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_HTTP_VERSION_RE = re.compile(r"HTTP/1\.[0-9]\Z")


class StartupError(Exception):
    """The environment refused what was asked (e.g. address in use): reported as one line, exit status 1."""


def _normalise_ip(address: str) -> str:
    """Report an IPv4-mapped IPv6 peer (``::ffff:1.2.3.4``) as the IPv4 address it really is."""
    if address.startswith("::ffff:") and "." in address:
        return address[7:]
    return address


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
class Listener:
    """One socket to open: an application port (`http`, `tcp`) or the control port, at one address."""

    kind: str  # "http", "tcp" or "control"
    address: str
    port: int
    v6only: bool = True  # IPV6_V6ONLY on an IPv6 socket (see ListenAddress)

    def describe(self) -> str:
        """address:port for the startup line, marking an IPv6 socket that takes IPv4 too (IPV6_V6ONLY off)."""
        where = hostport(self.address, self.port)
        return where if self.v6only or ":" not in self.address else f"{where} (IPV6_V6ONLY=0)"


# --------------------------------------------------------------------------------------------------------
# serve: a minimal HTTP/1.1 server on the loop's socket calls (BufferedSocket)
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


async def _read_line(reader: BufferedSocket) -> bytes:
    """Read one line; an over-long line is a bad request rather than a crash."""
    try:
        return await reader.readline()
    except ValueError:  # asyncio.LimitOverrunError surfaces from readline() as ValueError
        raise _BadRequest("line too long") from None


async def _read_body_bytes(reader: BufferedSocket, length: int, keep: bool, into: bytearray) -> None:
    """Read exactly `length` bytes, keeping them only when asked (app ports discard bodies unbuffered)."""
    while length > 0:
        chunk = await reader.read(min(length, 65536))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", length)
        length -= len(chunk)
        if keep:
            into.extend(chunk)


async def _read_chunked(reader: BufferedSocket, keep: bool, limit: int) -> bytes:
    """Decode (or discard) a chunked request body, so that keep-alive stays in sync with the client."""
    body = bytearray()
    total = 0
    while True:
        line = await _read_line(reader)
        size_text = line.split(b";", 1)[0].strip()
        if not line.endswith(b"\n") or not HEX_RE.match(size_text):
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
    for _ in range(MAX_HEADERS):  # trailer fields, ignored
        line = await _read_line(reader)
        if line in (b"\r\n", b"\n"):
            return bytes(body)
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
    raise _BadRequest("too many trailer fields")


async def _read_request(reader: BufferedSocket, keep_body: bool) -> _Request | None:
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
    for _ in range(MAX_HEADERS + 1):
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
        await reader.write(b"HTTP/1.1 100 Continue\r\n\r\n")
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


def _connection_info(sock: socket.socket, peername: tuple[str, int]) -> tuple[str, str, int]:
    """(local ip, peer ip, peer port) of an accepted connection, IPv4-mapped addresses unmapped.

    The peer is the one accept() returned: a health checker that resets at once (SO_LINGER 0) is gone before
    getpeername() could name it.
    """
    try:
        sockname = sock.getsockname()
    except OSError:
        sockname = ("", 0)
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
        self._open: set[asyncio.Task[None]] = set()

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
        self._log(f"{protocol} {hostport(local, port)} <- {hostport(peer, peer_port)} id={request_id}")
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

    async def accept(self, kind: str, port: int, listener: socket.socket) -> None:
        """Serve the connections `listener` accepts until cancelled, each by a task kept in `_open`."""
        await accept_forever(listener, lambda sock, peer: self._handle(kind, port, sock, peer), self._open, port)

    async def _handle(self, kind: str, port: int, sock: socket.socket, peername: tuple[str, int]) -> None:
        """Serve one accepted connection, then close it."""
        try:
            info = _connection_info(sock, peername)
            if kind != "control":  # recorded first: nothing below may lose a connection that reset at once
                local, peer, peer_port = info
                self.connections.append(
                    ConnectionRecord(next(self._seq), port, kind, local, peer, peer_port, time.time())
                )
            conn = BufferedSocket(sock)
            if kind == "tcp":
                await self._serve_tcp(conn, info, port)
            else:
                await self._serve_http(conn, info, port, control=kind == "control")
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client went away (or reset us); nothing to answer
        except Exception as exc:  # a bug must not kill the server or print a traceback
            print(f"echo: connection on port {port} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            sock.close()

    async def close_connections(self) -> None:
        """End every open client connection (at shutdown, so that nothing is left half open)."""
        for task in list(self._open):
            task.cancel()
        await asyncio.gather(*self._open, return_exceptions=True)

    async def _serve_tcp(self, reader: BufferedSocket, conn: tuple[str, str, int], port: int) -> None:
        """One JSON line per received line, until EOF; the line itself (stripped) is the request id."""
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # a line longer than the stream limit: not our protocol
                return
            if not line:
                return
            request_id = line.decode("utf-8", "replace").strip()
            await reader.write(self._echo(port, "tcp", conn, request_id) + b"\n")

    async def _serve_http(self, reader: BufferedSocket, conn: tuple[str, str, int], port: int, control: bool) -> None:
        """HTTP/1.x with keep-alive and pipelining; app ports echo, the control port routes."""
        while True:
            try:
                request = await _read_request(reader, keep_body=control)
            except _BadRequest as exc:
                await reader.write(_error_response(400, str(exc)))
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
            await reader.write(response)
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
                return _error_response(400, one_line(f"bad probe batch: {exc}"), keep)
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


async def run_server(server: EchoServer, plan: Sequence[Listener]) -> int:
    """Bind everything (or nothing), announce readiness, run until SIGTERM/SIGINT, then exit cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Not available off the main thread (a harness may run serve in a thread): then run until cancelled.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)

    def on_loop_error(_loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        exc = context.get("exception")
        print(one_line(f"echo: {context.get('message')}: {exc!r}"), file=sys.stderr, flush=True)

    loop.set_exception_handler(on_loop_error)

    sockets: list[socket.socket] = []
    try:
        for item in plan:
            try:
                sockets.append(_open_listener(item.address, item.port, item.v6only))
            except OSError as exc:
                raise StartupError(f"cannot listen on {hostport(item.address, item.port)}: {exc}") from None
    except BaseException:
        for sock in sockets:
            sock.close()
        raise

    accepting = [
        loop.create_task(server.accept(item.kind, item.port, sock)) for item, sock in zip(plan, sockets, strict=True)
    ]
    try:
        await asyncio.sleep(0)  # every accept loop waiting before "ready": connections taken in arrival order
        for item in plan:
            _say(f"echo: listening {item.kind} {item.describe()}")
        _say("echo: ready")
        await stop.wait()
    finally:
        for task in accepting:  # cancelled before their sockets close: the loop stops watching them first
            task.cancel()
        await asyncio.gather(*accepting, return_exceptions=True)
        for sock in sockets:
            sock.close()
        await server.close_connections()
    return 0
