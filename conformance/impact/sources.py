"""The one small interface between `impact` and a cluster, and the run that drives it.

A source lists pods and Services (`inventory`) and reads one pod's listeners (`read_listeners`). Everything
else (which pods to check, which ports, what a listener means, progress, the bound on parallel reads) is the
same code for every source: `check`.
"""

from __future__ import annotations

import abc
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from conformance.backends.precheck import Listener
from conformance.impact.analysis import PodInfo, PortFinding, ServiceInfo, analyse, mesh_mode, targeted_ports


class BadInput(ValueError):
    """What the user asked for cannot be read (kubeconfig, context, namespace, selector): one line, exit 2."""


class Unchecked(RuntimeError):
    """A pod's listeners could not be read; the message is the reason, printed with the pod."""


@dataclass(frozen=True)
class Inventory:
    """The pods (after namespace and label selection) and every Service of their namespaces."""

    pods: tuple[PodInfo, ...]
    services: tuple[ServiceInfo, ...]
    namespaces: tuple[str, ...]
    """The namespaces looked at (every namespace when the user asked for all)."""


@dataclass(frozen=True)
class ListenerRead:
    """A pod's listening TCP sockets, and how they were read (for the report)."""

    listeners: tuple[Listener, ...]
    via: str


class ImpactSource(abc.ABC):
    """Where pods, Services and listeners come from."""

    description: str
    """One line naming the cluster (kubeconfig context, or `emulated ipv4`), for the report."""

    @abc.abstractmethod
    def inventory(self, namespaces: Sequence[str] | None, selector: str | None) -> Inventory:
        """Pods of `namespaces` (None: all) matching `selector`, and those namespaces' Services; BadInput."""

    @abc.abstractmethod
    def read_listeners(self, pod: PodInfo) -> ListenerRead:
        """The listeners of the pod's network namespace, or Unchecked with the reason."""


@dataclass
class PodResult:
    """One pod that a Service selects: its mode, the ports targeted, and the findings or why it was not checked."""

    pod: PodInfo
    mode: str
    targeted: tuple[int, ...]
    findings: list[PortFinding] = field(default_factory=list)
    unchecked: str | None = None
    via: str = ""


@dataclass
class ImpactReport:
    """The outcome of one `impact` run."""

    source: str
    namespaces: tuple[str, ...]
    selector: str | None
    pods_seen: int
    results: list[PodResult]

    @property
    def findings(self) -> list[PortFinding]:
        """Every finding, sorted by namespace, pod, port."""
        return sorted(f for r in self.results for f in r.findings)

    @property
    def unchecked(self) -> list[PodResult]:
        """The pods whose listeners could not be read."""
        return [r for r in self.results if r.unchecked is not None]

    @property
    def exit_code(self) -> int:
        """3 when a pod could not be checked (the answer is incomplete), else 1 on findings, else 0."""
        if self.unchecked:
            return 3
        return 1 if self.findings else 0


Progress = Callable[[str], None]


def stderr_progress(message: str) -> None:
    """Progress for people watching a large cluster: one line per step on stderr."""
    print(f"impact: {message}", file=sys.stderr, flush=True)


def plan(inventory: Inventory) -> list[PodResult]:
    """The pods some Service selects (with the ports targeted), sorted; no listener read yet."""
    results = []
    for pod in sorted(inventory.pods, key=lambda p: (p.namespace, p.name)):
        targeted = targeted_ports(pod, inventory.services)
        if not any(s.selects(pod) for s in inventory.services):
            continue
        results.append(PodResult(pod, mesh_mode(pod), tuple(t.port for t in targeted)))
    return results


def check(
    source: ImpactSource,
    inventory: Inventory,
    selector: str | None = None,
    parallel: int = 8,
    progress: Progress | None = None,
) -> ImpactReport:
    """Read the listeners of every pod a Service selects, at most `parallel` at a time, and analyse them."""
    results = plan(inventory)
    say = progress or (lambda _message: None)
    say(f"{len(results)} of {len(inventory.pods)} pods are selected by a Service; reading their listeners")
    done = 0
    lock = threading.Lock()

    def one(result: PodResult) -> None:
        nonlocal done
        if result.pod.phase != "Running":
            result.unchecked = f"pod is {result.pod.phase}, not Running: its listeners cannot be read"
        else:
            try:
                read = source.read_listeners(result.pod)
            except Unchecked as err:
                result.unchecked = str(err)
            else:
                result.via = read.via
                targeted = targeted_ports(result.pod, inventory.services)
                result.findings = analyse(result.pod, targeted, read.listeners)
        with lock:
            done += 1
            if done % 25 == 0 or done == len(results):
                say(f"{done}/{len(results)} pods read")

    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="impact") as pool:
        for _ in pool.map(one, results):
            pass
    return ImpactReport(source.description, inventory.namespaces, selector, len(inventory.pods), results)
