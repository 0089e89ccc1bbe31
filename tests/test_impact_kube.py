"""`impact` against a fake Kubernetes API server speaking real HTTP and the exec websocket (tests/fakes/kube_api.py).

The official `kubernetes` client does every call for real (list, exec over the websocket, ephemeral containers,
logs); nothing of the client is mocked. Expected listeners come from the /proc/net/tcp fixtures in tests/data
(decoded by hand in test_precheck.py).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.kube_api import FakeKubeApi, FakePod

from conformance.cli import main

DATA = Path(__file__).parent / "data"
TCP = (DATA / "proc_net_tcp.txt").read_text()
TCP6 = (DATA / "proc_net_tcp6.txt").read_text()
DEBUG_IMAGE = "docker.io/library/busybox:1.36"
NO_CAT_IMAGE = "gcr.io/distroless/static:nonroot"
USERS = {"admin": "admin-token", "viewer": "viewer-token"}


def service(namespace: str, name: str, ports: list[dict[str, object]]) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "ports": ports},
    }


@pytest.fixture
def api() -> Iterator[FakeKubeApi]:
    fake = FakeKubeApi(
        namespaces={"shop": {"istio-injection": "enabled"}, "payments": {"istio.io/dataplane-mode": "ambient"}},
        pods=[
            # The injected proxy comes first and has no cat (distroless): the app container prints the files.
            FakePod(
                "shop",
                "web-1",
                {"istio-proxy": False, "app": True},
                TCP,
                labels={"app": "web"},
                ports=[("app", "http", 8081)],
            ),
            FakePod("shop", "static-0", {"istio-proxy": False, "app": False}, TCP, labels={"app": "static"}),
            FakePod("payments", "api-0", {"app": True}, TCP6, labels={"app": "api"}),
            FakePod("shop", "batch-0", {"app": True}, TCP, labels={"app": "batch"}),  # no Service selects it
        ],
        services=[
            service(
                "shop",
                "web",
                [
                    {"name": "http", "port": 80, "targetPort": "http"},
                    {"name": "grpc", "port": 8082, "targetPort": 8082},
                ],
            ),
            service("shop", "static", [{"name": "http", "port": 8081, "targetPort": 8081}]),
            service("payments", "api", [{"name": "http", "port": 8081, "targetPort": 8081}]),
        ],
        tokens_without_exec={"viewer-token"},
        images_with_cat={DEBUG_IMAGE},
    ).start()
    yield fake
    fake.stop()


@pytest.fixture
def kubeconfig(api: FakeKubeApi, tmp_path: Path) -> Path:
    return api.kubeconfig(tmp_path / "kubeconfig", USERS)


def impact(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["impact", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def as_json(capsys: pytest.CaptureFixture[str], kubeconfig: Path, *args: str) -> tuple[int, dict[str, object]]:
    code, out, _err = impact(capsys, "--kubeconfig", str(kubeconfig), "--format", "json", *args)
    return code, json.loads(out)


def test_distroless_pod_is_listed_unchecked_with_the_reason(
    capsys: pytest.CaptureFixture[str], kubeconfig: Path, api: FakeKubeApi
) -> None:
    code, doc = as_json(capsys, kubeconfig)
    assert code == 3
    pods = {p["pod"]: p for p in doc["pods"]}  # type: ignore[union-attr, index]
    assert set(pods) == {"web-1", "static-0", "api-0"}  # batch-0: no Service selects it
    static = pods["static-0"]
    assert static["checked"] is False
    assert "istio-proxy: cat failed: failed to exec in container" in static["reason"]
    assert 'exec: "cat": executable file not found in $PATH' in static["reason"]
    assert static["reason"].endswith("rerun with --allow-debug-containers --debug-image IMAGE")
    assert pods["web-1"]["via"] == "exec cat in container app"  # istio-proxy tried first, then app
    findings = {(f["pod"], f["port"], f["kind"], f["mode"]) for f in doc["findings"]}  # type: ignore[union-attr]
    assert findings == {
        ("web-1", 8081, "loopback-only", "sidecar"),  # reached through the named targetPort `http`
        ("web-1", 8082, "pod-ip-only", "sidecar"),
        ("api-0", 8081, "loopback-only", "ambient"),  # ::1 in tcp6; the namespace is enrolled in ambient
    }
    assert not any(method == "PATCH" for method, _path, _token in api.log)  # no debug container unasked


def test_debug_container_reads_a_distroless_pod(
    capsys: pytest.CaptureFixture[str], kubeconfig: Path, api: FakeKubeApi
) -> None:
    code, doc = as_json(capsys, kubeconfig, "-n", "shop", "--allow-debug-containers", "--debug-image", DEBUG_IMAGE)
    assert code == 1
    pods = {p["pod"]: p for p in doc["pods"]}  # type: ignore[union-attr, index]
    assert pods["static-0"]["checked"] is True
    assert pods["static-0"]["via"] == f"ephemeral container ({DEBUG_IMAGE})"
    assert ("static-0", 8081, "loopback-only") in {(f["pod"], f["port"], f["kind"]) for f in doc["findings"]}  # type: ignore[union-attr]
    (static,) = [p for p in api.pods if p.name == "static-0"]
    (eph,) = static.ephemeral
    assert eph["image"] == DEBUG_IMAGE
    assert eph["command"] == ["cat", "/proc/net/tcp", "/proc/net/tcp6"]
    assert [p.ephemeral for p in api.pods if p.name == "web-1"] == [[]]  # only where no container could


def test_debug_image_without_cat_leaves_the_pod_unchecked(
    capsys: pytest.CaptureFixture[str], kubeconfig: Path, api: FakeKubeApi
) -> None:
    code, doc = as_json(capsys, kubeconfig, "-n", "shop", "--allow-debug-containers", "--debug-image", NO_CAT_IMAGE)
    assert code == 3
    (static,) = [p for p in doc["pods"] if p["pod"] == "static-0"]  # type: ignore[union-attr, index]
    assert "printed no /proc/net/tcp (exit code 127)" in static["reason"]


def test_rbac_refusing_exec_is_a_reason_not_a_crash(
    capsys: pytest.CaptureFixture[str], kubeconfig: Path, api: FakeKubeApi
) -> None:
    code, out, err = impact(capsys, "--kubeconfig", str(kubeconfig), "--context", "viewer", "--format", "istioctl")
    assert code == 3
    assert out == ""
    refused = [line for line in err.splitlines() if line.startswith("impact: not checked: ")]
    assert len(refused) == 3
    assert all(
        'exec refused (HTTP 403: pods "' in line and 'cannot create resource "pods/exec"' in line for line in refused
    )
    execs = [path for method, path, token in api.log if path.endswith("/exec") and token == "viewer-token"]
    assert len(execs) == 3  # one refusal per pod: the pod's other containers would be refused too


def test_istioctl_lines_and_table(capsys: pytest.CaptureFixture[str], kubeconfig: Path) -> None:
    code, out, err = impact(capsys, "--kubeconfig", str(kubeconfig), "-n", "payments", "--format", "istioctl")
    assert code == 1
    assert out == (
        "Error [IST0143] (Pod payments/api-0) Port 8081 is exposed in a Service but listens on localhost. "
        "It will not be exposed to other pods.\n"
    )
    assert "impact: 1/1 pods read" in err
    code, out, _err = impact(capsys, "--kubeconfig", str(kubeconfig), "-n", "payments", "-l", "app=api")
    assert code == 1
    assert "payments   api-0  ambient  8081  ::1" in out


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("-n", "nope"), "mesh-inbound-conformance impact: namespace 'nope' not found"),
        (("-l", "app in (web"), "mesh-inbound-conformance impact: label selector 'app in (web': cannot read"),
        (("--context", "nobody"), "mesh-inbound-conformance impact: kubeconfig "),
        (
            ("--allow-debug-containers",),
            "mesh-inbound-conformance impact: --allow-debug-containers needs --debug-image",
        ),
        (("--parallel", "0"), "mesh-inbound-conformance impact: --parallel 0: expected a number of pods >= 1"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], kubeconfig: Path, args: tuple[str, ...], line: str
) -> None:
    code, out, err = impact(capsys, "--kubeconfig", str(kubeconfig), *args)
    assert code == 2
    assert out == ""
    (only,) = [x for x in err.splitlines() if not x.startswith("impact: ")]
    assert only.startswith(line)


def test_unreachable_api_server_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    config = tmp_path / "kubeconfig"
    config.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    code, _out, err = impact(capsys, "--kubeconfig", str(config), "--timeout", "5")
    assert code == 2
    (only,) = [x for x in err.splitlines() if not x.startswith("impact: ")]
    assert only.startswith("mesh-inbound-conformance impact: list namespaces: cannot reach the API server")


def test_ipv6_disabled_pod_is_read_from_tcp_alone_and_pending_pods_are_counted(
    capsys: pytest.CaptureFixture[str], kubeconfig: Path, api: FakeKubeApi
) -> None:
    api.namespaces["legacy"] = {}
    api.pods += [
        FakePod("legacy", "v4only-0", {"app": True}, TCP, None, labels={"app": "v4only"}),
        FakePod("legacy", "starting-0", {"app": True}, TCP, labels={"app": "v4only"}, phase="Pending"),
    ]
    api.services.append(service("legacy", "v4only", [{"name": "http", "port": 8081, "targetPort": 8081}]))
    code, doc = as_json(capsys, kubeconfig, "-n", "legacy")
    assert code == 3
    pods = {p["pod"]: p for p in doc["pods"]}  # type: ignore[union-attr, index]
    assert pods["v4only-0"]["checked"] is True
    assert pods["starting-0"]["reason"] == "pod is Pending, not Running: its listeners cannot be read"
    assert [(f["pod"], f["port"], f["listeners"]) for f in doc["findings"]] == [  # type: ignore[union-attr, index]
        ("v4only-0", 8081, ["127.0.0.1"])
    ]
    assert doc["summary"]["pods_unchecked"] == 1  # type: ignore[index]


def test_reads_run_in_parallel_within_the_bound(
    capsys: pytest.CaptureFixture[str], kubeconfig: Path, api: FakeKubeApi
) -> None:
    api.namespaces["many"] = {}
    api.pods += [FakePod("many", f"app-{i}", {"app": True}, TCP, labels={"app": "many"}) for i in range(8)]
    api.services.append(service("many", "many", [{"name": "http", "port": 8081, "targetPort": 8081}]))
    api.exec_seconds = 0.3
    code, _out, err = impact(capsys, "--kubeconfig", str(kubeconfig), "-n", "many", "--parallel", "3")
    assert code == 1
    assert 2 <= api.max_concurrent_execs <= 3  # in parallel, never more than asked (3 under no load)
    assert "impact: 8/8 pods read" in err


def test_dual_stack_pod_is_judged_per_family_from_pod_ips(
    capsys: pytest.CaptureFixture[str], kubeconfig: Path, api: FakeKubeApi
) -> None:
    # status.podIPs has both families: /proc/net/tcp and tcp6 are read apart (tcp6 does not show IPV6_V6ONLY).
    api.namespaces["dual"] = {}
    api.pods.append(
        FakePod("dual", "web-0", {"app": True}, TCP, TCP6, labels={"app": "web"}, pod_ips=("10.244.0.9", "fd00::9"))
    )
    ports = [{"name": f"p{p}", "port": p, "targetPort": p} for p in (8081, 8082, 15006, 19000)]
    api.services.append(service("dual", "web", ports))
    code, doc = as_json(capsys, kubeconfig, "-n", "dual")
    assert code == 1
    found = doc["findings"]
    findings = [(f["port"], f["family"], f["kind"], f["listeners"]) for f in found]  # type: ignore[union-attr, index]
    assert findings == [
        (8081, "ipv4", "loopback-only", ["127.0.0.1"]),
        (8081, "ipv6", "loopback-only", ["::1"]),
        (8082, "ipv4", "pod-ip-only", ["10.244.0.12"]),
        (8082, "ipv6", "pod-ip-only", ["fd00:10:244::c"]),
    ]  # 19000: 0.0.0.0, and no IPv6 socket; 15006: [::] with no IPv4 socket beside it, so it may take IPv4
    # The same files on a single-stack pod (the fixture's pods have one podIP): one finding per port, no family.
    code, doc = as_json(capsys, kubeconfig, "-n", "payments")
    assert [("family" in f, f["port"]) for f in doc["findings"]] == [(False, 8081)]  # type: ignore[union-attr, index]
