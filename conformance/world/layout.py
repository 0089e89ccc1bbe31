"""The test world: the namespaces, echo workloads, Services and Sidecar resources every backend deploys.

One typed description, rendered to plain Kubernetes manifests. The kind backend applies those manifests through
the API; the emulated backend reads the very same manifests (Deployments, Services, Sidecars, the injection label,
the capture-exclusion annotation) the way kubelet and istiod would. So both backends run the same
workloads with the same arguments and environment.

Layout, for one IP family:

- namespace `mic-baseline` (no injection): server `echo` + its Service, and the `plain` client;
- namespace `mic-mesh` (injected): one server per Sidecar situation (`echo-none`, `echo-localhost`,
  `echo-instance`, `echo-unlisted`), each with its own Service, and the `meshed` client;
- namespace `mic-ambient` (enrolled, `istio.io/dataplane-mode=ambient`, where the mesh has ambient): the same
  servers, Services and Sidecar resources (which ambient must ignore), and the `ambient` client.

Every server serves the same ports: one per bind x protocol, declared in its Service, one more per
bind x protocol that no Service declares, and an `anchor` port that the "unlisted" Sidecar lists instead of
the test ports.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from conformance.spec.capabilities import Capability, MeshCapabilities, endpoint_capabilities
from conformance.spec.dimensions import (
    OVERRIDES_BY_FAMILY,
    SIDECAR_FORMS_BY_FAMILY,
    Bind,
    CellKey,
    Client,
    DefaultEndpoint,
    IpFamily,
    Path,
    PortKind,
    Profile,
    Protocol,
)
from conformance.spec.probes import ProbeCellKey, ProbeKind
from conformance.world.pods import PodRef

Manifest = dict[str, object]

PART_OF = "mesh-inbound-conformance"
CONTROL_PORT = 19000
"""The echo program's control port (request record, batch probes). Excluded from capture, as on kind."""
EXCLUDE_INBOUND_ANNOTATION = "traffic.sidecar.istio.io/excludeInboundPorts"
ECHO_COMMAND = ("python3", "/app/echo.py")
DEFAULT_ECHO_IMAGE = "localhost/mesh-inbound-conformance/echo:dev"

NS_BASELINE = "mic-baseline"
NS_MESH = "mic-mesh"
NS_AMBIENT = "mic-ambient"
DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
"""Enrols a namespace's pods in ambient mode; no restart needed (probes-ambient.md §2)."""


@dataclass(frozen=True)
class EchoPort:
    """One port of the echo server, with its bind and protocol as data (like Istio's echo `Port`)."""

    number: int
    bind: Bind
    protocol: Protocol
    declared: bool
    role: str = ""
    """Names a port that is not a test port (the anchor), so Service port names stay unique."""
    service_port: int | None = None
    """The Service `port` when it differs from this container port (the targetPort); None: the same number."""

    @property
    def kind(self) -> PortKind:
        """The cell dimension this port answers."""
        if not self.declared:
            return PortKind.UNDECLARED
        return PortKind.REMAPPED if self.service_port is not None else PortKind.DECLARED

    @property
    def name(self) -> str:
        """The Service port name; its prefix tells Istio the protocol (`http-...`, `tcp-...`)."""
        suffix = "-remapped" if self.service_port is not None else ""
        return f"{self.protocol.value}-{self.role or self.bind.value.replace('_', '-')}{suffix}"

    @property
    def spec(self) -> str:
        """The echo program's PORT:BIND:PROTO argument."""
        return f"{self.number}:{self.bind.value}:{self.protocol.value}"


def _port_number(bind: Bind, protocol: Protocol, kind: PortKind) -> int:
    # 8xxx http, 9xxx tcp; x08x declared, x18x undeclared, x28x remapped; last digit: 1 loopback, 2 pod_ip,
    # 3 wildcard.
    base = 8000 if protocol is Protocol.HTTP else 9000
    offset = {PortKind.DECLARED: 80, PortKind.UNDECLARED: 180, PortKind.REMAPPED: 280}[kind]
    return base + offset + 1 + list(Bind).index(bind)


REMAPPED_SERVICE_OFFSET = 10000
"""A remapped port's Service `port` is its container port + this (8281 is served as Service port 18281)."""


def _test_port(bind: Bind, protocol: Protocol, kind: PortKind) -> EchoPort:
    number = _port_number(bind, protocol, kind)
    service_port = number + REMAPPED_SERVICE_OFFSET if kind is PortKind.REMAPPED else None
    return EchoPort(number, bind, protocol, kind.declared, service_port=service_port)


