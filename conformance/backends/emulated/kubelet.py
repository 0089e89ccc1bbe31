"""The emulated kubelet: runs each container's readiness, liveness and startup probes and restarts containers.

Like kubelet, it dials the pod IP from the node's network namespace (so the app, or the sidecar's capture,
sees the node's bridge address), with each probe's period, timeout and success/failure thresholds from the
manifest: httpGet passes on a 2xx/3xx status, tcpSocket on an accepted connection. As kubernetes.io's Pod
Lifecycle ("Container probes") says:

- readiness: a container starts not Ready; `failure_threshold` failures in a row make it not Ready,
  `success_threshold` passes Ready. A container without a readiness probe is Ready while it runs (once started).
- startup: while it has not passed, the liveness and readiness probes are held (the container is not Ready);
  `failure_threshold` failures in a row and the container is killed and restarted.
- liveness: `failure_threshold` failures in a row and the container is killed and restarted.

A restart goes through the container runtime given to the kubelet (containers.py: the app process in the pod's
namespace is stopped, SIGTERM then SIGKILL, and started again) and counts in the container's `restarts`, as
`restartCount` does. The restart policy is Always (a Deployment's). The back-off is SHORTENED: the first restart
is at once and each next one waits RESTART_BACKOFF seconds, doubling up to RESTART_BACKOFF_MAX (Kubernetes: 10 s
doubling up to 300 s, `CrashLoopBackOff`), so that a run sees a container restarted again and again within
seconds. A killed container is always started again, even when its pod's probing was restarted meanwhile.

It runs on a thread of its own, which enters the node namespace once and keeps an asyncio loop, so probes of
every container run concurrently and never block the harness (a restart runs on a worker thread). It knows
nothing of the suite's spec: readiness and restarts come from sockets. `restart()` starts a pod's probing afresh,
as for the new pod a rollout restart makes (restart counts from 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from conformance.backends.emulated import netns
from conformance.backends.emulated.kube import ContainerProbes, Probe

RESTART_BACKOFF = 0.1
"""Seconds before the second restart of a container (Kubernetes: 10 s); doubled for each next one."""
RESTART_BACKOFF_MAX = 3.0
"""The longest back-off between restarts (Kubernetes: 300 s)."""


class ContainerRuntime(Protocol):
    """What the kubelet asks of the container runtime (containers.py): stop a container, start it again."""

    def kill_container(self, pod: str, container: str) -> None:
        """Stop the container's process (SIGTERM, then SIGKILL after a grace)."""

    def start_container(self, pod: str, container: str) -> None:
        """Start the container's process again, as it was first started."""


@dataclass
class ContainerProbeState:
    """One container's probe results, as kubelet's prober workers and status manager keep them."""

    ready: bool = False
    started: bool = False
    """The startup probe has passed in the current run (at once without one)."""
    successes: int = 0
    failures: int = 0
    probes: int = 0
    """Readiness probes made in the current run."""
    live_passed: bool = False
    """The liveness probe has passed in the current run."""
    restarts: int = 0
    """Times the kubelet killed and restarted the container since its probing began (`restartCount`)."""
    last: str = ""
    """The last result: `ok`, or why the probe failed (the use named for a liveness or startup probe)."""
    since: float = field(default_factory=time.time)
    """Wall-clock time the current run's probing started."""

    def settled(self, probes: ContainerProbes) -> bool:
        """True once enough probes ran for `ready` and `restarts` to be the verdict, not the initial state.

        A restart settles it (the verdict: restarted). Otherwise the startup probe must have passed, the readiness
        probe passed or failed `failure_threshold` times, and the liveness probe passed once.
        """
        if self.restarts:
            return True
        if probes.startup is not None and not self.started:
            return False
        readiness = probes.readiness
        settled_ready = readiness is None or self.ready or self.probes >= readiness.failure_threshold
        return settled_ready and (probes.liveness is None or self.live_passed)

    def new_run(self) -> None:
        """The container was started again: every probe result starts afresh (the count stays)."""
        self.ready = self.started = self.live_passed = False
        self.successes = self.failures = self.probes = 0
        self.since = time.time()


@dataclass
class _Target:
    pod: str
    address: str
    container: str
    probes: ContainerProbes
    state: ContainerProbeState
    generation: int
    started: float


