"""`istioctl x precheck`: IST0143 on every loopback-only port that has an inbound cluster, and on no other."""

from __future__ import annotations

from conformance.spec.capabilities import Capability
from conformance.spec.dimensions import Path
from conformance.suite.cases import ConformanceCase
from conformance.suite.checks import ConformanceRun

CASES = (
    ConformanceCase(
        name="LocalhostPrecheck",
        description="The precheck reports IST0143 for each meshed server port that a Service (or the pod's "
        "Sidecar) exposes while the app listens on loopback only, in istioctl's exact format, and nothing else.",
        select=lambda c: c.path is Path.LOCALHOST and c.profile.value not in ("baseline", "ambient"),
        part="precheck",
        needs=frozenset({Capability.PRECHECK_LOCALHOST}),
    ),
)


def test_precheck(conformance: ConformanceRun, case: ConformanceCase) -> None:
    """Findings equal the expected set, exit status follows istioctl's rules."""
    conformance.check_precheck(case)
