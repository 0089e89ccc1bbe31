"""The emulated backend against the table measured on this kind of machine (shared/reference/emulation.md).

These tests do not consult the spec: the expected peers below are the measured ones, written out, so the
emulation is checked against an independent record of what the kernel and a forwarding proxy do.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator

import pytest

from conformance.backends.base import ProbeRequest
from conformance.backends.emulated import capture, netns
from conformance.backends.emulated.cluster import EmulatedCluster
from conformance.spec.dimensions import ONE_FAMILY_BINDS, Bind, IpFamily, PortKind, Protocol
from conformance.world.layout import World, service_manifest
from conformance.world.namespaces import NS_BASELINE, NS_MESH
from conformance.world.pods import PodRef
from conformance.world.ports import port_for
from conformance.world.probe_pods import restartable_ports

pytestmark = pytest.mark.netns

MIXED = PodRef(NS_MESH, "echo-mixed")
PLAIN = PodRef(NS_BASELINE, "client")
MESHED = PodRef(NS_MESH, "client")
_ids = itertools.count()


def manifests(family: IpFamily) -> list[dict[str, object]]:
    """The world, plus a server whose Sidecar sends only the loopback ports to localhost (emulation.md row 5)."""
    world = World(family, tproxy=True)
    localhost = "127.0.0.1" if family is IpFamily.IPV4 else "[::1]"
    ingress = [
        {
            "port": {"number": p.number, "protocol": p.protocol.value.upper(), "name": p.name},
            # An empty defaultEndpoint is ORIGINAL_DST from 127.0.0.6 (reference section 4).
            "defaultEndpoint": f"{localhost}:{p.number}" if p.bind is Bind.LOOPBACK else "",
        }
        for p in world.server_ports
        if p.declared
    ]
    sidecar = {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "Sidecar",
        "metadata": {"name": MIXED.app, "namespace": MIXED.namespace},
        "spec": {"workloadSelector": {"labels": {"app": MIXED.app}}, "ingress": ingress},
    }
    mixed = [world.deployment(MIXED, world.server_ports), service_manifest(MIXED, world.server_ports)]
    return [*world.manifests(), *mixed, sidecar]


@pytest.fixture(scope="module", params=[IpFamily.IPV4, IpFamily.IPV6], ids=lambda f: f.value)
def cluster(request: pytest.FixtureRequest) -> Iterator[EmulatedCluster]:
    family: IpFamily = request.param
    c = EmulatedCluster(family.value)
    try:
        c.up(manifests(family))
        yield c
    finally:
        c.down()


def probe(
    c: EmulatedCluster,
    source: PodRef,
    server: PodRef,
    bind: Bind,
    protocol: Protocol,
    address: str | None = None,
    request_id: str | None = None,
) -> str:
    """Dial the server's declared port for `bind`; return the peer it saw, or the failure label."""
    port = port_for(bind, protocol, PortKind.DECLARED).number
    target = address or c.pod_ip(server)
    rid = request_id or f"t-{next(_ids)}"
    result = c.probe([ProbeRequest(source, protocol.value, target, port, rid)], 2.0)[0]
    if result["outcome"] == "ok":
        return str(result["peer"])
    if result["outcome"] == "http_status":
        return f"http_{result['status']}"
    return str(result["outcome"])


def row(c: EmulatedCluster, server: PodRef, protocol: Protocol, source: PodRef = PLAIN) -> list[str]:
    return [probe(c, source, server, bind, protocol) for bind in ONE_FAMILY_BINDS]


def fails(protocol: Protocol) -> str:
    """What "fails" in emulation.md looks like behind a proxy (pitfall 4)."""
    return "http_503" if protocol is Protocol.HTTP else "reset_or_eof"


LOCAL = {"ipv4": "127.0.0.1", "ipv6": "::1"}
SIX = {"ipv4": "127.0.0.6", "ipv6": "::6"}


@pytest.mark.parametrize("protocol", list(Protocol))
def test_no_sidecar(cluster: EmulatedCluster, protocol: Protocol) -> None:
    client_ip = cluster.pod_ip(PLAIN)
    assert row(cluster, World.BASELINE_SERVER, protocol) == ["refused", client_ip, client_ip]


@pytest.mark.parametrize("protocol", list(Protocol))
def test_passthrough(cluster: EmulatedCluster, protocol: Protocol) -> None:
    cluster.set_inbound_mode("passthrough")
    six = SIX[cluster.family]
    assert row(cluster, PodRef(NS_MESH, "echo-none"), protocol) == [fails(protocol), six, six]


