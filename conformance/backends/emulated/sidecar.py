"""The reference sidecar of the emulated mesh: an inbound/outbound TCP proxy that forwards like Envoy does.

It is the executable statement of how a sidecar *should* forward, independent of the spec: it knows nothing
of expected outcomes, only its configuration (computed by the emulated control plane the way istiod builds
clusters) and the kernel's SO_ORIGINAL_DST. Standard library only, so it starts in ~20 ms with
`python3 -I -S sidecar.py CONFIG`, and it can be read in one sitting.

- Inbound (15006): the capture rules REDIRECT every inbound TCP connection here. The original destination
  port picks a listener (or the catch-all passthrough); the listener says where to dial (localhost, the
  original destination, or the pod IP) and from which address (127.0.0.6 / ::6, or none). A TPROXY pod
  (`interception.mode`) is TPROXY'd here instead, and dialled from the client's address (original_src.py).
- Outbound (15001): a meshed pod's own outbound connections arrive here; they are dialled to their original
  destination from the pod IP (this process runs as uid 1337, which the capture rules let out).
- When the upstream cannot be reached, an HTTP listener answers 503 (Envoy: "upstream connect error or
  disconnect/reset before headers") and a TCP listener closes the connection.

- Status (15020, when the configuration has a `status` block): pilot-agent's `/app-health/<container>/readyz`
  (status_agent.py, loaded from this folder like original_src.py).

The process starts as root to read its configuration and bind its listeners, then drops to uid/gid 1337
(uid 0 / gid 1337 in TPROXY mode, as the injection template runs it) before it makes a single upstream
connection, because the capture rules recognise the proxy by that uid or gid.
There is no mTLS: bytes are relayed as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import ipaddress
import json
import os
import re
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2

CONFIG_FORMAT = "mesh-inbound-conformance/sidecar-config"
CONFIG_VERSION = 1
SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80
CONNECT_TIMEOUT = 2.0
HEAD_LIMIT = 65536
HTTP_REQUEST_LINE = re.compile(rb"^[A-Z]{3,10} \S+ HTTP/1\.[01]\r?\n")
_MAYBE_REQUEST_LINE = re.compile(rb"^[A-Z]{0,10}( \S*( [A-Z0-9/.]*\r?)?)?$")
"""A first line that may still become an HTTP request line: keep reading before deciding."""
PROXY_PORTS = (15001, 15006)
RESPONSE_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: text/plain\r\n"
    b"content-length: 91\r\n"
    b"server: mic-reference-sidecar\r\n"
    b"connection: close\r\n\r\n"
    b"upstream connect error or disconnect/reset before headers. reset reason: connection failure\n"
)


def _sibling(name: str) -> Any:
    """A standalone module of this folder (this program runs with no package on its path)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"sidecar_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


original_src = _sibling("original_src")
if TYPE_CHECKING:  # the same file, as the type checker finds it (never imported so: no package at run time)
    from conformance.backends.emulated.relay import Conn, accept, nodelay, relay
else:
    relaying = _sibling("relay")
    Conn, accept, nodelay, relay = relaying.Conn, relaying.accept, relaying.nodelay, relaying.relay
StatusServer = _sibling("status_agent").StatusServer


class ConfigError(Exception):
    """The configuration file is not what this sidecar understands."""


@dataclass(frozen=True)
class Route:
    """Where one inbound listener (or the passthrough) sends a connection."""

    name: str
    protocol: str  # "http", "tcp" or "sniff"
    address: str | None  # None: the original destination address
    port: int | None  # None: the original destination port
    bind: str | tuple[str, ...] | None
    """None, one address, or (on a dual-stack pod) one per family: `pick_bind` takes the upstream's family's."""
    detection_timeout: float | None = None
    """How long a sniffing route waits for the first bytes; None: no timeout (Istio's mesh default)."""
    mark: int | None = None
    """Dial transparently from `bind` (the client's address) with this SO_MARK: Envoy's original_src."""


PASSTHROUGH_CLUSTER = Route("PassthroughCluster", "tcp", None, None, None)
"""Where an outbound connection to a port no Service declares as HTTP goes: its original destination, as TCP."""


