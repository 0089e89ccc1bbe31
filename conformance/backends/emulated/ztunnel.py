"""The reference ztunnel of the emulated mesh: one node proxy serving every enrolled pod from inside its namespace.

Like ztunnel's in-pod mode (ztunnel src/inpod/*, probes-ambient.md §2), this one process runs in the node's
namespace and opens its listeners inside each enrolled pod's network namespace: it steps into the pod (setns),
creates the socket, and steps back; the socket stays in the pod. istio-cni's rules (ambient_capture.py) then
REDIRECT the pod's traffic to those listeners:

- 15006, plaintext inbound (from a pod outside the mesh, a sidecar, or the node): ztunnel "always targets the
  local workload IP" (src/proxy/inbound.rs, inbound_passthrough.rs), i.e. the pod IP and the port the client
  dialled, and dials it from the CLIENT's address (IP_TRANSPARENT + IP_FREEBIND, src/proxy.rs freebind_connect).
- 15001, outbound from the pod's own app: a destination that is an enrolled pod (directly or behind a Service
  VIP, which ztunnel resolves itself) is reached through a tunnel to that pod's 15008; anything else is dialled
  directly from the pod's address.
- 15008, the tunnel: an HTTP CONNECT naming the target; the target is again the local workload IP, dialled
  from the tunnel peer's address; 200 on success, 503 when the app cannot be reached.

There is no mTLS: real ztunnel speaks HBONE (HTTP/2 CONNECT inside mutual TLS with SPIFFE identities); this one
speaks plain HTTP/1.1 CONNECT over TCP, which keeps the addressing facts the suite checks and nothing else.

Every socket carries SO_MARK 0x539 so the capture rules let it through and the connmark brings replies of a
transparent dial back here (emulation.md, "Ambient in-pod redirection": without it the app's SYN-ACK leaves by
eth0). It never reads the suite's spec: it knows only its configuration (the enrolled pods and the Services).
Standard library only: `python3 -I -S ztunnel.py CONFIG`; SIGHUP re-reads CONFIG (pods added or removed).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import ipaddress
import json
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

CONFIG_FORMAT = "mesh-inbound-conformance/ztunnel-config"
CONFIG_VERSION = 1
CLONE_NEWNET = 0x40000000
SO_MARK = 36
SO_ORIGINAL_DST = 80
IP_TRANSPARENT = 19
IP_FREEBIND = 15
IPV6_TRANSPARENT = 75
IPV6_FREEBIND = 78
SOL_IPV6 = 41
CONNECT_TIMEOUT = 2.0
HEAD_LIMIT = 65536

_libc = ctypes.CDLL(None, use_errno=True)


def _beside(name: str) -> Any:
    """A standalone module of this folder (this program runs with no package on its path), as sidecar.py loads."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"ztunnel_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:  # the same file, as the type checker finds it (never imported so: no package at run time)
    from conformance.backends.emulated.relay import Conn, accept, nodelay, relay
else:
    _relaying = _beside("relay")
    Conn, accept, nodelay, relay = _relaying.Conn, _relaying.accept, _relaying.nodelay, _relaying.relay


class ConfigError(Exception):
    """The configuration file is not what this ztunnel understands."""


@dataclass(frozen=True)
class Workload:
    """One enrolled pod: its address and the namespace its listeners live in."""

    name: str
    ip: str
    netns: str


@dataclass(frozen=True)
class Config:
    """The parts of the JSON configuration this proxy acts on."""

    node: str
    workloads: dict[str, Workload]
    services: dict[tuple[str, int], tuple[str, int]]
    """(VIP, port) -> (endpoint IP, target port)."""
    inbound_port: int
    outbound_port: int
    tunnel_port: int
    mark: int


def load_config(path: str) -> Config:
    """Read and check the configuration; ConfigError says what is wrong in one line."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if data.get("format") != CONFIG_FORMAT or data.get("version") != CONFIG_VERSION:
            raise ConfigError(f"{path}: expected format {CONFIG_FORMAT} version {CONFIG_VERSION}")
        workloads = {}
        for item in data["workloads"]:
            workload = Workload(f"{item['name']}.{item['namespace']}", str(item["ip"]), str(item["netns"]))
            workloads[str(ipaddress.ip_address(workload.ip))] = workload
        services = {}
        for item in data["services"]:
            vip = str(ipaddress.ip_address(item["address"]))
            for port in item["ports"]:
                services[(vip, int(port["port"]))] = (str(item["endpoint"]), int(port["target_port"]))
        ports = data["ports"]
        return Config(
            node=str(data["node"]),
            workloads=workloads,
            services=services,
            inbound_port=int(ports["inbound"]),
            outbound_port=int(ports["outbound"]),
            tunnel_port=int(ports["tunnel"]),
            mark=int(data["mark"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: {type(err).__name__}: {err}") from None


def in_namespace(path: str, make: Callable[[], socket.socket]) -> socket.socket:
    """Create a socket inside the network namespace at `path`; the socket stays there, the thread comes back."""
    target = os.open(path, os.O_RDONLY)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
        try:
            return make()
        finally:
            _libc.setns(home, CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(home)


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """The address the client dialled before REDIRECT rewrote it (conntrack's view)."""
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(SOL_IPV6, SO_ORIGINAL_DST, 28)
        return str(ipaddress.IPv6Address(raw[8:24])), struct.unpack("!H", raw[2:4])[0]
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    return socket.inet_ntoa(raw[4:8]), struct.unpack("!H", raw[2:4])[0]


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _transparent(sock: socket.socket) -> None:
    # freebind_connect: bind to an address that is not ours (the client's), and let the kernel accept it.
    if sock.family == socket.AF_INET6:
        sock.setsockopt(SOL_IPV6, IPV6_TRANSPARENT, 1)
        sock.setsockopt(SOL_IPV6, IPV6_FREEBIND, 1)
    else:
        sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)


