"""The emulated backend's view of a pod's sockets: its listeners (sock_diag, the same answer as /proc/net/tcp{,6})
and the source ports its probes and the reference sidecar's upstream connections leave from."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TypeVar, cast

import pytest

from conformance.backends.base import ProbeRequest
from conformance.backends.emulated import dialer, listeners, netns, sidecar
from conformance.backends.emulated.network import Network
from conformance.backends.emulated.pod import EmulatedPod
from conformance.backends.precheck import Listener, parse_proc_net_tcp
from conformance.world.pods import PodRef

_T = TypeVar("_T")

pytestmark = pytest.mark.netns


@pytest.fixture
def namespace() -> Iterator[tuple[int, int]]:
    """A fresh namespace with lo up, as (its fd, the harness's own fd); removed afterwards."""
    name = f"{netns.PREFIX}test-listeners-{secrets.token_hex(3)}"
    netns.create(name)
    fd = os.open(netns.ns_path(name), os.O_RDONLY)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        netns.run(name, ["ip", "link", "set", "lo", "up"])
        yield fd, home
    finally:
        os.close(fd)
        os.close(home)
        netns.remove(name)


def _listen(
    fd: int, home: int, family: socket.AddressFamily, address: str, port: int, v6only: bool = False
) -> socket.socket:
    netns.setns(fd)
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    finally:
        netns.setns(home)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
    sock.bind((address, port))
    sock.listen()
    return sock


def _read(fd: int, home: int, read: Callable[[socket.socket], _T]) -> _T:
    """`read` on a sock_diag socket of the namespace of its own, as a pod's first read makes one."""
    with listeners.open_socket(fd, home) as sock:
        return read(sock)


def test_listeners_by_family_match_proc(namespace: tuple[int, int]) -> None:
    fd, home = namespace
    open_sockets = [
        _listen(fd, home, socket.AF_INET, "127.0.0.1", 8081),
        _listen(fd, home, socket.AF_INET, "0.0.0.0", 8083),
        _listen(fd, home, socket.AF_INET6, "::1", 8081),
        _listen(fd, home, socket.AF_INET6, "::", 8084, v6only=True),
    ]
    # A connected socket and one that is bound but not listening are no listeners.
    netns.setns(fd)
    try:
        bound = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client = socket.create_connection(("127.0.0.1", 8083))
    finally:
        netns.setns(home)
    bound.bind(("127.0.0.1", 9000))
    open_sockets += [bound, client]
    try:
        by_family = _read(fd, home, listeners.read_socket)
        assert by_family[socket.AF_INET] == [Listener("*", 8083), Listener("127.0.0.1", 8081)]
        assert by_family[socket.AF_INET6] == [
            Listener("*", 8084, ipv6=True, v6only=True),
            # The kernel sets V6ONLY itself on a bind to a specific, not IPv4-mapped, IPv6 address (inet6_bind).
            Listener("::1", 8081, ipv6=True, v6only=True),
        ]
        netns.setns(fd)
        try:
            proc = Path("/proc/thread-self/net")
            tables = [(proc / "tcp").read_text(), (proc / "tcp6").read_text()]
        finally:
            netns.setns(home)
        from_proc = parse_proc_net_tcp(tables[0], ipv6=False) + parse_proc_net_tcp(tables[1], ipv6=True)
        # The same sockets; /proc does not show IPV6_V6ONLY, sock_diag does.
        unknown = [dataclasses.replace(lst, v6only=None) for lst in _read(fd, home, listeners.read_all)]
        assert unknown == sorted(set(from_proc))
    finally:
        for sock in open_sockets:
            sock.close()


def test_listeners_tell_ipv6_v6only(namespace: tuple[int, int]) -> None:
    """IPV6_V6ONLY as the kernel reports it (INET_DIAG_SKV6ONLY), set both ways, never the host's default."""
    fd, home = namespace
    open_sockets = [
        _listen(fd, home, socket.AF_INET6, "::", 8080, v6only=False),  # Go's net.Listen("tcp", ":8080")
        _listen(fd, home, socket.AF_INET6, "::", 8081, v6only=True),
        _listen(fd, home, socket.AF_INET, "0.0.0.0", 8081),  # beside a V6ONLY [::] only
        _listen(fd, home, socket.AF_INET6, "::ffff:127.0.0.1", 8083, v6only=False),
    ]
    try:
        assert _read(fd, home, listeners.read_socket) == {
            socket.AF_INET: [Listener("*", 8081)],
            socket.AF_INET6: [
                Listener("*", 8080, ipv6=True, v6only=False),
                Listener("*", 8081, ipv6=True, v6only=True),
                Listener("::ffff:127.0.0.1", 8083, ipv6=True, v6only=False),
            ],
        }
        # The kernel rule serving() relies on when IPV6_V6ONLY is unknown: no dual [::]:P beside an IPv4 P.
        with pytest.raises(OSError) as refused:
            open_sockets.append(_listen(fd, home, socket.AF_INET, "127.0.0.1", 8080))
        assert refused.value.errno == errno.EADDRINUSE
    finally:
        for sock in open_sockets:
            sock.close()


def test_served_ports_agree_with_the_listeners_on_one_socket_read_again(namespace: tuple[int, int]) -> None:
    """served_ports (the readiness checks' and death watch's read) says what read_socket's listeners say.

    IPv4 is served by IPv4 sockets and by the IPv6 wildcard, V6ONLY or not; IPv6 by IPv6 sockets. The same socket
    answers read after read, and sees a listener that closed in between go.
    """
    fd, home = namespace
    open_sockets = [
        _listen(fd, home, socket.AF_INET, "127.0.0.1", 8081),
        _listen(fd, home, socket.AF_INET6, "::", 8084, v6only=True),
        _listen(fd, home, socket.AF_INET6, "::", 8085, v6only=False),
        _listen(fd, home, socket.AF_INET6, "::1", 8086),
    ]
    late = _listen(fd, home, socket.AF_INET, "0.0.0.0", 8087)
    try:
        with listeners.open_socket(fd, home) as sock:
            found = listeners.read_socket(sock)
            v4 = {lst.port for lst in found[socket.AF_INET]} | {
                lst.port for lst in found[socket.AF_INET6] if lst.address == "*"
            }
            v6 = {lst.port for lst in found[socket.AF_INET6]}
            assert listeners.served_ports(sock) == (v4, v6) == ({8081, 8084, 8085, 8087}, {8084, 8085, 8086})
            late.close()
            assert listeners.served_ports(sock) == ({8081, 8084, 8085}, {8084, 8085, 8086})
            assert listeners.read_socket(sock) == _read(fd, home, listeners.read_socket)
    finally:
        for sock in [*open_sockets, late]:
            sock.close()


def test_a_listener_read_cut_short_leaves_the_next_read_right(namespace: tuple[int, int]) -> None:
    """A read interrupted after its dump was asked (Ctrl-C, SIGTERM) does not poison the pod's next read.

    The pod keeps one sock_diag socket; the interrupted dump's answer stays unread on it, and the next read would
    get that stale answer (or EBUSY, in the cleanup after an interrupt). The socket is dropped instead.
    """
    fd, home = namespace
    network = Network("ipv4", "test")
    network.home_fd = home
    pod = cast(EmulatedPod, SimpleNamespace(ref=PodRef("mic-test", "echo"), fd=fd))
    first = _listen(fd, home, socket.AF_INET, "0.0.0.0", 8081)
    try:
        assert network.listening(pod) == {8081}

        def interrupted(sock: socket.socket) -> object:
            request = listeners._REQUEST.pack(socket.AF_INET, socket.IPPROTO_TCP, 0, 1 << listeners.TCP_LISTEN)
            header = listeners._HEADER.pack(
                listeners._HEADER.size + len(request),
                listeners.SOCK_DIAG_BY_FAMILY,
                listeners.NLM_F_REQUEST | listeners.NLM_F_DUMP,
                1,
                0,
            )
            sock.send(header + request)
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            network._diag_read(pod, interrupted)
        second = _listen(fd, home, socket.AF_INET, "0.0.0.0", 8082)
        try:
            assert network.listening(pod) == {8081, 8082}
        finally:
            second.close()
    finally:
        first.close()
        for sock in network._diag.values():
            sock.close()


def test_no_listeners_in_an_empty_namespace(namespace: tuple[int, int]) -> None:
    fd, home = namespace
    assert _read(fd, home, listeners.read_all) == []


def test_dialer_gives_each_probe_of_a_pod_its_own_source_port(namespace: tuple[int, int]) -> None:
    """Ports in turn per source pod, a taken one skipped: no port serves two probes (dialer.py)."""
    fd, home = namespace
    server = _listen(fd, home, socket.AF_INET, "127.0.0.1", 8081)
    taken = _listen(fd, home, socket.AF_INET, "0.0.0.0", dialer.SOURCE_PORTS[3])
    seen: list[int] = []

    def accept_all() -> None:
        while len(seen) < 40:
            conn, peer = server.accept()
            seen.append(peer[1])
            conn.close()

    thread = threading.Thread(target=accept_all, daemon=True)
    thread.start()
    probes = dialer.Dialer(home)
    try:
        pod = PodRef("mic-test", "client")
        for batch in range(2):
            requests = [ProbeRequest(pod, "tcp", "127.0.0.1", 8081, f"r{batch}-{i}") for i in range(20)]
            results = probes.probe(requests, 2.0, lambda ref: fd)
            assert {r["outcome"] for r in results} <= {"reset_or_eof", "ok"}
    finally:
        probes.close()
    thread.join(5)
    server.close()
    taken.close()
    expected = [p for p in dialer.SOURCE_PORTS[:41] if p != dialer.SOURCE_PORTS[3]]
    assert sorted(seen) == expected


def test_the_reference_sidecar_lets_the_kernel_pick_its_source_ports(namespace: tuple[int, int]) -> None:
    """Upstream connections bind no port: the kernel picks per destination, as it does for Envoy (sidecar.py).

    With one port in the namespace's range, dials to two destinations both leave from it (their 4-tuples
    differ); a proxy choosing ports itself would leave from others (the reference did so in turn before issue
    20 item 15 made the harness cope with the kernel's pick).
    """
    fd, home = namespace
    servers = [_listen(fd, home, socket.AF_INET, "127.0.0.1", port) for port in (8081, 8082)]
    proxy = sidecar.Sidecar(cast(sidecar.Config, None))

    async def dial() -> list[int]:
        ports = []
        socks = []
        for port in (8081, 8082):
            sock = await proxy._connect("127.0.0.1", port, None)
            ports.append(sock.getsockname()[1])
            socks.append(sock)
        for sock in socks:
            sock.close()
        return ports

    netns.setns(fd)
    try:
        Path("/proc/sys/net/ipv4/ip_local_port_range").write_text("40000 40000")
        ports = asyncio.run(dial())
    finally:
        netns.setns(home)
        for server in servers:
            server.close()
    assert ports == [40000, 40000]
