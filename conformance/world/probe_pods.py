"""The health-probe pods (issue 11): kubelet probes of every bind, with and without the injector's rewrite.

One probe pod without a sidecar (baseline), two in the mesh (rewrite on, rewrite off), one enrolled in ambient.
Each runs the world's echo container (its control port) and one probed container per bind x probe kind x use
(a readiness probe, httpGet and tcpSocket; a liveness probe, a startup probe, httpGet: issue 22 item 3), each with
an echo port that kubelet probes and a control port of its own. A probe cell is asked of one container of one pod
(`probe_pod`, `probed_container`). The binds are the family's (`spec.probes.probe_binds`): a dual-stack world's
probe pods carry a `dual_wildcard` container of each kind and use too (`probed_containers`), whose ports come
after the three others' (last digit 4, control ports after theirs), so a single-stack pod is as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from conformance.spec.dimensions import ONE_FAMILY_BINDS, Bind, IpFamily, Profile, Protocol
from conformance.spec.dualstack import probe_binds
from conformance.spec.probes import PROBE_KINDS_OF_USE, ProbeCellKey, ProbeKind, ProbeUse
from conformance.world.namespaces import NS_AMBIENT, NS_BASELINE, NS_MESH, Manifest
from conformance.world.pods import PodRef
from conformance.world.ports import CONTROL_PORT, EXCLUDE_INBOUND_ANNOTATION, EchoPort

PROBE_REWRITE_ANNOTATION = "sidecar.istio.io/rewriteAppHTTPProbers"
PROBE_POD_LABEL = "mesh-inbound-conformance/probe-pod"
"""Marks the probe pods, whose probed containers may never be Ready by design: a backend waits for their
`echo` container only (the one carrying the control port)."""
PROBE_PERIOD_SECONDS = 1
"""The shortest period Kubernetes allows: with thresholds of 1 a readiness cell settles within ~2 s on a cluster."""
RESTART_FAILURE_THRESHOLD = 2
"""failureThreshold of the liveness and startup probes: a restart cannot be undone, so one slow answer of a correct
proxy must not cause one; two failures in a row (~1 s at a period of 1 s) do. Kubernetes' default, 3, would
cost every run more waiting before the restarts can be judged (~0.6 s on 2026-12-06, with the restart checks
already after the traffic: legacy's come soon after the switch that restarted its pods)."""


@dataclass(frozen=True)
class ProbedContainer:
    """One probed container of a probe pod: one echo port (bind x probe kind x use) and a control port of its own."""

    bind: Bind
    probe: ProbeKind
    port: int
    control_port: int
    use: ProbeUse = ProbeUse.READINESS

    @property
    def name(self) -> str:
        """The container name; matches `ProbeCellKey.container`."""
        base = f"{self.bind.value.replace('_', '-')}-{self.probe.value}"
        return base if self.use is ProbeUse.READINESS else f"{base}-{self.use.value}"

    @property
    def may_restart(self) -> bool:
        """The kubelet restarts it where its probe fails: between runs it listens nowhere.

        So the precheck and `impact`, which read listeners, neither require nor forbid a finding on its port.
        """
        return self.use is not ProbeUse.READINESS

    @property
    def echo_port(self) -> EchoPort:
        """The echo port the container serves (declared in the probe pod's Service)."""
        protocol = Protocol.HTTP if self.probe is ProbeKind.HTTP else Protocol.TCP
        return EchoPort(self.port, self.bind, protocol, declared=True, role=self.name)


_FIRST_PORT = {
    (ProbeUse.READINESS, ProbeKind.HTTP): 8381,
    (ProbeUse.READINESS, ProbeKind.TCP): 9381,
    (ProbeUse.LIVENESS, ProbeKind.HTTP): 8391,
    (ProbeUse.STARTUP, ProbeKind.HTTP): 8371,
}
"""Readiness 838x http, 938x tcp; liveness 839x, startup 837x; the last digit by bind."""

_KINDS_OF_USE = tuple((use, k) for use in ProbeUse for k in PROBE_KINDS_OF_USE[use])

PROBED_CONTAINERS: tuple[ProbedContainer, ...] = tuple(
    # Control ports from 19001 on (excluded from capture): readiness 19001-19006 as before, then the others.
    ProbedContainer(b, k, _FIRST_PORT[use, k] + i, CONTROL_PORT + 1 + 3 * j + i, use)
    for j, (use, k) in enumerate(_KINDS_OF_USE)
    for i, b in enumerate(ONE_FAMILY_BINDS)
)
"""The probed containers of a single-stack world (three binds)."""

DUAL_WILDCARD_CONTAINERS: tuple[ProbedContainer, ...] = tuple(
    # Ports 8384, 9384, 8394, 8374 (last digit 4, as the servers' dual_wildcard ports); control ports after the
    # single-stack ones (19013-19016).
    ProbedContainer(
        Bind.DUAL_WILDCARD,
        k,
        _FIRST_PORT[use, k] + len(ONE_FAMILY_BINDS),
        CONTROL_PORT + 1 + len(PROBED_CONTAINERS) + j,
        use,
    )
    for j, (use, k) in enumerate(_KINDS_OF_USE)
)
"""The `dual_wildcard` containers a dual-stack world's probe pods carry besides (`probed_containers`)."""


def probed_containers(family: IpFamily) -> tuple[ProbedContainer, ...]:
    """The probed containers of a world of `family`: one per bind the family asks probe cells of (`probe_binds`)."""
    every = (*PROBED_CONTAINERS, *DUAL_WILDCARD_CONTAINERS)
    return tuple(c for c in every if c.bind in probe_binds(family))


def probed_container(cell: ProbeCellKey) -> ProbedContainer:
    """The container a probe cell is asked of."""
    for container in probed_containers(cell.ip_family):
        if (container.bind, container.probe, container.use) == (cell.bind, cell.probe, cell.use):
            return container
    raise LookupError(f"no probed container for {cell.id}")


def restartable_ports(family: IpFamily = IpFamily.IPV4) -> frozenset[int]:
    """The probed ports of containers the kubelet may restart (see `ProbedContainer.may_restart`)."""
    return frozenset(c.port for c in probed_containers(family) if c.may_restart)


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


def probe_manifests(
    echo_deployment: Callable[[PodRef], Manifest], ambient: bool, family: IpFamily = IpFamily.IPV4
) -> list[Manifest]:
    """The probe pods and their Services, each pod built on the world's echo Deployment (`echo_deployment`).

    A dual-stack world's probe pods have the `dual_wildcard` containers too, and their Services a ClusterIP of
    each family (RequireDualStack, as every Service of that world).
    """
    out: list[Manifest] = []
    probed = probed_containers(family)
    for ref, rewrite in probe_pods_of(ambient=ambient):
        deployment = echo_deployment(ref)
        template = deployment["spec"]["template"]  # type: ignore[index]
        labels = template["metadata"]["labels"]
        labels[PROBE_POD_LABEL] = "true"
        deployment["metadata"]["labels"][PROBE_POD_LABEL] = "true"  # type: ignore[index]
        annotations = template["metadata"]["annotations"]
        controls = [CONTROL_PORT, *(c.control_port for c in probed)]
        annotations[EXCLUDE_INBOUND_ANNOTATION] = ",".join(str(p) for p in controls)
        if rewrite is False:
            annotations[PROBE_REWRITE_ANNOTATION] = "false"
        containers = template["spec"]["containers"]
        main = containers[0]
        containers += [_probed_container_manifest(main, c) for c in probed]
        out.append(deployment)
        out.append(_probe_service(ref, probed, dual=family is IpFamily.DUAL))
    return out


_APP_PATH = {ProbeUse.READINESS: "/readyz", ProbeUse.LIVENESS: "/livez", ProbeUse.STARTUP: "/startupz"}
_PROBE_FIELD = {
    ProbeUse.READINESS: "readinessProbe",
    ProbeUse.LIVENESS: "livenessProbe",
    ProbeUse.STARTUP: "startupProbe",
}


def _probed_container_manifest(base: dict[str, object], container: ProbedContainer) -> dict[str, object]:
    """The container with its one probe.

    A liveness-probed container has no readiness probe (Ready while it runs), a startup-probed one neither (Ready
    once the startup probe passed).
    """
    probe: dict[str, object]
    if container.probe is ProbeKind.HTTP:
        probe = {"httpGet": {"path": _APP_PATH[container.use], "port": container.port}}
    else:
        probe = {"tcpSocket": {"port": container.port}}
    threshold = 1 if container.use is ProbeUse.READINESS else RESTART_FAILURE_THRESHOLD
    probe.update(
        {
            "periodSeconds": PROBE_PERIOD_SECONDS,
            "timeoutSeconds": 1,
            "successThreshold": 1,
            "failureThreshold": threshold,
        }
    )
    # A deep copy: shared sub-objects would be dumped as YAML anchors, which strict readers refuse. The echo
    # container's own probes are not the probed container's.
    fields = {k: v for k, v in copy.deepcopy(base).items() if k not in _PROBE_FIELD.values()}
    return {
        **fields,
        "name": container.name,
        "args": ["serve", "--control-port", str(container.control_port), container.echo_port.spec],
        "ports": [{"name": f"p-{container.port}", "containerPort": container.port, "protocol": "TCP"}],
        _PROBE_FIELD[container.use]: probe,
    }


def _probe_service(ref: PodRef, probed: tuple[ProbedContainer, ...], *, dual: bool = False) -> Manifest:
    # The probed ports are declared, so a probe that is not rewritten meets the same inbound cluster as traffic.
    families = {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]} if dual else {}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": ref.app, "namespace": ref.namespace, "labels": {"app": ref.app, PROBE_POD_LABEL: "true"}},
        "spec": {
            **families,
            "selector": {"app": ref.app},
            "ports": [
                {
                    "name": c.echo_port.name,
                    "port": c.port,
                    "targetPort": c.port,
                    "protocol": "TCP",
                    "appProtocol": c.echo_port.protocol.value,
                }
                for c in probed
            ],
        },
    }
