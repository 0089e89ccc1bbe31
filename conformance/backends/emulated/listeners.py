"""The listening TCP sockets of a pod's network namespace, asked of the kernel through sock_diag.

Reading /proc/<pid>/net/tcp walks every TCP socket of the host, the thousands in TIME_WAIT after a probe round
included: ~10 ms a read, ~0.9 s of a run spent in readiness checks and prechecks. A sock_diag dump asked for
the LISTEN state only walks the listening sockets. The answer is the same list of address and port.

The request is one inet_diag_req_v2 per family on a NETLINK_SOCK_DIAG socket (linux/inet_diag.h), sent and
read here with the standard library: pyroute2's DiagSocket gave the same answer, but its asyncio machinery made
a read cost ~2-3 ms on a busy run (~130 reads a run, on the harness's one thread), where this costs ~0.1 ms.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterator

from conformance.backends.emulated import netns
from conformance.backends.precheck import Listener, format_ipv6

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
TCP_LISTEN = 10

_HEADER = struct.Struct("=IHHII")
"""struct nlmsghdr: length, type, flags, sequence, port id."""
_REQUEST = struct.Struct("=BBBxI48x")
"""struct inet_diag_req_v2: family, protocol, extensions, pad, states; then an all-zero inet_diag_sockid."""
_MESSAGE = struct.Struct("=BBBB2s2s16s16s")
"""The head of struct inet_diag_msg: family, state, timer, retrans, then the sockid's sport, dport, src, dst."""
_MESSAGE_SIZE = 72
"""sizeof(struct inet_diag_msg): the head, the sockid's interface and cookie, expires, queues, uid, inode. Its
netlink attributes follow."""
_ATTRIBUTE = struct.Struct("=HH")
"""struct nlattr: length (header included), type."""
INET_DIAG_SKV6ONLY = 11
"""The attribute the kernel adds to every AF_INET6 socket's answer (inet_diag_msg_attrs_fill, unasked): one byte,
IPV6_V6ONLY. `ss -e` prints it as v6only:1."""


def _v6only(data: bytes, start: int, end: int) -> bool | None:
    """IPV6_V6ONLY from the attributes in data[start:end], or None when the kernel sent none (an IPv4 socket)."""
    while start + _ATTRIBUTE.size <= end:
        length, kind = _ATTRIBUTE.unpack_from(data, start)
        if length < _ATTRIBUTE.size:
            break
        if kind & 0x3FFF == INET_DIAG_SKV6ONLY and length > _ATTRIBUTE.size:
            return bool(data[start + _ATTRIBUTE.size])
        start += (length + 3) & ~3
    return None


def _answers(sock: socket.socket, family: int) -> Iterator[tuple[bytes, int, int]]:
    """Ask for `family`'s listening TCP sockets; each answer as (data, offset of its inet_diag_msg, end)."""
    request = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 1 << TCP_LISTEN)
    sock.send(
        _HEADER.pack(_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + request
    )
    while True:
        data = sock.recv(1 << 16)
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind, _, _, _ = _HEADER.unpack_from(data, offset)
            if length < _HEADER.size:
                raise OSError(0, "sock_diag: a malformed answer")
            if kind == NLMSG_DONE:
                return
            if kind == NLMSG_ERROR:
                (error,) = struct.unpack_from("=i", data, offset + _HEADER.size)
                if error:
                    raise OSError(-error, f"sock_diag: {os.strerror(-error)}")
            if kind == SOCK_DIAG_BY_FAMILY:
                yield data, offset + _HEADER.size, offset + length
            offset += (length + 3) & ~3


def _dump(sock: socket.socket, family: int) -> list[Listener]:
    found: list[Listener] = []
    for data, body, end in _answers(sock, family):
        msg_family, _, _, _, sport, _, src, _ = _MESSAGE.unpack_from(data, body)
        host = str(ipaddress.IPv4Address(src[:4])) if msg_family == socket.AF_INET else format_ipv6(src)
        found.append(
            Listener(
                "*" if host in ("0.0.0.0", "::") else host,
                int.from_bytes(sport, "big"),
                msg_family == socket.AF_INET6,
                _v6only(data, body + _MESSAGE_SIZE, end),
            )
        )
    return found


_NO_ADDRESS = bytes(16)


def served_ports(sock: socket.socket) -> tuple[set[int], set[int]]:
    """The ports listened on for IPv4 and for IPv6 in the socket's namespace: (IPv4's, IPv6's).

    An IPv4 socket serves IPv4 only; an IPv6 one serves IPv6, and IPv4 too when it is the wildcard `::` (counted
    for both, IPV6_V6ONLY or not, as read_socket's `*` is). The same answer as read_socket's, without building a
    Listener per socket: the readiness checks and the death watch ask only this, ~1,600 times a run.
    """
    v4 = {int.from_bytes(data[body + 4 : body + 6], "big") for data, body, _ in _answers(sock, socket.AF_INET)}
    v6 = set()
    for data, body, _ in _answers(sock, socket.AF_INET6):
        port = int.from_bytes(data[body + 4 : body + 6], "big")
        v6.add(port)
        if data[body + 8 : body + 24] == _NO_ADDRESS:
            v4.add(port)
    return v4, v6


def open_socket(namespace_fd: int, home_fd: int) -> socket.socket:
    """A sock_diag socket of the namespace behind `namespace_fd`, for any number of reads.

    A netlink socket answers for the namespace it was created in, so the calling thread steps in to create it
    and back to `home_fd`. One read at a time: a dump's answer is read whole before the next is asked.
    """
    netns.setns(namespace_fd)
    try:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    finally:
        netns.setns(home_fd)


def read_socket(sock: socket.socket) -> dict[socket.AddressFamily, list[Listener]]:
    """Each family's listeners of the socket's namespace, sorted; the wildcards as `*`.

    An IPv6 wildcard is `*` whether or not it is IPV6_V6ONLY, as /proc showed it; its `v6only` says which (the
    kernel's INET_DIAG_SKV6ONLY).
    """
    return {family: sorted(set(_dump(sock, family))) for family in (socket.AF_INET, socket.AF_INET6)}


def read_all(sock: socket.socket) -> list[Listener]:
    """Both families' listeners of the socket's namespace together (what istioctl's precheck reads), sorted."""
    return sorted({lst for listeners in read_socket(sock).values() for lst in listeners})
