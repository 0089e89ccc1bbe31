"""The checks the probe cases make: readiness, restarts, who probed the app, and "Ready means reachable".

They live beside the cases (not in the plugin): each reads the cluster through the backend interface
(`container_readiness`, `probe_connections`, `probe`), compares with `conformance.spec.probes`, records every
cell in the report and fails the test with every differing cell.

A settled verdict that differs from the spec is confirmed before it fails a cell: it must still differ
CONFIRM_SECONDS later (two probe periods and a timeout). A correct proxy that was slow once (a first probe that
timed out, a status port that came up late) is not Ready for a period and then is, so it passes; a wrong one
still differs, at the cost of those seconds, and only in a failing run.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest

from conformance.backends.base import BackendError, ContainerReadiness, ProbeRequest
from conformance.report.probes import record_probe
from conformance.spec.capabilities import Capability
from conformance.spec.dimensions import Client, IpFamily, Profile, Source, source_addresses
from conformance.spec.dualstack import probe_family
from conformance.spec.probes import (
    ProbeCellKey,
    ProbeExpectation,
    ProbeKind,
    ProbeSource,
    ProbeUse,
    expect_probe,
    probe_behaviour,
    probe_cells,
)
from conformance.suite.cases import ConformanceCase
from conformance.suite.checks import INVOLVED, ConformanceRun
from conformance.world.probe_pods import PROBE_PERIOD_SECONDS, probe_pod, probed_container

ProbeFilter = Callable[[ProbeCellKey], bool]
Matcher = Callable[[ProbeCellKey, ContainerReadiness], bool]
CONFIRM_SECONDS = 2 * PROBE_PERIOD_SECONDS + 1.0
"""How long a settled verdict that differs from the spec must keep differing before it fails (module docstring)."""


def readiness_cells(cell: ProbeCellKey) -> bool:
    """The cells of readiness probes (the cases of issue 11)."""
    return cell.use is ProbeUse.READINESS


def restart_cells(cell: ProbeCellKey) -> bool:
    """The cells of liveness and startup probes (issue 22 item 3)."""
    return cell.use is not ProbeUse.READINESS


@dataclass(frozen=True)
class ProbeCase(ConformanceCase):
    """A conformance case over probe cells (the traffic `select` is unused: it selects no traffic cell)."""

    probe_select: ProbeFilter = lambda _cell: True

    def probe_cells(self, profile: Profile, family: IpFamily) -> tuple[ProbeCellKey, ...]:
        """The probe cells this case asks of a profile (on dual-stack pods, of the profiles a dual run asks)."""
        return tuple(c for c in probe_cells((profile,), (family,)) if self.probe_select(c))

    def profiles(self, family: IpFamily) -> tuple[Profile, ...]:
        """The profiles under which the case has probe cells."""
        return tuple(p for p in Profile if self.probe_cells(p, family))

    def needed(self, profile: Profile, family: IpFamily) -> frozenset[Capability]:
        """The profile's capability, as for traffic cases."""
        needs = set(self.needs)
        if profile is Profile.LEGACY:
            needs.add(Capability.PROFILE_LEGACY)
        if profile is Profile.PASSTHROUGH:
            needs.add(Capability.PROFILE_PASSTHROUGH)
        if profile is Profile.AMBIENT:
            needs.add(Capability.PROFILE_AMBIENT)
        return frozenset(needs)


def _no_traffic_cell(_cell: object) -> bool:
    return False


def probe_case(
    name: str, description: str, part: str, select: ProbeFilter | None = None, after_traffic: bool = False
) -> ProbeCase:
    """A probe case; `part` is `probe_ready`, `probe_source`, `ready_reachable` or `probe_restarts`."""
    return ProbeCase(
        name,
        description,
        _no_traffic_cell,
        part=part,
        probe_select=select or (lambda _c: True),
        after_traffic=after_traffic,
    )


