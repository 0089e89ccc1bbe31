"""The source address the app sees on connections from other pods.

The client IP without a sidecar, 127.0.0.6 / ::6 through 1.10 passthrough, 127.0.0.1 / ::1 through legacy, the
client IP under ambient (from plain, sidecar and ambient clients alike).
"""

from __future__ import annotations

from conformance.spec.dimensions import DefaultEndpoint, InboundCapture
from conformance.suite.cases import ConformanceCase
from conformance.suite.checks import ConformanceRun

CASES = (
    ConformanceCase(
        name="SourceAddressFromOtherPods",
        description="For every cell where another pod reaches the app, the peer the app sees has the "
        "expected meaning (client, inbound_passthrough, localhost).",
        select=lambda c: (
            c.path.from_other_pod
            and c.default_endpoint is DefaultEndpoint.NONE
            and c.capture is InboundCapture.ALL  # the uncaptured servers: test_capture
        ),
        reached=True,
        part="source",
    ),
)


def test_source_address(conformance: ConformanceRun, case: ConformanceCase) -> None:
    """The peer address seen by the app matches the spec."""
    conformance.check_cells(case)
