"""The echo program's sockets: a connected socket read through a buffer, and the dial of a host and port.

Both halves use it: the prober (echo_probe.py) reads its answers through a BufferedSocket, the server
(echo_serve.py) its requests. Why not asyncio's streams: a probe reads one short answer and the server answers
one short request, and a stream pair (transport, protocol, reader, writer) cost more CPU than the exchange;
a conformance run dials thousands of probes a round. Standard library only, like the rest of the program.
"""

import asyncio
import contextlib
import errno
import ipaddress
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any

# NB: no `from __future__ import annotations` (see echo_probe.py).

_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
"""accept() errors that the next accept() would meet at once: wait _ACCEPT_BACKOFF before it (asyncio waits 1 s)."""
_ACCEPT_BACKOFF = 0.1

_LINE_LIMIT = 2**16
"""The longest line a BufferedSocket reads (asyncio's stream limit, which the program used before it)."""


class BufferedSocket:
    """A connected socket read through a buffer: the few reads and the write a probe or a server makes.

    It uses the loop's socket calls directly (each tries the system call before it waits), with the streams'
    semantics: readline returns a partial line at EOF and raises ValueError past the limit, readexactly raises
    IncompleteReadError, read returns b"" at EOF. TCP_NODELAY is set, as asyncio's transports set it, so that a
    small write never waits for the peer's delayed ACK.
    """

    __slots__ = ("_buffer", "_eof", "_loop", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):  # a nicety: never an outcome of its own
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._eof = False

    async def _fill(self) -> bool:
        """Read what the peer sent next into the buffer; False at EOF."""
        if self._eof:
            return False
        data = await self._loop.sock_recv(self.sock, 65536)
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def write(self, data: bytes) -> None:
        """Send all of `data`."""
        await self._loop.sock_sendall(self.sock, data)

    async def readline(self) -> bytes:
        """One line with its newline; what is left at EOF (maybe b""); ValueError past _LINE_LIMIT."""
        searched = 0
        while True:
            end = self._buffer.find(b"\n", searched)
            if end >= 0:
                return self._take(end + 1)
            if len(self._buffer) > _LINE_LIMIT:
                raise ValueError("line longer than the read limit")
            searched = len(self._buffer)
            if not await self._fill():
                return self._take(len(self._buffer))

    async def readexactly(self, size: int) -> bytes:
        """Exactly `size` bytes; IncompleteReadError (with what came) when the peer ends before."""
        while len(self._buffer) < size:
            if not await self._fill():
                raise asyncio.IncompleteReadError(self._take(len(self._buffer)), size)
        return self._take(size)

    async def read(self, size: int) -> bytes:
        """Up to `size` bytes as soon as any are there; b"" at EOF."""
        if not self._buffer:
            await self._fill()
        return self._take(size)


def _ip_family(address: str) -> socket.AddressFamily | None:
    """The family of an IP address literal; None for a host name."""
    try:
        version = ipaddress.ip_address(address).version
    except ValueError:
        return None
    return socket.AF_INET6 if version == 6 else socket.AF_INET


async def dial(host: str, port: int) -> socket.socket:
    """A connected, non-blocking socket to host:port, dialled as asyncio.open_connection dials.

    An address literal is dialled directly, a host name's addresses in turn (resolved off the loop).

    Errors: the one error; from several addresses the first when all have the same errno (so that a name
    whose every address refuses is `refused`), else one OSError naming them all.
    """
    loop = asyncio.get_running_loop()
    family = _ip_family(host)
    addresses: list[tuple[socket.AddressFamily, tuple[Any, ...]]]
    if family is not None:
        addresses = [(family, (host, port))]
    else:
        found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [(info[0], info[4]) for info in found]
    errors: list[OSError] = []
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    if not errors:
        raise OSError(f"no address for {host}")
    if all(exc.errno == errors[0].errno for exc in errors):  # refused everywhere is refused (asyncio: an error)
        raise errors[0]
    raise OSError(f"Multiple exceptions: {', '.join(str(exc) for exc in errors)}")


async def accept_forever(
    listener: socket.socket,
    handle: Callable[[socket.socket, Any], Coroutine[Any, Any, None]],
    tasks: "set[asyncio.Task[None]]",
    port: int,
) -> None:
    """Accept connections on `listener` until cancelled: `handle(sock, peer)` each in a task kept in `tasks`.

    `peer` is the address accept() returned (a client that resets at once is gone before getpeername() could
    name it). A failed accept() (out of descriptors, say) is logged and skipped, and one of a client that reset
    in the backlog skipped quietly: neither may stop the port, as neither stops asyncio's own servers.
    """
    loop = asyncio.get_running_loop()
    while True:
        try:
            sock, peer = await loop.sock_accept(listener)
        except ConnectionAbortedError:  # reset while in the backlog: nothing to serve (asyncio skips it too)
            continue
        except OSError as exc:
            print(" ".join(f"echo: accept on port {port} failed: {exc}".split()), file=sys.stderr, flush=True)
            if exc.errno in _OUT_OF_RESOURCES:
                await asyncio.sleep(_ACCEPT_BACKOFF)
            continue
        task = loop.create_task(handle(sock, peer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
