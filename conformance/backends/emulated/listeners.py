"""The listening TCP sockets of a pod's network namespace, asked of the kernel through sock_diag.

Reading /proc/<pid>/net/tcp walks every TCP socket of the host, the thousands in TIME_WAIT after a probe round
included: ~10 ms a read, ~0.9 s of a run spent in readiness checks and prechecks. A sock_diag dump asked for
the LISTEN state only walks the listening sockets (~1 ms). The answer is the same list of address and port.
"""

from __future__ import annotations

import socket

from pyroute2 import DiagSocket
from pyroute2.netlink.diag import SS_LISTEN
from pyroute2.netlink.exceptions import NetlinkError

from conformance.backends.emulated import netns
from conformance.precheck import Listener


def read_by_family(namespace_fd: int, home_fd: int) -> dict[socket.AddressFamily, list[Listener]]:
    """Each family's listeners of the namespace behind `namespace_fd`, sorted; the wildcards as `*`.

    A netlink socket answers for the namespace it was created in, so the calling thread steps in to create it
    and back to `home_fd`. An IPv6 wildcard is `*` whether or not it is IPV6_V6ONLY, as /proc showed it.
    """
    netns.setns(namespace_fd)
    try:
        diag = DiagSocket()
    finally:
        netns.setns(home_fd)
    found: dict[socket.AddressFamily, list[Listener]] = {}
    with diag:
        diag.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            listeners = set()
            try:
                messages = diag.get_sock_stats(family=family, states=1 << SS_LISTEN)
            except NetlinkError as err:  # not an OSError: callers handle one kind of failure
                raise OSError(err.code, f"sock_diag: {err}") from None
            for message in messages:
                host = str(message["idiag_src"])
                listeners.add(Listener("*" if host in ("0.0.0.0", "::") else host, int(message["idiag_sport"])))
            found[family] = sorted(listeners)
    return found


def read(namespace_fd: int, home_fd: int) -> list[Listener]:
    """Both families' listeners together (what istioctl's precheck reads), sorted."""
    return sorted({lst for listeners in read_by_family(namespace_fd, home_fd).values() for lst in listeners})
