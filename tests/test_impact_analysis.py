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
            Listener("*", 15006, ipv6=True),  # from tcp6: its family is kept, IPV6_V6ONLY unknown
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


# --- dual-stack pods: each family judged apart (settings-dualstack.md sections 2 and 5) ------------------------

DUAL_IPS = ("10.244.0.12", "fd00:10:244::c")


def dual(**kw: object) -> PodInfo:
    return pod(containers=("app", "istio-proxy"), ips=DUAL_IPS, **kw)


def by_family(listeners: list[Listener], port: int = 8081) -> dict[str | None, tuple[str, tuple[str, ...]]]:
    """family -> (kind, addresses) of the findings of one targeted port on a dual-stack sidecar pod."""
    found = analyse(dual(), [TargetedPort(port, ("web:http",))], listeners)
    assert len({f.family for f in found}) == len(found)
    return {f.family: (f.kind, f.addresses) for f in found}


V4_WILDCARD = Listener("*", 8081)
V6_WILDCARD_V6ONLY = Listener("*", 8081, ipv6=True, v6only=True)
V6_WILDCARD_DUAL = Listener("*", 8081, ipv6=True, v6only=False)
V6_WILDCARD_UNKNOWN = Listener("*", 8081, ipv6=True)  # /proc/net/tcp6: IPV6_V6ONLY not shown


@pytest.mark.parametrize(
    ("listeners", "expected"),
    [
        # 127.0.0.1 only: IPv4 clients meet a loopback socket, IPv6 clients no socket at all (nothing to break).
        ([Listener("127.0.0.1", 8081)], {"ipv4": (LOOPBACK_ONLY, ("127.0.0.1",))}),
        # Loopback in both families: a finding per family.
        (
            [Listener("127.0.0.1", 8081), Listener("::1", 8081)],
            {"ipv4": (LOOPBACK_ONLY, ("127.0.0.1",)), "ipv6": (LOOPBACK_ONLY, ("::1",))},
        ),
        # 0.0.0.0 for IPv4, [::1] for IPv6: only IPv6 clients are shut out.
        ([V4_WILDCARD, Listener("::1", 8081)], {"ipv6": (LOOPBACK_ONLY, ("::1",))}),
        # Go's net.Listen("tcp", ":P"): one [::] with V6ONLY off serves both families.
        ([V6_WILDCARD_DUAL], {}),
        # A V6ONLY [::] beside 127.0.0.1: IPv4 clients meet loopback only.
        ([V6_WILDCARD_V6ONLY, Listener("127.0.0.1", 8081)], {"ipv4": (LOOPBACK_ONLY, ("127.0.0.1",))}),
        # V6ONLY unknown beside an IPv4 listener: Linux would have refused a dual [::]:P there, so it is V6ONLY.
        ([V6_WILDCARD_UNKNOWN, Listener("127.0.0.1", 8081)], {"ipv4": (LOOPBACK_ONLY, ("127.0.0.1",))}),
        # V6ONLY unknown and alone: it takes IPv4 or nothing does; no finding either way.
        ([V6_WILDCARD_UNKNOWN], {}),
        # A V6ONLY [::] alone: IPv4 meets nothing, IPv6 a wildcard.
        ([V6_WILDCARD_V6ONLY], {}),
        # An IPv4-mapped bind takes IPv4 only, as its IPv4 address.
        ([Listener("::ffff:127.0.0.1", 8081, ipv6=True, v6only=False)], {"ipv4": (LOOPBACK_ONLY, ("127.0.0.1",))}),
        (
            [Listener("::ffff:127.0.0.1", 8081, ipv6=True, v6only=False), Listener("::1", 8081)],
            {"ipv4": (LOOPBACK_ONLY, ("127.0.0.1",)), "ipv6": (LOOPBACK_ONLY, ("::1",))},
        ),
        # Pod IP only, per family.
        (
            [Listener("10.244.0.12", 8081), Listener("fd00:10:244::c", 8081)],
            {"ipv4": (POD_IP_ONLY, ("10.244.0.12",)), "ipv6": (POD_IP_ONLY, ("fd00:10:244::c",))},
        ),
        ([Listener("10.244.0.12", 8081), V6_WILDCARD_V6ONLY], {"ipv4": (POD_IP_ONLY, ("10.244.0.12",))}),
        ([V4_WILDCARD, Listener("fd00:10:244::c", 8081)], {"ipv6": (POD_IP_ONLY, ("fd00:10:244::c",))}),
        # Loopback in one family and pod IP in the other: two different findings.
        (
            [Listener("127.0.0.1", 8081), Listener("fd00:10:244::c", 8081)],
            {"ipv4": (LOOPBACK_ONLY, ("127.0.0.1",)), "ipv6": (POD_IP_ONLY, ("fd00:10:244::c",))},
        ),
        # Loopback beside the pod IP in a family serves every behaviour there.
        ([Listener("127.0.0.1", 8081), Listener("10.244.0.12", 8081), Listener("*", 8081, ipv6=True)], {}),
    ],
)
def test_dual_stack_pod_is_judged_per_family(
    listeners: list[Listener], expected: dict[str | None, tuple[str, tuple[str, ...]]]
) -> None:
    assert by_family(listeners) == expected


