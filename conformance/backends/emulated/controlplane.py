"""A small istiod: computes each sidecar's configuration from Services, Sidecar resources and the mesh setting.

It builds what istiod builds for the inbound side (one listener and cluster per port, or the catch-all
passthrough) and the one fact the outbound side needs (which ports are HTTP). The rules it follows are
Istio's cluster-building code, cited inline; it never consults the suite's spec, so the outcomes a probe sees
come from this configuration, the sidecar's sockets and the kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from conformance.backends.emulated.capture import (
    INBOUND_CAPTURE_PORT,
    OUTBOUND_CAPTURE_PORT,
    PROXY_GID,
    PROXY_UID,
    TPROXY,
    TPROXY_MARK,
    TPROXY_PROXY_UID,
)
from conformance.backends.emulated.kube import ManifestError, Objects, PodTemplate, Service, Sidecar

CONFIG_FORMAT = "mesh-inbound-conformance/sidecar-config"
CONFIG_VERSION = 1
INBOUND_MODES = ("passthrough", "legacy")

_HTTP_PREFIXES = ("http", "http2", "grpc", "grpc-web")
PROTOCOL_DETECTION_TIMEOUT_S: float | None = None
"""Istio's mesh default protocolDetectionTimeout is 0s, meaning no timeout (None here)."""


@dataclass(frozen=True)
class FamilyAddresses:
    """The addresses a sidecar uses, by the pod's IP family (pilot/pkg/networking/util/util.go)."""

    localhosts: tuple[str, ...]
    """The proxy's localhost addresses (listener_address.go localHosts): one, or 127.0.0.1 and ::1 on dual-stack."""
    passthrough_bind: str | list[str]
    """One address; on a dual-stack pod a list, one per family (the sidecar picks the upstream's family's)."""

    @property
    def localhost(self) -> str:
        """actualLocalHosts[0]: what legacy mode dials, and a localhost literal of a family the pod lacks."""
        return self.localhosts[0]

    def localhost_for(self, literal: str) -> str:
        """A Sidecar's 127.0.0.1:P / [::1]:P: the literal where the proxy has it, else actualLocalHosts[0].

        cluster.go L818-870 (#47440: "prefers" the literal); on a single-stack pod always the pod's own loopback.
        """
        return literal if literal in self.localhosts else self.localhost


ADDRESSES = {
    "ipv4": FamilyAddresses(localhosts=("127.0.0.1",), passthrough_bind="127.0.0.6"),
    "ipv6": FamilyAddresses(localhosts=("::1",), passthrough_bind="::6"),
    # A dual-stack proxy with ISTIO_DUAL_STACK on: actualLocalHosts[0] is 127.0.0.1 (localHosts of a Dual proxy
    # are [127.0.0.1, ::1]: cluster.go L727-729, listener_address.go), and the passthrough clusters get source
    # 127.0.0.6 with the extra source ::6 (cluster_builder.go L705-738, ExtraSourceAddresses from
    # passThroughBindIPs[1:] when features.EnableDualStack; 1.23+ one InboundPassthroughCluster with both sources,
    # #51503). Envoy picks the source of the upstream's family (default_local_address_selector.cc).
    "dual": FamilyAddresses(localhosts=("127.0.0.1", "::1"), passthrough_bind=["127.0.0.6", "::6"]),
}


def port_protocol(name: str, app_protocol: str | None) -> str:
    """Istio's protocol selection (pkg/config/kube/conversion.go ConvertProtocol).

    A set appProtocol decides alone, else the port name does; either is read up to its first `-`. HTTP
    flavours are proxied as HTTP, TCP-like protocols (TLS and HTTPS included: Envoy proxies them as TCP) as
    TCP, and anything unknown is sniffed.
    """
    candidate = app_protocol if app_protocol else name
    prefix = candidate.split("-", 1)[0].lower() if candidate else ""
    if prefix in _HTTP_PREFIXES:
        return "http"
    if prefix in ("tcp", "tls", "https", "mongo", "mysql", "redis"):
        return "tcp"
    return "sniff"


