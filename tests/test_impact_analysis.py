"""`impact`'s analysis and output, on written-out pods, Services and listeners (no cluster).

Expected values come from the reference notes (inbound-semantics.md section 1, probes-ambient.md sections 2-3,
tools-versions-ci.md for the IST0143 line) and the kernel's /proc/net/tcp format; none is computed by the code
under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance.backends.precheck import Listener, split_proc_net
from conformance.impact.analysis import (
    AMBIENT,
    LOOPBACK_ONLY,
    NO_MESH,
    POD_IP_ONLY,
    SIDECAR,
    PodInfo,
    PortFinding,
    SelectorError,
    ServiceInfo,
    ServicePort,
    TargetedPort,
    analyse,
    mesh_mode,
    parse_selector,
    targeted_ports,
)
from conformance.impact.output import istioctl_lines, table, to_json
from conformance.impact.sources import ImpactReport, PodResult

DATA = Path(__file__).parent / "data"


def pod(name: str = "web-1", **kw: object) -> PodInfo:
    defaults: dict[str, object] = {"labels": {"app": "web"}, "containers": ("app",)}
    return PodInfo("shop", name, **(defaults | kw))  # type: ignore[arg-type]


def svc(*ports: ServicePort, selector: dict[str, str] | None = None, name: str = "web") -> ServiceInfo:
    return ServiceInfo("shop", name, {"app": "web"} if selector is None else selector, ports)


# --- mesh mode ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("info", "mode"),
    [
        (pod(containers=("app", "istio-proxy")), SIDECAR),
        (pod(init_containers=("istio-init", "istio-proxy")), SIDECAR),  # native sidecar (restartPolicy Always)
        (pod(annotations={"sidecar.istio.io/status": '{"containers":["istio-proxy"]}'}), SIDECAR),
        (pod(labels={"app": "web", "istio.io/dataplane-mode": "ambient"}), AMBIENT),
        (pod(namespace_labels={"istio.io/dataplane-mode": "ambient"}), AMBIENT),
        (pod(annotations={"ambient.istio.io/redirection": "enabled"}), AMBIENT),
        # A pod label `none` opts out of its namespace's enrolment.
        (
            pod(
                labels={"app": "web", "istio.io/dataplane-mode": "none"},
                namespace_labels={"istio.io/dataplane-mode": "ambient"},
            ),
            NO_MESH,
        ),
        # A sidecar pod in an ambient namespace keeps its sidecar; ztunnel does not capture it.
        (pod(containers=("app", "istio-proxy"), namespace_labels={"istio.io/dataplane-mode": "ambient"}), SIDECAR),
        (pod(namespace_labels={"istio-injection": "enabled"}), NO_MESH),  # labelled, but never injected
        (pod(), NO_MESH),
    ],
)
def test_mesh_mode_is_detected(info: PodInfo, mode: str) -> None:
    assert mesh_mode(info) == mode


# --- targeted ports -------------------------------------------------------------------------------------


def test_numeric_and_named_target_ports() -> None:
    info = pod(named_ports={"http": 8081, "metrics": 9090})
    services = [
        svc(ServicePort("http", 80, "http"), ServicePort("grpc", 9000, 9000)),
        svc(ServicePort("web", 8081, 8081), name="web-direct"),
    ]
    assert targeted_ports(info, services) == [
        TargetedPort(8081, ("web-direct:web", "web:http")),
        TargetedPort(9000, ("web:grpc",)),
    ]


def test_ports_no_service_targets_are_not_targeted() -> None:
    info = pod(named_ports={"http": 8081})
    services = [
        svc(ServicePort("gone", 80, "missing-name")),  # no endpoint in Kubernetes: no traffic
        svc(ServicePort("dns", 53, 53, "UDP")),  # not TCP
        svc(ServicePort("other", 81, 81), selector={"app": "other"}),  # selects another pod
        svc(ServicePort("none", 82, 82), selector={}),  # no selector: selects no pod
    ]
    assert targeted_ports(info, services) == []


# --- analysis -------------------------------------------------------------------------------------------


def test_loopback_only_and_pod_ip_only_ports_are_findings() -> None:
    info = pod(containers=("app", "istio-proxy"))
    targeted = [TargetedPort(p, (f"web:{p}",)) for p in (8081, 8082, 8083, 8084, 8085, 8086)]
    listeners = [
        Listener("127.0.0.1", 8081),  # loopback only
        Listener("::1", 8081),  # both families' loopback: still loopback only
        Listener("10.244.0.12", 8082),  # pod IP only
        Listener("*", 8083),  # wildcard: fine everywhere
        Listener("127.0.0.1", 8084),
        Listener("*", 8084),  # loopback beside wildcard: fine
        Listener("127.0.0.1", 8085),
        Listener("10.244.0.12", 8085),  # loopback and pod IP: fine under every behaviour
        Listener("127.0.0.1", 15000),  # not targeted
    ]
    assert analyse(info, targeted, listeners) == [
        PortFinding("shop", "web-1", 8081, LOOPBACK_ONLY, SIDECAR, ("127.0.0.1", "::1"), ("web:8081",)),
        PortFinding("shop", "web-1", 8082, POD_IP_ONLY, SIDECAR, ("10.244.0.12",), ("web:8082",)),
    ]  # 8086: nobody listens, nothing to break


def test_ambient_pod_loopback_only_has_no_override() -> None:
    info = pod(namespace_labels={"istio.io/dataplane-mode": "ambient"})
    (finding,) = analyse(info, [TargetedPort(8081, ("web:http",))], [Listener("127.0.0.1", 8081)])
    assert finding.mode == AMBIENT
    assert finding.breaks_by_default
    assert finding.consequences == {
        "passthrough": "unreachable from other pods",
        "legacy": "reachable, and exposed to other pods",
        "ambient": "unreachable, and no override brings it back",
    }


def test_pod_ip_only_breaks_under_legacy_only() -> None:
    (finding,) = analyse(pod(), [TargetedPort(8082, ())], [Listener("fd00:10:244::c", 8082)])
    assert (finding.kind, finding.breaks_by_default) == (POD_IP_ONLY, False)
    assert finding.consequences["legacy"].startswith("unreachable")
    assert finding.consequences["passthrough"] == finding.consequences["ambient"] == "reachable"


def test_cat_of_both_files_splits_by_address_width() -> None:
    # What `cat /proc/net/tcp /proc/net/tcp6` prints: the two files one after the other, each with its header.
    text = (DATA / "proc_net_tcp.txt").read_text() + (DATA / "proc_net_tcp6.txt").read_text()
    assert split_proc_net(text) == sorted(
        [
            Listener("127.0.0.1", 8081),
            Listener("*", 19000),
            Listener("10.244.0.12", 8082),
            Listener("127.0.0.1", 15000),
            Listener("::1", 8081),
            Listener("*", 15006),
            Listener("fd00:10:244::c", 8082),
        ]
    )
    # IPv6 disabled in the pod: cat prints tcp, then fails on tcp6.
    assert Listener("::1", 8081) not in split_proc_net((DATA / "proc_net_tcp.txt").read_text())


# --- selectors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "api"}, False),
        ("app!=web", {}, True),
        ("app in (web, api),tier", {"app": "api", "tier": "x"}, True),
        ("app notin (web,api)", {"app": "api"}, False),
        ("!canary", {"canary": "true"}, False),
        ("", {}, True),
    ],
)
def test_label_selector(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(selector)(labels) is expected


@pytest.mark.parametrize("selector", ["app=", "=web", "app in web", "app=web,,", "a b"])
def test_bad_label_selector_is_one_line(selector: str) -> None:
    if selector == "app=":  # an empty value is valid Kubernetes syntax
        assert parse_selector(selector)({"app": ""})
        return
    with pytest.raises(SelectorError, match=r"^label selector .*: cannot read .*\(expected key=value") as info:
        parse_selector(selector)
    assert "\n" not in str(info.value)


# --- output ---------------------------------------------------------------------------------------------


def report() -> ImpactReport:
    meshed = pod("web-1", containers=("app", "istio-proxy"))
    ambient = pod("api-0", labels={"app": "api"}, namespace_labels={"istio.io/dataplane-mode": "ambient"})
    gone = pod("web-2")
    results = [
        PodResult(
            meshed,
            SIDECAR,
            (8081, 8082),
            analyse(
                meshed,
                [TargetedPort(8081, ("web:http",)), TargetedPort(8082, ("web:grpc",))],
                [Listener("127.0.0.1", 8081), Listener("10.0.0.5", 8082)],
            ),
            via="exec cat in container app",
        ),
        PodResult(
            ambient,
            AMBIENT,
            (443,),
            analyse(ambient, [TargetedPort(443, ("api:https",))], [Listener("::1", 443)]),
            via="exec cat in container app",
        ),
        PodResult(gone, NO_MESH, (8081,), unchecked="pod not found: it was deleted after it was listed"),
    ]
    return ImpactReport("test", ("shop",), None, 4, results)


def test_istioctl_lines_are_ist0143_sorted_as_text() -> None:
    # istioctl >= 1.12 origin `Pod ns/name`, messages sorted as text (tools-versions-ci.md).
    assert istioctl_lines(report()) == (
        "Error [IST0143] (Pod shop/api-0) Port 443 is exposed in a Service but listens on localhost. "
        "It will not be exposed to other pods.\n"
        "Error [IST0143] (Pod shop/web-1) Port 8081 is exposed in a Service but listens on localhost. "
        "It will not be exposed to other pods.\n"
    )


def test_json_is_versioned_and_lists_unchecked_pods() -> None:
    doc = json.loads(to_json(report()))
    assert (doc["format"], doc["version"], doc["exit_code"]) == ("mesh-inbound-conformance/impact", 1, 3)
    assert doc["summary"] == {
        "pods_listed": 4,
        "pods_selected_by_services": 3,
        "pods_checked": 2,
        "pods_unchecked": 1,
        "loopback_only_ports": 2,
        "pod_ip_only_ports": 1,
    }
    assert [(f["pod"], f["port"], f["kind"], f["mode"], f["breaks_by_default"]) for f in doc["findings"]] == [
        ("api-0", 443, "loopback-only", "ambient", True),
        ("web-1", 8081, "loopback-only", "sidecar", True),
        ("web-1", 8082, "pod-ip-only", "sidecar", False),
    ]
    assert [(p["pod"], p["checked"], p["reason"]) for p in doc["pods"]] == [
        ("web-1", True, None),
        ("api-0", True, None),
        ("web-2", False, "pod not found: it was deleted after it was listed"),
    ]


def test_table_names_unchecked_pods_and_counts() -> None:
    text = table(report())
    assert "NOT CHECKED:" in text
    assert "shop       web-2  pod not found: it was deleted after it was listed\n" in text
    assert (
        "3 pods selected by a Service (4 listed), 2 checked, 1 not checked; 2 loopback-only ports, 1 pod-IP-only ports."
        in text
    )


@pytest.mark.parametrize(
    ("findings", "unchecked", "code"), [(False, False, 0), (True, False, 1), (False, True, 3), (True, True, 3)]
)
def test_exit_codes(findings: bool, unchecked: bool, code: int) -> None:
    info = pod()
    found = analyse(info, [TargetedPort(8081, ())], [Listener("127.0.0.1", 8081)]) if findings else []
    results = [PodResult(info, NO_MESH, (8081,), found)]
    if unchecked:
        results.append(PodResult(pod("web-2"), NO_MESH, (8081,), unchecked="exec refused"))
    assert ImpactReport("t", ("shop",), None, 2, results).exit_code == code
