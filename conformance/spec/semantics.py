"""The expected inbound semantics: a handful of rules, each traced to Istio's source, and `expect()`.

`expect()` applies the rules to a cell.

This module is the suite's only oracle. Every rule names the Istio file and version it comes from, and the
section of `shared/reference/inbound-semantics.md` (here "reference") that records it. Read the RULES table
top to bottom: it is the whole model.

The model has three steps for a connection from another pod:

1. Where does the server pod's sidecar (if any) send the connection? (`inbound_target`)
2. Does the app's bind admit that address? (`bind_admits`)
3. If not, who notices first, and how does that look to the client? (`failure_forms`)

Connections made inside the pod skip step 1: the capture rules never touch them.

Where Istio releases differ in step 1, `expect()` takes the release's `TrafficBehaviour` (`traffic_behaviour(V)`);
the default is the current release's, which the emulated reference mesh models. Dual-stack cells (ip_family
`dual`) follow the rules of `dualstack.py`: `expect()` hands them to its `expect_dual()`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from conformance.spec.capabilities import claimed_version, in_range
from conformance.spec.capture import baseline_cell, uncaptured_because
from conformance.spec.dimensions import (
    Bind,
    CellKey,
    Client,
    DefaultEndpoint,
    Failure,
    InboundCapture,
    Interception,
    IpFamily,
    Path,
    PortKind,
    Profile,
    Source,
)
from conformance.spec.dual_wildcard import DUAL_WILDCARD_ACCEPTS_IPV4, DUAL_WILDCARD_RULES
from conformance.spec.dualstack import DUAL_LOCALHOST_V6_AS_V4, DUAL_RULES, LocalhostV6OnDual, expect_dual
from conformance.spec.interception import (
    TPROXY_CAPTURE,
    TPROXY_IN_POD,
    TPROXY_LOCALHOST_UNCONFIRMED,
    TPROXY_ORIGINAL_SRC,
    TPROXY_RULES,
)
from conformance.spec.outcome import Expectation, InboundTarget, bind_admits, failure_forms
from conformance.spec.rules import Rule

RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        Rule(
            "in-pod-not-captured",
            "Connections a pod's own (non-proxy) processes make to loopback or to the pod's own IP leave "
            "through lo and are never captured, in every profile: they reach the app as its bind allows.",
            "tools/istio-iptables/pkg/cmd/run.go (1.10.0): ISTIO_OUTPUT "
            "'-o lo -m owner ! --uid-owner 1337 -j RETURN' and '-d 127.0.0.1/32 -j RETURN'",
            "reference §5, §6",
        ),
        Rule(
            "kubernetes-direct",
            "Without a sidecar in the server pod the connection arrives at the address the client dialled: "
            "the pod IP (a ClusterIP is rewritten to it by kube-proxy), from the client's own address.",
            "Kubernetes networking model; seed 'Background'",
            "reference §1 (consequences), seed",
        ),
        Rule(
            "client-sidecar-original-dst",
            "A meshed client's own sidecar dials the original destination from the client pod's IP; the "
            "proxy's traffic (uid 1337) is not captured again.",
            "tools/istio-iptables/pkg/cmd/run.go (1.10.0): ISTIO_OUTPUT '-m owner --uid-owner 1337 -j RETURN'",
            "reference §6",
        ),
        Rule(
            "undeclared-passthrough",
            "A port no Service declares goes to the virtualInbound catch-all InboundPassthroughClusterIpv4/6: "
            "ORIGINAL_DST, upstream bind 127.0.0.6 / ::6. Unchanged by 1.10 (so since 1.3).",
            "pilot/pkg/networking/core/v1alpha3 listener/cluster builders; util.go "
            "InboundPassthroughBindIpv4/Ipv6 (1.9.0, 1.10.0); merged into one cluster in 1.23 (PR #51503)",
            "reference §2",
        ),
        Rule(
            "inbound-cluster-by-target-port",
            "Inbound clusters are keyed by the Service's targetPort (the container port), not its `port`; a "
            "Sidecar ingress `port.number` is the container port too, and merges with such a Service. So a "
            "Service whose port differs from its targetPort behaves, on the server side, exactly like one whose "
            "port equals it.",
            "pilot/pkg/networking/core/v1alpha3/cluster.go buildInboundClusters (EndpointPort, since 1.8.1); "
            "Sidecar ingress with port != targetPort fixed by istio/istio#42482, #42532",
            "reference §4",
        ),
        Rule(
            "legacy-localhost",
            "Legacy: the inbound cluster of a declared port is a STATIC endpoint 127.0.0.1:port (::1 on "
            "IPv6) with no upstream bind, so the app sees 127.0.0.1.",
            "pilot/pkg/networking/core/v1alpha3/cluster.go buildInboundClusters (1.9.0: actualLocalHost; "
            "1.10-1.20 with PILOT_ENABLE_INBOUND_PASSTHROUGH=false; >= 1.22 inboundTrafficPolicy LOCALHOST)",
            "reference §1, §3",
        ),
        Rule(
            "passthrough-original-dst",
            "Passthrough: the inbound cluster of a declared port is ORIGINAL_DST (the pod IP:port the client "
            "dialled) with upstream bind 127.0.0.6 / ::6.",
            "pilot/pkg/networking/core/v1alpha3/cluster.go (1.10.0) 'if features.EnableInboundPassthrough "
            '{ bind = "" }\'; cluster_builder.go buildInboundClusterForPortOrUDS (bind 127.0.0.6); '
            "pilot/pkg/networking/util/util.go InboundPassthroughBindIpv4/Ipv6",
            "reference §1",
        ),
        Rule(
            "sidecar-localhost-endpoint",
            "Sidecar ingress defaultEndpoint 127.0.0.1:P / [::1]:P: STATIC localhost:P, no bind, in every "
            "mesh profile (the legacy switch does not touch Sidecar ingress listeners). The host is resolved by "
            "the proxy's IP family: 127.0.0.1:P on an IPv6 pod dials ::1, [::1]:P on an IPv4 pod 127.0.0.1.",
            "istio/api networking/v1beta1/sidecar.proto (1.10; [::1] since 1.14.4 and 1.15.0, PR #40265 + "
            "#40520); pilot/pkg/networking/core/v1alpha3/cluster.go getActualWildcardAndLocalHost (1.10), "
            "getWildcardsAndLocalHost(ipMode) (1.20+); tests/integration/pilot/common/routing.go instanceIPTests",
            "reference §3, §4",
        ),
        Rule(
            "sidecar-instance-endpoint",
            "Sidecar ingress defaultEndpoint 0.0.0.0:P on a pod with an IPv4 address, [::]:P on a pod with an IPv6 "
            "address: STATIC <pod IP of that family>:P with bind 127.0.0.6 / ::6.",
            "istio/api sidecar.proto ('0.0.0.0:PORT (which will forward to the instance IP)', since 1.9, "
            "PR #28178; [::] since 1.14.4 and 1.15.0); cluster.go; routing.go instanceIPTests",
            "reference §4",
        ),
        Rule(
            "sidecar-instance-without-ipv4",
            "Sidecar ingress defaultEndpoint 0.0.0.0:P on a pod with no IPv4 address dials 127.0.0.1:P with no "
            "bind (1.14.4+ and 1.15+; 1.10-1.14.3 dial IPAddresses[0], not encoded: those releases skip these "
            "cells). On an IPv6-only pod only dual_wildcard admits it (loopback is ::1, wildcard is [::] "
            "IPv6-only, as the echo program binds it).",
            "pilot/pkg/networking/core/v1alpha3/cluster.go buildInboundClustersFromSidecar (1.15.0; the same code "
            "at tag 1.14.4, not at 1.14.3)",
            "reference §4 (How the host is resolved)",
        ),
        Rule(
            "sidecar-instance-without-ipv6",
            "Sidecar ingress defaultEndpoint [::]:P on a pod with no IPv6 address dials [::1]:P with no bind (the "
            "mirror of 0.0.0.0:P without IPv4; the [::] form exists from 1.14.4 and 1.15.0, with this fallback "
            "from the start). No app of an IPv4-only pod listens on ::1 (its wildcard is 0.0.0.0), so every bind "
            "is unreachable: 503 on HTTP, reset/EOF on TCP.",
            "pilot/pkg/networking/core/v1alpha3/cluster.go buildInboundClustersFromSidecar (1.14.4, 1.15.0, "
            "master: no IPv6 proxy address -> model.LocalhostIPv6AddressPrefix); cluster_builder.go "
            "buildInboundClusterForPortOrUDS (no upstream bind for a localhost endpoint)",
            "reference §4 (How the host is resolved: '[::]:P is the mirror image')",
        ),
        Rule(
            "sidecar-instance-first-address",
            "1.10 to 1.14.3: Sidecar ingress defaultEndpoint 0.0.0.0:P dials the proxy's first address "
            "(IPAddresses[0]): on an IPv6-only pod its IPv6 pod IP, with the upstream bind ::6 (the passthrough "
            "bind of a proxy without IPv4), so the app sees ::6 as on the passthrough path.",
            "pilot/pkg/networking/core/v1alpha3/cluster.go buildInboundClustersFromSidecar at tags 1.10.6-1.14.3 "
            "(`parts[0] == model.PodIPAddressPrefix` -> IPAddresses[0]); cluster_builder.go "
            "buildInboundClusterForPortOrUDS (UpstreamBindConfig unless the endpoint is localhost); "
            "getPassthroughBindIP (InboundPassthroughBindIpv6 when !SupportsIPv4)",
            "reference §4 (How the host is resolved: '1.10 dials IPAddresses[0]')",
        ),
        Rule(
            "sidecar-empty-endpoint",
            "Sidecar ingress defaultEndpoint with an empty host (`:P`, the form Istio's own tests write): "
            "ORIGINAL_DST with upstream bind 127.0.0.6 / ::6, in every mesh profile (1.10+).",
            "istio/api sidecar.proto (empty allowed from 1.10); cluster_builder.go buildInboundClusterForPortOrUDS; "
            "tests/integration/pilot/common/routing.go instanceIPTests ('empty sidecar')",
            "reference §4",
        ),
        Rule(
            "sidecar-empty-endpoint-1.9-localhost",
            "1.9: Sidecar ingress defaultEndpoint with an empty host (`:P`) is accepted and means the cluster's "
            "default endpoint, the family's localhost: STATIC 127.0.0.1:P / [::1]:P with no bind, like "
            "127.0.0.1:P (ORIGINAL_DST for `:P` came with 1.10).",
            "pilot/pkg/config/validation/validation.go (1.9.0: the host is checked only when non-empty); "
            "pilot/pkg/networking/core/v1alpha3/cluster.go buildInboundClustersFromSidecar (1.9.0: endpoint "
            "address defaults to actualLocalHost)",
            "reference §4 (How the host is resolved: '1.9 accepts the empty host')",
        ),
        Rule(
            "sidecar-unlisted-port",
            "When a Sidecar has ingress listeners only the listed ports get inbound clusters; any other port "
            "falls to the catch-all passthrough, like an undeclared port.",
            "pilot/pkg/networking/core/v1alpha3 HasCustomIngressListeners",
            "reference §4, §2",
        ),
        Rule(
            "bind-admits",
            "A connection to an address reaches the app when its bind admits that address: loopback admits "
            "127.0.0.1 / ::1, pod_ip the pod IP, wildcard and dual_wildcard both. Otherwise nothing listens there.",
            "Linux socket semantics",
            "reference §1 (consequences), §5",
        ),
        Rule(
            "refused-without-proxy",
            "With no proxy on the path a connection to an address nothing listens on is refused (RST).",
            "Linux TCP",
            "reference §1 (consequences)",
        ),
        Rule(
            "precheck-localhost-listener",
            "istioctl x precheck (1.10-1.20) reports IST0143 for each port of an injected pod that has an inbound "
            "cluster (a Service port, or a Sidecar ingress port when a Sidecar lists any) and a loopback listener.",
            "istioctl/cmd/precheck.go checkListeners, extractInboundPorts (1.10.0-1.20.x); "
            "galley/pkg/config/analysis/msg/messages.yaml IST0143",
            "reference §4; tools-versions-ci.md 'istioctl x precheck and IST0143'",
        ),
        Rule(
            "envoy-upstream-failure",
            "An Envoy that cannot connect upstream has already accepted the client: on a port it knows as HTTP "
            "(a Service or Sidecar port named or declared HTTP) it answers 503, on a TCP port it closes or "
            "resets.",
            "tests/integration/pilot/common/routing.go instanceIPTests (503); Envoy tcp_proxy",
            "reference §1 (consequences); emulation.md pitfall 4",
        ),
        Rule(
            "inbound-sniffing-503",
            "A port with no inbound listener of its own (undeclared, or unlisted by a Sidecar) is served by the "
            "virtualInbound catch-all chains, which sniff the protocol with no timeout: an HTTP request whose "
            "upstream fails is answered 503, exactly, for plain and meshed clients (a meshed client's TCP "
            "passthrough relays that 503).",
            "pilot/pkg/networking/core/v1alpha3/listener_builder.go buildInboundCatchAllFilterChains (1.10.0); "
            "pilot/pkg/features PILOT_ENABLE_PROTOCOL_SNIFFING_FOR_INBOUND (default true); mesh "
            "protocolDetectionTimeout 0 (no timeout)",
            "reference §1 (consequences, exact failure forms)",
        ),
        Rule(
            "outbound-passthrough-tcp",
            "A meshed client dialling a port no Service declares as its `port` (an undeclared port, or the "
            "container port behind a Service port that differs) goes through its sidecar's virtualOutbound "
            "catch-all (PassthroughCluster), which is tcp_proxy only: when the server has no sidecar and "
            "nothing listens, the client sees a reset or EOF, never 503.",
            "pilot/pkg/networking/core/v1alpha3/listener_builder.go virtualOutbound catch-all (1.10.0), "
            "tcp_proxy to PassthroughCluster",
            "reference §1 (consequences, exact failure forms)",
        ),
        Rule(
            "ambient-in-pod-not-captured",
            "Ambient: a pod's own connections to loopback or to its own pod IP are not redirected to ztunnel "
            "(they leave through lo), so they reach the app as its bind allows, as in every other profile.",
            "istio-cni cni/pkg/iptables/iptables.go, testdata/default.golden (1.24.0): nat ISTIO_OUTPUT "
            "'! -d 127.0.0.1/32 -o lo -j ACCEPT' and no redirect to 127.0.0.1; tests/integration/ambient/"
            "baseline_test.go TestPodIP ('Calls to ourself (by pod IP) are not captured')",
            "probes-ambient.md §2 (Inside the pod)",
        ),
        Rule(
            "ambient-local-workload",
            "Ambient: every connection from another pod reaches ztunnel inside the server pod (plaintext "
            "REDIRECTed to 15006, or an HBONE CONNECT on 15008 from an ambient client's ztunnel), and ztunnel "
            "dials the server's pod IP at the requested port, whether or not a Service declares the port.",
            "ztunnel src/proxy/inbound.rs find_inbound_upstream ('We always target the local workload IP as the "
            "destination'), src/proxy/inbound_passthrough.rs; istio-cni testdata/default.golden (1.24.0) "
            "ISTIO_PRERT '! -d 127.0.0.1/32 -p tcp ! --dport 15008 ... -j REDIRECT --to-ports 15006'",
            "probes-ambient.md §2 (Where inbound goes); reference §8",
        ),
        Rule(
            "ambient-no-override",
            "Ambient has no inbound override: Sidecar resources (defaultEndpoint included) and meshConfig."
            "inboundTrafficPolicy LOCALHOST change nothing, so nothing brings a loopback-only app back.",
            "inboundTrafficPolicy is read only by the Envoy cluster builder and the sidecar injection templates; "
            "istio/api#3044 (maintainer: LOCALHOST 'No, it shouldn't' affect ambient); analyzer IST0167 (Sidecar "
            "has no effect in ambient)",
            "probes-ambient.md §2 (No override); reference §8",
        ),
        Rule(
            "ambient-original-source",
            "Ambient: ztunnel dials the app from the original client's address (transparent, freebind), so the "
            "app sees the client pod's IP, never 127.0.0.6.",
            "ztunnel src/proxy.rs freebind_connect; tests/integration/ambient/baseline_test.go OriginalSourceCheck",
            "probes-ambient.md §2 (Source the app sees); reference §8",
        ),
        Rule(
            "ambient-sidecar-client-original-source",
            "Ambient, from a sidecar client: the app sees the client pod's IP too. The client's Envoy dials the "
            "server's pod IP; ztunnel takes plaintext on 15006 and dials from the client's address, and an HBONE "
            "CONNECT from the sidecar is dialled from the tunnel's peer, the sidecar pod's IP. Istio's original "
            "source check exempts sidecar servers (their Envoy dials from 127.0.0.6), not sidecar clients.",
            "ztunnel src/proxy/inbound.rs serve_connect (the HBONE peer's address; 1.22.0, 1.24.0, master), "
            "src/proxy/inbound_passthrough.rs (the client's address); tests/integration/ambient/baseline_test.go "
            "TestServices (1.22-1.28: OriginalSourceCheck unless the destination has a sidecar, a waypoint is in "
            "the path, or the call is to itself)",
            "probes-ambient.md §2 (Source the app sees: 'sidecar clients included')",
        ),
        Rule(
            "ambient-upstream-failure",
            "Ambient: ztunnel has already accepted the client when it fails to reach the app, so the client never "
            "sees 'refused': it sees the connection reset or closed, or a 503 (the HBONE CONNECT answered 503).",
            "tests/integration/ambient/baseline_test.go TestServices: check.Or(check.Error(), check.Status(503)) "
            "for LocalhostIP ports (since 1.26, #55421)",
            "probes-ambient.md §2 (table); emulation.md 'Ambient in-pod redirection' (Results)",
        ),
        *TPROXY_RULES,
        *DUAL_WILDCARD_RULES,
        *DUAL_RULES,
    )
}


class InstanceWithoutIpv4(StrEnum):
    """What `0.0.0.0:P` dials on a pod with no IPv4 address: where Istio releases differ."""

    IPV4_LOCALHOST = "ipv4-localhost"
    """127.0.0.1, no bind (1.14.4+, 1.15+): rule sidecar-instance-without-ipv4."""
    FIRST_ADDRESS = "first-address"
    """The proxy's IPAddresses[0] from ::6 (1.10-1.14.3): rule sidecar-instance-first-address."""


