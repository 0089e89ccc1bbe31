"""Inside the pod: localhost and the pod's own IP are never captured (reference section 5).

So they behave exactly as the bind allows, in every profile and whatever the Sidecar resource says.
"""

from __future__ import annotations

from conformance.spec.dimensions import Path
from conformance.suite.cases import ConformanceCase
from conformance.suite.checks import ConformanceRun

CASES = (
    ConformanceCase(
        name="LocalhostInPod",
        description="A process in the server pod dials 127.0.0.1 / ::1: loopback and wildcard binds answer, "
        "seeing localhost; a pod-IP bind refuses.",
        select=lambda c: c.path is Path.LOCALHOST,
    ),
    ConformanceCase(
        name="OwnPodIPInPod",
        description="A process in the server pod dials its own pod IP: pod-IP and wildcard binds answer, "
        "seeing the pod IP; a loopback bind refuses.",
        select=lambda c: c.path is Path.SELF_POD_IP,
    ),
)


def test_in_pod(conformance: ConformanceRun, case: ConformanceCase) -> None:
    """In-pod reachability and source match the bind, untouched by the mesh."""
    conformance.check_cells(case)