@dataclass(frozen=True)
class Config:
    """The parts of the JSON configuration this proxy acts on."""

    pod: str
    listeners: dict[int, Route]
    passthrough: Route
    outbound_http_ports: frozenset[int]
    inbound_port: int
    outbound_port: int
    uid: int
    gid: int
    status: StatusConfig | None = None
    original_src_mark: int | None = None
    """TPROXY interception: the mark of Envoy's original_src (None: REDIRECT, nothing transparent)."""


@dataclass(frozen=True)
class StatusConfig:
    """pilot-agent's status port: the app probers the injector handed over, and where to send them."""

    port: int
    probers: dict[str, dict[str, Any]]
    legacy_localhost_destination: bool
    pod_ip: str


def _status(data: dict[str, Any]) -> StatusConfig | None:
    status = data.get("status")
    if not status:
        return None
    probers = {str(path): dict(probe) for path, probe in status.get("app_probers", {}).items()}
    return StatusConfig(
        port=int(status["port"]),
        probers=probers,
        legacy_localhost_destination=bool(status.get("legacy_localhost_destination", False)),
        pod_ip=str(data["pod"]["ips"][0]),
    )


def _route(name: str, data: dict[str, Any]) -> Route:
    upstream = data["upstream"]
    address = upstream["address"]
    return Route(
        name=name,
        protocol=str(data.get("protocol", "tcp")),
        address=None if address == "original_dst" else str(address),
        port=int(upstream["port"]) if upstream.get("port") is not None else None,
        bind=_bind(data.get("bind")),
        detection_timeout=float(data["detection_timeout_s"]) if data.get("detection_timeout_s") else None,
    )


def _bind(value: Any) -> str | tuple[str, ...] | None:
    if isinstance(value, list):
        return tuple(str(v) for v in value) or None
    return str(value) if value else None


def pick_bind(bind: str | tuple[str, ...] | None, upstream: str) -> str | None:
    """The source address of an upstream connection: of a bind list, the one of the upstream's family.

    Envoy's cluster source address plus ExtraSourceAddresses (Istio sets 127.0.0.6 and ::6 on a dual-stack proxy,
    cluster_builder.go); envoy default_local_address_selector.cc picks the one whose family is the upstream's.
    """
    if not isinstance(bind, tuple):
        return bind
    return next((b for b in bind if (":" in b) == (":" in upstream)), None)


def load_config(path: str) -> Config:
    """Read and check the configuration; ConfigError says what is wrong in one line."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if data.get("format") != CONFIG_FORMAT or data.get("version") != CONFIG_VERSION:
            raise ConfigError(f"{path}: expected format {CONFIG_FORMAT} version {CONFIG_VERSION}")
        inbound = data["inbound"]
        listeners = {
            int(item["port"]): _route(item.get("cluster", f"inbound|{item['port']}||"), item)
            for item in inbound["listeners"]
        }
        passthrough = _route(inbound["passthrough"].get("cluster", "InboundPassthroughCluster"), inbound["passthrough"])
        pod, interception = data["pod"], data.get("interception") or {}
        mark = interception.get("original_src_mark") if interception.get("mode") == "TPROXY" else None
        return Config(
            pod=f"{pod['name']}.{pod['namespace']}",
            listeners=listeners,
            passthrough=passthrough,
            outbound_http_ports=frozenset(int(p) for p in data["outbound"]["http_ports"]),
            inbound_port=int(inbound["port"]),
            outbound_port=int(data["outbound"]["port"]),
            uid=int(data.get("proxy_uid", 1337)),
            gid=int(data.get("proxy_gid", 1337)),
            status=_status(data),
            original_src_mark=int(mark) if mark is not None else None,
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: {type(err).__name__}: {err}") from None


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """The address the client dialled before REDIRECT rewrote it (conntrack's view)."""
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, 28)
        port = struct.unpack("!H", raw[2:4])[0]
        return str(ipaddress.IPv6Address(raw[8:24])), port
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack("!H", raw[2:4])[0]
    return socket.inet_ntoa(raw[4:8]), port


