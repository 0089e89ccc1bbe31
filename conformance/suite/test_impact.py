"""`impact` against the precheck: every IST0143 the precheck reports, `impact` reports too, plus what it cannot see.

The precheck (istioctl 1.10-1.20 on kind, the suite's own IST0143 checker on the emulated backend) only looks at
ports with an inbound cluster on sidecar pods (tools-versions-ci.md). `impact` looks at every port a Service
targets, on every pod: in the world, that is each server's declared loopback ports, whatever its Sidecar says. On
a dual-stack pod `impact` judges each family apart, and the world binds loopback in both families (127.0.0.1 and
::1): each such port is then reported for both, the truth compared as (app, port) either way.
"""

from __future__ import annotations

import pytest

from conformance.backends.base import BackendError
from conformance.backends.precheck import Finding, render_run
from conformance.impact.analysis import FAMILIES, LOOPBACK_ONLY
from conformance.impact.for_cluster import source_for
from conformance.impact.sources import BadInput, check
from conformance.spec.capabilities import Capability
from conformance.spec.dimensions import MESH_PROFILES, Bind, IpFamily, Path
from conformance.suite.cases import ConformanceCase
from conformance.suite.checks import ConformanceRun
from conformance.world.namespaces import NS_MESH
from conformance.world.probe_pods import probe_pods_of, probed_containers, restartable_ports

CASES = (
    ConformanceCase(
        name="ImpactCoversPrecheck",
        description="`impact` reports every IST0143 the localhost precheck reports, in the same format, and "
        "exactly the world's loopback-only declared ports (including those without an inbound cluster).",
        # The profiles LocalhostPrecheck runs under: the precheck looks at sidecar pods only, and under ambient
        # the meshed namespace is in LOCALHOST mode, so an ambient run would repeat the legacy comparison.
        select=lambda c: c.path is Path.LOCALHOST and c.profile in MESH_PROFILES,
        part="precheck",
        needs=frozenset({Capability.PRECHECK_LOCALHOST}),
    ),
)


def _app(pod: str, apps: list[str]) -> str:
    # kind pod names carry a ReplicaSet hash and a suffix; the emulated ones `-0`.
    return next((a for a in sorted(apps, key=len, reverse=True) if pod.startswith(a + "-")), pod)


def test_impact(conformance: ConformanceRun, case: ConformanceCase) -> None:
    """Findings of `impact` on the meshed namespace: a superset of the precheck's, equal to the world's truth."""
    session = conformance.session
    session.switch(conformance.profile)
    world = session.world
    precheck = session.cluster.precheck(NS_MESH)
    try:
        source = source_for(session.cluster, world.manifests())
        report = check(source, source.inventory([NS_MESH], None))
    except (BackendError, BadInput) as err:
        message = f"impact: {err}"
    else:
        message = ""
    if message:
        pytest.fail(message, pytrace=False)
    probe_pods = [ref for ref, _ in probe_pods_of(NS_MESH)]
    apps = [*(s.app for s in world.mesh_servers), *(p.app for p in probe_pods)]
    loopback = [f for f in report.findings if f.kind == LOOPBACK_ONLY]
    # A probed container the kubelet may restart (liveness, startup) listens nowhere between runs: not asked.
    unasked = {(p.app, port) for p in probe_pods for port in restartable_ports(world.family)}
    got = {(_app(f.pod, apps), f.port) for f in loopback} - unasked
    # The servers' loopback declared ports, and the probe pods' loopback probed ports (declared in their Services).
    truth = {
        (s.app, p.number)
        for s in world.mesh_servers
        for p in world.server_ports
        if p.declared and p.bind is Bind.LOOPBACK
    } | (
        {(p.app, c.port) for p in probe_pods for c in probed_containers(world.family) if c.bind is Bind.LOOPBACK}
        - unasked
    )
    seen = {(_app(f.pod, apps), f.port) for f in precheck.findings if f.namespace == NS_MESH} - unasked
    problems = [f"{r.pod.key}: not checked: {r.unchecked}" for r in report.unchecked]
    if missed := sorted(seen - got):
        problems.append("precheck reports IST0143 that impact does not: " + ", ".join(f"{a}:{p}" for a, p in missed))
    if sorted(got) != sorted(truth):
        problems.append(f"impact found {sorted(got)}, the world's loopback-only declared ports are {sorted(truth)}")
    dual = {r.pod.name for r in report.results if r.pod.dual_stack}
    if world.family is IpFamily.DUAL and not dual:
        problems.append("a dual run, but impact saw no pod with an IPv4 and an IPv6 address (status.podIPs)")
    families: dict[tuple[str, int], set[str | None]] = {}
    for f in loopback:
        if f.pod in dual:
            families.setdefault((_app(f.pod, apps), f.port), set()).add(f.family)
    if one_family := sorted(k for k, found in families.items() if k in truth and found != set(FAMILIES)):
        problems.append(
            "on dual-stack pods, loopback-only ports not reported for both families: "
            + ", ".join(f"{a}:{p} ({'/'.join(sorted(str(x) for x in families[(a, p)]))})" for a, p in one_family)
        )
    ours = render_run(
        sorted({Finding(f.namespace, f.pod, f.port) for f in loopback}), [r.pod.key for r in report.results], "impact"
    )
    session.report.record_precheck(
        conformance.test_name, conformance.profile.value, ours, [f"{a}:{p}" for a, p in sorted(truth)], problems
    )
    if problems:
        pytest.fail("impact differs:\n  " + "\n  ".join(problems) + "\n" + precheck.stdout + ours.stdout, pytrace=False)
