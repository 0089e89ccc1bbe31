"""The health-probe pods (issue 11): kubelet probes of every bind, with and without the injector's rewrite.

One probe pod without a sidecar (baseline), two in the mesh (rewrite on, rewrite off), one enrolled in ambient.
Each runs the world's echo container (its control port) and one probed container per bind x probe kind, each
with an echo port that kubelet probes and a control port of its own. A probe cell is asked of one container of
one pod (`probe_pod`, `probed_container`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from conformance.spec.dimensions import Bind, Profile, Protocol
from conformance.spec.probes import ProbeCellKey, ProbeKind
from conformance.world.namespaces import NS_AMBIENT, NS_BASELINE, NS_MESH, Manifest
from conformance.world.pods import PodRef
from conformance.world.ports import CONTROL_PORT, EXCLUDE_INBOUND_ANNOTATION, EchoPort

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


def probe_manifests(echo_deployment: Callable[[PodRef], Manifest], ambient: bool) -> list[Manifest]:
    """The probe pods and their Services, each pod built on the world's echo Deployment (`echo_deployment`)."""
    out: list[Manifest] = []
    for ref, rewrite in probe_pods_of(ambient=ambient):
        deployment = echo_deployment(ref)
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
