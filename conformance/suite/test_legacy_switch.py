"""The legacy switch, where the mesh has one: legacy and back on one install.

Each switch flips exactly the cells the seed describes (loopback apps exposed, pod-IP apps broken).
"""

from __future__ import annotations

from conformance.spec.capabilities import Capability
from conformance.spec.dimensions import DefaultEndpoint, InboundCapture, Path, PortKind
from conformance.suite.cases import ConformanceCase
from conformance.suite.checks import ConformanceRun

CASES = (
    ConformanceCase(
        name="LegacySwitchRoundTrip",
        description="passthrough -> legacy -> passthrough on one install; after each switch the declared ports "
        "reached by pod IP behave as that profile says (PILOT_ENABLE_INBOUND_PASSTHROUGH=false on 1.10-1.20, "
        "meshConfig.inboundTrafficPolicy LOCALHOST from 1.22).",
        select=lambda c: (
            c.path is Path.POD_IP
            and c.port is PortKind.DECLARED
            and c.default_endpoint is DefaultEndpoint.NONE
            and c.capture is InboundCapture.ALL
            and c.profile.value not in ("baseline", "ambient")
        ),
        part="switch",
        needs=frozenset({Capability.LEGACY_SWITCH}),
    ),
)


def test_legacy_switch(conformance: ConformanceRun, case: ConformanceCase) -> None:
    """Each switch takes effect, both ways."""
    conformance.check_switch(case)
