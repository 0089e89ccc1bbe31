"""Probes from inside pods: every target dialled from its source pod's network namespace, on one event loop.

A socket stays in the network namespace it was created in, so the harness steps into the source pod's namespace
only to create each socket, and dials from its own thread: thousands of probes a round, no process per pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import socket
import warnings
from collections.abc import Callable, Iterator, Sequence

from conformance.backends.base import ProbeRequest, by_source
from conformance.backends.emulated import netns
from conformance.world.echo_client import Connector, ProbeTargetLike, make_target, probe_batch
from conformance.world.pods import PodRef

CONCURRENCY = 256
"""Probes in flight per source pod."""
SOURCE_PORTS = range(32768, 61000)
"""Linux's default ephemeral range, handed out in turn per source pod (see Dialer._source_port)."""


class Dialer:
    """The event loop the probes run on, and the harness's own namespace to step back into."""

    def __init__(self, home_fd: int) -> None:
        self._home = home_fd
        self._loop = asyncio.new_event_loop()
        self._next_port: dict[int, Iterator[int]] = {}

    def close(self) -> None:
        """Close the loop (the probes of a batch have all ended by then)."""
        self._loop.close()

    def probe(
        self, requests: Sequence[ProbeRequest], timeout: float, namespace_of: Callable[[PodRef], int]
    ) -> list[dict[str, object]]:
        """Dial every request from inside its source pod (`namespace_of` gives its netns fd), concurrently."""
        results: list[dict[str, object]] = [{} for _ in requests]

        async def run_all() -> None:
            async def for_source(source: PodRef, indexes: list[int]) -> None:
                targets = [
                    make_target(requests[i].protocol, requests[i].address, requests[i].port, requests[i].request_id)
                    for i in indexes
                ]
                out = await probe_batch(targets, timeout, CONCURRENCY, self._connector(namespace_of(source)))
                for i, result in zip(indexes, out, strict=True):
                    results[i] = result

            await asyncio.gather(*(for_source(s, idx) for s, idx in by_source(requests).items()))

        try:
            self._loop.run_until_complete(run_all())
        except BaseException:
            self._abandon()
            raise
        return results

    def _abandon(self) -> None:
        """After Ctrl-C in the middle of a batch: cancel the probes still in flight and let them finish.

        Left as they were, each pending probe later logged "Task exception was never retrieved" or "Event loop
        is closed" with a traceback (about a hundred of them); the run is stopping, so their outcome is moot.
        """
        self._loop.set_exception_handler(lambda loop, context: None)
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        # Cancelled before it ran, a probe's connect coroutine is never awaited: a warning per probe, when
        # collected. Collect them here, with that warning silenced.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with contextlib.suppress(BaseException):
                self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            del tasks
            gc.collect()

    def _source_port(self, sock: socket.socket, pod_fd: int) -> None:
        """Bind the probe to the source pod's next port in turn, so no port serves two probes of a run.

        Left to the kernel, a client picks its port per destination, and soon used one port towards two
        ports of the same pod. Behind that pod's REDIRECT both became its.ip:15006 <- client:port, and the
        second SYN met the first connection (a challenge ACK or a TIME_WAIT socket): a retransmission 1 s
        later, or a timeout, where the mesh had done nothing wrong. Thousands of probes a second from one
        client make that a matter of every run here; a real client rarely opens so many so fast. A port that
        cannot be bound (taken in that namespace) is skipped; after 64 such, the kernel picks.

        The one copy: the reference sidecar let its kernel pick again (4fe8b68), as Envoy does, so the harness
        copes with that instead (network.ENROLLED_TCP_SETTINGS). Were it to choose in turn again, it would hold a
        copy of this, not import it: sidecar.py runs on its own (`python3 -I -S`, no package on its path).
        """
        ports = self._next_port.setdefault(pod_fd, itertools.cycle(SOURCE_PORTS))
        for _ in range(64):
            try:
                sock.bind(("", next(ports)))
                return
            except OSError:
                continue

    def _connector(self, pod_fd: int) -> Connector:
        home = self._home

        async def connect(target: ProbeTargetLike) -> socket.socket:
            address, port = target.address, target.port
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            # A socket stays in the namespace it was created in: step in, create, step out.
            netns.setns(pod_fd)
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            finally:
                netns.setns(home)
            sock.setblocking(False)
            self._source_port(sock, pod_fd)
            try:
                await asyncio.get_running_loop().sock_connect(sock, (address, port))
            except BaseException:
                sock.close()
                raise
            return sock

        return connect