class Sidecar:
    """One proxy process: two listeners, one log."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.connections = 0

    def log(self, message: str) -> None:
        """One line per decision, like an access log: the harness attaches it to failing tests."""
        sys.stderr.write(f"{time.time():.3f} {message}\n")
        sys.stderr.flush()

    def _destination(self, client: Conn, inbound: bool = False) -> tuple[str, int] | None:
        """The connection's original destination, or None (the caller closes it) for a proxy port.

        Someone dialled 15001/15006 itself: forwarding it would loop back here.
        """
        tproxied = inbound and self.config.original_src_mark is not None
        sock = client.sock
        orig_addr, orig_port = original_src.local_destination(sock) if tproxied else original_dst(sock)
        if orig_port in PROXY_PORTS:
            return None
        return orig_addr, orig_port

    async def inbound(self, client: Conn) -> None:
        """Handle one redirected inbound connection."""
        destination = self._destination(client, inbound=True)
        if destination is not None:
            route = self.config.listeners.get(destination[1], self.config.passthrough)
            if self.config.original_src_mark is not None:  # original_src wins over the cluster's bind
                route = replace(route, bind=client.peername[0], mark=self.config.original_src_mark)
            await self.forward("inbound", client, route, *destination)

    async def outbound(self, client: Conn) -> None:
        """Handle one connection a meshed pod's app made to another pod or a Service."""
        destination = self._destination(client)
        # Like Envoy's 0.0.0.0_<port> HTTP listeners: a port some Service declares as HTTP is proxied as HTTP;
        # anything else goes through the PassthroughCluster as plain TCP. Either way to the original destination.
        if destination is not None:
            http = destination[1] in self.config.outbound_http_ports
            route = Route(f"outbound|{destination[1]}", "http", None, None, None) if http else PASSTHROUGH_CLUSTER
            await self.forward("outbound", client, route, *destination)

    async def forward(self, direction: str, client: Conn, route: Route, orig_addr: str, orig_port: int) -> None:
        """Dial the route's upstream, then relay; on failure answer as Envoy does for the protocol.

        The client's socket is closed by whoever accepted it (relay.accept) once this returns.
        """
        self.connections += 1
        address, port, protocol = route.address or orig_addr, route.port or orig_port, route.protocol
        bind = pick_bind(route.bind, address)
        head = b""
        try:
            if protocol == "http":
                head = await self._read_head(client)
            elif protocol == "sniff":
                head, protocol = await self._sniff(client, route.detection_timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        where = f"{direction} {client.peer} orig={orig_addr} cluster={route.name} proto={protocol}"
        try:
            upstream = await self._connect(address, port, bind, route.mark)
        except OSError as err:
            self.log(f"{where} upstream={address}:{port} bind={bind or '-'} connect_failed={err.strerror or err}")
            await self._fail(client, protocol)
            return
        self.log(f"{where} upstream={address}:{port} bind={bind or '-'} connected")
        relayed = await relay(client, Conn(upstream), head)
        if protocol == "http" and relayed == 0 and not client.failed:
            # The upstream accepted, then closed before any response byte: "reset before headers".
            self.log(f"{where} upstream closed before headers")
            await self._fail(client, protocol)

    async def _read_head(self, client: Conn) -> bytes:
        """The request's head, through the blank line (what follows it stays with the client, relayed after).

        Envoy's HTTP connection manager reads the request headers before it picks an upstream.
        (asyncio.timeout, not wait_for: wait_for makes a task of its own per call.)
        """
        async with asyncio.timeout(CONNECT_TIMEOUT * 5):
            head: bytes = await client.readuntil(b"\r\n\r\n")
        return head

    async def _sniff(self, client: Conn, timeout: float | None) -> tuple[bytes, str]:
        # The catch-all passthrough inspects the first bytes (Envoy's http_inspector): an HTTP/1 request line
        # makes it an HTTP connection, anything else plain TCP. It waits as long as the configuration says
        # (None: for ever, Istio's default), and until the first line can no longer become a request line.
        first = b""
        try:
            while True:
                async with asyncio.timeout(timeout):
                    chunk = await client.read(HEAD_LIMIT)
                first += chunk
                line = first.split(b"\n", 1)[0]
                if not chunk or b"\n" in first or len(first) >= HEAD_LIMIT or not _MAYBE_REQUEST_LINE.match(line):
                    break
        except TimeoutError:
            return first, "tcp"
        if HTTP_REQUEST_LINE.match(first):
            client.unread(first)
            return await self._read_head(client), "http"
        return first, "tcp"

    async def _connect(self, address: str, port: int, bind: str | None, mark: int | None = None) -> socket.socket:
        """Dial the upstream (from `bind` when given; transparently, with SO_MARK `mark`, when that is given).

        Returns the connected, non-blocking socket. The kernel picks the source port, per destination, as it
        does for Envoy: so this proxy, like Envoy, now and then dials two ports of one pod from one port at
        once, and the harness's own runs show that it copes (network.ENROLLED_TCP_SETTINGS; issue 20 item 15).
        So the harness's "ports in turn" (dialer.py) has no copy here (181e454 had one, 4fe8b68 removed it);
        should one return, it is a copy, not an import: this program runs on its own as `python3 -I -S
        sidecar.py`, with no package on its path.
        """
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if bind and mark is not None:
                original_src.prebind(sock, bind, mark)
            elif bind:
                sock.bind((bind, 0))
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.sock_connect(sock, (address, port))
        except TimeoutError:
            sock.close()
            raise OSError(110, "connect timeout") from None
        except BaseException:
            sock.close()
            raise
        nodelay(sock)
        return sock

    async def _fail(self, client: Conn, protocol: str) -> None:
        if protocol == "http":
            with contextlib.suppress(OSError):
                await client.send(RESPONSE_503)


def _listen(port: int, family: socket.AddressFamily, transparent: bool = False) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if transparent:  # the TPROXY target hands connections to transparent listeners only
        original_src.transparent(sock)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("::", port))
    else:
        sock.bind(("0.0.0.0", port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _drop_privileges(uid: int, gid: int) -> None:
    # The capture rules single out the proxy by uid/gid 1337 (ISTIO_OUTPUT --uid-owner): every upstream
    # connection must come from that uid, or it would be captured again.
    if os.getuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        death = ctypes.c_int(0)
        libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(death), 0, 0, 0)
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        # Linux clears the parent-death signal on a uid change: keep the one we were started with (the
        # harness's, so that a killed harness leaves no sidecar behind).
        if death.value:
            libc.prctl(PR_SET_PDEATHSIG, death.value, 0, 0, 0)


async def serve(config: Config) -> None:
    """Bind both listeners on both families, drop privileges, serve until SIGTERM."""
    sidecar = Sidecar(config)
    tproxy = config.original_src_mark is not None
    sockets = {
        (name, family): _listen(port, family, tproxy and name == "inbound")
        for name, port in (("inbound", config.inbound_port), ("outbound", config.outbound_port))
        for family in (socket.AF_INET, socket.AF_INET6)
    }
    status_sockets = []
    if config.status is not None:
        status_sockets = [_listen(config.status.port, family) for family in (socket.AF_INET, socket.AF_INET6)]
    _drop_privileges(config.uid, config.gid)
    loop = asyncio.get_running_loop()
    accepting = [
        loop.create_task(accept(sock, sidecar.inbound if name == "inbound" else sidecar.outbound, sidecar.log))
        for (name, _family), sock in sockets.items()
    ]
    servers = []
    if config.status is not None:
        status = StatusServer(sidecar, config.status)
        for sock in status_sockets:
            servers.append(await asyncio.start_server(status.handle, sock=sock, backlog=1024))
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await asyncio.sleep(0)  # every accept loop at its first wait before "ready"
    sidecar.log(f"ready pod={config.pod} uid={os.getuid()} listeners={sorted(config.listeners)}")
    await stop.wait()
    for task in accepting:  # cancelled before their listeners close: the loop stops watching them first
        task.cancel()
    await asyncio.gather(*accepting, return_exceptions=True)
    for sock in sockets.values():
        sock.close()
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> int:
    """`sidecar.py CONFIG`: the configuration path is the last argument, as for a replaced sidecar."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        sys.stderr.write("sidecar: usage: sidecar.py CONFIG.json\n")
        return 2
    try:
        config = load_config(args[-1])
    except ConfigError as err:
        sys.stderr.write(f"sidecar: {err}\n")
        return 2
    try:
        asyncio.run(serve(config))
    except OSError as err:
        sys.stderr.write(f"sidecar: cannot listen: {err}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
