"""The checks of the node proxy's own contract: its tunnel asked directly, and a pod enrolled while the run is on.

Like the probe cases' checks, they live beside the cases: each reads the cluster through the backend interface
(`probe`, `enrol`), compares with `conformance.spec.ztunnel`, records every cell in the report (its own section)
and fails the test with every differing cell. A cell converges as a traffic cell does: `consecutive` identical
outcomes (outcome and peer) in a row within the `converge` timeout.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import pytest

from conformance.backends.base import BackendError, ProbeRequest
from conformance.engine.probe import Observation, ProbeOutcome, classify_source, converged, judge
from conformance.engine.probe import converge as engine_converge
from conformance.report.ztunnel import record_ztunnel
from conformance.spec.capabilities import Capability
from conformance.spec.dimensions import SINGLE_STACK, Client, DefaultEndpoint, IpFamily, PortKind, Profile, Protocol
from conformance.spec.ztunnel import (
    LateCellKey,
    TunnelCellKey,
    expect_late,
    expect_tunnel,
    late_cells,
    tunnel_cells,
)
from conformance.suite.cases import ConformanceCase
from conformance.suite.checks import INVOLVED, ConformanceRun
from conformance.world.namespaces import NS_LATE
from conformance.world.pods import PodRef
from conformance.world.ports import port_for

K = TypeVar("K", bound=Hashable)


def _no_traffic_cell(_cell: object) -> bool:
    return False


@dataclass(frozen=True)
class ZtunnelCase(ConformanceCase):
    """A case over the node proxy's cells (`part` is `tunnel` or `late`); ambient only, selects no traffic cell."""

    select: Callable[[object], bool] = _no_traffic_cell

    def profiles(self, family: IpFamily) -> tuple[Profile, ...]:
        """Ambient only, single-stack only (dual-stack pods have no ambient cells: spec/dualstack.py)."""
        return (Profile.AMBIENT,) if family in SINGLE_STACK else ()

    def needed(self, profile: Profile, family: IpFamily) -> frozenset[Capability]:
        """The case's own needs and ambient."""
        return frozenset({*self.needs, Capability.PROFILE_AMBIENT})


def converge(run: ConformanceRun, requests: dict[K, Callable[[str], ProbeRequest]]) -> dict[K, list[ProbeOutcome]]:
    """Probe every key until `consecutive` identical outcomes in a row (or `converge` runs out); each one's history."""
    tag = secrets.token_hex(3)
    return engine_converge(
        run.session.cluster,
        list(requests),
        lambda key: requests[key](f"mic-zt-{tag}-{secrets.token_hex(4)}"),
        run.session.settings.timeouts,
    )


def _voided(run: ConformanceRun, pods: Sequence[PodRef]) -> tuple[str, ...]:
    run.session.note_deaths()
    return tuple(d.summary for d in run.session.cluster.deaths() if d.ongoing and set(pods) & set(d.pods))


def _fail(run: ConformanceRun, failures: list[tuple[str, str]], total: int, pods: Sequence[PodRef], note: str) -> None:
    if not failures and not note:
        return
    involved = run.item.stash.setdefault(INVOLVED, [])
    involved += [p for p in pods if p not in involved]
    lines = [f"  {cell}: {reason}" for cell, reason in failures]
    head = f"{len(failures)} of {total} cells differ from the spec" + (f" ({note})" if note else "")
    pytest.fail(head + ":\n" + "\n".join(lines), pytrace=False)


