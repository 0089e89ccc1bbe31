"""The emulated kubelet (backends/emulated/kubelet.py): liveness restarts, back-off, startup gating, readiness.

The kubelet probes a real HTTP server on 127.0.0.1 (from this process's own network namespace, which it enters
as it would the node's) and restarts containers through a runtime that records what it was asked, so each test
sees what kubernetes.io's Pod Lifecycle says the kubelet does, on sockets.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conformance.backends.emulated import kubelet as kubelet_module
from conformance.backends.emulated.kube import ContainerProbes, Probe
from conformance.backends.emulated.kubelet import Kubelet

pytestmark = pytest.mark.netns  # setns() into its own namespace needs CAP_SYS_ADMIN


class App:
    """An HTTP server whose answer per path the test sets; it counts the requests per path."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.seen: Counter[str] = Counter()
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                app.seen[self.path] += 1
                self.send_response(app.codes.get(self.path, 200))
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def probe(self, path: str, threshold: int = 2) -> Probe:
        return Probe("http", self.port, path, period=0.05, timeout=0.5, failure_threshold=threshold)


class Runtime:
    """Records the kubelet's kill and start calls; `on_start` runs at each start (a new run of the container)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, float]] = []
        self.on_start: Callable[[], None] = lambda: None
        self.lock = threading.Lock()

    def kill_container(self, pod: str, container: str) -> None:
        with self.lock:
            self.calls.append(("kill", pod, container, time.monotonic()))

    def start_container(self, pod: str, container: str) -> None:
        with self.lock:
            self.calls.append(("start", pod, container, time.monotonic()))
        self.on_start()

    def of(self, what: str) -> list[float]:
        with self.lock:
            return [t for kind, _, _, t in self.calls if kind == what]


@pytest.fixture
def app() -> Iterator[App]:
    server = App()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def runtime() -> Runtime:
    return Runtime()


@pytest.fixture
def kubelet(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kubelet]:
    monkeypatch.setattr(kubelet_module, "RESTART_BACKOFF", 0.05)
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    node = Kubelet(fd, runtime)
    node.start()
    yield node
    node.stop()
    os.close(fd)


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def state(node: Kubelet, container: str = "c") -> kubelet_module.ContainerProbeState:
    return node.status("pod")[container][0]


def test_a_failing_liveness_probe_restarts_the_container_again_and_again(
    app: App, runtime: Runtime, kubelet: Kubelet
) -> None:
    app.codes["/livez"] = 500
    kubelet.watch("pod", "127.0.0.1", {"c": ContainerProbes(liveness=app.probe("/livez"))})
    wait_for(lambda: state(kubelet).restarts >= 4)
    got = state(kubelet)
    assert got.settled(ContainerProbes(liveness=app.probe("/livez")))
    assert "liveness probe failed 2 times (HTTP probe failed with statuscode: 500)" in got.last
    # Each restart is a kill, then a start after the back-off: none at first, then 0.05 s doubling.
    kills, starts = runtime.of("kill"), runtime.of("start")
    assert len(kills) >= 4
    assert len(starts) >= 3
    waits = [start - kill for kill, start in zip(kills, starts, strict=False)]
    assert waits[0] < 0.05
    assert waits[2] >= 0.09  # the third restart waited 2 x RESTART_BACKOFF


def test_a_passing_liveness_probe_never_restarts_and_is_ready_without_a_readiness_probe(
    app: App, runtime: Runtime, kubelet: Kubelet
) -> None:
    probes = ContainerProbes(liveness=app.probe("/livez"))
    kubelet.watch("pod", "127.0.0.1", {"c": probes})
    wait_for(lambda: state(kubelet).settled(probes))
    time.sleep(0.3)  # several periods
    got = state(kubelet)
    assert (got.ready, got.restarts, got.live_passed) == (True, 0, True)
    assert runtime.calls == []


def test_a_failing_startup_probe_restarts_and_holds_liveness_and_readiness(
    app: App, runtime: Runtime, kubelet: Kubelet
) -> None:
    app.codes["/startupz"] = 503
    probes = ContainerProbes(
        readiness=app.probe("/readyz"), liveness=app.probe("/livez"), startup=app.probe("/startupz", threshold=3)
    )
    kubelet.watch("pod", "127.0.0.1", {"c": probes})
    wait_for(lambda: state(kubelet).restarts >= 2)
    got = state(kubelet)
    assert got.ready is False
    assert got.started is False
    assert "startup probe failed 3 times" in got.last
    # Held: neither the liveness nor the readiness probe ran while the startup probe had not passed.
    assert app.seen["/livez"] == 0
    assert app.seen["/readyz"] == 0
    assert app.seen["/startupz"] >= 6


def test_once_the_startup_probe_passes_the_others_run(app: App, runtime: Runtime, kubelet: Kubelet) -> None:
    app.codes["/startupz"] = 503
    runtime.on_start = lambda: app.codes.pop("/startupz", None)  # the container starts well the second time
    probes = ContainerProbes(
        readiness=app.probe("/readyz"), liveness=app.probe("/livez"), startup=app.probe("/startupz")
    )
    kubelet.watch("pod", "127.0.0.1", {"c": probes})
    wait_for(lambda: state(kubelet).ready)
    got = state(kubelet)
    assert (got.started, got.restarts) == (True, 1)
    assert got.settled(probes)
    wait_for(lambda: app.seen["/livez"] > 0 and app.seen["/readyz"] > 0)


def test_a_failing_readiness_probe_never_restarts(app: App, runtime: Runtime, kubelet: Kubelet) -> None:
    app.codes["/readyz"] = 500
    probes = ContainerProbes(readiness=app.probe("/readyz", threshold=1))
    kubelet.watch("pod", "127.0.0.1", {"c": probes})
    wait_for(lambda: state(kubelet).probes >= 5)
    got = state(kubelet)
    assert (got.ready, got.restarts) == (False, 0)
    assert got.settled(probes)
    assert runtime.calls == []


def test_a_killed_container_is_started_again_when_its_pod_is_probed_afresh(
    app: App, runtime: Runtime, kubelet: Kubelet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rollout restart (a mode switch) during the back-off: the container is started, never left dead."""
    monkeypatch.setattr(kubelet_module, "RESTART_BACKOFF", 2.0)
    app.codes["/livez"] = 500
    probes = {"c": ContainerProbes(liveness=app.probe("/livez"))}
    kubelet.watch("pod", "127.0.0.1", probes)
    wait_for(lambda: len(runtime.of("kill")) == 2)  # the second kill waits 2 s before its start
    assert kubelet.down("pod", "c")
    app.codes.clear()
    kubelet.watch("pod", "127.0.0.1", probes)  # the new pod's container starts at once
    wait_for(lambda: len(runtime.of("start")) == 2, seconds=1.0)
    wait_for(lambda: not kubelet.down("pod", "c"), seconds=1.0)  # down until the new process is in place
    wait_for(lambda: state(kubelet).live_passed)
    assert state(kubelet).restarts == 0  # a new pod counts from 0
    time.sleep(2.2)  # the old registration's back-off ends: it does not start the container a second time
    assert len(runtime.of("start")) == 2


def test_a_container_is_down_until_its_new_process_is_in_place(app: App, runtime: Runtime, kubelet: Kubelet) -> None:
    """The harness's readiness wait (a mode switch) tolerates a dead container only while the kubelet has it down:
    that must last until the runtime has started the new process, not end when the start begins."""
    seen_down_while_starting: list[bool] = []

    def slow_start() -> None:
        time.sleep(0.2)
        seen_down_while_starting.append(kubelet.down("pod", "c"))

    runtime.on_start = slow_start
    app.codes["/livez"] = 500
    kubelet.watch("pod", "127.0.0.1", {"c": ContainerProbes(liveness=app.probe("/livez"))})
    wait_for(lambda: len(seen_down_while_starting) >= 1)
    assert seen_down_while_starting[0] is True
