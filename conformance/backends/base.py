"""The one small interface every backend implements, and the values that cross it.

A conformance test never asks which backend it runs on: it asks a `Cluster` for addresses, hands it probe
requests and reads back the echo program's JSON results, the request record and a precheck run.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from conformance.backends.precheck import PrecheckRun
from conformance.world.pods import PodRef

Manifest = Mapping[str, object]


class BackendError(RuntimeError):
    """A backend could not do what was asked; the message is one line saying what and why."""


class PrerequisiteError(BackendError):
    """The machine lacks something the backend needs (root, iptables, docker...): says what and how to get it."""


@dataclass(frozen=True)
class ProbeRequest:
    """Dial `protocol://address:port` from inside pod `source`, tagging the request with `request_id`."""

    source: PodRef
    protocol: str
    address: str
    port: int
    request_id: str

    def target_json(self) -> dict[str, object]:
        """The target in the echo program's batch format."""
        return {"protocol": self.protocol, "address": self.address, "port": self.port, "request_id": self.request_id}


def by_source(requests: Sequence[ProbeRequest]) -> dict[PodRef, list[int]]:
    """The indexes of the requests, per pod they start in: every backend dials one batch per source pod."""
    groups: dict[PodRef, list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(request.source, []).append(index)
    return groups


@dataclass(frozen=True)
class ContainerReadiness:
    """A container's readiness as the cluster reports it (kubelet's containerStatuses[].ready)."""

    ready: bool
    settled: bool
    """The backend saw enough probes for `ready` to be the verdict, not the initial state."""
    detail: str = ""
    since: float | None = None
    """Wall-clock time (epoch seconds) the container's probing last (re)started, when the backend knows it:
    connections the app recorded before it belong to an earlier mesh mode (or an earlier run of the container)."""
    restarts: int = 0
    """How many times the kubelet restarted the container (containerStatuses[].restartCount): a failed liveness
    or startup probe restarts it again and again."""


@dataclass(frozen=True)
class ProcessDeath:
    """A process of the build under test (a sidecar, a ztunnel) that exited while the run still needed it."""

    process: str
    """Which, and whose: `sidecar of client.mic-mesh`, `ztunnel (node)`."""
    status: str
    """How it ended: `exit status 124`, `signal 9 (SIGKILL)`."""
    pods: tuple[PodRef, ...]
    """The pods whose traffic it carried: cells involving them are void while it is dead."""
    log_tail: tuple[str, ...]
    """Its log's last lines, read when the death was noticed."""
    key: str
    """Tells two deaths apart (a restarted sidecar can die again): the same death keeps its key."""
    ongoing: bool = field(default=True, compare=False)
    """The dead process is still the one in place (not replaced by a restart)."""

    @property
    def summary(self) -> str:
        """One line: `sidecar of client.mic-mesh died (exit status 124)`."""
        return f"{self.process} died ({self.status})"


class Cluster(abc.ABC):
    """A place where the world's workloads run, with the mesh under test installed."""

    backend: str
    family: str

    @abc.abstractmethod
    def up(self, manifests: Sequence[Manifest]) -> None:
        """Create (or reuse) the cluster, install the mesh, deploy the manifests and wait until ready."""

    @property
    @abc.abstractmethod
    def inbound_mode(self) -> str:
        """The mesh-wide inbound setting in force: `passthrough` or `legacy`."""

    @abc.abstractmethod
    def set_inbound_mode(self, mode: str) -> None:
        """Switch the mesh to `passthrough` or `legacy` in place, and wait until the proxies have it."""

    def use_profile(self, profile: str, mode: str) -> bool:
        """Ready the mesh for the cells of `profile`, with `mode` as the mesh-wide inbound setting; whether it changed.

        Here one install serves every profile. The kind backend overrides it: it installs the sidecar profiles'
        mesh and ambient's apart (each as its users run it) and switches between them.
        """
        if self.inbound_mode == mode:
            return False
        self.set_inbound_mode(mode)
        return True

    @abc.abstractmethod
    def mesh_info(self) -> dict[str, str]:
        """What mesh is under test: name, version, build, hub, tag (for the report)."""

    @abc.abstractmethod
    def pod_ip(self, pod: PodRef, family: str | None = None) -> str:
        """The pod's IP of `family` (`ipv4` / `ipv6`); None: the run's family, or the primary one (IPv4) on dual.

        A dual-stack cell dials, and names its client by, the address of its client family.
        """

    @abc.abstractmethod
    def service_ip(self, namespace: str, name: str, family: str | None = None) -> str:
        """A Service's ClusterIP of `family` (None: as for `pod_ip`)."""

    @abc.abstractmethod
    def probe(self, requests: Sequence[ProbeRequest], timeout: float) -> list[dict[str, object]]:
        """Run the probes (concurrently where possible); the echo program's result objects, in order."""

    @abc.abstractmethod
    def request_record(self, pod: PodRef, request_ids: Sequence[str]) -> list[dict[str, object]]:
        """The requests with these ids that the pod's echo program recorded (the proof of (non-)arrival)."""

    @abc.abstractmethod
    def precheck(self, namespace: str) -> PrecheckRun:
        """The localhost precheck over the namespace's meshed pods."""

    @abc.abstractmethod
    def diagnostics(self, pods: Sequence[PodRef]) -> dict[str, str]:
        """What the backend knows about these pods, titled, for a failed test's report and artifacts."""

    @abc.abstractmethod
    def down(self) -> None:
        """Remove everything the backend created (unless told to keep it); safe to call twice."""

    def deaths(self) -> list[ProcessDeath]:
        """Every process of the build under test that has died so far in the run, oldest first, each once.

        Not abstract: a backend that cannot tell (or whose platform restarts them) reports none.
        """
        return []

    # Probe support (issue 11). Not abstract, so a backend without it still loads; it says so in one line.

    def container_readiness(self, pod: PodRef) -> dict[str, ContainerReadiness]:
        """Each probed container of the pod, by name: Ready or not, and whether that is settled."""
        raise BackendError(f"the {self.backend} backend does not report container readiness")

    def probe_connections(self, pod: PodRef, container: str, after: int = 0) -> list[dict[str, object]]:
        """The connections the container's echo program recorded (with peers), sequence numbers above `after`."""
        raise BackendError(f"the {self.backend} backend does not read probe connections")

    def enrol(self, namespace: str) -> None:
        """Enrol a running namespace in ambient (`istio.io/dataplane-mode=ambient`) and wait until its pods are.

        The pods keep running (istio-cni enrols running pods; no restart): the late-enrolment cells ask them next.
        """
        raise BackendError(f"the {self.backend} backend cannot enrol a namespace while it runs")
