"""The floor under a probe: short connections on loopback, direct and through one Python proxy, on this machine now.

`python benchmarks/bench_floor.py` (no root needed). A probe of the suite goes through veths, the node's bridge,
conntrack, a pod's REDIRECT, one to three Python proxy hops and the echo program's HTTP answer. This measures the
least of that: a client on one event loop opening `--connections` connections, `--concurrency` at a time, each
sending a few bytes, half-closing and reading the answer to its end, to a server that answers with two bytes,
first directly and then through one proxy (the reference sidecar's own relay, `relay.py`), all on 127.0.0.1.
No namespaces, no NAT, no HTTP.

What it is for: a rate the suite's probes cannot beat on the same machine in the same hour. docs/speed.md ("What
1.25x of e7cdf02 would take") sets it beside the probe rate that issue 22's target would ask for, which
`bench_suite.py --against e7cdf02` prints. Both processes (server, proxy) are children of this one and end with
it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import multiprocessing
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

RELAY = Path(__file__).resolve().parents[1] / "conformance" / "backends" / "emulated" / "relay.py"
"""This checkout's relay, loaded from its file as the sidecar loads it (whichever package version is installed)."""

if TYPE_CHECKING:
    from conformance.backends.emulated.relay import Conn, accept, nodelay, relay
else:
    _spec = importlib.util.spec_from_file_location("bench_relay", RELAY)
    _relay = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_relay)
    Conn, accept, nodelay, relay = _relay.Conn, _relay.accept, _relay.nodelay, _relay.relay

ANSWER = b"ok"


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def _serve(listener: socket.socket) -> None:
    async def answer(client: Conn) -> None:
        await client.read(64)
        await client.send(ANSWER)

    await accept(listener, answer, print)


async def _proxy(listener: socket.socket, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()

    async def forward(client: Conn) -> None:
        upstream = socket.socket()
        upstream.setblocking(False)
        try:
            await loop.sock_connect(upstream, ("127.0.0.1", upstream_port))
        except OSError:
            upstream.close()
            return
        nodelay(upstream)
        await relay(client, Conn(upstream))

    await accept(listener, forward, print)


def _server_main(listener: socket.socket) -> None:
    asyncio.run(_serve(listener))


def _proxy_main(listener: socket.socket, upstream_port: int) -> None:
    asyncio.run(_proxy(listener, upstream_port))


async def _connections(port: int, count: int, concurrency: int) -> float:
    """Connections per second from one event loop, `concurrency` in flight; every answer is checked."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            sock = socket.socket()
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, ("127.0.0.1", port))
                await loop.sock_sendall(sock, b"probe")
                sock.shutdown(socket.SHUT_WR)
                got = b""
                while chunk := await loop.sock_recv(sock, 64):
                    got += chunk
            finally:
                sock.close()
            if got != ANSWER:
                raise RuntimeError(f"port {port} answered {got!r}, expected {ANSWER!r}")

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return count / (time.perf_counter() - start)


@contextmanager
def _running(target: Callable[..., None], *args: object) -> Iterator[None]:
    """A child process for the measurement's length; it is ended and reaped whatever happens."""
    process = multiprocessing.get_context("fork").Process(target=target, args=args, daemon=True)
    process.start()
    try:
        yield
    finally:
        process.terminate()
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()


def main() -> int:
    """Measure and print a Markdown table: median connections per second, direct and through the proxy."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=3000, help="connections per round (default 3000)")
    parser.add_argument("--concurrency", type=int, default=16, help="connections in flight (default 16)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per path, taking turns (default 5)")
    args = parser.parse_args()
    for name in ("connections", "concurrency", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: expected a count of 1 or more")
    server, proxy = _listener(), _listener()
    server_port, proxy_port = server.getsockname()[1], proxy.getsockname()[1]
    rates: dict[str, list[float]] = {"direct": [], "through one proxy (relay.py)": []}
    with _running(_server_main, server), _running(_proxy_main, proxy, server_port):
        server.close()
        proxy.close()
        for _ in range(args.rounds):
            for path, port in zip(rates, (server_port, proxy_port), strict=True):
                rates[path].append(asyncio.run(_connections(port, args.connections, args.concurrency)))
    print(
        f"## Loopback floor: {args.connections} connections a round, {args.concurrency} at once, {args.rounds} rounds\n"
    )
    print("| path | connections/s, median (min-max) |")
    print("|---|---|")
    for path, seen in rates.items():
        print(f"| {path} | {statistics.median(seen):.0f} ({min(seen):.0f}-{max(seen):.0f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
