"""The kind and kubeconfig backends' API layer (conformance/backends/kind/api.py, watches.py, pod_exec.py) against
the fake API server.

The official `kubernetes` client talks real HTTP and the exec websocket to tests/fakes/kind_api.py, which answers
as the API server does where it matters here: a watch the watch cache cannot serve is HTTP 200 with one ERROR
event (410 Expired, 504 too large resource version), an exec negotiates v5.channel.k8s.io from Kubernetes 1.30
and v4.channel.k8s.io before, and an exec may hang or lose its connection. Also here: the kubernetes client range
pyproject.toml declares, and the tox environment that runs these tests on its lower bound.
"""

from __future__ import annotations

import configparser
import inspect
import json
import os
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from fakes import fakebin
from fakes.kind_api import EXEC_HANGS, FakeKindApi, expired, too_large
from fakes.kube_api import EXEC_PROTOCOLS_BEFORE_1_30, V4_CHANNEL, V5_CHANNEL
from packaging.requirements import Requirement
from packaging.version import Version

from conformance.backends.base import BackendError
from conformance.backends.kind import pod_exec, watches
from conformance.backends.kind.api import KubeApi
from conformance.backends.kind.runner import Runner

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "demo"
EXEC_SECONDS = 1.0
"""The exec bound the tests give (the suite's is the timeout config's `command`, 120 s by default)."""
BOUND = EXEC_SECONDS + 5.0
"""The longest an exec may take with that bound: its seconds, and the websocket's close handshake (3 s at most)."""


@dataclass
class Cluster:
    fake: FakeKindApi
    api: KubeApi
    state_file: Path

    def pod(self) -> str:
        """The name of the one pod (the echo Deployment's)."""
        return str(self.api.pods(NAMESPACE)[0]["metadata"]["name"])

    def listeners(self) -> str:
        """What `ss -ltnH` prints in that pod, from the fake's model."""
        state = fakebin.load_state(str(self.state_file))
        return fakebin.ss_listeners(state, fakebin.pods(state, NAMESPACE)[0])


def seeded(root: Path, kubernetes: str) -> Iterator[Cluster]:
    """A fake cluster of that Kubernetes version holding one injected namespace with one Deployment."""
    state_file = root / "state.json"
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {"istio-injection": "enabled"}},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "echo", "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": {"app": "echo"}},
            "template": {
                "metadata": {"labels": {"app": "echo"}},
                "spec": {"containers": [{"name": "echo", "image": "e:1", "args": ["8080:wildcard:http"]}]},
            },
        },
    }
    state_file.write_text(
        json.dumps(
            {
                "clusters": [{"name": "mic", "kubernetes": kubernetes}],
                "istio": {"hub": "docker.io/istio", "tag": "1.22.3"},
                "objects": [namespace, deployment],
            }
        )
    )
    env = {"FAKE_STATE": str(state_file), "FAKE_LOG": str(root / "fake-log.jsonl"), "HOME": str(root)}
    fake = FakeKindApi(state_file, env).start()
    kubeconfig = fake.kubeconfig(root / "kubeconfig")
    try:
        yield Cluster(fake, KubeApi(lambda: str(kubeconfig), Runner(env=env), 30.0), state_file)
    finally:
        fake.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    yield from seeded(tmp_path, "v1.29.14")


def within(seconds: float, fn: Callable[[], Any]) -> tuple[Any, BaseException | None, float]:
    """fn's value or exception and how long it took; the test fails (instead of hanging) after `seconds`."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # the test looks at it
            box["error"] = err

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds:g} s")
    return box.get("value"), box.get("error"), time.monotonic() - started


def no_terminating(items: list[dict[str, Any]]) -> str | None:
    old = [i["metadata"]["name"] for i in items if i["metadata"].get("deletionTimestamp")]
    return f"still Terminating: {', '.join(old)}" if old else None


def pod_requests(fake: FakeKindApi) -> list[tuple[str, str]]:
    """(watch, resourceVersion) of each request for the namespace's pods."""
    return [
        (r["query"].get("watch", [""])[0], r["query"].get("resourceVersion", [""])[0])
        for r in fake.requests
        if r["path"] == f"/api/v1/namespaces/{NAMESPACE}/pods"
    ]


# --- watches: ERROR events (issue 20, item 7) -----------------------------------------------------------------------


def test_watch_error_events_for_an_expired_or_too_large_resource_version_list_again(cluster: Cluster) -> None:
    """The watch cache answers both as HTTP 200 and one ERROR event: the wait lists again and watches from there."""
    cluster.fake.env["FAKE_TERMINATING"] = "3"  # the first 3 listings show a pod still Terminating
    cluster.fake.watch_errors = [expired("2"), too_large(9_000_000, 1_234)]
    value, error, _ = within(30, lambda: watches.wait_pods(cluster.api, NAMESPACE, no_terminating, 20, "wait for demo"))
    assert error is None, error
    asked = pod_requests(cluster.fake)
    assert [p["metadata"]["name"] for p in value] == [cluster.pod()]
    # list, watch (ERROR 410), list, watch (ERROR 504), list, watch: the old pod's DELETED event ends it.
    assert [w for w, _ in asked] == ["", "true", "", "true", "", "true"]
    # Each watch starts from the resourceVersion of the listing just before it.
    assert all(rv for w, rv in asked if w)


