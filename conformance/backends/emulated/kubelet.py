"""The emulated kubelet: runs each container's readiness probe from the node and keeps per-container readiness.

Like kubelet, it dials the pod IP from the node's network namespace (so the app, or the sidecar's capture,
sees the node's bridge address), with the probe's period, timeout and success/failure thresholds from the
manifest: httpGet passes on a 2xx/3xx status, tcpSocket on an accepted connection. A container starts not
Ready; `failure_threshold` failures in a row make it not Ready, `success_threshold` passes make it Ready.

It runs on a thread of its own, which enters the node namespace once and keeps an asyncio loop, so probes of
every container run concurrently and never block the harness. It knows nothing of the suite's spec: readiness
comes from sockets. `restart()` starts a pod's probing afresh, as for the new pod a rollout restart makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from dataclasses import dataclass

from conformance.backends.emulated import netns
from conformance.backends.emulated.kube import Probe


@dataclass
class ContainerProbeState:
    """Readiness of one container, as kubelet's prober worker keeps it."""

    ready: bool = False
    successes: int = 0
    failures: int = 0
    probes: int = 0
    last: str = ""
    """The last result: `ok`, or why the probe failed."""

    def settled(self, probe: Probe) -> bool:
        """True once enough probes ran for the verdict to follow the thresholds (not just the initial state)."""
        return self.ready or self.probes >= probe.failure_threshold


@dataclass
class _Target:
    pod: str
    address: str
    container: str
    probe: Probe
    state: ContainerProbeState
    generation: int
    started: float


class Kubelet:
    """Probes registered containers until stopped (see module docstring)."""

    def __init__(self, node_netns_fd: int) -> None:
        self._node_fd = node_netns_fd
        self._lock = threading.Lock()
        self._targets: dict[tuple[str, str], _Target] = {}
        self._generation: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping = False

    def start(self) -> None:
        """Start the prober thread (in the node namespace)."""
        self._thread = threading.Thread(target=self._run, name="emulated-kubelet", daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        netns.setns(self._node_fd)  # this thread only: every socket it makes is the node's
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.gather(*asyncio.all_tasks(loop), return_exceptions=True))
            loop.close()

    def stop(self) -> None:
        """Stop probing and the thread; idempotent."""
        self._stopping = True
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._thread = None
        self._loop = None

    def watch(self, pod: str, address: str, probes: dict[str, Probe]) -> None:
        """Start probing the containers of a pod at `address` (replacing any earlier registration)."""
        with self._lock:
            generation = self._generation.get(pod, 0) + 1
            self._generation[pod] = generation
            for key in [k for k in self._targets if k[0] == pod]:
                del self._targets[key]
            targets = []
            for name, probe in probes.items():
                target = _Target(pod, address, name, probe, ContainerProbeState(), generation, time.time())
                self._targets[(pod, name)] = target
                targets.append(target)
        if self._loop is not None:
            for target in targets:
                asyncio.run_coroutine_threadsafe(self._worker(target), self._loop)

    def restart(self, pod: str) -> None:
        """Probe a pod afresh (a new pod after a rollout restart): containers start not Ready."""
        with self._lock:
            current = [t for k, t in self._targets.items() if k[0] == pod]
        if current:
            self.watch(pod, current[0].address, {t.container: t.probe for t in current})

    def forget(self, pod: str) -> None:
        """Stop probing a pod's containers."""
        with self._lock:
            self._generation[pod] = self._generation.get(pod, 0) + 1
            for key in [k for k in self._targets if k[0] == pod]:
                del self._targets[key]

    def status(self, pod: str) -> dict[str, tuple[ContainerProbeState, Probe, float]]:
        """A snapshot of each probed container's state, with its probe and when its probing started."""
        with self._lock:
            return {
                name: (ContainerProbeState(**vars(t.state)), t.probe, t.started)
                for (p, name), t in self._targets.items()
                if p == pod
            }

    def _current(self, target: _Target) -> bool:
        with self._lock:
            return not self._stopping and self._generation.get(target.pod) == target.generation

    async def _worker(self, target: _Target) -> None:
        probe = target.probe
        if probe.initial_delay:
            await asyncio.sleep(probe.initial_delay)
        while self._current(target):
            started = time.monotonic()
            problem = await self._probe_once(target.address, probe)
            with self._lock:
                if self._generation.get(target.pod) != target.generation:
                    return
                state = target.state
                state.probes += 1
                state.last = problem or "ok"
                if problem is None:
                    state.successes, state.failures = state.successes + 1, 0
                    if state.successes >= probe.success_threshold:
                        state.ready = True
                else:
                    state.successes, state.failures = 0, state.failures + 1
                    if state.failures >= probe.failure_threshold:
                        state.ready = False
            await asyncio.sleep(max(0.0, probe.period - (time.monotonic() - started)))

    async def _probe_once(self, address: str, probe: Probe) -> str | None:
        """None on a pass, else a short reason (like kubelet's probe event text)."""
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the result of an attempt that ended
            # as the task was cancelled, losing the cancellation; stop() then waited a whole probe period.
            async with asyncio.timeout(probe.timeout):
                return await self._attempt(address, probe)
        except TimeoutError:
            return f"timeout after {probe.timeout:g}s"
        except OSError as err:
            return f"{err.strerror or err}"
        except (ValueError, EOFError) as err:  # a malformed answer is a failed probe, never a dead prober
            return f"bad answer: {err}"

    async def _attempt(self, address: str, probe: Probe) -> str | None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (address, probe.port))
            reader, writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
        try:
            if probe.kind == "tcp":
                return None
            host = f"[{address}]" if ":" in address else address
            writer.write(
                f"GET {probe.path} HTTP/1.1\r\nHost: {host}:{probe.port}\r\nUser-Agent: kube-probe/emulated\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            await writer.drain()
            status_line = await reader.readline()
            parts = status_line.split()
            if len(parts) < 2 or not parts[1].isdigit():
                return f"bad HTTP status line {status_line[:60]!r}"
            status = int(parts[1])
            return None if 200 <= status < 400 else f"HTTP probe failed with statuscode: {status}"
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