def test_single_stack_pods_are_judged_as_before() -> None:
    # The same sockets on a pod with one address (or none told): one finding per port, no family, no legacy key.
    listeners = [Listener("127.0.0.1", 8081), Listener("::1", 8081), Listener("*", 8082, ipv6=True)]
    listeners.append(Listener("127.0.0.1", 8082))
    for ips in ((), ("10.244.0.12",), ("fd00:10:244::c",)):
        found = analyse(pod(ips=ips), [TargetedPort(8081, ()), TargetedPort(8082, ())], listeners)
        assert found == [PortFinding("shop", "web-1", 8081, LOOPBACK_ONLY, NO_MESH, ("127.0.0.1", "::1"), ())]
        assert found[0].consequences == {
            "passthrough": "unreachable from other pods",
            "legacy": "reachable, and exposed to other pods",
            "ambient": "unreachable, and no override brings it back",
        }


def test_dual_stack_legacy_is_decided_by_the_ipv4_listeners() -> None:
    # Legacy sends every client, IPv6 too, to 127.0.0.1:P (settings-dualstack.md section 2, localHosts[Dual][0]).
    def legacy(listeners: list[Listener]) -> dict[str | None, tuple[str, bool]]:
        found = analyse(dual(), [TargetedPort(8081, ())], listeners)
        return {f.family: (f.consequences["legacy"].split(" (")[0], f.breaks_by_default) for f in found}

    # IPv6 loopback-only next to an IPv4 wildcard: legacy reaches the IPv4 wildcard.
    assert legacy([V4_WILDCARD, Listener("::1", 8081)]) == {"ipv6": ("reachable", True)}
    # Loopback in both families: legacy reaches (and exposes) the IPv4 loopback socket, for IPv6 clients too.
    assert legacy([Listener("127.0.0.1", 8081), Listener("::1", 8081)]) == {
        "ipv4": ("reachable, and exposed to other pods", True),
        "ipv6": ("reachable, and exposed to other pods", True),
    }
    # IPv6 loopback-only, and nothing on IPv4: legacy's 127.0.0.1 dial meets nobody.
    assert legacy([Listener("::1", 8081)]) == {"ipv6": ("unreachable", True)}
    # Pod IP only in both families: legacy unreachable for everyone.
    assert legacy([Listener("10.244.0.12", 8081), Listener("fd00:10:244::c", 8081)]) == {
        "ipv4": ("unreachable", False),
        "ipv6": ("unreachable", False),
    }
    (v6,) = analyse(dual(), [TargetedPort(8081, ())], [V4_WILDCARD, Listener("::1", 8081)])
    assert v6.consequences["passthrough"] == "unreachable from other pods (IPv6 clients)"
    assert "legacy sends every client, IPv6 too, to 127.0.0.1" in v6.consequences["legacy"]


def test_dual_stack_findings_sort_by_port_then_family() -> None:
    listeners = [Listener("fd00:10:244::c", 8081), Listener("127.0.0.1", 8081), Listener("::1", 8080)]
    found = analyse(dual(), [TargetedPort(8081, ()), TargetedPort(8080, ())], listeners)
    assert [(f.port, f.family, f.kind) for f in sorted(found)] == [
        (8080, "ipv6", LOOPBACK_ONLY),
        (8081, "ipv4", LOOPBACK_ONLY),
        (8081, "ipv6", POD_IP_ONLY),
    ]


def dual_report() -> ImpactReport:
    info = dual()
    found = analyse(
        info,
        [TargetedPort(8081, ("web:http",)), TargetedPort(8082, ("web:admin",))],
        [Listener("127.0.0.1", 8081), Listener("::1", 8081), Listener("*", 8082), Listener("::1", 8082)],
    )
    return ImpactReport("test", ("shop",), None, 1, [PodResult(info, SIDECAR, (8081, 8082), found)])


def test_dual_stack_output_names_the_family_and_istioctl_lines_stay_one_per_port() -> None:
    doc = json.loads(to_json(dual_report()))
    assert [(f["port"], f["family"], f["kind"], f["listeners"]) for f in doc["findings"]] == [
        (8081, "ipv4", LOOPBACK_ONLY, ["127.0.0.1"]),
        (8081, "ipv6", LOOPBACK_ONLY, ["::1"]),
        (8082, "ipv6", LOOPBACK_ONLY, ["::1"]),
    ]
    assert list(doc["findings"][0])[:5] == ["namespace", "pod", "mode", "port", "family"]
    assert doc["findings"][2]["consequences"]["legacy"].startswith("reachable (legacy sends every client, IPv6 too")
    text = table(dual_report())
    assert text.splitlines()[0].split() == [
        "NAMESPACE", "POD", "MODE", "PORT", "FAMILY", "LISTENS", "ON", "FINDING",
        "PASSTHROUGH", "LEGACY", "AMBIENT", "SERVICES",
    ]  # fmt: skip
    assert text.splitlines()[3].split() == [
        "shop", "web-1", "sidecar", "8082", "ipv6", "::1", "loopback-only",
        "unreachable", "reachable", "unreachable", "web:admin",
    ]  # fmt: skip
    assert "FAMILY: a dual-stack pod's port is judged for each family's clients" in text
    # IST0143 has no family: one line per port.
    assert istioctl_lines(dual_report()).count("Port 8081 ") == 1


def test_single_stack_output_has_no_family() -> None:
    assert "FAMILY" not in table(report())
    assert all("family" not in f for f in json.loads(to_json(report()))["findings"])