def test_a_watch_error_event_of_another_kind_is_one_line(cluster: Cluster) -> None:
    cluster.fake.env["FAKE_TERMINATING"] = "3"
    cluster.fake.watch_errors = [
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "Internal error occurred: etcdserver: no leader",
            "reason": "InternalError",
            "code": 500,
        }
    ]
    _, error, _ = within(30, lambda: watches.wait_pods(cluster.api, NAMESPACE, no_terminating, 20, "wait for demo"))
    assert isinstance(error, BackendError)
    assert str(error) == (
        "wait for demo: the watch of /api/v1/namespaces/demo/pods ended with HTTP 500: "
        "Internal error occurred: etcdserver: no leader"
    )


def test_a_wait_that_runs_out_says_how_its_last_watch_ended(cluster: Cluster) -> None:
    cluster.fake.env["FAKE_TERMINATING"] = "1000"
    cluster.fake.watch_errors = [too_large(9_000_000, 1_234) for _ in range(1000)]
    _, error, _ = within(30, lambda: watches.wait_pods(cluster.api, NAMESPACE, no_terminating, 2.5, "wait for demo"))
    assert isinstance(error, BackendError)
    assert str(error).startswith("wait for demo: not done after 2.5 s: still Terminating: echo-")
    assert str(error).endswith(
        " (the API server ended the last watch with HTTP 504: Timeout: Too large resource version: 9000000, "
        "current: 1234)"
    )
    # The server said to retry after 1 s: the wait did not hammer it.
    assert len([w for w, _ in pod_requests(cluster.fake) if w]) <= 4


# --- exec: bounded, one line when the connection drops, v4 and v5 (issue 20, item 8) ----------------------------------


def ss(cluster: Cluster, timeout: float | None = EXEC_SECONDS) -> Any:
    pod = cluster.pod()
    return pod_exec.exec_in(
        cluster.api, NAMESPACE, pod, "istio-proxy", ["ss", "-ltnH"], "list the listeners of echo", timeout
    )


@pytest.mark.parametrize("hang", sorted(set(EXEC_HANGS) - {"drop"}))
def test_an_exec_that_hangs_ends_within_its_bound_in_one_line_naming_the_pod(cluster: Cluster, hang: str) -> None:
    pod = cluster.pod()
    cluster.fake.exec_hangs["ss -ltnH"] = hang
    _, error, seconds = within(BOUND + 10, lambda: ss(cluster))
    assert isinstance(error, BackendError), error
    assert seconds < BOUND
    assert str(error) == f"list the listeners of echo: exec in {NAMESPACE}/{pod} did not finish within 1 s"


def test_the_default_exec_bound_is_the_api_s_timeout(cluster: Cluster) -> None:
    """KubeApi gets its timeout from the timeout config (`command`): an exec given none is bounded by it."""
    pod = cluster.pod()
    cluster.fake.exec_hangs["ss -ltnH"] = "before-upgrade"
    cluster.api.timeout = EXEC_SECONDS
    _, error, seconds = within(BOUND + 10, lambda: ss(cluster, timeout=None))
    assert seconds < BOUND
    assert str(error) == f"list the listeners of echo: exec in {NAMESPACE}/{pod} did not finish within 1 s"


def test_a_dropped_exec_connection_is_one_line_naming_the_pod(cluster: Cluster) -> None:
    pod = cluster.pod()
    cluster.fake.exec_hangs["ss -ltnH"] = "drop"
    _, error, seconds = within(BOUND + 10, lambda: ss(cluster))
    assert isinstance(error, BackendError), error
    assert seconds < BOUND
    assert str(error) == (
        f"list the listeners of echo: exec in {NAMESPACE}/{pod}: the connection to the API server dropped before "
        "the command ended (Connection to remote host was lost.)"
    )


def test_a_dropped_probe_exec_is_one_line_naming_the_pod(cluster: Cluster) -> None:
    """The execs that run side by side (probes) report it the same way."""
    pod = cluster.pod()
    cluster.fake.exec_hangs["ss -ltnH"] = "drop"
    pending = pod_exec.start_exec(
        cluster.api, NAMESPACE, pod, "istio-proxy", ["ss", "-ltnH"], "probe from echo", EXEC_SECONDS
    )
    with pytest.raises(BackendError) as raised:
        pending.wait(BOUND)
    assert str(raised.value) == (
        f"probe from echo: exec in {NAMESPACE}/{pod}: the connection to the API server dropped before "
        "the command ended (Connection to remote host was lost.)"
    )