class Ztunnel:
    """The node proxy: listeners per enrolled pod, one log."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.servers: dict[str, list[tuple[asyncio.Task[None], socket.socket]]] = {}
        """Per enrolled pod's IP: its listeners, each with the task accepting on it."""

    def log(self, message: str) -> None:
        """One line per decision, like ztunnel's access log: the harness attaches it to failing tests."""
        sys.stderr.write(f"{time.time():.3f} {message}\n")
        sys.stderr.flush()

    # --- sockets --------------------------------------------------------------------------------------

    def _listener(self, workload: Workload, port: int) -> socket.socket:
        def make() -> socket.socket:
            sock = socket.socket(_family(workload.ip), socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, self.config.mark)
            _transparent(sock)
            if sock.family == socket.AF_INET6:
                sock.setsockopt(SOL_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(("::", port))
            else:
                sock.bind(("0.0.0.0", port))
            sock.listen(1024)
            sock.setblocking(False)
            return sock

        return in_namespace(workload.netns, make)

    async def dial(self, workload: Workload, address: str, port: int, source: str | None) -> socket.socket:
        """Connect from inside the workload's namespace, marked; from `source` (transparently) when given.

        Port 0, not the client's port: reusing it clashes with the client's pre-redirect conntrack entry.
        """

        def make() -> socket.socket:
            sock = socket.socket(_family(address), socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, self.config.mark)
            return sock

        sock = in_namespace(workload.netns, make)
        try:
            sock.setblocking(False)
            if source is not None:
                _transparent(sock)
                sock.bind((source, 0))
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(CONNECT_TIMEOUT):  # not wait_for: no task of its own per dial
                await loop.sock_connect(sock, (address, port))
        except TimeoutError:
            sock.close()
            raise OSError(110, "connect timeout") from None
        except BaseException:
            sock.close()
            raise
        nodelay(sock)
        return sock

    # --- workloads ------------------------------------------------------------------------------------

    async def enrol(self, workload: Workload) -> None:
        """Open the three in-pod listeners of one pod (what istio-cni hands ztunnel the pod's netns for)."""
        handlers: tuple[tuple[int, Callable[[Workload, Conn], Awaitable[None]]], ...] = (
            (self.config.inbound_port, self.inbound),
            (self.config.outbound_port, self.outbound),
            (self.config.tunnel_port, self.tunnel),
        )
        listeners = []
        for port, handler in handlers:

            async def handle(client: Conn, h: Any = handler) -> None:
                await h(workload, client)

            sock = self._listener(workload, port)
            listeners.append((asyncio.get_running_loop().create_task(accept(sock, handle, self.log)), sock))
        self.servers[workload.ip] = listeners
        await asyncio.sleep(0)  # every accept loop at its first wait before "enrolled"
        self.log(f"enrolled {workload.name} ip={workload.ip}")

    async def unenrol(self, ip: str) -> None:
        """Close a pod's listeners (the pod was deleted); its connections go on, as a closed asyncio Server's do.

        Each accept task ends before its socket closes: a socket closed while the loop still watched it would
        leave the loop a stale entry for a number the next socket may get.
        """
        listeners = self.servers.pop(ip, [])
        for task, _ in listeners:
            task.cancel()
        await asyncio.gather(*(task for task, _ in listeners), return_exceptions=True)
        for _, sock in listeners:
            sock.close()

    async def reload(self, path: str) -> None:
        """Re-read the configuration: enrol new pods, drop removed ones."""
        try:
            config = load_config(path)
        except ConfigError as err:
            self.log(f"reload failed: {err}")
            return
        self.config = config
        for ip in [ip for ip in self.servers if ip not in config.workloads]:
            await self.unenrol(ip)
        for ip, workload in config.workloads.items():
            if ip not in self.servers:
                await self.enrol(workload)

    # --- traffic --------------------------------------------------------------------------------------

    def _local(self, workload: Workload, port: int) -> tuple[str, int]:
        # src/proxy/inbound.rs: "We always target the local workload IP as the destination".
        return workload.ip, port

    async def inbound(self, workload: Workload, client: Conn) -> None:
        """Plaintext inbound on 15006: dial the local workload IP from the client's address."""
        peer = client.peername[0]
        _, orig_port = original_dst(client.sock)
        if orig_port in (self.config.inbound_port, self.config.outbound_port, self.config.tunnel_port):
            return
        address, port = self._local(workload, orig_port)
        where = f"inbound {workload.name} src={peer} dst={address}:{port}"
        try:
            upstream = await self.dial(workload, address, port, source=peer)
        except OSError as err:
            self.log(f"{where} connect_failed={err.strerror or err}")
            return
        self.log(f"{where} transparent=true connected")
        await relay(client, Conn(upstream))

    async def outbound(self, workload: Workload, client: Conn) -> None:
        """An enrolled pod's own outbound connection: tunnel to an enrolled destination, else dial directly."""
        orig = original_dst(client.sock)
        address, port = self.config.services.get(orig, orig)
        where = f"outbound {workload.name} orig={orig[0]}:{orig[1]} dst={address}:{port}"
        if address in self.config.workloads:
            await self._tunnel_out(workload, client, address, port, where)
            return
        try:
            upstream = await self.dial(workload, address, port, source=None)
        except OSError as err:
            self.log(f"{where} direct connect_failed={err.strerror or err}")
            return
        self.log(f"{where} direct connected")
        await relay(client, Conn(upstream))

    async def _tunnel_out(self, workload: Workload, client: Conn, address: str, port: int, where: str) -> None:
        host = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        tunnel: Conn | None = None
        try:
            tunnel = Conn(await self.dial(workload, address, self.config.tunnel_port, source=None))
            await tunnel.send(f"CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            async with asyncio.timeout(CONNECT_TIMEOUT * 2):
                head = await tunnel.readuntil(b"\r\n\r\n")
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as err:
            self.log(f"{where} tunnel failed={err}")
            if tunnel is not None:
                tunnel.sock.close()
            return
        status = head.split(b" ", 2)[1] if head.count(b" ") >= 1 else b"?"
        if status != b"200":
            # The peer ztunnel could not reach its app: the client sees the connection closed.
            self.log(f"{where} tunnel status={status.decode(errors='replace')}")
            tunnel.sock.close()
            return
        self.log(f"{where} tunnel connected")
        await relay(client, tunnel)  # what came behind the 200 goes to the client first

    async def tunnel(self, workload: Workload, client: Conn) -> None:
        """A CONNECT on 15008: dial the local workload IP at the requested port, from the tunnel peer's address."""
        peer = client.peername[0]
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT * 2):
                head = await client.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            port = int(target.rpartition(":")[2])
            if method != "CONNECT":
                raise ValueError(method)
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            with contextlib.suppress(OSError):
                await client.send(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            return
        address, port = self._local(workload, port)
        where = f"tunnel {workload.name} src={peer} target={target} dst={address}:{port}"
        try:
            upstream = await self.dial(workload, address, port, source=peer)
        except OSError as err:
            # baseline_test.go TestServices: a LocalhostIP port answers the HBONE CONNECT with 503.
            self.log(f"{where} connect_failed={err.strerror or err}")
            with contextlib.suppress(OSError):
                await client.send(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
            return
        self.log(f"{where} transparent=true connected")
        with contextlib.suppress(OSError):  # a client gone already: the relay sees it
            await client.send(b"HTTP/1.1 200 OK\r\n\r\n")
        await relay(client, Conn(upstream))


async def serve(path: str, config: Config) -> None:
    """Enrol every configured pod, serve until SIGTERM, re-read the configuration on SIGHUP."""
    ztunnel = Ztunnel(config)
    for workload in config.workloads.values():
        await ztunnel.enrol(workload)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(ztunnel.reload(path)))
    ztunnel.log(f"ready node={config.node} workloads={len(config.workloads)}")
    await stop.wait()
    for ip in list(ztunnel.servers):
        await ztunnel.unenrol(ip)


def main(argv: list[str] | None = None) -> int:
    """`ztunnel.py CONFIG`: the configuration path is the last argument, as for a replaced ztunnel."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        sys.stderr.write("ztunnel: usage: ztunnel.py CONFIG.json\n")
        return 2
    try:
        config = load_config(args[-1])
    except ConfigError as err:
        sys.stderr.write(f"ztunnel: {err}\n")
        return 2
    try:
        asyncio.run(serve(args[-1], config))
    except OSError as err:
        sys.stderr.write(f"ztunnel: cannot listen: {err}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
