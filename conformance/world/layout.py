"""The test world: the echo workloads, Services and Sidecar resources every backend deploys, and where a cell lands.

One typed description, rendered to plain Kubernetes manifests. The kind backend applies those manifests through
the API; the emulated backend reads the very same manifests (Deployments, Services, Sidecars, the injection label,
the capture-exclusion annotation) the way kubelet and istiod would. So both backends run the same
workloads with the same arguments and environment.

Layout, for one IP family (the namespaces are in namespaces.py, the ports in ports.py, the health-probe pods in
probe_pods.py):

- namespace `mic-baseline` (no injection): server `echo` + its Service, and the `plain` client;
- namespace `mic-mesh` (injected): one server per Sidecar situation (`echo-none`, `echo-localhost`,
  `echo-instance`, `echo-unlisted`), each with its own Service, one per setting that leaves the test ports out of
  capture (`echo-excluded`, `echo-not-included`: capture.py), and the `meshed` client;
- namespace `mic-mesh` also holds the TPROXY servers (pod annotation `sidecar.istio.io/interceptionMode: TPROXY`,
  where the mesh has TPROXY): `echo-tproxy` without a Sidecar, `echo-tproxy-instance` with the family's instance
  form (`0.0.0.0:P` / `[::]:P`), each with its own Service;
- namespace `mic-ambient` (enrolled, `istio.io/dataplane-mode=ambient`, where the mesh has ambient): the same
  servers, Services and Sidecar resources (which ambient must ignore), and the `ambient` client;
- namespace `mic-late` (where the mesh has ambient): server `echo` + its Service, unenrolled until the run enrols
  the namespace while the pod runs (`Cluster.enrol`, the late-enrolment cells).

Every server of a family serves the same ports (ports.server_ports).
"""

from __future__ import annotations

from dataclasses import dataclass

from conformance.spec.capabilities import Capability, MeshCapabilities, endpoint_capabilities
from conformance.spec.dimensions import (
    OVERRIDES_BY_FAMILY,
    SIDECAR_FORMS_BY_FAMILY,
    CellKey,
    Client,
    DefaultEndpoint,
    InboundCapture,
    Interception,
    IpFamily,
    Profile,
)
from conformance.world.capture import capture_annotations, plaintext_destination_rule, server_name
from conformance.world.namespaces import (
    NS_AMBIENT,
    NS_BASELINE,
    NS_LATE,
    NS_MESH,
    PART_OF,
    Manifest,
    enrolled_namespace_manifest,
    namespace_manifest,
)
from conformance.world.pods import PodRef
from conformance.world.ports import (
    ANCHOR_PORT,
    CONTROL_PORT,
    EchoPort,
    family_test_ports,
    server_ports,
)
from conformance.world.probe_pods import probe_manifests