@pytest.mark.parametrize(
    ("kubernetes", "protocol"), [("v1.20.15", V4_CHANNEL), ("v1.29.14", V4_CHANNEL), ("v1.30.13", V5_CHANNEL)]
)
def test_exec_over_the_subprotocol_the_api_server_picks(tmp_path: Path, kubernetes: str, protocol: str) -> None:
    for cluster in seeded(tmp_path, kubernetes):
        out = ss(cluster, timeout=10)
        assert (out.returncode, out.stdout, out.stderr) == (0, cluster.listeners(), "")
        failed = pod_exec.exec_in(
            cluster.api, NAMESPACE, cluster.pod(), "istio-proxy", ["pilot-agent", "request", "GET", "x"], "read", 10
        )
        assert failed.returncode == 1
        assert failed.stderr == "fakebin: unexpected admin path x\n"
        assert cluster.fake.negotiated == [protocol, protocol]


def test_an_api_server_that_speaks_v5_only_is_reached_over_v5(cluster: Cluster) -> None:
    cluster.fake.exec_protocols = (V5_CHANNEL,)
    out = ss(cluster, timeout=10)
    assert out.stdout == cluster.listeners()
    assert cluster.fake.negotiated == [V5_CHANNEL]


def test_an_api_server_without_v4_or_v5_refuses_the_exec_in_one_line(cluster: Cluster) -> None:
    pod = cluster.pod()
    cluster.fake.exec_protocols = EXEC_PROTOCOLS_BEFORE_1_30[1:]
    with pytest.raises(BackendError) as raised:
        ss(cluster, timeout=10)
    assert str(raised.value) == (
        f"list the listeners of echo: exec in {NAMESPACE}/{pod} refused: HTTP 400: requested protocol(s) are not "
        "supported: ['v5.channel.k8s.io', 'v4.channel.k8s.io']; supports ['v3.channel.k8s.io', "
        "'v2.channel.k8s.io', 'channel.k8s.io']"
    )


# --- the kubernetes client range (issue 20, item 6) ----------------------------------------------------------------


def declared_kubernetes() -> Requirement:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == "kubernetes"]
    assert len(found) == 1
    return found[0]


def lower_bound(requirement: Requirement) -> Version:
    floors = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    assert len(floors) == 1, f"{requirement}: one lower bound (>=) expected"
    return floors[0]


def test_the_installed_client_is_in_the_declared_range() -> None:
    requirement = declared_kubernetes()
    assert requirement.specifier.contains(version("kubernetes")), (requirement, version("kubernetes"))
    # An upper bound too: every major of the client is generated anew (37 changed call_api's signature).
    assert any(s.operator == "<" for s in requirement.specifier), requirement


def test_the_installed_client_has_the_calls_the_api_layer_makes() -> None:
    """What api.py, watches.py and kubeclient.py call, with the parameters they pass (kubernetes 37's generator)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from kubernetes.client.rest import RESTResponse
    from kubernetes.stream import stream, ws_client
    from websocket import WebSocketConnectionClosedException, WebSocketException

    serialize = inspect.signature(client.ApiClient.param_serialize).parameters
    assert list(serialize)[:3] == ["self", "method", "resource_path"]
    assert {"query_params", "header_params", "body", "auth_settings"} <= set(serialize)
    # call_api(*param_serialize(...), _request_timeout=...): param_serialize gives five values.
    call = inspect.signature(client.ApiClient.call_api).parameters
    assert list(call) == ["self", "method", "url", "header_params", "body", "post_params", "_request_timeout"]
    assert list(inspect.signature(RESTResponse.read).parameters) == ["self"]
    assert callable(ApiException.from_response)
    assert callable(stream)
    assert {"run_forever", "read_channel", "is_open", "close"} <= set(dir(ws_client.WSClient))
    assert (ws_client.V5_CHANNEL_PROTOCOL, ws_client.V4_CHANNEL_PROTOCOL) == (V5_CHANNEL, V4_CHANNEL)
    assert issubclass(WebSocketConnectionClosedException, WebSocketException)
    exec_call = inspect.signature(client.CoreV1Api.connect_get_namespaced_pod_exec).parameters
    assert {"name", "namespace"} <= set(exec_call)


def test_the_lower_bound_environment_installs_the_declared_lower_bound() -> None:
    """`tox -e kubefloor` runs this module (and the kind backend's tests) on the lowest client pyproject allows."""
    floor = lower_bound(declared_kubernetes())
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(REPO / "tox.ini")
    deps = tox["testenv:kubefloor"]["deps"].split()
    assert deps == [f"kubernetes=={floor}"]
    if os.environ.get("MIC_KUBERNETES_FLOOR"):  # set by that environment: it must really run the floor
        assert Version(version("kubernetes")) == floor