def check_tunnel(run: ConformanceRun, case: ZtunnelCase) -> None:
    """A plain pod asks the enrolled server's 15008 directly: 200 (app sees the client) or 503, as the spec says."""
    session, family = run.session, run.session.settings.family
    world, cluster = session.world, session.cluster
    cells = tunnel_cells((Profile.AMBIENT,), (family,))
    server, client = world.ambient_server(DefaultEndpoint.NONE), world.clients[Client.PLAIN]
    try:
        session.switch(run.profile)
        server_ip, client_ip = cluster.pod_ip(server), cluster.pod_ip(client)

        def request(cell: TunnelCellKey) -> Callable[[str], ProbeRequest]:
            port = port_for(cell.bind, Protocol.TCP, cell.port).number
            return lambda rid: ProbeRequest(client, "connect", server_ip, port, rid)

        history = converge(run, {c: request(c) for c in cells})
    except BackendError as err:
        pytest.fail(f"backend: {err}", pytrace=False)
    voided = _voided(run, (server, client))
    failures = []
    for cell in cells:
        want, last = expect_tunnel(cell), history[cell][-1]
        source = classify_source(last.peer, family, client_ip, server_ip)
        got = f"{last.label}" + (f" from {last.peer} ({source})" if last.peer else "")
        if want.status == 200:
            ok = last.label == "ok" and last.status == 200 and source == "client"
        else:
            ok = last.label == f"http_{want.status}"
        wanted = f"{want.status}{' (app sees the client)' if want.client_source else ''}"
        reason = "" if ok else f"expected {wanted}, got {got}"
        if ok and not converged(history[cell], session.settings.timeouts.consecutive):
            ok, reason = False, f"did not converge: {', '.join(o.label for o in history[cell][-6:])}"
        if reason and voided:
            reason = f"void, {' and '.join(voided)}: {reason}"
        observed: dict[str, object] = {
            "outcome": last.label,
            "status": last.status,
            "peer": last.peer,
            "source": source,
        }
        record_ztunnel(session.report, run.test_name, cell.id, cell.to_json(), want.to_json(), observed, ok, reason)
        if not ok:
            failures.append((cell.id, reason))
    _fail(run, failures, len(cells), (server, client), "")


def check_late(run: ConformanceRun, case: ZtunnelCase) -> None:
    """Enrol the late namespace while its pod runs; then its cells must hold as for a pod enrolled from the start."""
    session, family = run.session, run.session.settings.family
    world, cluster = session.world, session.cluster
    cells = late_cells((Profile.AMBIENT,), (family,))
    server = world.LATE_SERVER
    clients = {c: world.clients[c] for c in {cell.client for cell in cells}}
    note = ""
    try:
        session.switch(run.profile)
        try:
            cluster.enrol(NS_LATE)
        except BackendError as err:
            # The cells still say what the pod's traffic does now: a node proxy that never learnt the pod fails them.
            note = f"enrolling {NS_LATE}: {err}"
        server_ip = cluster.pod_ip(server)
        client_ips = {c: cluster.pod_ip(ref) for c, ref in clients.items()}

        def request(cell: LateCellKey) -> Callable[[str], ProbeRequest]:
            port = port_for(cell.bind, cell.protocol, PortKind.DECLARED).number
            return lambda rid: ProbeRequest(clients[cell.client], cell.protocol.value, server_ip, port, rid)

        history = converge(run, {c: request(c) for c in cells})
    except BackendError as err:
        pytest.fail(f"backend: {err}", pytrace=False)
    needed = session.settings.timeouts.consecutive
    failures = []
    for cell in cells:
        want, attempts = expect_late(cell), history[cell]
        last = attempts[-1]
        source = classify_source(last.peer, family, client_ips[cell.client], server_ip)
        voided = _voided(run, (server, clients[cell.client]))
        observation = Observation(cell.traffic_cell, last, converged(attempts, needed), attempts, source, voided)
        verdict = judge(want, observation)
        ok = verdict.passed
        observed: dict[str, object] = {
            "outcome": last.label,
            "peer": last.peer,
            "source": source,
            "converged": observation.converged,
        }
        record_ztunnel(session.report, run.test_name, cell.id, cell.to_json(), want.to_json(), observed, ok,
                       verdict.reason)  # fmt: skip
        if not ok:
            failures.append((cell.id, verdict.reason))
    _fail(run, failures, len(cells), (server, *clients.values()), note)


__all__ = ["ZtunnelCase", "check_late", "check_tunnel", "converge"]
