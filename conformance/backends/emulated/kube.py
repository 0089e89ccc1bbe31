"""Reads the Kubernetes manifests the suite renders, as kubelet, kube-proxy and istiod would read them.

Only the fields the emulation acts on are read, and anything it cannot honour is an error rather than a
silent difference from kind: a manifest the emulated cluster runs is a manifest a real cluster runs too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from typing import Any

INJECTION_LABEL = "istio-injection"
INJECT_POD_LABEL = "sidecar.istio.io/inject"
EXCLUDE_INBOUND_ANNOTATION = "traffic.sidecar.istio.io/excludeInboundPorts"
INCLUDE_INBOUND_ANNOTATION = "traffic.sidecar.istio.io/includeInboundPorts"
"""istio-iptables' `-b`: `*` when absent; a present annotation is used as-is, even empty (template.go getAnnotation)."""
INTERCEPTION_ANNOTATION = "sidecar.istio.io/interceptionMode"
DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
"""Namespace or pod label enrolling pods in ambient mode (value `ambient`; a pod may opt out with `none`)."""


class ManifestError(ValueError):
    """A manifest asks for something the emulated cluster does not do."""


@dataclass(frozen=True)
class EnvVar:
    """A container env entry: a literal value or a downward-API field."""

    name: str
    value: str | None = None
    field_path: str | None = None


@dataclass(frozen=True)
class Probe:
    """A container's readiness, liveness or startup probe: httpGet or tcpSocket, with kubelet's timing fields.

    The defaults are Kubernetes'.
    """

    kind: str  # "http" or "tcp"
    port: int
    path: str = "/"
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    initial_delay: float = 0.0

    def to_json(self) -> dict[str, object]:
        """The probe in Kubernetes' shape (what ISTIO_KUBE_APP_PROBERS carries)."""
        action: dict[str, object] = (
            {"httpGet": {"path": self.path, "port": self.port}}
            if self.kind == "http"
            else {"tcpSocket": {"port": self.port}}
        )
        return {**action, "timeoutSeconds": self.timeout, "periodSeconds": self.period}


@dataclass(frozen=True)
class ContainerProbes:
    """The probes the kubelet runs for one container (after injection): any of the three, at least one."""

    readiness: Probe | None = None
    liveness: Probe | None = None
    startup: Probe | None = None

    def of_use(self) -> dict[str, Probe]:
        """The probes present, by use (`readiness`, `liveness`, `startup`)."""
        uses = {"readiness": self.readiness, "liveness": self.liveness, "startup": self.startup}
        return {use: probe for use, probe in uses.items() if probe is not None}


@dataclass(frozen=True)
class Container:
    """One container of a pod; every container runs the echo program in the pod's namespace."""

    name: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[EnvVar, ...]
    readiness: Probe | None
    liveness: Probe | None = None
    startup: Probe | None = None

    @property
    def probes(self) -> ContainerProbes:
        """The container's probes as its manifest has them."""
        return ContainerProbes(self.readiness, self.liveness, self.startup)


@dataclass(frozen=True)
class PodTemplate:
    """One pod of a Deployment (the emulation runs replicas: 1)."""

    namespace: str
    app: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[EnvVar, ...]
    readiness_port: int | None
    injected: bool
    containers: tuple[Container, ...] = ()
    """Every container, the first one included (its fields above are the pod's main container)."""
    ambient: bool = False
    """Enrolled in ambient mode: istio-cni captures it for ztunnel (a pod with a sidecar never is)."""
    named_ports: Mapping[str, int] = field(default_factory=dict)
    """containerPort by name: what a Service's named targetPort resolves to."""

    @property
    def name(self) -> str:
        """Pod name; kind adds random suffixes, the emulation a fixed one."""
        return f"{self.app}-0"

    @property
    def interception(self) -> str:
        """The injected sidecar's interception mode: the pod's annotation, else Istio's default REDIRECT."""
        return self.annotations.get(INTERCEPTION_ANNOTATION, "REDIRECT").upper()


@dataclass(frozen=True)
class ServicePort:
    """One port of a Service."""

    name: str
    port: int
    target_port: int
    app_protocol: str | None
    target_name: str | None = None
    """A named targetPort as written; `read` resolves it into target_port against the selected pod."""


@dataclass(frozen=True)
class Service:
    """A ClusterIP Service."""

    namespace: str
    name: str
    selector: Mapping[str, str]
    ports: tuple[ServicePort, ...]

    def selects(self, pod: PodTemplate) -> bool:
        """Kubernetes label selection: every selector label matches (an empty selector selects nothing)."""
        return pod.namespace == self.namespace and bool(self.selector) and _subset(self.selector, pod.labels)


@dataclass(frozen=True)
class IngressListener:
    """One `spec.ingress[]` entry of an Istio Sidecar resource."""

    port: int
    protocol: str
    name: str
    default_endpoint: str


