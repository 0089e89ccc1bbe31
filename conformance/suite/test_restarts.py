"""Liveness and startup probes, with restarts (issue 22 item 3): who the kubelet restarts, and who probed the app.

Each probe pod carries, beside its readiness-probed containers, one container per bind with an httpGet liveness
probe and one with an httpGet startup probe (`world.probed_containers`: `dual_wildcard` too on dual-stack pods),
rewritten by the injector to `/app-health/<container>/livez` and `/startupz` like readiness probes. A liveness probe
that fails makes the kubelet restart its container again and again (istio/istio#36894: a loopback-only app after the
1.10 upgrade); a startup probe that fails too, and the container is never Ready; a readiness probe never restarts
anything. The facts are `conformance.spec.probes` (rules probe-rewrite-all-uses, probe-liveness-restarts,
probe-startup-holds, probe-readiness-no-restart). Both cases are asked after a profile's traffic cases
(`after_traffic`), so the kubelet has had the profile's seconds to restart what it restarts before the cells are
asked; baseline's after the default profile's traffic (the plugin's order), its own being too short for that.
"""

from __future__ import annotations

from conformance.suite.cases import ConformanceCase
from conformance.suite.checks import ConformanceRun
from conformance.suite.probe_checks import (
    ProbeCase,
    check_restarts,
    check_source,
    probe_case,
    restart_cells,
    timed_probe_check,
)

CASES = (
    probe_case(
        "ProbeRestarts",
        "Each probed container is restarted exactly where the spec says: again and again where its liveness or "
        "startup probe fails (never Ready, for a startup probe), never for a readiness probe or one that passes.",
        part="probe_restarts",
        after_traffic=True,
    ),
    probe_case(
        "RestartProbeSource",
        "The app saw its liveness and startup probes from the kubelet's node address, 127.0.0.6 / ::6 or localhost, "
        "as for its readiness probes; where the probe cannot reach the app, it saw none.",
        part="probe_source",
        select=restart_cells,
        after_traffic=True,
    ),
)

_CHECKS = {"probe_restarts": check_restarts, "probe_source": check_source}


def test_restarts(conformance: ConformanceRun, case: ConformanceCase) -> None:
    """Judge the case's part of every probe cell of the profile."""
    assert isinstance(case, ProbeCase)
    timed_probe_check(conformance, case, _CHECKS[case.part])
