"""The dual-stack family (`--ip-family dual`): its cells' scope, its rules, and `expect_dual()`.

Every pod has an IPv4 and an IPv6 address and Istio runs with ISTIO_DUAL_STACK=true (Istio's own test framework
sets it, pkg/test/framework/components/istio/kube.go). A dual cell carries the family its connection uses
(`CellKey.client_family`): a client dials the server's pod IP or ClusterIP of that family, an in-pod process
dials that family's loopback or its own pod IP of that family. In a dual-stack pod the echo program binds each
bind in both families (loopback 127.0.0.1 and ::1, pod_ip both pod IPs, wildcard 0.0.0.0 and an IPv6-only [::],
dual_wildcard one [::] socket with V6ONLY off), so every bind admits its kind of address in both families, and
`wildcard` and `dual_wildcard` behave alike on a dual-stack pod.
Facts: shared/reference/settings-dualstack.md §2 (the rules, with their Istio and Envoy sources) and §5.

Left out, with the reason (docs/spec.md "Dual-stack"):
- the flag off on a dual-stack pod: which family istio-iptables captures depends on the order of the pod's
  addresses (getLocalIP, "likely IPv4 first", UNCONFIRMED in §2);
- TPROXY: not traced for dual-stack pods; ambient: out of scope in §5 ("not researched"); node proxy cells are
  ambient's.
Health probes are asked (probes.py, rule `dual-probe-primary-ipv4`, settings-dualstack.md §4 and §5): every probe
of a dual-stack pod dials its primary pod IP, IPv4 (first on a kind dual-stack cluster), so a probe cell is decided
in that family, with `dual_wildcard` as a fourth bind (an IPv4 probe enters the pod).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol as TypingProtocol

from conformance.spec.dimensions import (
    ONE_FAMILY_BINDS,
    SINGLE_STACK,
    Bind,
    CellKey,
    Client,
    DefaultEndpoint,
    IpFamily,
    Path,
    PortKind,
    Profile,
    Source,
    binds,
)
from conformance.spec.outcome import Expectation, InboundTarget, bind_admits, failure_forms
from conformance.spec.rules import Rule

DUAL_PROFILES: tuple[Profile, ...] = (Profile.BASELINE, Profile.LEGACY, Profile.PASSTHROUGH)
"""The profiles a dual run asks (REDIRECT only, with the capture settings): ambient is out of scope (§5)."""


DUAL_PROBE_FAMILY = IpFamily.IPV4
"""The family every probe of a dual-stack pod uses: its primary pod IP's (status.podIP and pilot-agent's
INSTANCE_IP, the first of status.podIPs), IPv4 on a kind dual-stack cluster (`networking.ipFamily: dual` lists IPv4
first), as the world's `primary_family` and both backends have it."""


def probe_family(family: IpFamily) -> IpFamily:
    """The single-stack family a probe of a run of `family` dials in: the run's, or on dual-stack pods the primary's."""
    return DUAL_PROBE_FAMILY if family is IpFamily.DUAL else family


def probe_binds(family: IpFamily) -> tuple[Bind, ...]:
    """The binds a family asks probe cells of: three in a single-stack run, and `dual_wildcard` too on dual-stack pods.

    `dual_wildcard` differs from `wildcard` only where an IPv4 connection enters a pod with IPv6: never for a probe
    of an IPv6-only pod (it dials the IPv6 pod IP or ::1), always for a probe of a dual-stack pod (the IPv4 primary
    pod IP, settings-dualstack.md §5), so the dual family asks all four (`dimensions.binds`).
    """
    return ONE_FAMILY_BINDS if family in SINGLE_STACK else binds(family)


def probe_profiles(profiles: tuple[Profile, ...], family: IpFamily) -> tuple[Profile, ...]:
    """The profiles of `profiles` a family asks probe cells of: no ambient on dual-stack pods (dualstack.py)."""
    return tuple(p for p in profiles if family is not IpFamily.DUAL or p in DUAL_PROFILES)


def client_families(family: IpFamily) -> tuple[IpFamily | None, ...]:
    """The client families of a run's cells: none in a single-stack run, each single stack in a dual one."""
    return SINGLE_STACK if family is IpFamily.DUAL else (None,)


class LocalhostV6OnDual(StrEnum):
    """What a Sidecar `[::1]:P` dials on a dual-stack pod: where Istio releases differ (#47440)."""

    IPV6_LOCALHOST = "ipv6-localhost"
    """::1 (1.18.6+, 1.19.4+, 1.20.0, 1.21+): rule dual-sidecar-localhost-v6."""
    IPV4_LOCALHOST = "ipv4-localhost"
    """127.0.0.1, actualLocalHosts[0] (1.17.0-1.18.5, 1.19.0-1.19.3): rule dual-sidecar-localhost-v6-before-47440."""