ECHO_COMMAND = ("python3", "/app/echo.py")
DEFAULT_ECHO_IMAGE = "localhost/mesh-inbound-conformance/echo:dev"
INTERCEPTION_ANNOTATION = "sidecar.istio.io/interceptionMode"
"""The pod annotation that picks the sidecar's interception mode (Istio: REDIRECT by default, or TPROXY)."""

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
    captures: tuple[InboundCapture, ...] = (InboundCapture.EXCLUDED, InboundCapture.NOT_INCLUDED)
    """The settings that leave the test ports out of capture, one meshed server each (every Istio since 1.9)."""
    tproxy: bool = False
    """Deploy the TPROXY servers: only where the mesh has TPROXY in the family (`for_mesh` decides)."""

    BASELINE_SERVER = PodRef(NS_BASELINE, "echo")
    LATE_SERVER = PodRef(NS_LATE, "echo")
    """Enrolled in ambient while the run is under way (deployed only where the mesh has ambient)."""

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
            # Dual-stack pods have no ambient or TPROXY cells (spec/dualstack.py: not traced): none deployed.
            ambient=Capability.PROFILE_AMBIENT in mesh.capabilities and family is not IpFamily.DUAL,
            tproxy=Capability.INTERCEPTION_TPROXY in mesh.capabilities and family is not IpFamily.DUAL,
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

    @property
    def tproxy_endpoints(self) -> tuple[DefaultEndpoint, ...]:
        """The Sidecar situations of the TPROXY servers (cells.default_endpoints), where deployed at all."""
        if not self.tproxy:
            return ()
        instance = OVERRIDES_BY_FAMILY[self.primary_family][1]
        return (DefaultEndpoint.NONE, *((instance,) if instance in self.mesh_endpoints else ()))

    def deployed(self, cell: CellKey) -> bool:
        """Whether the world has the server a cell is asked of."""
        if cell.profile is Profile.AMBIENT and not self.ambient:
            return False
        if cell.capture is not InboundCapture.ALL:
            return cell.capture in self.captures
        if cell.interception is Interception.TPROXY:
            return cell.default_endpoint in self.tproxy_endpoints
        return cell.profile is Profile.BASELINE or cell.default_endpoint in self.mesh_endpoints

    @property
    def primary_family(self) -> IpFamily:
        """The family of a pod's first address: the run's, IPv4 on dual-stack pods (kind lists it first)."""
        return IpFamily.IPV4 if self.family is IpFamily.DUAL else self.family

    def mesh_server(self, endpoint: DefaultEndpoint) -> PodRef:
        """The meshed server whose Sidecar situation is `endpoint`.

        A literal of the other family gets `-cross`; on dual-stack pods no literal is cross, and the IPv6 ones get
        `-v6` (`echo-localhost-v6`).
        """
        family = endpoint.family()
        other = family is not None and family is not self.primary_family
        suffix = ("-v6" if self.family is IpFamily.DUAL else "-cross") if other else ""
        return PodRef(NS_MESH, f"echo-{_SERVER_SUFFIX[endpoint]}{suffix}")

    def tproxy_server(self, endpoint: DefaultEndpoint) -> PodRef:
        """The TPROXY server whose Sidecar situation is `endpoint` (`echo-tproxy`, `echo-tproxy-instance`)."""
        return PodRef(NS_MESH, "echo-tproxy" if endpoint is DefaultEndpoint.NONE else "echo-tproxy-instance")

    def ambient_server(self, endpoint: DefaultEndpoint) -> PodRef:
        """The enrolled server whose (ignored) Sidecar situation is `endpoint`."""
        return PodRef(NS_AMBIENT, self.mesh_server(endpoint).app)

    @property
    def ambient_servers(self) -> tuple[PodRef, ...]:
        """The servers enrolled in ambient mode (none where the mesh has no ambient)."""
        return tuple(self.ambient_server(e) for e in self.mesh_endpoints) if self.ambient else ()

    def capture_server(self, capture: InboundCapture) -> PodRef:
        """The meshed server (no Sidecar resource) whose test ports are left out of capture this way."""
        return PodRef(NS_MESH, server_name(capture))

    @property
    def servers(self) -> tuple[PodRef, ...]:
        """Every server, baseline first (the one enrolled while the run is on last, where the mesh has ambient)."""
        late = (self.LATE_SERVER,) if self.ambient else ()
        return (self.BASELINE_SERVER, *self.mesh_servers, *self.ambient_servers, *late)

    @property
    def mesh_servers(self) -> tuple[PodRef, ...]:
        """The servers that carry a sidecar: one per Sidecar situation, one per capture setting, the TPROXY ones."""
        redirect = tuple(self.mesh_server(e) for e in self.mesh_endpoints)
        captures = tuple(self.capture_server(c) for c in self.captures)
        return (*redirect, *captures, *(self.tproxy_server(e) for e in self.tproxy_endpoints))

    def server_for(self, cell: CellKey) -> PodRef:
        """The server pod a cell is asked of."""
        if cell.capture is not InboundCapture.ALL:
            return self.capture_server(cell.capture)
        if cell.profile is Profile.BASELINE:
            return self.BASELINE_SERVER
        if cell.profile is Profile.AMBIENT:
            return self.ambient_server(cell.default_endpoint)
        if cell.interception is Interception.TPROXY:
            return self.tproxy_server(cell.default_endpoint)
        return self.mesh_server(cell.default_endpoint)

    def source_pod(self, cell: CellKey) -> PodRef:
        """The pod a cell's connection starts in: a client, or the server itself for in-pod paths."""
        if cell.path.from_other_pod:
            assert cell.client is not None
            return self.clients[cell.client]
        return self.server_for(cell)

    def endpoint_of(self, server: PodRef) -> DefaultEndpoint:
        """The Sidecar situation of a meshed server (NONE for the baseline server and the capture servers)."""
        for endpoint in self.mesh_endpoints:
            if server in (self.mesh_server(endpoint), self.ambient_server(endpoint)):
                return endpoint
        for endpoint in self.tproxy_endpoints:
            if server == self.tproxy_server(endpoint):
                return endpoint
        return DefaultEndpoint.NONE

    # --- manifests ---------------------------------------------------------------------------------------

    def manifests(self) -> list[Manifest]:
        """Every object, in apply order: namespaces, then per namespace Deployments, Services, Sidecars."""
        out: list[Manifest] = [
            namespace_manifest(NS_BASELINE, injected=False),
            namespace_manifest(NS_MESH, injected=True),
            *(
                [enrolled_namespace_manifest(NS_AMBIENT), namespace_manifest(NS_LATE, injected=False)]
                if self.ambient
                else []
            ),
            self.deployment(self.BASELINE_SERVER, self.server_ports),
            self.service(self.BASELINE_SERVER),
            self.deployment(self.clients[Client.PLAIN], ()),
        ]
        for endpoint in self.mesh_endpoints:
            server = self.mesh_server(endpoint)
            out += [self.deployment(server, self.server_ports), self.service(server)]
            if endpoint is not DefaultEndpoint.NONE:
                out.append(self._sidecar(server, endpoint))
        for capture in self.captures:
            server = self.capture_server(capture)
            out += [
                self.deployment(server, self.server_ports, capture_annotations(capture, self.family)),
                self.service(server),
            ]
            out.append(plaintext_destination_rule(server))
        for endpoint in self.tproxy_endpoints:
            server = self.tproxy_server(endpoint)
            tproxy = {INTERCEPTION_ANNOTATION: "TPROXY"}
            out += [self.deployment(server, self.server_ports, tproxy), self.service(server)]
            if endpoint is not DefaultEndpoint.NONE:
                out.append(self._sidecar(server, endpoint))
        out.append(self.deployment(self.clients[Client.MESHED], ()))
        out += self.probe_manifests()
        if self.ambient:
            for endpoint in self.mesh_endpoints:
                server = self.ambient_server(endpoint)
                out += [self.deployment(server, self.server_ports), self.service(server)]
                if endpoint is not DefaultEndpoint.NONE:
                    out.append(self._sidecar(server, endpoint))
            out.append(self.deployment(self.clients[Client.AMBIENT], ()))
            out += [
                self.deployment(self.LATE_SERVER, self.server_ports),
                self.service(self.LATE_SERVER),
            ]
        return out

    def service(self, server: PodRef) -> Manifest:
        """A server's Service: RequireDualStack on dual-stack pods, so that it has a ClusterIP of each family."""
        return service_manifest(server, self.server_ports, dual=self.family is IpFamily.DUAL)

    @property
    def server_ports(self) -> tuple[EchoPort, ...]:
        """The ports every server of this family serves (`ports.server_ports`)."""
        return server_ports(self.family)

    def probe_manifests(self) -> list[Manifest]:
        """The probe pods and their Services (baseline, and in the mesh one pod per rewrite setting)."""
        return probe_manifests(lambda ref: self.deployment(ref, ()), self.ambient, self.family)

    def deployment(
        self, ref: PodRef, ports: tuple[EchoPort, ...], annotations: dict[str, str] | None = None
    ) -> Manifest:
        """An echo Deployment serving `ports`, with the downward-API env and annotations.

        Every pod leaves the control port out of capture; `annotations` (a capture setting's, TPROXY's) go over that.
        """
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
                        "annotations": {**capture_annotations(InboundCapture.ALL, self.family), **(annotations or {})},
                    },
                    "spec": {"terminationGracePeriodSeconds": 2, "containers": [container]},
                },
            },
        }

    def _sidecar(self, server: PodRef, endpoint: DefaultEndpoint) -> Manifest:
        localhost_form = OVERRIDES_BY_FAMILY[self.primary_family][0]
        if endpoint is DefaultEndpoint.UNLISTED:
            listed = [(ANCHOR_PORT, localhost_form.for_port(ANCHOR_PORT.number))]
        else:
            listed = [(p, endpoint.for_port(p.number)) for p in family_test_ports(self.family) if p.declared]
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


def service_manifest(server: PodRef, ports: tuple[EchoPort, ...], *, dual: bool = False) -> Manifest:
    """The ClusterIP Service of a server: every declared port of `ports`, named for Istio's protocol selection.

    `dual`: `ipFamilyPolicy: RequireDualStack` with both families (Kubernetes 1.20+), a ClusterIP of each, as a
    dual-stack run dials the Service in the client's family.
    """
    # Service port == container port for the `declared` ports: an HTTP Service port then has the same number on
    # the pod, so a meshed client dialling the pod IP directly meets the same outbound HTTP listener as one
    # dialling the ClusterIP. The `remapped` ports differ on purpose (port = targetPort + 10000).
    families = {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]} if dual else {}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": server.app, "namespace": server.namespace, "labels": {"app": server.app}},
        "spec": {
            **families,
            "selector": {"app": server.app},
            "ports": [
                {
                    "name": p.name,
                    "port": p.service_port or p.number,
                    "targetPort": p.number,
                    "protocol": "TCP",
                    "appProtocol": p.protocol.value,
                }
                for p in ports
                if p.declared
            ],
        },
    }
