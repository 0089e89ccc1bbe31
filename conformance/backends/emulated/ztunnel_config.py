"""What istiod and istio-cni tell ztunnel, as one JSON file: the enrolled pods and the Services.

Real ztunnel learns workloads and services over xDS (WDS) and receives each enrolled pod's network namespace
from istio-cni over a UNIX socket (in-pod mode). The emulation writes both into one file, documented in
docs/emulated.md ("Putting another ztunnel under the harness"), and signals ztunnel (SIGHUP) when pods come or
go. Never reads the spec.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from conformance.backends.emulated.ambient_capture import INBOUND_PORT, OUTBOUND_PORT, TUNNEL_PORT, ZTUNNEL_MARK
from conformance.backends.emulated.kube import PodTemplate, Service

CONFIG_FORMAT = "mesh-inbound-conformance/ztunnel-config"
CONFIG_VERSION = 1


def ztunnel_config(
    node: str,
    workloads: Iterable[tuple[PodTemplate, str, str]],
    services: Sequence[tuple[Service, str, str]],
) -> dict[str, object]:
    """The configuration of the node's ztunnel.

    `workloads`: (pod, pod IP, netns path) of each enrolled pod; `services`: (Service, ClusterIP, endpoint IP).
    """
    return {
        "format": CONFIG_FORMAT,
        "version": CONFIG_VERSION,
        "node": node,
        "mark": ZTUNNEL_MARK,
        "ports": {"inbound": INBOUND_PORT, "outbound": OUTBOUND_PORT, "tunnel": TUNNEL_PORT},
        "workloads": [
            {"name": pod.name, "namespace": pod.namespace, "ip": ip, "netns": path} for pod, ip, path in workloads
        ],
        "services": [
            {
                "name": f"{service.name}.{service.namespace}",
                "address": vip,
                "endpoint": endpoint,
                "ports": [{"port": p.port, "target_port": p.target_port} for p in service.ports],
            }
            for service, vip, endpoint in services
        ],
    }