class Kubelet:
    """Probes registered containers and restarts them until stopped (see module docstring)."""

    def __init__(self, node_netns_fd: int, runtime: ContainerRuntime | None = None) -> None:
        self._node_fd = node_netns_fd
        self._runtime = runtime
        self._lock = threading.Lock()
        self._targets: dict[tuple[str, str], _Target] = {}
        self._generation: dict[str, int] = {}
        self._down: set[tuple[str, str]] = set()
        """Containers killed and not yet started again (until the new process is in place)."""
        self._starting: set[tuple[str, str]] = set()
        """Killed containers being started again (by one worker only)."""
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
            # A restart under way on a worker thread finishes before the kubelet is gone: nothing starts after.
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def stop(self) -> None:
        """Stop probing and the thread; idempotent."""
        with self._lock:
            self._stopping = True
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._thread = None
        self._loop = None

    def watch(self, pod: str, address: str, probes: dict[str, ContainerProbes]) -> None:
        """Start probing the containers of a pod at `address` (replacing any earlier registration)."""
        with self._lock:
            generation = self._generation.get(pod, 0) + 1
            self._generation[pod] = generation
            for key in [k for k in self._targets if k[0] == pod]:
                del self._targets[key]
            targets = []
            for name, container_probes in probes.items():
                state = ContainerProbeState(started=container_probes.startup is None)
                target = _Target(pod, address, name, container_probes, state, generation, time.time())
                self._targets[(pod, name)] = target
                targets.append(target)
        if self._loop is not None:
            for target in targets:
                asyncio.run_coroutine_threadsafe(self._worker(target), self._loop)

    def restart(self, pod: str) -> None:
        """Probe a pod afresh (a new pod after a rollout restart): containers start not Ready, counts at 0."""
        with self._lock:
            current = [t for k, t in self._targets.items() if k[0] == pod]
        if current:
            self.watch(pod, current[0].address, {t.container: t.probes for t in current})

    def forget(self, pod: str) -> None:
        """Stop probing a pod's containers."""
        with self._lock:
            self._generation[pod] = self._generation.get(pod, 0) + 1
            for key in [k for k in self._targets if k[0] == pod]:
                del self._targets[key]

    def status(self, pod: str) -> dict[str, tuple[ContainerProbeState, ContainerProbes, float]]:
        """A snapshot of each probed container's state, with its probes and when its current run's probing began."""
        with self._lock:
            return {
                name: (ContainerProbeState(**vars(t.state)), t.probes, t.state.since)
                for (p, name), t in self._targets.items()
                if p == pod
            }

    def down(self, pod: str, container: str) -> bool:
        """Whether the kubelet killed this container and has not started it again yet (its back-off)."""
        with self._lock:
            return (pod, container) in self._down

    def _current(self, target: _Target) -> bool:
        with self._lock:
            return not self._stopping and self._generation.get(target.pod) == target.generation

    # --- one container: its runs, and the restarts between them ------------------------------------------

    async def _worker(self, target: _Target) -> None:
        await self._start_if_down(target)  # killed under an earlier registration: the new pod's container starts
        while self._current(target):
            reason = await self._one_run(target)
            if reason is None or self._runtime is None:
                return
            with self._lock:
                if self._generation.get(target.pod) != target.generation or self._stopping:
                    return
                state = target.state
                state.ready = False
                state.restarts += 1
                state.last = reason
                backoff = 0.0 if state.restarts == 1 else RESTART_BACKOFF * 2 ** (state.restarts - 2)
                self._down.add((target.pod, target.container))
            await asyncio.to_thread(self._runtime.kill_container, target.pod, target.container)
            try:
                await asyncio.sleep(min(backoff, RESTART_BACKOFF_MAX))
            finally:
                # Started again whatever happens meanwhile (a new registration, stop): never left dead.
                await self._start_if_down(target)
            with self._lock:
                if self._generation.get(target.pod) == target.generation:
                    target.state.new_run()
                    target.state.started = target.probes.startup is None

    async def _start_if_down(self, target: _Target) -> None:
        """Start a killed container, once: it stays `down` until its new process is in place."""
        key = (target.pod, target.container)
        with self._lock:
            if key not in self._down or key in self._starting or self._stopping:
                return
            self._starting.add(key)
        try:
            if self._runtime is not None:
                await asyncio.to_thread(self._runtime.start_container, target.pod, target.container)
        finally:
            with self._lock:
                self._starting.discard(key)
                self._down.discard(key)

    async def _one_run(self, target: _Target) -> str | None:
        """Probe one run of the container; the reason to kill it, or None once it is no longer probed."""
        probes, run_start = target.probes, time.monotonic()
        if probes.startup is not None:
            reason = await self._startup(target, probes.startup, run_start)
            if reason is not None or not self._current(target):
                return reason
        with self._lock:
            if probes.readiness is None and self._generation.get(target.pod) == target.generation:
                target.state.ready = True  # no readiness probe: Ready while it runs, once started
        readiness = (
            asyncio.ensure_future(self._readiness(target, probes.readiness, run_start))
            if probes.readiness is not None
            else None
        )
        try:
            if probes.liveness is not None:
                return await self._liveness(target, probes.liveness, run_start)
            if readiness is not None:
                await readiness
            return None
        finally:
            if readiness is not None:
                readiness.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await readiness

    async def _startup(self, target: _Target, probe: Probe, run_start: float) -> str | None:
        failures = 0
        await asyncio.sleep(max(0.0, probe.initial_delay - (time.monotonic() - run_start)))
        while self._current(target):
            started = time.monotonic()
            problem = await self._probe_once(target.address, probe)
            with self._lock:
                if self._generation.get(target.pod) != target.generation:
                    return None
                target.state.last = "ok" if problem is None else f"startup probe: {problem}"
                if problem is None:
                    target.state.started = True
                    return None
            failures += 1
            if failures >= probe.failure_threshold:
                return f"killed: startup probe failed {failures} times ({problem})"
            await asyncio.sleep(max(0.0, probe.period - (time.monotonic() - started)))
        return None

    async def _liveness(self, target: _Target, probe: Probe, run_start: float) -> str | None:
        failures = 0
        await asyncio.sleep(max(0.0, probe.initial_delay - (time.monotonic() - run_start)))
        while self._current(target):
            started = time.monotonic()
            problem = await self._probe_once(target.address, probe)
            with self._lock:
                if self._generation.get(target.pod) != target.generation:
                    return None
                if problem is None:
                    target.state.live_passed = True
                    if target.probes.readiness is None:
                        target.state.last = "ok"
                else:
                    target.state.last = f"liveness probe: {problem}"
            failures = 0 if problem is None else failures + 1
            if failures >= probe.failure_threshold:
                return f"killed: liveness probe failed {failures} times ({problem})"
            await asyncio.sleep(max(0.0, probe.period - (time.monotonic() - started)))
        return None

    async def _readiness(self, target: _Target, probe: Probe, run_start: float) -> None:
        await asyncio.sleep(max(0.0, probe.initial_delay - (time.monotonic() - run_start)))
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

    # --- one probe ------------------------------------------------------------------------------------

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