def _expectations(run: ConformanceRun, cells: Sequence[ProbeCellKey]) -> dict[ProbeCellKey, ProbeExpectation]:
    mesh = run.session.settings.mesh
    behaviour = probe_behaviour(None if mesh.name == "emulated" else mesh.version)
    return {c: expect_probe(c, behaviour) for c in cells}


def _readiness(
    run: ConformanceRun, cells: Sequence[ProbeCellKey], matches: Matcher | None = None
) -> dict[ProbeCellKey, ContainerReadiness]:
    """Poll each probe pod's containers until every asked one has settled, or the deadline.

    With `matches`, also until each settled one agrees with the spec or has disagreed for CONFIRM_SECONDS (module
    docstring).
    """
    cluster, timeouts = run.session.cluster, run.session.settings.timeouts
    deadline = time.monotonic() + timeouts.converge
    pods = {probe_pod(c) for c in cells}
    differing: dict[ProbeCellKey, float] = {}
    while True:
        statuses = {pod: cluster.container_readiness(pod) for pod in pods}
        out: dict[ProbeCellKey, ContainerReadiness] = {}
        for cell in cells:
            status = statuses[probe_pod(cell)].get(cell.container)
            if status is None:
                raise BackendError(f"{probe_pod(cell)}: no readiness for container {cell.container}")
            out[cell] = status
        now, pending = time.monotonic(), False
        for cell, status in out.items():
            if not status.settled:
                pending = True
            elif matches is None or matches(cell, status):
                differing.pop(cell, None)
            elif now - differing.setdefault(cell, now) < CONFIRM_SECONDS:
                pending = True
        if not pending or now > deadline:
            return out
        time.sleep(max(timeouts.poll_interval, 0.02))


def _fail(run: ConformanceRun, failures: list[tuple[ProbeCellKey, str]], total: int) -> None:
    if not failures:
        return
    pods = run.item.stash.setdefault(INVOLVED, [])
    for cell, _ in failures:
        if probe_pod(cell) not in pods:
            pods.append(probe_pod(cell))
    lines = [f"  {cell.id}: {reason}" for cell, reason in failures]
    pytest.fail(f"{len(failures)} of {total} probe cells differ from the spec:\n" + "\n".join(lines), pytrace=False)


def _ready_text(ready: bool) -> str:
    return "Ready" if ready else "not Ready"


def check_readiness(run: ConformanceRun, case: ProbeCase) -> None:
    """Each probed container is Ready exactly where the spec says."""
    try:
        cells = case.probe_cells(run.profile, run.session.settings.family)
        run.session.switch(run.profile)
        expected = _expectations(run, cells)
        observed = _readiness(run, cells, lambda c, s: s.ready == expected[c].ready)
    except BackendError as err:
        pytest.fail(f"backend: {err}", pytrace=False)
    failures = []
    for cell in cells:
        got, want = observed[cell], expected[cell]
        ok = got.settled and got.ready == want.ready
        reason = ""
        if not got.settled:
            reason = f"readiness did not settle (last probe: {got.detail or 'none'})"
        elif not ok:
            want_text, got_text = _ready_text(bool(want.ready)), _ready_text(got.ready)
            reason = f"expected {want_text}, saw {got_text} (last probe: {got.detail})"
        reason = run.void(reason, (probe_pod(cell),))
        record_probe(run.session.report, run.test_name, cell, want, {"ready": got.ready, "detail": got.detail},
                     case.part, ok, reason)  # fmt: skip
        if not ok:
            failures.append((cell, reason))
    _fail(run, failures, len(cells))