@pytest.mark.parametrize("protocol", list(Protocol))
def test_legacy(cluster: EmulatedCluster, protocol: Protocol) -> None:
    cluster.set_inbound_mode("legacy")
    try:
        local = LOCAL[cluster.family]
        assert row(cluster, PodRef(NS_MESH, "echo-none"), protocol) == [local, fails(protocol), local]
    finally:
        cluster.set_inbound_mode("passthrough")


@pytest.mark.parametrize("protocol", list(Protocol))
def test_passthrough_with_localhost_override_for_the_lo_port(cluster: EmulatedCluster, protocol: Protocol) -> None:
    local, six = LOCAL[cluster.family], SIX[cluster.family]
    assert row(cluster, MIXED, protocol) == [local, six, six]


def test_meshed_client_and_service_path(cluster: EmulatedCluster) -> None:
    """A meshed client's sidecar dials the original destination; the ClusterIP is DNAT'd to the pod."""
    server = PodRef(NS_MESH, "echo-none")
    cluster_ip = cluster.service_ip(server.namespace, server.app)
    six = SIX[cluster.family]
    assert probe(cluster, MESHED, server, Bind.WILDCARD, Protocol.HTTP, cluster_ip) == six
    assert probe(cluster, MESHED, World.BASELINE_SERVER, Bind.WILDCARD, Protocol.TCP) == cluster.pod_ip(MESHED)
    assert probe(cluster, MESHED, World.BASELINE_SERVER, Bind.LOOPBACK, Protocol.HTTP) == "http_503"


def test_inside_the_pod(cluster: EmulatedCluster) -> None:
    """localhost reaches the 127.0.0.1 and 0.0.0.0 apps; the pod IP reaches the pod-IP and 0.0.0.0 apps."""
    server = PodRef(NS_MESH, "echo-none")
    local, pod_ip = LOCAL[cluster.family], cluster.pod_ip(server)
    by_localhost = [probe(cluster, server, server, b, Protocol.TCP, local) for b in ONE_FAMILY_BINDS]
    by_pod_ip = [probe(cluster, server, server, b, Protocol.TCP, pod_ip) for b in ONE_FAMILY_BINDS]
    assert by_localhost == [local, "refused", local]
    assert by_pod_ip == ["refused", pod_ip, pod_ip]


def test_capture_rules_are_istio_iptables_output(cluster: EmulatedCluster) -> None:
    pod = cluster.pods[PodRef(NS_MESH, "echo-none")]
    rules = capture.dump(pod.netns)
    v4, _, v6 = rules.partition("# IPv6")
    ipv6 = cluster.family == "ipv6"
    # istio-iptables installs the rules of the pod's own family only (reference §6, EnableInboundIPv6).
    own, other = (v6, v4) if ipv6 else (v4, v6)
    for line in (
        "-A ISTIO_INBOUND -p tcp -m tcp --dport 19000 -j RETURN",
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A ISTIO_OUTPUT -s ::6/128 -o lo -j RETURN" if ipv6 else "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN",
    ):
        assert line in own
    assert "ISTIO" not in other
    lo_addresses = netns.run(pod.netns, ["ip", "-6", "-o", "addr", "show", "dev", "lo"])
    assert ("::6/128" in lo_addresses) is ipv6
    baseline = cluster.pods[World.BASELINE_SERVER]
    assert "ISTIO" not in capture.dump(baseline.netns)


@pytest.mark.parametrize("app", ["echo-excluded", "echo-not-included"])
def test_ports_left_out_of_capture_reach_the_app_directly(cluster: EmulatedCluster, app: str) -> None:
    """Issue 22: excludeInboundPorts / includeInboundPorts "" as istio-iptables writes them; the app sees the client."""
    server = PodRef(NS_MESH, app)
    own = capture.dump(cluster.pods[server].netns)
    assert "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006" in own
    if app == "echo-excluded":
        assert "-A ISTIO_INBOUND -p tcp -m tcp --dport 8081 -j RETURN" in own
        assert "-A PREROUTING -p tcp -j ISTIO_INBOUND" in own
    else:
        assert "-A PREROUTING" not in own
    client = cluster.pod_ip(PLAIN)
    assert row(cluster, server, Protocol.HTTP) == ["refused", client, client]
    assert row(cluster, server, Protocol.TCP) == ["refused", client, client]