TEST_PORTS: tuple[EchoPort, ...] = tuple(_test_port(b, p, k) for k in PortKind for p in Protocol for b in Bind)
ANCHOR_PORT = EchoPort(7070, Bind.WILDCARD, Protocol.HTTP, declared=True, role="anchor")
"""Listed by the `unlisted` Sidecar, so that Sidecar has an ingress listener that is not a test port."""
SERVER_PORTS: tuple[EchoPort, ...] = (*TEST_PORTS, ANCHOR_PORT)


def port_for(bind: Bind, protocol: Protocol, port: PortKind) -> EchoPort:
    """The server port that answers a cell's (bind, protocol, port kind) coordinates."""
    for candidate in TEST_PORTS:
        if (candidate.bind, candidate.protocol, candidate.kind) == (bind, protocol, port):
            return candidate
    raise LookupError(f"no port for {bind}/{protocol}/{port}")


_SERVER_SUFFIX = {
    DefaultEndpoint.NONE: "none",
    DefaultEndpoint.LOCALHOST_V4: "localhost",
    DefaultEndpoint.LOCALHOST_V6: "localhost",
    DefaultEndpoint.INSTANCE_V4: "instance",
    DefaultEndpoint.INSTANCE_V6: "instance",
    DefaultEndpoint.EMPTY: "empty",
    DefaultEndpoint.UNLISTED: "unlisted",
}
"""Server name suffixes; a literal of the other family gets `-cross` (`echo-localhost-cross`)."""


