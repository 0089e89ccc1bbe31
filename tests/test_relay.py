"""The proxies' relay (conformance/backends/emulated/relay.py), on loopback sockets: no root, no namespaces.

A proxied probe is a few hundred bytes each way, so the suite's own runs never fill a socket: these tests do
(the Pump's wait for a full peer), and pin what the reference sidecar and ztunnel rely on: what a relay hands
on and in which order, half closes, which side a reset is charged to, and the accept loop's bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest

from conformance.backends.emulated.relay import Conn, accept, relay

BIG = 8 * 1024 * 1024
"""Far more than a socket pair buffers: the relay must wait for its reader."""


def _pair() -> tuple[socket.socket, socket.socket]:
    """A connected loopback TCP pair, non-blocking (the relay's side first)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        outer = socket.create_connection(listener.getsockname())
        inner, _ = listener.accept()
    for sock in (inner, outer):
        sock.setblocking(False)
    return inner, outer


async def _read_all(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    chunks = []
    while chunk := await loop.sock_recv(sock, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: a reset, no FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_relay_hands_everything_on_both_ways_to_slow_readers_and_relays_the_half_close() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        client_side, client = _pair()
        upstream_side, upstream = _pair()
        request, answer = b"r" * BIG, bytes(range(256)) * (BIG // 256)

        async def the_client() -> bytes:
            await loop.sock_sendall(client, request)
            client.shutdown(socket.SHUT_WR)  # relayed as such: the upstream reads EOF after the request
            await asyncio.sleep(0.2)  # a slow reader: the relay's writes to it must wait, not drop
            return await _read_all(client)

        async def the_upstream() -> bytes:
            await asyncio.sleep(0.2)
            received = await _read_all(upstream)
            await loop.sock_sendall(upstream, answer)
            upstream.close()
            return received

        relayed, got, received = await asyncio.gather(
            relay(Conn(client_side, ("127.0.0.1", 1)), Conn(upstream_side), b"HEAD "),
            the_client(),
            the_upstream(),
        )
        assert received == b"HEAD " + request
        assert got == answer
        assert relayed == len(answer)
        assert upstream_side.fileno() == -1, "the relay closes the upstream; the client is its acceptor's"
        client_side.close()
        client.close()

    _run(scenario)


def test_what_a_conn_read_ahead_goes_on_first_in_order() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        client_side, client = _pair()
        upstream_side, upstream = _pair()
        await loop.sock_sendall(client, b"CONNECT x:1 HTTP/1.1\r\n\r\nearly bytes")
        await loop.sock_sendall(upstream, b"HTTP/1.1 200 OK\r\n\r\nbehind the 200")
        downstream, tunnel = Conn(client_side, ("127.0.0.1", 1)), Conn(upstream_side)
        assert await downstream.readuntil(b"\r\n\r\n") == b"CONNECT x:1 HTTP/1.1\r\n\r\n"
        assert await tunnel.readuntil(b"\r\n\r\n") == b"HTTP/1.1 200 OK\r\n\r\n"
        downstream.unread(b"un-")
        assert await downstream.read(3) == b"un-"
        downstream.unread(b"read ")

        async def the_upstream() -> bytes:
            data = await loop.sock_recv(upstream, 1 << 16)
            upstream.close()
            return data

        relayed, to_upstream = await asyncio.gather(relay(downstream, tunnel, b"head, "), the_upstream())
        assert to_upstream == b"head, read early bytes"
        assert await _read_all(client) == b"behind the 200"
        assert relayed == len(b"behind the 200")
        client_side.close()
        client.close()

    _run(scenario)


def test_a_reset_is_charged_to_the_side_that_reset() -> None:
    async def scenario() -> None:
        # The upstream resets before a byte: nothing relayed, the upstream failed (the sidecar's 503 case).
        client_side, client = _pair()
        upstream_side, upstream = _pair()
        downstream, up = Conn(client_side, ("127.0.0.1", 1)), Conn(upstream_side)
        _reset(upstream)
        assert await relay(downstream, up) == 0
        assert (downstream.failed, up.failed) == (False, True)
        client_side.close()
        client.close()
        # The client resets while the upstream is still answering: the client's side failed, nobody to answer.
        client_side, client = _pair()
        upstream_side, upstream = _pair()
        downstream, up = Conn(client_side, ("127.0.0.1", 1)), Conn(upstream_side)
        task = asyncio.ensure_future(relay(downstream, up))
        await asyncio.sleep(0.05)
        _reset(client)
        await asyncio.sleep(0.05)
        with contextlib.suppress(OSError):  # the relay gives up on a gone client and closes the upstream
            await asyncio.get_running_loop().sock_sendall(upstream, b"x" * BIG)
        upstream.close()
        await task
        assert downstream.failed
        client_side.close()

    _run(scenario)


def test_readuntil_raises_as_a_stream_reader_does() -> None:
    async def scenario() -> None:
        inner, outer = _pair()
        outer.sendall(b"x" * 70_000)
        conn = Conn(inner)
        with pytest.raises(asyncio.LimitOverrunError):
            await conn.readuntil(b"\r\n\r\n")
        outer.close()
        inner2, outer2 = _pair()
        outer2.sendall(b"GET / HTTP/1.1\r\n")
        outer2.close()
        with pytest.raises(asyncio.IncompleteReadError) as caught:
            await Conn(inner2).readuntil(b"\r\n\r\n")
        assert caught.value.partial == b"GET / HTTP/1.1\r\n"
        inner.close()
        inner2.close()

    _run(scenario)


def test_the_accept_loop_serves_each_connection_closes_it_after_and_survives_a_handler_bug() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        logged: list[str] = []
        served: list[str] = []

        async def handle(client: Conn) -> None:
            line = await client.readuntil(b"\n")
            if line == b"bug\n":
                raise RuntimeError("a handler's bug")
            served.append(client.peer)
            await client.send(b"ok " + line)

        accepting = asyncio.ensure_future(accept(listener, handle, logged.append))
        answers = []
        for line in (b"one\n", b"bug\n", b"two\n"):
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, listener.getsockname())
            await loop.sock_sendall(sock, line)
            answers.append(await _read_all(sock))  # EOF: the loop closed the connection after its handler
            sock.close()
        accepting.cancel()
        await asyncio.gather(accepting, return_exceptions=True)
        listener.close()
        assert answers == [b"ok one\n", b"", b"ok two\n"]
        assert len(served) == 2
        assert all(p.startswith("127.0.0.1:") for p in served)
        assert logged == [f"connection from {logged[0].split()[2]} failed: RuntimeError: a handler's bug"]

    _run(scenario)