def test_host_namespace_untouched(cluster: EmulatedCluster) -> None:
    host_rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    assert "ISTIO" not in host_rules
    assert "KUBE-SERVICES" not in host_rules
    assert "veth0" not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert all(name.startswith(f"{netns.PREFIX}{cluster.tag}-") for name in netns.list_names(f"mic-{cluster.tag}"))


def test_precheck_reports_exposed_loopback_ports(cluster: EmulatedCluster) -> None:
    run = cluster.precheck(NS_MESH)
    assert run.exit_code == 1
    pods = (
        "echo-empty-0",
        "echo-excluded-0",  # excluded from capture, the ports keep their inbound clusters (issue 22)
        "echo-instance-0",
        "echo-instance-cross-0",
        "echo-localhost-0",
        "echo-localhost-cross-0",
        "echo-mixed-0",
        "echo-none-0",
        "echo-not-included-0",
        "echo-tproxy-0",
        "echo-tproxy-instance-0",
    )
    # The probe pods' loopback containers the kubelet restarts (liveness 8391, startup 8371: their probes fail
    # under passthrough) listen nowhere between runs: a finding on their ports comes and goes.
    restartable = tuple(f"Port {port} " for port in restartable_ports())
    assert [line for line in run.stdout.splitlines() if not any(r in line for r in restartable)] == [
        f"Error [IST0143] (Pod {pod}.mic-mesh) Port {port} is exposed in a Service but listens on localhost. "
        "It will not be exposed to other pods."
        # 82xx/92xx: the remapped ports (Service port 1828x -> targetPort 828x) count by their container port.
        # The probe pods' loopback containers (8381 http, 9381 tcp) serve ports their Services declare.
        for pod, ports in [
            *((p, (8081, 8281, 9081, 9281)) for p in pods),
            *((p, (8381, 9381)) for p in ("probe-norewrite-0", "probe-rewrite-0")),
        ]
        for port in ports
    ]
    assert run.stderr.startswith("Error: Issues found when checking the cluster.")
    assert cluster.precheck(NS_BASELINE).exit_code == 0


def test_request_record_proves_arrival(cluster: EmulatedCluster) -> None:
    server = PodRef(NS_MESH, "echo-none")
    reached = probe(cluster, PLAIN, server, Bind.WILDCARD, Protocol.HTTP, request_id="arrives")
    refused = probe(cluster, PLAIN, server, Bind.LOOPBACK, Protocol.HTTP, request_id="stopped-by-proxy")
    assert refused == "http_503"
    records = cluster.request_record(server, ["arrives", "stopped-by-proxy", "never-sent"])
    assert [(r["request_id"], r["peer"]) for r in records] == [("arrives", reached)]


def test_sidecars_the_harness_restarts_are_not_deaths(cluster: EmulatedCluster) -> None:
    """Profile switches stop and restart every sidecar (the tests above switched): none of that is a death."""
    cluster.set_inbound_mode("legacy")
    cluster.set_inbound_mode("passthrough")
    assert cluster.deaths() == []


def test_proxy_down_refuses_everything(cluster: EmulatedCluster) -> None:
    """Capture rules without a listening proxy: every redirected connection is refused (emulation.md row 2).

    The sidecar died on its own (the harness did not stop it): the cluster names it, its pod, how it ended and
    its log's last lines, once, until a profile switch replaces it (issue 20 item 18).
    """
    pod = cluster.pods[MIXED]
    assert pod.sidecar is not None
    pod.sidecar.kill()
    pod.sidecar.wait(5)
    for protocol in Protocol:
        assert row(cluster, MIXED, protocol) == ["refused", "refused", "refused"]
    [death] = cluster.deaths()
    assert death.summary == f"sidecar of {MIXED} died (signal 9 (SIGKILL))"
    assert death.pods == (MIXED,)
    assert death.ongoing
    log = (cluster.work_dir / f"{pod.netns}.sidecar.log").read_text().strip().splitlines()
    assert death.log_tail == tuple(log[-len(death.log_tail) :])
    assert death.log_tail
    assert cluster.deaths() == [death]  # the same death, once
    cluster.set_inbound_mode("legacy")  # the switch starts a new sidecar: the death is history
    assert [(d.key, d.ongoing) for d in cluster.deaths()] == [(death.key, False)]
    assert row(cluster, MIXED, Protocol.TCP)[0] != "refused"