@dataclass(frozen=True)
class World:
    """The workloads for one IP family, and how a cell maps onto them."""

    family: IpFamily
    image: str = DEFAULT_ECHO_IMAGE
    sidecars: bool = True
    """Deploy the servers with Sidecar resources. Off for a mesh that rejects the family's literal forms
    (`[::1]:P`/`[::]:P` before Istio 1.14.4 and 1.15.0): applying them would fail, and their cells are skipped
    anyway."""
    forms: tuple[DefaultEndpoint, ...] | None = None
    """The Sidecar situations to deploy (None: every one of the family). A mesh that rejects a form (or
    resolves it in a way the suite does not encode) gets no server for it, and its cells are not asked."""
    ambient: bool = False
    """Deploy the enrolled namespace: only where the mesh has ambient mode (`for_mesh` decides)."""

    BASELINE_SERVER = PodRef(NS_BASELINE, "echo")

    @classmethod
    def for_mesh(cls, family: IpFamily, mesh: MeshCapabilities) -> World:
        """The world a mesh can take: Sidecar resources only where it accepts the family's literal forms."""
        accepted = tuple(
            e
            for e in (*SIDECAR_FORMS_BY_FAMILY[family], DefaultEndpoint.UNLISTED)
            if endpoint_capabilities(e, family) <= mesh.capabilities
        )
        return cls(
            family,
            sidecars=bool(accepted),
            forms=accepted,
            ambient=Capability.PROFILE_AMBIENT in mesh.capabilities,
        )

    @property
    def clients(self) -> dict[Client, PodRef]:
        """The plain client lives in the uninjected namespace, the meshed one in the injected namespace."""
        out = {Client.PLAIN: PodRef(NS_BASELINE, "client"), Client.MESHED: PodRef(NS_MESH, "client")}
        if self.ambient:
            out[Client.AMBIENT] = PodRef(NS_AMBIENT, "client")
        return out

    @property
    def mesh_endpoints(self) -> tuple[DefaultEndpoint, ...]:
        """The Sidecar situations of this family, one meshed server each."""
        if not self.sidecars:
            return (DefaultEndpoint.NONE,)
        every = (*SIDECAR_FORMS_BY_FAMILY[self.family], DefaultEndpoint.UNLISTED)
        return (DefaultEndpoint.NONE, *(e for e in every if self.forms is None or e in self.forms))

    def deployed(self, cell: CellKey) -> bool:
        """Whether the world has the server a cell is asked of."""
        if cell.profile is Profile.AMBIENT and not self.ambient:
            return False
        return cell.profile is Profile.BASELINE or cell.default_endpoint in self.mesh_endpoints

    def mesh_server(self, endpoint: DefaultEndpoint) -> PodRef:
        """The meshed server whose Sidecar situation is `endpoint`."""
        family = endpoint.family()
        cross = "-cross" if family is not None and family is not self.family else ""
        return PodRef(NS_MESH, f"echo-{_SERVER_SUFFIX[endpoint]}{cross}")

    def ambient_server(self, endpoint: DefaultEndpoint) -> PodRef:
        """The enrolled server whose (ignored) Sidecar situation is `endpoint`."""
        return PodRef(NS_AMBIENT, self.mesh_server(endpoint).app)

    @property
    def ambient_servers(self) -> tuple[PodRef, ...]:
        """The servers enrolled in ambient mode (none where the mesh has no ambient)."""
        return tuple(self.ambient_server(e) for e in self.mesh_endpoints) if self.ambient else ()

    @property
    def servers(self) -> tuple[PodRef, ...]:
        """Every server, baseline first."""
        return (self.BASELINE_SERVER, *(self.mesh_server(e) for e in self.mesh_endpoints), *self.ambient_servers)

    @property
    def mesh_servers(self) -> tuple[PodRef, ...]:
        """The servers that carry a sidecar."""
        return tuple(self.mesh_server(e) for e in self.mesh_endpoints)

    def server_for(self, cell: CellKey) -> PodRef:
        """The server pod a cell is asked of."""
        if cell.profile is Profile.BASELINE:
            return self.BASELINE_SERVER
        if cell.profile is Profile.AMBIENT:
            return self.ambient_server(cell.default_endpoint)
        return self.mesh_server(cell.default_endpoint)

    def source_pod(self, cell: CellKey) -> PodRef:
        """The pod a cell's connection starts in: a client, or the server itself for in-pod paths."""
        if cell.path.from_other_pod:
            assert cell.client is not None
            return self.clients[cell.client]
        return self.server_for(cell)

    def endpoint_of(self, server: PodRef) -> DefaultEndpoint:
        """The Sidecar situation of a meshed server (NONE for the baseline server)."""
        for endpoint in self.mesh_endpoints:
            if server in (self.mesh_server(endpoint), self.ambient_server(endpoint)):
                return endpoint
        return DefaultEndpoint.NONE

    # --- manifests ---------------------------------------------------------------------------------------

    def manifests(self) -> list[Manifest]:
        """Every object, in apply order: namespaces, then per namespace Deployments, Services, Sidecars."""
        out: list[Manifest] = [
            _namespace(NS_BASELINE, injected=False),
            _namespace(NS_MESH, injected=True),
            *([_enrolled_namespace(NS_AMBIENT)] if self.ambient else []),
            self.deployment(self.BASELINE_SERVER, SERVER_PORTS),
            service_manifest(self.BASELINE_SERVER),
            self.deployment(self.clients[Client.PLAIN], ()),
        ]
        for endpoint in self.mesh_endpoints:
            server = self.mesh_server(endpoint)
            out += [self.deployment(server, SERVER_PORTS), service_manifest(server)]
            if endpoint is not DefaultEndpoint.NONE:
                out.append(self._sidecar(server, endpoint))
        out.append(self.deployment(self.clients[Client.MESHED], ()))
        out += self.probe_manifests()
        if self.ambient:
            for endpoint in self.mesh_endpoints:
                server = self.ambient_server(endpoint)
                out += [self.deployment(server, SERVER_PORTS), service_manifest(server)]
                if endpoint is not DefaultEndpoint.NONE:
                    out.append(self._sidecar(server, endpoint))
            out.append(self.deployment(self.clients[Client.AMBIENT], ()))
        return out

    def probe_manifests(self) -> list[Manifest]:
        """The probe pods and their Services (baseline, and in the mesh one pod per rewrite setting)."""
        return _probe_manifests(self)

    def deployment(self, ref: PodRef, ports: tuple[EchoPort, ...]) -> Manifest:
        """An echo Deployment serving `ports`, with the downward-API env and the capture exclusion."""
        role = "client" if ref.app == "client" else "server"
        labels = {"app": ref.app, "role": role, "app.kubernetes.io/part-of": PART_OF}

        def field(path: str) -> dict[str, object]:
            return {"fieldRef": {"fieldPath": path}}

        container: dict[str, object] = {
            "name": "echo",
            "image": self.image,
            "imagePullPolicy": "IfNotPresent",
            "command": list(ECHO_COMMAND),
            "args": ["serve", "--control-port", str(CONTROL_PORT), *(p.spec for p in ports)],
            "env": [
                {"name": "POD_NAME", "valueFrom": field("metadata.name")},
                {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
                {"name": "INSTANCE_IP", "valueFrom": field("status.podIP")},
                {"name": "INSTANCE_IPS", "valueFrom": field("status.podIPs")},
            ],
            "ports": [{"name": "control", "containerPort": CONTROL_PORT, "protocol": "TCP"}],
            "readinessProbe": {
                "httpGet": {"path": "/healthz", "port": CONTROL_PORT},
                "periodSeconds": 1,
                "failureThreshold": 30,
            },
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "allowPrivilegeEscalation": False,
            },
        }
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": ref.app, "namespace": ref.namespace, "labels": dict(labels)},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": ref.app}},
                "template": {
                    "metadata": {
                        "labels": labels,
                        # The control port carries the test's own traffic (records, batch probes): never
                        # captured, so reading it cannot disturb what is measured.
                        "annotations": {EXCLUDE_INBOUND_ANNOTATION: str(CONTROL_PORT)},
                    },
                    "spec": {"terminationGracePeriodSeconds": 2, "containers": [container]},
                },
            },
        }

    def _sidecar(self, server: PodRef, endpoint: DefaultEndpoint) -> Manifest:
        localhost_form = OVERRIDES_BY_FAMILY[self.family][0]
        if endpoint is DefaultEndpoint.UNLISTED:
            listed = [(ANCHOR_PORT, localhost_form.for_port(ANCHOR_PORT.number))]
        else:
            listed = [(p, endpoint.for_port(p.number)) for p in TEST_PORTS if p.declared]
        return {
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "Sidecar",
            "metadata": {"name": server.app, "namespace": server.namespace},
            "spec": {
                "workloadSelector": {"labels": {"app": server.app}},
                "ingress": [
                    {
                        "port": {"number": p.number, "protocol": p.protocol.value.upper(), "name": p.name},
                        "defaultEndpoint": value,
                    }
                    for p, value in listed
                ],
            },
        }