DUAL_LOCALHOST_V6_AS_V4: tuple[tuple[str, str], ...] = (("1.17.0", "1.18.6"), ("1.19.0", "1.19.4"))
"""The releases whose `[::1]:P` dials 127.0.0.1 on a dual-stack pod, as `first <= v < before`: #47440 (the fix
for #47412) landed in 1.18.6 (#47675), 1.19.4 (#47676) and 1.20.0 (#47677). `semantics.traffic_behaviour` reads
it; nothing below 1.17.0 runs dual-stack."""

DUAL_PASSTHROUGH = "dual-passthrough-by-client-family"
DUAL_LEGACY = "dual-legacy-ipv4-localhost"
DUAL_INSTANCE_V4 = "dual-sidecar-instance-v4"
DUAL_INSTANCE_V6 = "dual-sidecar-instance-v6"
DUAL_LOCALHOST_V4 = "dual-sidecar-localhost-v4"
DUAL_LOCALHOST_V6 = "dual-sidecar-localhost-v6"
DUAL_LOCALHOST_V6_BEFORE = "dual-sidecar-localhost-v6-before-47440"
DUAL_DIRECT = "dual-direct-client-family"
DUAL_BINDS = "dual-bind-admits"

DUAL_RULES: tuple[Rule, ...] = (
    Rule(
        DUAL_PASSTHROUGH,
        "Dual-stack pod, ISTIO_DUAL_STACK=true: a connection Istio passes through by ORIGINAL_DST (a declared or "
        "remapped port in passthrough, a Sidecar's empty `:P` or unlisted port, an undeclared port) reaches the pod "
        "IP of the client's family from the passthrough bind of that family: 127.0.0.6 for an IPv4 client, ::6 for "
        "an IPv6 client. Declared ports: one cluster with source 127.0.0.6 and extra source ::6, Envoy picking the "
        "source of the upstream's family. Undeclared ports: 1.17-1.22 two clusters by family (filter chains "
        "0.0.0.0/0 and ::/0), 1.23+ one cluster with both sources (#51503): the same result.",
        "pilot/pkg/networking/core/v1alpha3/cluster_builder.go (1.17.0 L487-501: ExtraSourceAddresses from "
        "passThroughBindIPs[1:] when features.EnableDualStack); core/cluster_builder.go (HEAD L705-738; passthrough "
        "cluster L744-772, #51503 3006870b5f7); 1.22.0 listener_inbound.go L128-132, L707-715 "
        "(InboundPassthroughClusterIpv4/Ipv6); envoy source/common/upstream/default_local_address_selector.cc "
        "getUpstreamLocalAddressImpl",
        "settings-dualstack.md §2 (Flag on; Passthrough bind by release)",
    ),
    Rule(
        DUAL_LEGACY,
        "Dual-stack pod, legacy (LOCALHOST): the inbound cluster's endpoint is actualLocalHosts[0], 127.0.0.1 "
        "(localHosts of a Dual proxy are [127.0.0.1, ::1]), with no upstream bind: every client, IPv6 included, is "
        "sent to 127.0.0.1:P, and the app sees 127.0.0.1 (an IPv6 client's cell names it ipv4_localhost).",
        "pilot/pkg/networking/core/cluster.go L727-729 (bind := actualLocalHosts[0]), listener_address.go localHosts "
        "(HEAD; the same line at 1.17.0 v1alpha3/cluster.go L420); legacy switch PILOT_ENABLE_INBOUND_PASSTHROUGH="
        "false 1.10-1.20, meshConfig.inboundTrafficPolicy LOCALHOST 1.22+ (#49035)",
        "settings-dualstack.md §2 (Legacy/LOCALHOST on Dual)",
    ),
    Rule(
        DUAL_INSTANCE_V4,
        "Dual-stack pod: Sidecar ingress defaultEndpoint 0.0.0.0:P dials the first IPv4 pod IP with the upstream "
        "source of that family, 127.0.0.6, for IPv6 clients too (an IPv6 client's cell names it "
        "ipv4_inbound_passthrough).",
        "pilot/pkg/networking/core/cluster.go buildInboundClustersFromSidecar (#40265, 1.14.4+: first IPv4 pod IP); "
        "cluster_builder.go L705-738; envoy default_local_address_selector.cc",
        "settings-dualstack.md §2 (How defaultEndpoint resolves: 0.0.0.0:P on Dual)",
    ),
    Rule(
        DUAL_INSTANCE_V6,
        "Dual-stack pod, ISTIO_DUAL_STACK=true: Sidecar ingress defaultEndpoint [::]:P dials the first IPv6 pod IP "
        "from ::6 (the extra source of that family), for IPv4 clients too (an IPv4 client's cell names it "
        "ipv6_inbound_passthrough).",
        "pilot/pkg/networking/core/cluster.go buildInboundClustersFromSidecar (#40265: first IPv6 pod IP); "
        "cluster_builder.go L705-738 (ExtraSourceAddresses ::6); envoy default_local_address_selector.cc",
        "settings-dualstack.md §2 (How defaultEndpoint resolves: [::]:P on Dual, with the flag)",
    ),
    Rule(
        DUAL_LOCALHOST_V4,
        "Dual-stack pod: Sidecar ingress defaultEndpoint 127.0.0.1:P dials 127.0.0.1:P with no upstream bind, "
        "for every client (actualLocalHosts[0] before #47440, 'prefers 127.0.0.1' after).",
        "pilot/pkg/networking/core/cluster.go L818-870 (HEAD, #47440); cluster_builder.go L705 (no bind for a "
        "loopback target)",
        "settings-dualstack.md §2 (How defaultEndpoint resolves)",
    ),
    Rule(
        DUAL_LOCALHOST_V6,
        "Dual-stack pod, 1.18.6+, 1.19.4+, 1.20.0 and 1.21+: Sidecar ingress defaultEndpoint [::1]:P dials ::1:P "
        "with no upstream bind, for every client (an IPv4 client's cell names it ipv6_localhost).",
        "pilot/pkg/networking/core/cluster.go L818-870 (#47440, fix for #47412; backports #47675 1.18, #47676 1.19, "
        "#47677 1.20)",
        "settings-dualstack.md §2 (#47440)",
    ),
    Rule(
        DUAL_LOCALHOST_V6_BEFORE,
        "Dual-stack pod, 1.17.0-1.18.5 and 1.19.0-1.19.3: Sidecar ingress defaultEndpoint [::1]:P dials "
        "actualLocalHosts[0], 127.0.0.1, with no upstream bind, for every client (the bug #47412 reported).",
        "pilot/pkg/networking/core/v1alpha3/cluster.go buildInboundClustersFromSidecar (1.17.0 L527-528, 1.18.5 "
        "L543-544, 1.19.3 L626: both localhost forms -> actualLocalHosts[0]; 1.18.6 L543-561 and 1.19.4 split them); "
        "istio/istio#47412",
        "settings-dualstack.md §2 (Before the fix it gave 127.0.0.1 on Dual)",
    ),
    Rule(
        DUAL_DIRECT,
        "Dual-stack pod, no server sidecar on the path (baseline, or a port left out of capture): the connection "
        "arrives at the pod IP of the client's family from the client pod's address of that family; a meshed "
        "client's own sidecar dials the original destination, as in a single-stack run.",
        "Kubernetes dual-stack networking (each pod has one address per family); capture rules as single-stack",
        "settings-dualstack.md §5 (Excluded or not-captured ports from IPv4 clients: the client's v4 address)",
    ),
    Rule(
        DUAL_BINDS,
        "In a dual-stack pod each bind is opened in both families (loopback 127.0.0.1 and ::1, pod_ip both pod IPs, "
        "wildcard 0.0.0.0 and [::] IPv6-only, dual_wildcard one [::] socket with V6ONLY off): loopback admits "
        "either loopback, pod_ip either pod IP, wildcard and dual_wildcard everything, so the two wildcards "
        "behave alike.",
        "Linux socket semantics, ipv6(7) IPV6_V6ONLY; golang/go src/net/ipsock_posix.go favoriteAddrFamily",
        "settings-dualstack.md §5 (Dual-stack pod)",
    ),
)