class EmptyEndpoint(StrEnum):
    """What the empty host `:P` dials: where Istio releases differ."""

    ORIGINAL_DST = "original-dst"
    """ORIGINAL_DST from 127.0.0.6 / ::6 (1.10+): rule sidecar-empty-endpoint."""
    LOCALHOST = "localhost"
    """The family's localhost, no bind (1.9): rule sidecar-empty-endpoint-1.9-localhost."""


@dataclass(frozen=True)
class TrafficBehaviour:
    """The parts of step 1 that depend on the Istio release."""

    instance_without_ipv4: InstanceWithoutIpv4
    empty_endpoint: EmptyEndpoint = EmptyEndpoint.ORIGINAL_DST
    dual_localhost_v6: LocalhostV6OnDual = LocalhostV6OnDual.IPV6_LOCALHOST
    """What a Sidecar `[::1]:P` dials on a dual-stack pod (dualstack.py; #47440)."""


CURRENT_TRAFFIC = TrafficBehaviour(InstanceWithoutIpv4.IPV4_LOCALHOST, EmptyEndpoint.ORIGINAL_DST)
"""The current release's (and the emulated reference mesh's) behaviour."""

FIRST_ADDRESS_BEFORE: tuple[tuple[str, str], ...] = (("1.10.0", "1.14.4"),)
"""The releases whose `0.0.0.0:P` dials IPAddresses[0], as `first <= v < before` (cluster.go at 1.10.6-1.14.3;
1.14.4 has the 1.15 code, PR #40265 cherry-picked as #40520). Earlier releases are not encoded (1.9 binds
127.0.0.6 for every family: its cross-family cells are skipped)."""

