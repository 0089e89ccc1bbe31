"""TPROXY interception for the reference sidecar: transparent sockets, as Envoy's original_src makes them.

A pod annotated `sidecar.istio.io/interceptionMode: TPROXY` is captured by the mangle table's TPROXY target, which
hands a connection only to a listener with IP_TRANSPARENT (the kernel's nf_tproxy_sk_is_transparent); the
accepted socket's local address is then the address the client dialled. Istio puts Envoy's original_src listener
filter (mark 1337) on the inbound listeners: each upstream connection is made from the downstream client's address
with port 0, IP_TRANSPARENT and SO_MARK 1337, set before the bind and so winning over the cluster's 127.0.0.6
(envoy original_src_socket_option.cc, connection_impl.cc; shared/reference/settings-dualstack.md §1(b), (c)). The
mark lets the capture rules pass the dial (ISTIO_INBOUND `-m mark --mark 1337 -j RETURN`) and, saved on the
connection, routes the app's replies back to this proxy through table 133.

Standalone and standard library only, like sidecar.py, which loads it from its own folder (it runs as
`python3 -I -S sidecar.py`, with no package on its path); a proxy wrapping the reference uses it the same way.
"""

from __future__ import annotations

import socket

SO_MARK = 36
IP_TRANSPARENT = 19
IPV6_TRANSPARENT = 75
SOL_IPV6 = 41


def transparent(sock: socket.socket) -> None:
    """IP_TRANSPARENT (IPV6_TRANSPARENT): accept TPROXY'd connections, or bind an address that is not ours."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(SOL_IPV6, IPV6_TRANSPARENT, 1)
    else:
        sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)


def prebind(sock: socket.socket, client: str, mark: int) -> None:
    """Envoy's original_src options on an upstream socket, before connect: the client's address, port 0."""
    transparent(sock)
    sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    sock.bind((client, 0))


def local_destination(sock: socket.socket) -> tuple[str, int]:
    """A TPROXY'd connection's original destination: the accepted socket's own address (nothing was rewritten)."""
    address = sock.getsockname()
    return str(address[0]), int(address[1])