@dataclass(frozen=True)
class Sidecar:
    """An Istio Sidecar resource (only its ingress side matters here)."""

    namespace: str
    name: str
    selector: Mapping[str, str] | None
    ingress: tuple[IngressListener, ...]

    def selects(self, pod: PodTemplate) -> bool:
        """Match the workloadSelector labels; no selector means every pod of the namespace."""
        if pod.namespace != self.namespace:
            return False
        return self.selector is None or _subset(self.selector, pod.labels)


@dataclass
class Objects:
    """Everything the manifests declare, by kind."""

    injected_namespaces: set[str] = field(default_factory=set)
    ambient_namespaces: set[str] = field(default_factory=set)
    namespaces: set[str] = field(default_factory=set)
    pods: list[PodTemplate] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    sidecars: list[Sidecar] = field(default_factory=list)


def _subset(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _get(obj: Mapping[str, Any], *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(obj, Mapping) or key not in obj:
            return default
        obj = obj[key]
    return obj


def _where(manifest: Mapping[str, Any]) -> str:
    namespace = _get(manifest, "metadata", "namespace", default="")
    return f"{manifest.get('kind')} {namespace}/{_get(manifest, 'metadata', 'name')}"


def read(manifests: Sequence[Mapping[str, Any]]) -> Objects:
    """Sort the manifests into the objects the emulation runs; ManifestError for what it cannot run."""
    objects = Objects()
    deployments = []
    for manifest in manifests:
        kind = manifest.get("kind")
        if kind == "Namespace":
            name = str(_get(manifest, "metadata", "name"))
            objects.namespaces.add(name)
            if _get(manifest, "metadata", "labels", INJECTION_LABEL) == "enabled":
                objects.injected_namespaces.add(name)
            if _get(manifest, "metadata", "labels", DATAPLANE_MODE_LABEL) == "ambient":
                objects.ambient_namespaces.add(name)
        elif kind == "Deployment":
            deployments.append(manifest)
        elif kind == "Service":
            objects.services.append(_service(manifest))
        elif kind == "Sidecar":
            objects.sidecars.append(_sidecar(manifest))
        elif kind == "DestinationRule":
            _plaintext_destination_rule(manifest)
        else:
            raise ManifestError(f"{_where(manifest)}: the emulated cluster does not run kind {kind}")
    for manifest in deployments:
        objects.pods.append(_pod(manifest, objects.injected_namespaces, objects.ambient_namespaces))
    objects.services = [_resolve_named_targets(s, objects.pods) for s in objects.services]
    return objects


def _resolve_named_targets(service: Service, pods: Sequence[PodTemplate]) -> Service:
    """Resolve named targetPorts as the endpoints controller does: by the selected pod's container port name."""
    if all(p.target_name is None for p in service.ports):
        return service
    selected = [pod for pod in pods if service.selects(pod)]
    ports = []
    for port in service.ports:
        if port.target_name is not None:
            numbers = {pod.named_ports.get(port.target_name) for pod in selected}
            if len(numbers) != 1 or None in numbers:
                raise ManifestError(
                    f"Service {service.namespace}/{service.name}: targetPort {port.target_name!r} does not name "
                    "one container port of the pods it selects"
                )
            ports.append(replace(port, target_port=int(numbers.pop() or 0)))
        else:
            ports.append(port)
    return replace(service, ports=tuple(ports))


def _pod(
    manifest: Mapping[str, Any], injected_namespaces: set[str], ambient_namespaces: Set[str] = frozenset()
) -> PodTemplate:
    where = _where(manifest)
    namespace = str(_get(manifest, "metadata", "namespace", default="default"))
    if _get(manifest, "spec", "replicas", default=1) != 1:
        raise ManifestError(f"{where}: the emulated cluster runs exactly one replica")
    template = _get(manifest, "spec", "template", default={})
    containers = _get(template, "spec", "containers", default=[])
    if not containers:
        raise ManifestError(f"{where}: the emulated cluster runs pods of at least one container")
    container = containers[0]
    env = _env(where, container)
    labels = {str(k): str(v) for k, v in _get(template, "metadata", "labels", default={}).items()}
    annotations = {str(k): str(v) for k, v in _get(template, "metadata", "annotations", default={}).items()}
    pod_inject = labels.get(INJECT_POD_LABEL, annotations.get(INJECT_POD_LABEL))
    injected = namespace in injected_namespaces and pod_inject != "false"
    # istio-cni enrols a pod by its own label or its namespace's, and never a pod that carries a sidecar.
    mode = labels.get(DATAPLANE_MODE_LABEL)
    ambient = not injected and (mode == "ambient" or (namespace in ambient_namespaces and mode != "none"))
    return PodTemplate(
        namespace=namespace,
        app=str(_get(manifest, "metadata", "name")),
        labels=labels,
        annotations=annotations,
        command=tuple(container.get("command", ())),
        args=tuple(str(a) for a in container.get("args", ())),
        env=tuple(env),
        readiness_port=_get(container, "readinessProbe", "httpGet", "port"),
        injected=injected,
        containers=tuple(_container(where, c) for c in containers),
        ambient=ambient,
        named_ports={
            str(p["name"]): int(p["containerPort"]) for c in containers for p in c.get("ports", []) if "name" in p
        },
    )


def _env(where: str, container: Mapping[str, Any]) -> list[EnvVar]:
    env = []
    for entry in container.get("env", []):
        path = _get(entry, "valueFrom", "fieldRef", "fieldPath")
        if entry.get("valueFrom") is not None and path is None:
            raise ManifestError(f"{where}: env {entry['name']}: only literal values and fieldRef are supported")
        env.append(EnvVar(entry["name"], entry.get("value"), path))
    return env


def _container(where: str, container: Mapping[str, Any]) -> Container:
    name = str(container.get("name", ""))
    return Container(
        name=name,
        command=tuple(container.get("command", ())),
        args=tuple(str(a) for a in container.get("args", ())),
        env=tuple(_env(where, container)),
        readiness=_probe(f"{where} container {name}", container.get("readinessProbe")),
        liveness=_probe(f"{where} container {name}", container.get("livenessProbe"), "liveness"),
        startup=_probe(f"{where} container {name}", container.get("startupProbe"), "startup"),
    )


def _probe(where: str, probe: Mapping[str, Any] | None, use: str = "readiness") -> Probe | None:
    """A probe as kubelet reads it; exec and gRPC probes, and named ports, are not emulated."""
    if probe is None:
        return None
    if "httpGet" in probe:
        port = probe["httpGet"].get("port")
        kind, path = "http", str(probe["httpGet"].get("path", "/"))
    elif "tcpSocket" in probe:
        port = probe["tcpSocket"].get("port")
        kind, path = "tcp", "/"
    else:
        raise ManifestError(f"{where}: only httpGet and tcpSocket {use} probes are emulated")
    if not isinstance(port, int):
        raise ManifestError(f"{where}: probe port {port!r}: only numeric ports are emulated")
    return Probe(
        kind,
        port,
        path,
        period=float(probe.get("periodSeconds", 10)),
        timeout=float(probe.get("timeoutSeconds", 1)),
        success_threshold=int(probe.get("successThreshold", 1)),
        failure_threshold=int(probe.get("failureThreshold", 3)),
        initial_delay=float(probe.get("initialDelaySeconds", 0)),
    )


def _service(manifest: Mapping[str, Any]) -> Service:
    ports = []
    for port in _get(manifest, "spec", "ports", default=[]):
        target = port.get("targetPort", port["port"])
        name = target if isinstance(target, str) and not target.isdigit() else None
        if port.get("protocol", "TCP") != "TCP":
            raise ManifestError(f"{_where(manifest)}: only TCP Service ports are emulated")
        number = 0 if name is not None else int(target)
        ports.append(ServicePort(str(port.get("name", "")), int(port["port"]), number, port.get("appProtocol"), name))
    return Service(
        namespace=str(_get(manifest, "metadata", "namespace", default="default")),
        name=str(_get(manifest, "metadata", "name")),
        selector=dict(_get(manifest, "spec", "selector", default={})),
        ports=tuple(ports),
    )


def _plaintext_destination_rule(manifest: Mapping[str, Any]) -> None:
    """A DestinationRule that only turns TLS off is honoured by doing nothing: the emulated mesh has no mTLS.

    Anything else a DestinationRule asks for (TLS, load balancing, subsets) the emulation cannot do: an error.
    """
    spec = _get(manifest, "spec", default={})
    if set(spec) - {"host", "trafficPolicy"} or _get(spec, "trafficPolicy", default={}) != {"tls": {"mode": "DISABLE"}}:
        raise ManifestError(
            f"{_where(manifest)}: the emulated cluster only runs DestinationRules with trafficPolicy.tls.mode DISABLE"
        )


def _sidecar(manifest: Mapping[str, Any]) -> Sidecar:
    selector = _get(manifest, "spec", "workloadSelector", "labels")
    ingress = tuple(
        IngressListener(
            port=int(item["port"]["number"]),
            protocol=str(item["port"].get("protocol", "TCP")),
            name=str(item["port"].get("name", "")),
            default_endpoint=str(item.get("defaultEndpoint", "")),
        )
        for item in _get(manifest, "spec", "ingress", default=[])
    )
    return Sidecar(
        namespace=str(_get(manifest, "metadata", "namespace", default="default")),
        name=str(_get(manifest, "metadata", "name")),
        selector=dict(selector) if selector is not None else None,
        ingress=ingress,
    )
