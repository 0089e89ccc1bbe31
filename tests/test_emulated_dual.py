"""The emulated backend's dual-stack pods (issue 23): two addresses, both capture tables, a bind per family.

Like test_emulated_cluster.py these tests do not consult the spec: the expected peers are written out from
Istio's behaviour as settings-dualstack.md §2 traces it (the sidecar's source 127.0.0.6 plus the extra source ::6,
Envoy picking the upstream's family's; legacy sends every client to 127.0.0.1).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from conformance.backends.base import BackendError, ProbeRequest
from conformance.backends.emulated import capture, netns
from conformance.backends.emulated.cluster import EmulatedCluster
from conformance.spec.dimensions import Bind, IpFamily, PortKind, Protocol
from conformance.world.layout import World
from conformance.world.namespaces import NS_BASELINE, NS_MESH
from conformance.world.pods import PodRef
from conformance.world.ports import port_for

pytestmark = pytest.mark.netns

PLAIN = PodRef(NS_BASELINE, "client")
MESHED = PodRef(NS_MESH, "client")
NONE = PodRef(NS_MESH, "echo-none")
FAMILIES = ("ipv4", "ipv6")
BINDS = (Bind.LOOPBACK, Bind.POD_IP, Bind.WILDCARD, Bind.DUAL_WILDCARD)
_ids = itertools.count()


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmulatedCluster]:
    c = EmulatedCluster("dual")
    try:
        c.up(World(IpFamily.DUAL).manifests())
        yield c
    finally:
        c.down()


def probe(c: EmulatedCluster, source: PodRef, address: str, bind: Bind, protocol: Protocol = Protocol.HTTP) -> str:
    """Dial `address` on the declared port of `bind`; the peer the app saw, or the failure label."""
    port = port_for(bind, protocol, PortKind.DECLARED).number
    result = c.probe([ProbeRequest(source, protocol.value, address, port, f"d-{next(_ids)}")], 2.0)[0]
    if result["outcome"] == "ok":
        return str(result["peer"])
    if result["outcome"] == "http_status":
        return f"http_{result['status']}"
    return str(result["outcome"])


def row(c: EmulatedCluster, source: PodRef, address: str, protocol: Protocol = Protocol.HTTP) -> list[str]:
    return [probe(c, source, address, bind, protocol) for bind in BINDS]


def test_every_pod_has_an_address_of_each_family_ipv4_first(cluster: EmulatedCluster) -> None:
    v4, v6 = cluster.pod_ip(NONE, "ipv4"), cluster.pod_ip(NONE, "ipv6")
    assert ":" not in v4
    assert ":" in v6
    assert cluster.pod_ip(NONE) == v4  # the primary, status.podIP
    service = {f: cluster.service_ip(NONE.namespace, NONE.app, f) for f in FAMILIES}
    assert ":" not in service["ipv4"]
    assert ":" in service["ipv6"]
    assert cluster.service_ip(NONE.namespace, NONE.app) == service["ipv4"]
    with pytest.raises(BackendError, match="no Service"):
        cluster.service_ip(NONE.namespace, "nothing", "ipv6")


@pytest.mark.parametrize("family", FAMILIES)
def test_a_pod_without_a_sidecar_answers_in_both_families(cluster: EmulatedCluster, family: str) -> None:
    server = World.BASELINE_SERVER
    client = cluster.pod_ip(PLAIN, family)
    assert row(cluster, PLAIN, cluster.pod_ip(server, family)) == ["refused", client, client, client]
    # The ClusterIP of the family, kube-proxy's DNAT in iptables and ip6tables.
    service = cluster.service_ip(server.namespace, server.app, family)
    assert row(cluster, PLAIN, service) == ["refused", client, client, client]


@pytest.mark.parametrize("protocol", list(Protocol))
@pytest.mark.parametrize(("family", "six"), [("ipv4", "127.0.0.6"), ("ipv6", "::6")])
def test_the_sidecar_picks_the_passthrough_bind_of_the_upstream_s_family(
    cluster: EmulatedCluster, family: str, six: str, protocol: Protocol
) -> None:
    cluster.set_inbound_mode("passthrough")
    fail = "http_503" if protocol is Protocol.HTTP else "reset_or_eof"
    assert row(cluster, PLAIN, cluster.pod_ip(NONE, family), protocol) == [fail, six, six, six]
    # A meshed client's own sidecar dials the ClusterIP's pod of the family, as a single-stack one does.
    service = cluster.service_ip(NONE.namespace, NONE.app, family)
    assert probe(cluster, MESHED, service, Bind.WILDCARD, protocol) == six
    config: Any = cluster.pods[NONE].sidecar_config
    assert config["pod"]["ips"] == [cluster.pod_ip(NONE, f) for f in FAMILIES]
    assert {tuple(item["bind"]) for item in config["inbound"]["listeners"]} == {("127.0.0.6", "::6")}


@pytest.mark.parametrize("family", FAMILIES)
def test_legacy_sends_every_client_to_ipv4_localhost(cluster: EmulatedCluster, family: str) -> None:
    cluster.set_inbound_mode("legacy")
    try:
        assert row(cluster, PLAIN, cluster.pod_ip(NONE, family)) == ["127.0.0.1", "http_503", "127.0.0.1", "127.0.0.1"]
    finally:
        cluster.set_inbound_mode("passthrough")


@pytest.mark.parametrize(
    ("app", "peer"),
    [
        ("echo-instance", "127.0.0.6"),  # 0.0.0.0:P: the IPv4 pod IP, for IPv6 clients too
        ("echo-instance-v6", "::6"),  # [::]:P: the IPv6 pod IP, for IPv4 clients too
        ("echo-localhost", "127.0.0.1"),
        ("echo-localhost-v6", "::1"),  # #47440
    ],
)
@pytest.mark.parametrize("family", FAMILIES)
def test_sidecar_forms_dial_their_own_family(cluster: EmulatedCluster, app: str, peer: str, family: str) -> None:
    server = PodRef(NS_MESH, app)
    assert probe(cluster, PLAIN, cluster.pod_ip(server, family), Bind.WILDCARD) == peer


@pytest.mark.parametrize(("family", "local"), [("ipv4", "127.0.0.1"), ("ipv6", "::1")])
def test_inside_a_dual_stack_pod(cluster: EmulatedCluster, family: str, local: str) -> None:
    own = cluster.pod_ip(NONE, family)
    assert row(cluster, NONE, local, Protocol.TCP) == [local, "refused", local, local]
    assert row(cluster, NONE, own, Protocol.TCP) == ["refused", own, own, own]


def test_capture_rules_in_both_families_and_the_extra_source_on_lo(cluster: EmulatedCluster) -> None:
    pod = cluster.pods[NONE]
    v4, _, v6 = capture.dump(pod.netns).partition("# IPv6")
    assert "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006" in v4
    assert "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006" in v6
    assert "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN" in v4
    assert "-A ISTIO_OUTPUT -s ::6/128 -o lo -j RETURN" in v6
    assert "::6/128" in netns.run(pod.netns, ["ip", "-6", "-o", "addr", "show", "dev", "lo"])
    assert "ISTIO" not in capture.dump(cluster.pods[World.BASELINE_SERVER].netns)