EMPTY_ENDPOINT_ORIGINAL_DST_SINCE = "1.10.0"
"""Before this, `:P` is the cluster's default endpoint, localhost with no bind (1.9.0 cluster.go, reference §4)."""


def traffic_behaviour(version_text: str | None) -> TrafficBehaviour:
    """The step-1 behaviour of an Istio release; None (an emulated or unversioned mesh) is the current one."""
    version = claimed_version(version_text)
    if version is None:
        return CURRENT_TRAFFIC
    if not in_range(version, EMPTY_ENDPOINT_ORIGINAL_DST_SINCE, None):
        # 1.9 (nothing older is supported). Its cross-family resolution is not encoded (those cells are skipped,
        # capabilities.SIDECAR_CROSS_FAMILY_SINCE), so instance_without_ipv4 stays the current one, unused.
        return replace(CURRENT_TRAFFIC, empty_endpoint=EmptyEndpoint.LOCALHOST)
    if any(in_range(version, first, before) for first, before in FIRST_ADDRESS_BEFORE):
        return TrafficBehaviour(InstanceWithoutIpv4.FIRST_ADDRESS)
    if any(in_range(version, first, before) for first, before in DUAL_LOCALHOST_V6_AS_V4):
        # Before #47440 and its backports `[::1]:P` gave actualLocalHosts[0], 127.0.0.1, on a dual-stack pod.
        return replace(CURRENT_TRAFFIC, dual_localhost_v6=LocalhostV6OnDual.IPV4_LOCALHOST)
    return CURRENT_TRAFFIC