def classify_peer(peer: str, pod_ip: str, family: IpFamily) -> str:
    """Who a probe connection came from, by meaning: the node (kubelet), 127.0.0.6, localhost, or the pod itself.

    On a dual-stack pod the names are those of the probes' family, the primary's (`probe_family`: 127.0.0.6 is
    `inbound_passthrough`), and the other family's fixed addresses are named as such (::6 is
    `ipv6_inbound_passthrough`, ::1 `ipv6_localhost`): an agent that probed the IPv6 pod IP would not pass.
    """
    by = probe_family(family) if family is IpFamily.DUAL else None
    addresses = source_addresses(family, by)
    if peer == addresses[Source.INBOUND_PASSTHROUGH]:
        return ProbeSource.INBOUND_PASSTHROUGH.value
    if peer == addresses[Source.LOCALHOST]:
        return ProbeSource.LOCALHOST.value
    other = next((s for s, a in addresses.items() if a == peer), None)
    if other is not None:
        return other.value
    if peer == pod_ip:
        return "self"
    return ProbeSource.KUBELET.value


def _connections(run: ConformanceRun, cell: ProbeCellKey, status: ContainerReadiness) -> list[dict[str, object]]:
    """The connections the probed container's app recorded.

    None while a restarted container is between runs (killed, its control port gone with it: no probe reaches an
    app that is not running).
    """
    try:
        return run.session.cluster.probe_connections(probe_pod(cell), cell.container)
    except BackendError:
        if status.restarts:
            return []
        raise


def check_source(run: ConformanceRun, case: ProbeCase) -> None:
    """The app saw its probes from the spec's source, and saw none where the probe cannot reach it."""
    settings = run.session.settings
    cluster = run.session.cluster
    try:
        cells = case.probe_cells(run.profile, settings.family)
        run.session.switch(run.profile)
        expected = _expectations(run, cells)
        cells = tuple(c for c in cells if expected[c].source_judged)
        # Once settled, a Ready container has answered at least one probe and a not-Ready one has failed one:
        # the connections recorded since its probing (re)started in this mode are the probes' own.
        readiness = _readiness(run, cells)
        fresh: dict[ProbeCellKey, list[dict[str, object]]] = {}
        for cell in cells:
            since = readiness[cell].since
            fresh[cell] = [
                r
                for r in _connections(run, cell, readiness[cell])
                if since is None or float(str(r.get("time", 0))) >= since
            ]
        ips = {pod: cluster.pod_ip(pod) for pod in {probe_pod(c) for c in cells}}
    except BackendError as err:
        pytest.fail(f"backend: {err}", pytrace=False)
    failures = []
    for cell in cells:
        want = expected[cell]
        sources = sorted(
            {classify_peer(str(r.get("peer")), ips[probe_pod(cell)], settings.family) for r in fresh[cell]}
        )
        peers = sorted({str(r.get("peer")) for r in fresh[cell]})
        if want.source is not None:
            ok = sources == [want.source.value]
            reason = "" if ok else f"expected probes from {want.source.value}, saw {', '.join(peers) or 'none'}"
        else:
            ok = not fresh[cell]
            reason = "" if ok else f"expected no probe to reach the app, saw {', '.join(peers)}"
        reason = run.void(reason, (probe_pod(cell),))
        record_probe(run.session.report, run.test_name, cell, want, {"sources": sources, "peers": peers},
                     case.part, ok, reason)  # fmt: skip
        if not ok:
            failures.append((cell, reason))
    _fail(run, failures, len(cells))