def _namespace(name: str, injected: bool) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {"istio-injection": "enabled" if injected else "disabled", "app.kubernetes.io/part-of": PART_OF},
        },
    }


def _enrolled_namespace(name: str) -> Manifest:
    """An uninjected namespace enrolled in ambient mode (the label istio-cni and ztunnel act on)."""
    manifest = _namespace(name, injected=False)
    labels = manifest["metadata"]
    assert isinstance(labels, dict)
    labels["labels"][DATAPLANE_MODE_LABEL] = "ambient"
    return manifest


def service_manifest(server: PodRef) -> Manifest:
    """The ClusterIP Service of a server: every declared port, named for Istio's protocol selection."""
    # Service port == container port for the `declared` ports: an HTTP Service port then has the same number on
    # the pod, so a meshed client dialling the pod IP directly meets the same outbound HTTP listener as one
    # dialling the ClusterIP. The `remapped` ports differ on purpose (port = targetPort + 10000).
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": server.app, "namespace": server.namespace, "labels": {"app": server.app}},
        "spec": {
            "selector": {"app": server.app},
            "ports": [
                {
                    "name": p.name,
                    "port": p.service_port or p.number,
                    "targetPort": p.number,
                    "protocol": "TCP",
                    "appProtocol": p.protocol.value,
                }
                for p in SERVER_PORTS
                if p.declared
            ],
        },
    }


def dialled_port(cell: CellKey) -> int:
    """The port a cell's connection dials: the Service `port` on the ClusterIP path, else the container port."""
    port = port_for(cell.bind, cell.protocol, cell.port)
    if cell.path is Path.SERVICE and port.service_port is not None:
        return port.service_port
    return port.number


def dialled_address(cell: CellKey) -> str | None:
    """The fixed address an in-pod localhost cell dials; None where the address is a pod or Service IP."""
    if cell.path is Path.LOCALHOST:
        return "127.0.0.1" if cell.ip_family is IpFamily.IPV4 else "::1"
    return None


# --- probe pods (issue 11: kubelet health probes and the injector's rewrite) -----------------------------------

PROBE_REWRITE_ANNOTATION = "sidecar.istio.io/rewriteAppHTTPProbers"
PROBE_POD_LABEL = "mesh-inbound-conformance/probe-pod"
"""Marks the probe pods, whose probed containers may never be Ready by design: a backend waits for their
`echo` container only (the one carrying the control port)."""
PROBE_PERIOD_SECONDS = 1
"""The shortest period Kubernetes allows: with thresholds of 1 a probe cell settles within ~2 s on a cluster."""


@dataclass(frozen=True)
class ProbedContainer:
    """One probed container of a probe pod: one echo port (bind x probe kind) and a control port of its own."""

    bind: Bind
    probe: ProbeKind
    port: int
    control_port: int

    @property
    def name(self) -> str:
        """The container name; matches `ProbeCellKey.container`."""
        return f"{self.bind.value.replace('_', '-')}-{self.probe.value}"

    @property
    def echo_port(self) -> EchoPort:
        """The echo port the container serves (declared in the probe pod's Service)."""
        protocol = Protocol.HTTP if self.probe is ProbeKind.HTTP else Protocol.TCP
        return EchoPort(self.port, self.bind, protocol, declared=True, role=self.name)


