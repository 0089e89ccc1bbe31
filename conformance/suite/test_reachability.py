"""Reachability from another pod, by pod IP and by Service, from plain and meshed clients (no Sidecar resource).

Judges whether the app was reached and, if not, whether the failure has the allowed form (refused without a
proxy on the path; 503 or a close behind one). The source address is judged in test_source_address.
"""

from __future__ import annotations

from conformance.spec.dimensions import Client, DefaultEndpoint, InboundCapture, Path
from conformance.suite.cases import ConformanceCase
from conformance.suite.checks import ConformanceRun


def _from(path: Path, client: Client) -> ConformanceCase:
    words = {Path.POD_IP: "PodIP", Path.SERVICE: "Service"}
    return ConformanceCase(
        name=f"{words[path]}From{client.value.capitalize()}Client",
        description=f"A {client.value} client pod dials the server's {path.value.replace('_', ' ')}; "
        "each bind, declared and undeclared ports, HTTP and TCP.",
        select=lambda c: (
            c.path is path
            and c.client is client
            and c.default_endpoint is DefaultEndpoint.NONE
            and c.capture is InboundCapture.ALL  # the uncaptured servers: test_capture
        ),
        part="reachability",
    )


CASES = tuple(_from(path, client) for path in (Path.POD_IP, Path.SERVICE) for client in Client)


def test_reachability(conformance: ConformanceRun, case: ConformanceCase) -> None:
    """The app is reached exactly where the spec says, and fails the allowed way elsewhere."""
    conformance.check_cells(case)
