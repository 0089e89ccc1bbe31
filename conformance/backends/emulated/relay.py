"""Bytes between two sockets on an asyncio loop: what the emulated mesh's proxies (sidecar.py, ztunnel.py) share.

Both proxies run as standalone programs (`python3 -I -S`, no package on their path) and load this file from
their own folder, as the sidecar loads original_src.py. Standard library only.

Why not asyncio's streams: a proxied probe is one short request and one short answer, and a pair of streams per
socket (transport, protocol, reader, writer, a task per direction and a future per read) cost more CPU than the
copying; a run proxies thousands of connections a round. Here a connection is its socket with a read buffer
(`Conn`), read and written with the loop's socket calls (each tries the system call before it waits), and a
relay is two `Pump`s driven by the loop's readiness callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

HEAD_LIMIT = 65536
"""The longest head `Conn.readuntil` reads (asyncio's stream limit, which the proxies used before this)."""


class Conn:
    """A connected socket with the bytes read from it but not consumed yet (`readuntil` reads ahead).

    `peername` is the peer accept() returned (None for an upstream); `failed` says that this side broke (a
    reset) while relaying: then nobody is left to answer on it.
    """

    __slots__ = ("_pending", "failed", "peername", "sock")

    def __init__(self, sock: socket.socket, peername: Any = None) -> None:
        self.sock = sock
        self.peername = peername
        self.failed = False
        self._pending = b""

    @property
    def peer(self) -> str:
        """`address:port` of the peer, for a log line."""
        return f"{self.peername[0]}:{self.peername[1]}" if self.peername else "?"

    def take_pending(self) -> bytes:
        """What was read ahead and not consumed (it still goes on): the relay sends it first."""
        data, self._pending = self._pending, b""
        return data

    def unread(self, data: bytes) -> None:
        """Put `data` back in front of what comes next."""
        self._pending = data + self._pending

    async def read(self, size: int) -> bytes:
        """The next bytes (at most `size`): read ahead ones first, else one receive; b"" at EOF."""
        if self._pending:
            data, self._pending = self._pending[:size], self._pending[size:]
            return data
        return await asyncio.get_running_loop().sock_recv(self.sock, size)

    async def readuntil(self, separator: bytes, limit: int = HEAD_LIMIT) -> bytes:
        """Up to and including `separator`, keeping what came after it; as StreamReader.readuntil raises."""
        data = self._pending
        loop = asyncio.get_running_loop()
        while (end := data.find(separator)) < 0:
            if len(data) > limit:
                self._pending = data
                raise asyncio.LimitOverrunError("separator not found within the limit", len(data))
            chunk = await loop.sock_recv(self.sock, limit)
            if not chunk:
                self._pending = b""
                raise asyncio.IncompleteReadError(data, None)
            data += chunk
        end += len(separator)
        self._pending = data[end:]
        return data[:end]

    async def send(self, data: bytes) -> None:
        """Send all of `data`."""
        await asyncio.get_running_loop().sock_sendall(self.sock, data)


class Pump:
    """One direction of a relay (src to dst), run by the loop's readiness callbacks: no task, no future per read.

    A readable src is read and written to dst at once; a dst that takes less stops the reading until it has
    taken the rest. At src's EOF dst's write side is shut (a half close is relayed as such); a failed read or
    write ends this direction and names the socket that failed (`failed`).
    """

    def __init__(self, src: socket.socket, dst: socket.socket, on_end: Callable[[], None], first: bytes = b"") -> None:
        self._loop = asyncio.get_running_loop()
        self._src, self._dst, self._on_end = src, dst, on_end
        self._reading = self._writing = False
        self.relayed = 0
        self.failed: socket.socket | None = None
        self._pending = b""
        self._read_again()  # no callback runs before `first` is on its way: the order holds
        if first:
            self._forward(first)

    def _read_again(self) -> None:
        self._loop.add_reader(self._src.fileno(), self._readable)
        self._reading = True

    def _readable(self) -> None:
        try:
            data = self._src.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._end(self._src)
            return
        if not data:
            with contextlib.suppress(OSError):
                self._dst.shutdown(socket.SHUT_WR)
            self._end(None)
            return
        self._forward(data)

    def _forward(self, data: bytes) -> None:
        self.relayed += len(data)
        self._pending = data
        self._writable()
        if self._pending and self._reading:  # dst is full (and the pump not ended): wait for it, reading nothing
            self._loop.remove_reader(self._src.fileno())
            self._reading = False
            self._loop.add_writer(self._dst.fileno(), self._writable)
            self._writing = True

    def _writable(self) -> None:
        try:
            sent = self._dst.send(self._pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._end(self._dst)
            return
        self._pending = self._pending[sent:]
        if not self._pending and self._writing:
            self._loop.remove_writer(self._dst.fileno())
            self._writing = False
            self._read_again()

    def _end(self, failed: socket.socket | None) -> None:
        self.failed = failed
        self.stop()
        self._on_end()

    def stop(self) -> None:
        """Stop watching both sockets (before either is closed)."""
        if self._reading:
            self._loop.remove_reader(self._src.fileno())
            self._reading = False
        if self._writing:
            self._loop.remove_writer(self._dst.fileno())
            self._writing = False


async def relay(client: Conn, upstream: Conn, head: bytes = b"") -> int:
    """Send `head` (and what the client sent after it) on, then copy both ways until the upstream is done.

    Returns the bytes relayed from the upstream. Once the upstream has ended (EOF or reset), what the client
    still sends goes nowhere: the upstream is closed here, the client by whoever accepted it. A reset on
    either side ends that direction and marks the side (`Conn.failed`): the caller decides what the client sees.
    """
    loop = asyncio.get_running_loop()
    upstream_done = loop.create_future()

    def on_upstream_end() -> None:
        if not upstream_done.done():
            upstream_done.set_result(None)

    pumps: list[Pump] = []
    try:
        pumps.append(Pump(client.sock, upstream.sock, lambda: None, head + client.take_pending()))
        pumps.append(Pump(upstream.sock, client.sock, on_upstream_end, upstream.take_pending()))
        await upstream_done
        failed = {pump.failed for pump in pumps}
        client.failed, upstream.failed = client.sock in failed, upstream.sock in failed
        return pumps[1].relayed
    finally:
        for pump in pumps:  # before the sockets close, whatever ended the relay (a cancel too)
            pump.stop()
        upstream.sock.close()


def nodelay(sock: socket.socket) -> None:
    """No Nagle delay on a proxied connection (asyncio's transports set it; Envoy and ztunnel do)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def accept(
    listener: socket.socket, handle: Callable[[Conn], Awaitable[None]], log: Callable[[str], None]
) -> None:
    """Accept connections on `listener` until cancelled, each handled by a task of its own that closes it after.

    A failed accept() is logged and skipped (one of a client that reset in the backlog quietly), as asyncio's
    own servers do: it must not stop the listener. Cancelling this stops accepting; connections already
    accepted go on (as asyncio's Server.close() leaves them).
    """
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

    async def one(client: Conn) -> None:
        try:
            await handle(client)
        except Exception as exc:  # a bug must not pass silently, nor stop the proxy
            log(f"connection from {client.peer} failed: {type(exc).__name__}: {exc}")
        finally:
            client.sock.close()

    while True:
        try:
            sock, peername = await loop.sock_accept(listener)
        except ConnectionAbortedError:
            continue
        except OSError as exc:
            log(f"accept failed: {exc}")
            await asyncio.sleep(0.1)
            continue
        nodelay(sock)
        task = loop.create_task(one(Conn(sock, peername)))
        running.add(task)
        task.add_done_callback(running.discard)
