"""The emulated backend as an `impact` source: its pods are real network namespaces with real sockets.

Pods and Services come from the manifests the cluster runs (as the API server would list them, with what the
injector adds to a meshed pod: an `istio-proxy` container); listeners are the listening sockets of the pod's
network namespace, asked of the kernel (sock_diag, as `ss -ltn` in the pod would): the same sockets a real
pod's /proc/net/tcp{,6} lists, without walking every TIME_WAIT socket of the host as reading that file does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from conformance.backends.base import BackendError
from conformance.backends.emulated.cluster import EmulatedCluster
from conformance.impact.analysis import PodInfo, SelectorError, ServiceInfo, ServicePort, parse_selector
from conformance.impact.sources import BadInput, ImpactSource, Inventory, ListenerRead, Unchecked

LISTENERS_VIA = "container echo: the pod's listening sockets (sock_diag, as ss -ltn)"


def _labels(obj: Mapping[str, Any], *path: str) -> dict[str, str]:
    for key in path:
        obj = obj.get(key) or {}
    return {str(k): str(v) for k, v in obj.items()}


class EmulatedSource(ImpactSource):
    """Reads a running EmulatedCluster and the manifests it was brought up with."""

    def __init__(self, cluster: EmulatedCluster, manifests: Sequence[Mapping[str, Any]]) -> None:
        self.cluster = cluster
        self.manifests = list(manifests)
        self.description = f"emulated {cluster.family}"

    def _namespace_labels(self) -> dict[str, dict[str, str]]:
        return {
            str(m["metadata"]["name"]): _labels(m, "metadata", "labels")
            for m in self.manifests
            if m["kind"] == "Namespace"
        }

    def _named_ports(self, deployment: Mapping[str, Any]) -> dict[str, int]:
        containers = deployment["spec"]["template"]["spec"]["containers"]
        return {str(p["name"]): int(p["containerPort"]) for c in containers for p in c.get("ports", []) if "name" in p}

    def inventory(self, namespaces: Sequence[str] | None, selector: str | None) -> Inventory:
        """The cluster's pods and Services, selected like the API server would."""
        try:
            matches = parse_selector(selector or "")
        except SelectorError as err:
            raise BadInput(str(err)) from None
        ns_labels = self._namespace_labels()
        for namespace in namespaces or ():
            if namespace not in ns_labels:
                raise BadInput(
                    f"namespace {namespace!r} not found (the emulated cluster has {', '.join(sorted(ns_labels))})"
                )
        wanted = set(namespaces) if namespaces else set(ns_labels)
        deployments = {
            (str(m["metadata"]["namespace"]), str(m["metadata"]["name"])): m
            for m in self.manifests
            if m["kind"] == "Deployment"
        }
        pods = []
        for ref, pod in self.cluster.pods.items():
            template = pod.template
            if ref.namespace not in wanted or not matches(template.labels):
                continue
            containers = ("echo", "istio-proxy") if template.injected else ("echo",)
            pods.append(
                PodInfo(
                    namespace=template.namespace,
                    name=template.name,
                    labels=dict(template.labels),
                    annotations=dict(template.annotations),
                    containers=containers,
                    named_ports=self._named_ports(deployments[(ref.namespace, ref.app)]),
                    namespace_labels=ns_labels.get(template.namespace, {}),
                    ips=pod.ips or (pod.ip,),  # status.podIPs: both families on a dual-stack pod
                )
            )
        services = []
        for m in self.manifests:
            if m["kind"] != "Service" or m["metadata"]["namespace"] not in wanted:
                continue
            ports = tuple(
                ServicePort(
                    str(p.get("name", "")),
                    int(p["port"]),
                    p.get("targetPort", p["port"]),
                    str(p.get("protocol", "TCP")),
                )
                for p in m["spec"].get("ports", [])
            )
            services.append(
                ServiceInfo(
                    str(m["metadata"]["namespace"]), str(m["metadata"]["name"]), _labels(m, "spec", "selector"), ports
                )
            )
        return Inventory(tuple(pods), tuple(services), tuple(sorted(wanted)))

    def read_listeners(self, pod: PodInfo) -> ListenerRead:
        """The listening sockets of the pod's network namespace, which its app container shares."""
        emulated = next(
            (
                p
                for p in self.cluster.pods.values()
                if (p.template.namespace, p.template.name) == (pod.namespace, pod.name)
            ),
            None,
        )
        if emulated is None or emulated.app is None:
            raise Unchecked("pod not found: it was deleted after it was listed")
        if emulated.app.poll() is not None:
            raise Unchecked(f"container echo is not running (exit code {emulated.app.returncode})")
        try:
            listeners = self.cluster.listeners(emulated.ref)
        except (OSError, BackendError) as err:
            raise Unchecked(f"container echo: cannot read the pod's listeners: {err}") from None
        return ListenerRead(tuple(listeners), LISTENERS_VIA)