class DualBehaviour(TypingProtocol):
    """The part of `semantics.TrafficBehaviour` a dual cell reads (semantics.py imports this module)."""

    @property
    def dual_localhost_v6(self) -> LocalhostV6OnDual:
        """What `[::1]:P` dials on a dual-stack pod."""
        ...


_OTHER = {IpFamily.IPV4: IpFamily.IPV6, IpFamily.IPV6: IpFamily.IPV4}
_CROSS = {
    # (target family differs from the client's): the cross-family name of the address the app sees.
    (InboundTarget.LOCALHOST, IpFamily.IPV4): Source.IPV4_LOCALHOST,
    (InboundTarget.LOCALHOST, IpFamily.IPV6): Source.IPV6_LOCALHOST,
    (InboundTarget.POD_IP, IpFamily.IPV4): Source.IPV4_INBOUND_PASSTHROUGH,
    (InboundTarget.POD_IP, IpFamily.IPV6): Source.IPV6_INBOUND_PASSTHROUGH,
}


def dual_target(cell: CellKey, behaviour: DualBehaviour) -> tuple[InboundTarget, IpFamily, str]:
    """Step 1 on a dual-stack pod: where the sidecar sends the connection, in which family, and the rule."""
    own = _client_family(cell)
    endpoint = cell.default_endpoint
    if cell.port is PortKind.UNDECLARED or endpoint in (DefaultEndpoint.EMPTY, DefaultEndpoint.UNLISTED):
        return InboundTarget.POD_IP, own, DUAL_PASSTHROUGH
    if endpoint is DefaultEndpoint.LOCALHOST_V4:
        return InboundTarget.LOCALHOST, IpFamily.IPV4, DUAL_LOCALHOST_V4
    if endpoint is DefaultEndpoint.LOCALHOST_V6:
        if behaviour.dual_localhost_v6 is LocalhostV6OnDual.IPV4_LOCALHOST:
            return InboundTarget.LOCALHOST, IpFamily.IPV4, DUAL_LOCALHOST_V6_BEFORE
        return InboundTarget.LOCALHOST, IpFamily.IPV6, DUAL_LOCALHOST_V6
    if endpoint is DefaultEndpoint.INSTANCE_V4:
        return InboundTarget.POD_IP, IpFamily.IPV4, DUAL_INSTANCE_V4
    if endpoint is DefaultEndpoint.INSTANCE_V6:
        return InboundTarget.POD_IP, IpFamily.IPV6, DUAL_INSTANCE_V6
    if cell.profile is Profile.LEGACY:
        return InboundTarget.LOCALHOST, IpFamily.IPV4, DUAL_LEGACY
    return InboundTarget.POD_IP, own, DUAL_PASSTHROUGH