def _endpoint(value: str, pod_ips: tuple[str, ...], family: FamilyAddresses, port: int) -> dict[str, object]:
    # istio/api sidecar.proto: 127.0.0.1:PORT / [::1]:PORT -> localhost, no bind; 0.0.0.0:PORT / [::]:PORT ->
    # the instance IP from 127.0.0.6 / ::6; empty host (`:PORT`) -> ORIGINAL_DST from 127.0.0.6 / ::6. The host
    # is resolved by the proxy's IP family (cluster.go getActualWildcardAndLocalHost, 1.10;
    # getWildcardsAndLocalHost(ipMode), 1.20+): either localhost literal is the family's localhost; 0.0.0.0:PORT
    # dials the pod's first IPv4 address, or 127.0.0.1 with no bind on a pod without one, and [::]:PORT the
    # first IPv6 address, or [::1] with no bind on a pod without one (buildInboundClustersFromSidecar, 1.14.4 and
    # 1.15+: LocalhostAddressPrefix / LocalhostIPv6AddressPrefix; cluster_builder.go sets no upstream bind for a
    # localhost endpoint). Anything else (arbitrary IPs, unix sockets) is not emulated.
    # On a dual-stack pod (the current release): 127.0.0.1:PORT dials 127.0.0.1 and [::1]:PORT ::1 ("prefers"
    # the literal's own family since #47440, cluster.go L818-870, 1.18.6/1.19.4/1.20.0+); 0.0.0.0:PORT the IPv4
    # pod IP from 127.0.0.6, [::]:PORT the IPv6 pod IP from ::6 (the source of the upstream's family).
    if not value:
        return {"upstream": {"address": "original_dst", "port": port}, "bind": family.passthrough_bind}
    host, _, port_text = value.rpartition(":")
    if not port_text.isdigit():
        raise ManifestError(
            f"defaultEndpoint {value!r}: expected 127.0.0.1:PORT, 0.0.0.0:PORT, [::1]:PORT, [::]:PORT or :PORT"
        )
    target = int(port_text)
    if not host:
        return {"upstream": {"address": "original_dst", "port": target}, "bind": family.passthrough_bind}
    if host in ("127.0.0.1", "[::1]"):
        return {"upstream": {"address": family.localhost_for(host.strip("[]")), "port": target}, "bind": None}
    if host in ("0.0.0.0", "[::]"):
        wanted = "ipv4" if host == "0.0.0.0" else "ipv6"
        own = [ip for ip in pod_ips if ("ipv6" if ":" in ip else "ipv4") == wanted]
        if not own:
            return {"upstream": {"address": ADDRESSES[wanted].localhost, "port": target}, "bind": None}
        return {"upstream": {"address": own[0], "port": target}, "bind": ADDRESSES[wanted].passthrough_bind}
    raise ManifestError(f"defaultEndpoint {value!r}: arbitrary IPs and unix sockets are not emulated")


def declared_ports(pod: PodTemplate, services: Sequence[Service]) -> dict[int, str]:
    """Map each targetPort of the Services selecting the pod to its protocol."""
    ports: dict[int, str] = {}
    for service in services:
        if service.selects(pod):
            for p in service.ports:
                ports.setdefault(p.target_port, port_protocol(p.name, p.app_protocol))
    return ports


def selecting_sidecar(pod: PodTemplate, sidecars: Sequence[Sidecar]) -> Sidecar | None:
    """The Sidecar resource for a pod: a workloadSelector match wins over a namespace-wide one."""
    matches = [s for s in sidecars if s.selects(pod)]
    with_selector = [s for s in matches if s.selector is not None]
    chosen = with_selector or matches
    return sorted(chosen, key=lambda s: s.name)[0] if chosen else None