def inbound_target(cell: CellKey, behaviour: TrafficBehaviour = CURRENT_TRAFFIC) -> tuple[InboundTarget, str]:
    """Step 1: the endpoint the server pod's sidecar dials for this cell's port, and the rule that says so."""
    if cell.port is PortKind.UNDECLARED:
        return InboundTarget.POD_IP, "undeclared-passthrough"
    endpoint = cell.default_endpoint
    if endpoint.targets_localhost:
        return InboundTarget.LOCALHOST, "sidecar-localhost-endpoint"
    if endpoint is DefaultEndpoint.INSTANCE_V4 and cell.ip_family is IpFamily.IPV6:
        if behaviour.instance_without_ipv4 is InstanceWithoutIpv4.FIRST_ADDRESS:
            return InboundTarget.POD_IP, "sidecar-instance-first-address"
        return InboundTarget.IPV4_LOCALHOST, "sidecar-instance-without-ipv4"
    if endpoint is DefaultEndpoint.INSTANCE_V6 and cell.ip_family is IpFamily.IPV4:
        return InboundTarget.IPV6_LOCALHOST, "sidecar-instance-without-ipv6"
    if endpoint.targets_instance_ip:
        return InboundTarget.POD_IP, "sidecar-instance-endpoint"
    if endpoint is DefaultEndpoint.EMPTY:
        if behaviour.empty_endpoint is EmptyEndpoint.LOCALHOST:
            return InboundTarget.LOCALHOST, "sidecar-empty-endpoint-1.9-localhost"
        return InboundTarget.POD_IP, "sidecar-empty-endpoint"
    if endpoint is DefaultEndpoint.UNLISTED:
        return InboundTarget.POD_IP, "sidecar-unlisted-port"
    if cell.profile is Profile.LEGACY:
        return InboundTarget.LOCALHOST, "legacy-localhost"
    return InboundTarget.POD_IP, "passthrough-original-dst"


