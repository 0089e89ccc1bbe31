"""Kubelet health probes: readiness per cell, who the app saw probing it, and "Ready means reachable".

The probe pods carry one probed container per bind and probe kind (`world.PROBED_CONTAINERS`); in the mesh one
pod has its probes rewritten by the injector and one opts out (`sidecar.istio.io/rewriteAppHTTPProbers:
"false"`). The facts are `conformance.spec.probes` (probes reference section 1).
"""

from __future__ import annotations

import time

from conformance.suite.cases import ConformanceCase
from conformance.suite.checks import ConformanceRun
from conformance.suite.probe_checks import (
    ProbeCase,
    check_readiness,
    check_ready_means_reachable,
    check_source,
    probe_case,
)

CASES = (
    probe_case(
        "ProbeReadiness",
        "Each probed container (bind x httpGet/tcpSocket x rewrite on/off) is Ready exactly where the spec says.",
        part="probe_ready",
    ),
    probe_case(
        "ProbeSource",
        "The app saw its probes from kubelet's node address, 127.0.0.6 / ::6 or localhost, as the spec says; "
        "where the probe cannot reach the app, it saw none.",
        part="probe_source",
    ),
    probe_case(
        "ReadyMeansReachable",
        "A Ready container is reachable on its probed port from another pod; the false-Ready cells (an "
        "unrewritten TCP probe passing at the sidecar) are listed as warnings.",
        part="ready_reachable",
    ),
)

_CHECKS = {"probe_ready": check_readiness, "probe_source": check_source, "ready_reachable": check_ready_means_reachable}


def test_probes(conformance: ConformanceRun, case: ConformanceCase) -> None:
    """Judge the case's part of every probe cell of the profile."""
    assert isinstance(case, ProbeCase)
    timings = conformance.session.report.timings
    start, switches = time.perf_counter(), timings.get("profile_switches", 0.0)
    try:
        _CHECKS[case.part](conformance, case)
    finally:
        # A profile switch made by the check is counted under profile_switches, not twice.
        spent = time.perf_counter() - start - (timings.get("profile_switches", 0.0) - switches)
        timings["health_probes"] = timings.get("health_probes", 0.0) + spent