PROBED_CONTAINERS: tuple[ProbedContainer, ...] = tuple(
    # 83xx http, 93xx tcp, last digit by bind; control ports 19001-19006 (excluded from capture).
    ProbedContainer(b, k, (8380 if k is ProbeKind.HTTP else 9380) + 1 + i, CONTROL_PORT + 1 + 3 * j + i)
    for j, k in enumerate(ProbeKind)
    for i, b in enumerate(Bind)
)


def probed_container(cell: ProbeCellKey) -> ProbedContainer:
    """The container a probe cell is asked of."""
    for container in PROBED_CONTAINERS:
        if (container.bind, container.probe) == (cell.bind, cell.probe):
            return container
    raise LookupError(f"no probed container for {cell.id}")


def probe_pod(cell: ProbeCellKey) -> PodRef:
    """The probe pod of a cell: one without a sidecar, in the mesh one per rewrite setting, one enrolled."""
    if cell.profile is Profile.BASELINE:
        return PodRef(NS_BASELINE, "probe")
    if cell.profile is Profile.AMBIENT:
        return PodRef(NS_AMBIENT, "probe")
    return PodRef(NS_MESH, "probe-rewrite" if cell.rewrite else "probe-norewrite")


def probe_pods_of(namespace: str | None = None, ambient: bool = False) -> tuple[tuple[PodRef, bool | None], ...]:
    """The probe pods (of one namespace, or all) with their rewrite setting (None: no sidecar).

    The enrolled one (`mic-ambient/probe`) only with `ambient`: a world without ambient has no such namespace.
    """
    pods = ((PodRef(NS_BASELINE, "probe"), None), (PodRef(NS_MESH, "probe-rewrite"), True),
            (PodRef(NS_MESH, "probe-norewrite"), False),
            *(((PodRef(NS_AMBIENT, "probe"), None),) if ambient else ()))  # fmt: skip
    return tuple((p, r) for p, r in pods if namespace is None or p.namespace == namespace)


def _probed_container_manifest(base: dict[str, object], container: ProbedContainer) -> dict[str, object]:
    probe: dict[str, object]
    if container.probe is ProbeKind.HTTP:
        probe = {"httpGet": {"path": "/readyz", "port": container.port}}
    else:
        probe = {"tcpSocket": {"port": container.port}}
    probe.update(
        {"periodSeconds": PROBE_PERIOD_SECONDS, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 1}
    )
    # A deep copy: shared sub-objects would be dumped as YAML anchors, which strict readers refuse.
    return {
        **copy.deepcopy(base),
        "name": container.name,
        "args": ["serve", "--control-port", str(container.control_port), container.echo_port.spec],
        "ports": [{"name": f"p-{container.port}", "containerPort": container.port, "protocol": "TCP"}],
        "readinessProbe": probe,
    }


def _probe_manifests(world: World) -> list[Manifest]:
    out: list[Manifest] = []
    for ref, rewrite in probe_pods_of(ambient=world.ambient):
        deployment = world.deployment(ref, ())
        template = deployment["spec"]["template"]  # type: ignore[index]
        labels = template["metadata"]["labels"]
        labels[PROBE_POD_LABEL] = "true"
        deployment["metadata"]["labels"][PROBE_POD_LABEL] = "true"  # type: ignore[index]
        annotations = template["metadata"]["annotations"]
        controls = [CONTROL_PORT, *(c.control_port for c in PROBED_CONTAINERS)]
        annotations[EXCLUDE_INBOUND_ANNOTATION] = ",".join(str(p) for p in controls)
        if rewrite is False:
            annotations[PROBE_REWRITE_ANNOTATION] = "false"
        containers = template["spec"]["containers"]
        main = containers[0]
        containers += [_probed_container_manifest(main, c) for c in PROBED_CONTAINERS]
        out.append(deployment)
        out.append(_probe_service(ref))
    return out


def _probe_service(ref: PodRef) -> Manifest:
    # The probed ports are declared, so a probe that is not rewritten meets the same inbound cluster as traffic.
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": ref.app, "namespace": ref.namespace, "labels": {"app": ref.app, PROBE_POD_LABEL: "true"}},
        "spec": {
            "selector": {"app": ref.app},
            "ports": [
                {
                    "name": c.echo_port.name,
                    "port": c.port,
                    "targetPort": c.port,
                    "protocol": "TCP",
                    "appProtocol": c.echo_port.protocol.value,
                }
                for c in PROBED_CONTAINERS
            ],
        },
    }