def expect(cell: CellKey, behaviour: TrafficBehaviour = CURRENT_TRAFFIC) -> Expectation:
    """Apply the model to one cell, as the release with this behaviour does (the current one by default)."""
    if cell.capture is not InboundCapture.ALL:
        # The port never meets the server's proxy: the same cell of profile baseline (capture.py's rules).
        base = expect(baseline_cell(cell), behaviour)
        return replace(base, because=(*uncaptured_because(cell), *base.because))
    if cell.ip_family is IpFamily.DUAL:
        return expect_dual(cell, behaviour)
    if not cell.path.from_other_pod:
        # In-pod paths are identical in every profile: no rule about the mesh applies.
        dialled = InboundTarget.LOCALHOST if cell.path is Path.LOCALHOST else InboundTarget.POD_IP
        in_pod = "ambient-in-pod-not-captured" if cell.profile is Profile.AMBIENT else "in-pod-not-captured"
        in_pod = TPROXY_IN_POD if cell.interception is Interception.TPROXY else in_pod
        if bind_admits(cell.bind, dialled):
            source = Source.LOCALHOST if cell.path is Path.LOCALHOST else Source.SELF
            return Expectation(True, source, (), (in_pod, "bind-admits"))
        return Expectation(False, None, (Failure.REFUSED,), (in_pod, "bind-admits"))

    if cell.profile is Profile.AMBIENT:
        return expect_ambient(cell)

    if cell.profile is Profile.BASELINE:
        first = "client-sidecar-original-dst" if cell.client is Client.MESHED else "kubernetes-direct"
        because: tuple[str, ...] = (first, "bind-admits")
        if bind_admits(cell.bind, InboundTarget.POD_IP):
            return Expectation(True, Source.CLIENT, (), because)
        forms, why = failure_forms(cell)
        return Expectation(False, None, forms, (*because, why))

    target, why_target = inbound_target(cell, behaviour)
    because = (why_target, "bind-admits")
    if cell.port is PortKind.REMAPPED:
        because = ("inbound-cluster-by-target-port", *because)
    tproxy = cell.interception is Interception.TPROXY
    if tproxy and target is not InboundTarget.POD_IP:
        raise ValueError(f"{cell.id}: {TPROXY_LOCALHOST_UNCONFIRMED}")
    if tproxy:  # The same inbound cluster, reached by TPROXY and dialled from the client (interception.py).
        because = (TPROXY_CAPTURE, *because)
    if bind_admits(cell.bind, target):
        source = Source.LOCALHOST if target is InboundTarget.LOCALHOST else Source.INBOUND_PASSTHROUGH
        if target is InboundTarget.IPV4_LOCALHOST:
            return Expectation(True, Source.IPV4_LOCALHOST, (), (*because, DUAL_WILDCARD_ACCEPTS_IPV4))
        if tproxy:
            return Expectation(True, Source.CLIENT, (), (*because, TPROXY_ORIGINAL_SRC))
        return Expectation(True, source, (), because)
    forms, why = failure_forms(cell)
    return Expectation(False, None, forms, (*because, why))


def expect_ambient(cell: CellKey) -> Expectation:
    """A cell from another pod under ambient: always the pod IP, from the client, whatever overrides exist."""
    because: tuple[str, ...] = ("ambient-local-workload", "ambient-no-override", "bind-admits")
    if bind_admits(cell.bind, InboundTarget.POD_IP):
        source = "ambient-sidecar-client-original-source" if cell.client is Client.MESHED else "ambient-original-source"
        return Expectation(True, Source.CLIENT, (), (*because, source))
    return Expectation(False, None, (Failure.HTTP_503, Failure.RESET_OR_EOF), (*because, "ambient-upstream-failure"))


def precheck_finding(endpoint: DefaultEndpoint, port: PortKind, bind: Bind) -> tuple[bool, str]:
    """Whether the precheck flags a server port: exposed (has an inbound cluster) and loopback-only."""
    # With a Sidecar that lists other ports only ("unlisted"), the port has no inbound cluster of its own.
    exposed = port.declared and endpoint is not DefaultEndpoint.UNLISTED
    return exposed and bind is Bind.LOOPBACK, "precheck-localhost-listener"
