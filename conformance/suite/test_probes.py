"""Kubelet health probes: readiness per cell, who the app saw probing it, and "Ready means reachable".

The probe pods carry one probed container per bind and probe kind (`world.probed_containers`: `dual_wildcard` too on
dual-stack pods); in the mesh one pod has its probes rewritten by the injector and one opts out
(`sidecar.istio.io/rewriteAppHTTPProbers: "false"`). The facts are `conformance.spec.probes` (probes reference
section 1). These cases ask the readiness cells; the liveness and startup cells (restarts) are test_restarts.py's.
"""

from __future__ import annotations

from conformance.suite.cases import ConformanceCase
from conformance.suite.checks import ConformanceRun
from conformance.suite.probe_checks import (
    ProbeCase,
    check_readiness,
    check_ready_means_reachable,
    check_source,
    probe_case,
    readiness_cells,
    timed_probe_check,
)

CASES = (
    probe_case(
        "ProbeReadiness",
        "Each probed container (bind x httpGet/tcpSocket x rewrite on/off) is Ready exactly where the spec says.",
        part="probe_ready",
        select=readiness_cells,
    ),
    probe_case(
        "ProbeSource",
        "The app saw its probes from kubelet's node address, 127.0.0.6 / ::6 or localhost, as the spec says; "
        "where the probe cannot reach the app, it saw none.",
        part="probe_source",
        select=readiness_cells,
    ),
    probe_case(
        "ReadyMeansReachable",
        "A Ready container is reachable on its probed port from another pod; the false-Ready cells (an "
        "unrewritten TCP probe passing at the sidecar) are listed as warnings.",
        part="ready_reachable",
        select=readiness_cells,
    ),
)

_CHECKS = {"probe_ready": check_readiness, "probe_source": check_source, "ready_reachable": check_ready_means_reachable}


def test_probes(conformance: ConformanceRun, case: ConformanceCase) -> None:
    """Judge the case's part of every probe cell of the profile."""
    assert isinstance(case, ProbeCase)
    timed_probe_check(conformance, case, _CHECKS[case.part])