def _client_family(cell: CellKey) -> IpFamily:
    if cell.ip_family is not IpFamily.DUAL or cell.client_family not in _OTHER:
        raise ValueError(f"{cell.id}: not a dual-stack cell with a client family")
    return IpFamily(cell.client_family)


def expect_dual(cell: CellKey, behaviour: DualBehaviour) -> Expectation:
    """A dual-stack cell whose every port is captured (semantics.expect() handles the capture settings first)."""
    own = _client_family(cell)
    if cell.profile not in DUAL_PROFILES:
        raise ValueError(f"{cell.id}: profile {cell.profile.value} is not asked on dual-stack pods")
    if not cell.path.from_other_pod:
        # The dialled address is of the cell's family: its loopback or the pod's own IP of that family.
        dialled = InboundTarget.LOCALHOST if cell.path is Path.LOCALHOST else InboundTarget.POD_IP
        because: tuple[str, ...] = ("in-pod-not-captured", DUAL_BINDS)
        if bind_admits(cell.bind, dialled):
            return Expectation(
                True, Source.LOCALHOST if dialled is InboundTarget.LOCALHOST else Source.SELF, (), because
            )
        return Expectation(False, None, failure_forms(cell)[0], because)
    if cell.profile is Profile.BASELINE:
        first = "client-sidecar-original-dst" if cell.client is Client.MESHED else "kubernetes-direct"
        because = (first, DUAL_DIRECT, DUAL_BINDS)
        if bind_admits(cell.bind, InboundTarget.POD_IP):
            return Expectation(True, Source.CLIENT, (), because)
        forms, why = failure_forms(cell)
        return Expectation(False, None, forms, (*because, why))
    target, family, rule = dual_target(cell, behaviour)
    because = (rule, DUAL_BINDS)
    if cell.port is PortKind.UNDECLARED:
        because = ("undeclared-passthrough", *because)
    if cell.port is PortKind.REMAPPED:
        because = ("inbound-cluster-by-target-port", *because)
    if bind_admits(cell.bind, target):
        if family is not own:
            return Expectation(True, _CROSS[(target, family)], (), because)
        source = Source.LOCALHOST if target is InboundTarget.LOCALHOST else Source.INBOUND_PASSTHROUGH
        return Expectation(True, source, (), because)
    forms, why = failure_forms(cell)
    return Expectation(False, None, forms, (*because, why))
