"""Ambient mode has no inbound override (probes-ambient.md §2 "No override", reference §8).

Under ambient the Sidecar resources stay applied in the enrolled namespace and the mesh keeps the LOCALHOST
inbound setting while these cells run: neither brings a loopback-only app back, which is what breaks an app
that relied on LOCALHOST mode when it moves to ambient.
"""

from __future__ import annotations

from conformance.spec.dimensions import DefaultEndpoint, Profile
from conformance.suite.cases import ConformanceCase
from conformance.suite.checks import ConformanceRun

CASES = (
    ConformanceCase(
        name="AmbientIgnoresSidecarOverrides",
        description="A Sidecar selecting an enrolled pod (defaultEndpoint 127.0.0.1:P / [::1]:P, 0.0.0.0:P / "
        "[::]:P, or listing other ports), with the mesh in LOCALHOST mode: a loopback-only app stays unreachable "
        "(reset/EOF or 503, never refused), pod-IP and wildcard apps are reached and see the client pod's IP "
        "(from plain, sidecar and ambient clients).",
        select=lambda c: (
            c.profile is Profile.AMBIENT and c.path.from_other_pod and c.default_endpoint is not DefaultEndpoint.NONE
        ),
    ),
)


def test_ambient_override(conformance: ConformanceRun, case: ConformanceCase) -> None:
    """The override changes nothing under ambient."""
    conformance.check_cells(case)
