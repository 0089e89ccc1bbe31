"""One emulated pod: the record the pods' network and the containers each fill in their part of.

In this emulation a pod is a network namespace with processes in it. network.py makes the namespace, its link
and its address (the fields above the line); containers.py starts and stops what runs in it (the fields
below). Both halves, and the tests, read the pod through this one record, as kubectl reads one Pod object
that the CNI plugin and the kubelet each complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conformance.backends.emulated import kube
from conformance.backends.emulated.processes import Process
from conformance.world.pods import PodRef


@dataclass
class EmulatedPod:
    """One pod: its namespace, address, processes and (if meshed) sidecar configuration."""

    template: kube.PodTemplate
    netns: str
    """The pod's network namespace (network.py)."""
    ip: str
    veth: str
    fd: int = -1
    """An open handle of the namespace, to step into it; -1 once the pod is removed."""
    ips: tuple[str, ...] = ()
    """Every address of the pod, `ip` (the primary, status.podIP) first: one of each family on dual-stack."""
    # --- what runs in it (containers.py) ---
    app: Process | None = None
    sidecar: Process | None = None
    sidecar_config: dict[str, object] = field(default_factory=dict)
    containers: dict[str, Process] = field(default_factory=dict)
    """The pod's other containers (each an echo program in the pod's namespace), by name."""

    def processes(self) -> list[Process]:
        """Every process of the pod: sidecar, app and the other containers."""
        return [p for p in (self.sidecar, self.app, *self.containers.values()) if p is not None]

    def ip_of(self, family: str | None) -> str | None:
        """The pod's address of `family` (`ipv4` / `ipv6`; None: the primary), or None if it has none."""
        if family is None:
            return self.ip
        return next((ip for ip in self.ips or (self.ip,) if (":" in ip) == (family == "ipv6")), None)

    @property
    def ref(self) -> PodRef:
        """How tests name this pod."""
        return PodRef(self.template.namespace, self.template.app)
