"""Ports left out of the sidecar's inbound capture (settings-dualstack.md §3; rules in `conformance.spec.capture`).

A meshed server whose test ports are all excluded (`traffic.sidecar.istio.io/excludeInboundPorts`), and one with no
inbound capture at all (`includeInboundPorts: ""`): traffic to those ports never meets the server's proxy, so each
cell is what the same cell of profile baseline is. A DestinationRule turns auto-mTLS off for each server's host
(istio/istio#30311), as Istio documents.
"""

from __future__ import annotations

from conformance.spec.dimensions import UNCAPTURED, InboundCapture
from conformance.suite.cases import ConformanceCase
from conformance.suite.checks import ConformanceRun

_DESCRIPTIONS = {
    InboundCapture.EXCLUDED: "excludeInboundPorts lists every test port (include `*`)",
    InboundCapture.NOT_INCLUDED: 'includeInboundPorts is "" (no inbound capture)',
}
_NAMES = {InboundCapture.EXCLUDED: "ExcludedPortsSkipTheProxy", InboundCapture.NOT_INCLUDED: "NoInboundCapture"}


def _case(capture: InboundCapture) -> ConformanceCase:
    return ConformanceCase(
        name=_NAMES[capture],
        description=f"A meshed server whose {_DESCRIPTIONS[capture]}: from another pod every port behaves as without "
        "a sidecar in the server (the client's IP; a loopback-only app refuses a plain client, and a meshed "
        "client's own sidecar answers 503 or resets).",
        select=lambda c: c.capture is capture,
    )


CASES = tuple(_case(capture) for capture in UNCAPTURED)


def test_uncaptured_ports(conformance: ConformanceRun, case: ConformanceCase) -> None:
    """Uncaptured ports are reached, or fail, exactly as the baseline server's."""
    conformance.check_cells(case)