def sidecar_config(
    pod: PodTemplate, pod_ip: str | Sequence[str], family: str, objects: Objects, inbound_mode: str
) -> dict[str, object]:
    """The JSON configuration handed to the pod's sidecar (format documented in docs/emulated.md).

    `pod_ip`: the pod's address, or its addresses primary first (both families on a `dual` pod).
    """
    pod_ips = (pod_ip,) if isinstance(pod_ip, str) else tuple(pod_ip)
    if inbound_mode not in INBOUND_MODES:
        raise ValueError(f"inbound mode {inbound_mode!r}: expected one of {', '.join(INBOUND_MODES)}")
    addresses = ADDRESSES[family]
    listeners: list[dict[str, object]] = []
    sidecar = selecting_sidecar(pod, objects.sidecars)
    if sidecar is not None and sidecar.ingress:
        # HasCustomIngressListeners: only the listed ports get inbound clusters, whatever the mesh setting
        # (PILOT_ENABLE_INBOUND_PASSTHROUGH only changes clusters built from Service ports).
        for item in sidecar.ingress:
            listeners.append(
                {
                    "port": item.port,
                    "protocol": port_protocol(item.name, item.protocol),
                    "cluster": f"inbound|{item.port}||",
                    "source": f"Sidecar {sidecar.namespace}/{sidecar.name}",
                    **_endpoint(item.default_endpoint, pod_ips, addresses, item.port),
                }
            )
    else:
        for port, protocol in sorted(declared_ports(pod, objects.services).items()):
            if inbound_mode == "legacy":
                # cluster.go (1.9.0) buildInboundClusters: STATIC endpoint on actualLocalHost, no bind.
                endpoint: dict[str, object] = {
                    "upstream": {"address": addresses.localhost, "port": port},
                    "bind": None,
                }
            else:
                # cluster.go (1.10.0) + cluster_builder.go: ORIGINAL_DST, upstream bind 127.0.0.6 / ::6.
                endpoint = {"upstream": {"address": "original_dst", "port": port}, "bind": addresses.passthrough_bind}
            listeners.append(
                {"port": port, "protocol": protocol, "cluster": f"inbound|{port}||", "source": "Service", **endpoint}
            )
    tproxy = pod.interception == TPROXY
    http_ports = sorted(
        {p.port for s in objects.services for p in s.ports if port_protocol(p.name, p.app_protocol) == "http"}
    )
    return {
        "format": CONFIG_FORMAT,
        "version": CONFIG_VERSION,
        "pod": {"name": pod.name, "namespace": pod.namespace, "ips": list(pod_ips)},
        "mesh": {"inbound_mode": inbound_mode},
        # The pod's interception mode (sidecar.istio.io/interceptionMode). TPROXY: the proxy runs as uid 0 / gid
        # 1337 (injection-template.yaml 1.10.0 L335-356), and every inbound listener carries Envoy's original_src
        # listener filter with mark 1337 (pilot/pkg/xds/filters/filters.go OriginalSrc, #28457; listener_inbound.go):
        # each upstream connection is made from the downstream client's address, port 0, with IP_TRANSPARENT and
        # SO_MARK 1337, before (and instead of) the cluster's bind (envoy connection_impl.cc: PREBIND options first).
        "interception": {"mode": pod.interception, "original_src_mark": TPROXY_MARK if tproxy else None},
        "proxy_uid": TPROXY_PROXY_UID if tproxy else PROXY_UID,
        "proxy_gid": PROXY_GID,
        "inbound": {
            "port": INBOUND_CAPTURE_PORT,
            "listeners": listeners,
            # The virtualInbound catch-all (InboundPassthroughClusterIpv4/6): ORIGINAL_DST from 127.0.0.6 / ::6,
            # the protocol sniffed from the first bytes.
            "passthrough": {
                # On dual-stack one cluster with both sources (1.23+, #51503).
                "cluster": "InboundPassthroughCluster" + {"ipv4": "Ipv4", "ipv6": "Ipv6"}.get(family, ""),
                "protocol": "sniff",
                # meshConfig.protocolDetectionTimeout defaults to 0s, no timeout (1.10 mesh defaults): the inbound
                # http_inspector waits for the client's first bytes however long they take.
                "detection_timeout_s": PROTOCOL_DETECTION_TIMEOUT_S,
                "upstream": {"address": "original_dst", "port": None},
                "bind": addresses.passthrough_bind,
            },
        },
        "outbound": {"port": OUTBOUND_CAPTURE_PORT, "http_ports": http_ports},
    }


def exposed_ports(config: dict[str, object]) -> set[int]:
    """The ports with an inbound cluster: what istioctl precheck reads from the config dump."""
    inbound = config["inbound"]
    assert isinstance(inbound, dict)
    return {int(item["port"]) for item in inbound["listeners"]}