def check_ready_means_reachable(run: ConformanceRun, case: ProbeCase) -> None:
    """A Ready container is reachable on its probed port from another pod; false-Ready cells are warnings."""
    settings = run.session.settings
    cluster, world = run.session.cluster, run.session.world
    try:
        cells = case.probe_cells(run.profile, settings.family)
        run.session.switch(run.profile)
        expected = _expectations(run, cells)
        readiness = _readiness(run, cells)
        ready_cells = [c for c in cells if readiness[c].ready]
        client = world.clients[Client.PLAIN]
        requests = [
            ProbeRequest(
                client,
                "http" if c.probe is ProbeKind.HTTP else "tcp",
                cluster.pod_ip(probe_pod(c)),
                probed_container(c).port,
                f"rmr-{secrets.token_hex(4)}",
            )
            for c in ready_cells
        ]
        results = cluster.probe(requests, settings.timeouts.probe) if requests else []
    except BackendError as err:
        pytest.fail(f"backend: {err}", pytrace=False)
    outcomes = {c: str(r.get("outcome")) for c, r in zip(ready_cells, results, strict=True)}
    failures = []
    for cell in cells:
        want = expected[cell]
        ready = readiness[cell].ready
        reachable = outcomes.get(cell) == "ok" if ready else None
        warning = ""
        if not ready:
            ok, reason = True, ""
        elif reachable:
            ok = not want.false_ready
            reason = "" if ok else "Ready and reachable, but the spec says no other pod reaches it"
        else:
            ok = want.false_ready
            reason = "" if ok else f"Ready but unreachable from another pod ({outcomes.get(cell)})"
            if ok:
                warning = "false Ready: Ready, yet no other pod can reach the probed port"
        reason = run.void(reason, (probe_pod(cell), client))
        observed: dict[str, object] = {
            "ready": ready,
            "reachable": reachable,
            "outcome": outcomes.get(cell),
            "warning": warning,
        }
        record_probe(run.session.report, run.test_name, cell, want, observed, case.part, ok, reason)
        if not ok:
            failures.append((cell, reason))
    _fail(run, failures, len(cells))


def _restart_text(restarts: int) -> str:
    return f"restartCount {restarts}"


def _restarts_match(cell: ProbeCellKey, want: ProbeExpectation, got: ContainerReadiness) -> bool:
    """Restarted exactly where the spec says; for a liveness or startup cell, Ready where the spec judges it.

    A readiness cell's readiness is ProbeReadiness's to judge.
    """
    ready_ok = cell.use is ProbeUse.READINESS or want.ready is None or got.ready == want.ready
    return (got.restarts > 0) == want.restarts and ready_ok


def check_restarts(run: ConformanceRun, case: ProbeCase) -> None:
    """Each probed container is restarted exactly where the spec says (a failing liveness or startup probe).

    A liveness or startup container that is never restarted is Ready too (startup passed; no readiness probe).
    """
    try:
        cells = case.probe_cells(run.profile, run.session.settings.family)
        run.session.switch(run.profile)
        expected = _expectations(run, cells)
        observed = _readiness(run, cells, lambda c, s: _restarts_match(c, expected[c], s))
    except BackendError as err:
        pytest.fail(f"backend: {err}", pytrace=False)
    failures = []
    for cell in cells:
        got, want = observed[cell], expected[cell]
        ok = got.settled and _restarts_match(cell, want, got)
        reason = ""
        if not got.settled:
            reason = f"restarts did not settle ({_restart_text(got.restarts)}, last probe: {got.detail or 'none'})"
        elif (got.restarts > 0) != want.restarts:
            want_text = "restarted again and again" if want.restarts else "never restarted"
            reason = f"expected {want_text}, saw {_restart_text(got.restarts)} (last probe: {got.detail or 'none'})"
        elif not ok:
            reason = f"expected {_ready_text(bool(want.ready))}, saw {_ready_text(got.ready)} (last: {got.detail})"
        reason = run.void(reason, (probe_pod(cell),))
        observed_json: dict[str, object] = {"restarts": got.restarts, "detail": got.detail}
        if cell.use is not ProbeUse.READINESS:
            observed_json["ready"] = got.ready
        record_probe(run.session.report, run.test_name, cell, want, observed_json, case.part, ok, reason)
        if not ok:
            failures.append((cell, reason))
    _fail(run, failures, len(cells))


def timed_probe_check(run: ConformanceRun, case: ProbeCase, check: Callable[[ConformanceRun, ProbeCase], None]) -> None:
    """Run a probe check, its time counted under the report's `health_probes`.

    A profile switch it makes is counted under `profile_switches`, not twice.
    """
    timings = run.session.report.timings
    start, switches = time.perf_counter(), timings.get("profile_switches", 0.0)
    try:
        check(run, case)
    finally:
        spent = time.perf_counter() - start - (timings.get("profile_switches", 0.0) - switches)
        timings["health_probes"] = timings.get("health_probes", 0.0) + spent
