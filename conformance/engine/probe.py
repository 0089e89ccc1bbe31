"""The probe engine: turns cells into probe requests, drives them until they converge, classifies the results.

A cell's observation is made of `consecutive` identical outcomes in a row (outcome and peer), within the
`converge` timeout: so configuration still propagating cannot pass for a result, and a negative cell must
fail the same way every time. All pending cells of a round go to the backend as one batch, which the
emulated backend dials concurrently in-process and kind sends to the client pods in one request each.

Rounds are paced as Istio's echo calls retry (`converge_rounds`).
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_delay

from conformance.backends.base import Cluster, ProbeRequest
from conformance.backends.timeouts import TimeoutConfig
from conformance.spec.cells import all_cells
from conformance.spec.dimensions import CellKey, IpFamily, Path, Source, source_addresses
from conformance.spec.outcome import Expectation
from conformance.world.layout import World
from conformance.world.ports import dialled_address, dialled_port

K = TypeVar("K", bound=Hashable)

BACKOFF_LIMIT = 16
"""The longest pause between rounds, in poll intervals (Istio's `retry.BackoffDelay`: 16 backoffs)."""


@dataclass(frozen=True)
class ProbeOutcome:
    """One probe's result, as the echo program reported it."""

    outcome: str
    status: int | None
    peer: str | None
    pod: str | None
    latency_ms: float
    detail: str
    request_id: str

    @classmethod
    def from_json(cls, data: dict[str, object], request_id: str) -> ProbeOutcome:
        """Read an echo result object."""
        status = data.get("status")
        latency = data.get("latency_ms", 0.0)
        return cls(
            outcome=str(data.get("outcome", "error")),
            status=int(status) if isinstance(status, int) else None,
            peer=str(data["peer"]) if data.get("peer") else None,
            pod=str(data["pod"]) if data.get("pod") else None,
            latency_ms=float(latency) if isinstance(latency, int | float) else 0.0,
            detail=str(data.get("detail", "")),
            request_id=request_id,
        )

    @property
    def label(self) -> str:
        """`ok`, `refused`, `reset_or_eof`, `timeout`, `error` or `http_<status>` (comparable with Failure)."""
        if self.outcome == "http_status":
            return f"http_{self.status}"
        return self.outcome

    @property
    def signature(self) -> tuple[str, str | None]:
        """What must repeat for an observation to converge."""
        return self.label, self.peer


@dataclass
class Observation:
    """The converged (or not) result of one cell."""

    cell: CellKey
    last: ProbeOutcome
    converged: bool
    attempts: list[ProbeOutcome] = field(default_factory=list)
    source: str | None = None
    """The peer classified: client, inbound_passthrough, localhost, self, or other:<ip>."""
    voided_by: tuple[str, ...] = ()
    """Deaths of the build's processes (`sidecar of X died (exit status 3)`) that carried this cell's traffic
    and were still dead when it was observed: the observation says nothing about the mesh's rules then."""

    @property
    def request_ids(self) -> list[str]:
        """Every request id sent for this cell (for the proof of non-arrival)."""
        return [a.request_id for a in self.attempts]

    def describe(self) -> str:
        """Short human text: `ok from 127.0.0.6 (inbound_passthrough)`, `http_503`, ..."""
        text = self.last.label
        if self.last.label == "ok":
            text += f" from {self.last.peer} ({self.source})"
        elif self.last.detail:
            text += f" ({self.last.detail[:80]})"
        if not self.converged:
            history = ", ".join(a.label for a in self.attempts[-6:])
            text += f"; did not converge: {history}"
        return text

    def to_json(self) -> dict[str, object]:
        """The `observed` object of the report."""
        return {
            "outcome": self.last.label,
            "source": self.source,
            "peer": self.last.peer,
            "detail": self.last.detail,
            "converged": self.converged,
            "attempts": len(self.attempts),
            "latency_ms": round(self.last.latency_ms, 3),
            "voided_by": list(self.voided_by),
        }


@dataclass(frozen=True)
class Verdict:
    """Whether an observation meets an expectation, and why not."""

    reachability_ok: bool
    source_ok: bool
    converged: bool
    reason: str

    @property
    def passed(self) -> bool:
        """All of it."""
        return self.reachability_ok and self.source_ok and self.converged

    def holds(self, part: str) -> bool:
        """Whether the part a test judges holds: `reachability`, `source`, or (any other part) all of it."""
        if part == "reachability":
            return self.reachability_ok and self.converged
        if part == "source":
            return self.source_ok and self.converged
        return self.passed


def classify_source(
    peer: str | None, family: IpFamily, client_ip: str | None, server_ip: str, client_family: IpFamily | None = None
) -> str | None:
    """Name the peer address the app saw (reference section 1: 127.0.0.6 / ::6 is the passthrough bind).

    `client_family` is the cell's (dual runs): the fixed addresses are named relative to it (source_addresses).
    """
    if peer is None:
        return None
    for source, address in source_addresses(family, client_family).items():
        if peer == address:
            return source.value
    if client_ip is not None and peer == client_ip:
        return Source.CLIENT.value
    if peer == server_ip:
        return Source.SELF.value
    return f"other:{peer}"


def judge(expected: Expectation, observation: Observation) -> Verdict:
    """Compare one observation with the spec's expectation."""
    label = observation.last.label
    if expected.reachable:
        reach_ok = label == "ok"
        want = expected.source.value if expected.source else None
        source_ok = reach_ok and observation.source == want
        if not reach_ok:
            reason = f"expected reachable (app sees {want}), got {observation.describe()}"
        elif not source_ok:
            reason = f"expected the app to see {want}, it saw {observation.last.peer} ({observation.source})"
        else:
            reason = ""
    else:
        allowed = [f.value for f in expected.failure]
        reach_ok = label in allowed
        source_ok = True
        reason = "" if reach_ok else f"expected {' or '.join(allowed)}, got {observation.describe()}"
    if not observation.converged and not reason:
        reason = f"did not converge: {observation.describe()}"
    if reason and observation.voided_by:
        # The dead process first: the cell's failure is its, not the rules'.
        reason = f"void, {' and '.join(observation.voided_by)}: {reason}"
    return Verdict(reach_ok, source_ok, observation.converged, reason)


def converge_rounds(
    one_round: Callable[[], tuple[int, bool]],
    timeouts: TimeoutConfig,
    sleep: Callable[[float], None] | None = None,
) -> None:
    """Call `one_round` until no cell is pending or the `converge` timeout runs out, paced as Istio's echo calls.

    `one_round` probes the pending cells once and returns how many are still pending and whether some cell's
    outcome changed from its previous one. Istio's retry (pkg/test/util/retry/retry.go `UntilComplete`, with the
    echo's `BackoffDelay` and `Converge(3)`) pauses only after a failed attempt ("Skip delay if we have a
    success"), the first pause the delay and each later one twice the one before, up to 16 times the delay. A
    round that only extended streaks is a success here, so the next follows at once; one in which an outcome
    changed pauses, as a failed attempt does. (`sleep`: how to pause, time.sleep unless a test says otherwise.)
    """
    delay, longest = timeouts.poll_interval, timeouts.poll_interval * BACKOFF_LIMIT
    changed = False

    def attempt() -> int:
        nonlocal changed
        left, changed = one_round()
        return left

    def pause(_state: RetryCallState) -> float:
        nonlocal delay
        if not changed:
            return 0.0
        current, delay = delay, min(delay * 2, longest)
        return current

    Retrying(
        sleep=sleep or time.sleep,
        stop=stop_after_delay(timeouts.converge),
        wait=pause,
        retry=retry_if_result(lambda left: left > 0),
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else 0,
    )(attempt)


def converge(
    cluster: Cluster,
    keys: Sequence[K],
    request: Callable[[K], ProbeRequest],
    timeouts: TimeoutConfig,
    sleep: Callable[[float], None] | None = None,
) -> dict[K, list[ProbeOutcome]]:
    """Probe every key until `consecutive` identical outcomes in a row (or `converge` runs out); each one's history.

    `request` makes a key's next probe; all pending keys of a round make one batch (`converge_rounds` paces the
    rounds). The prober's cells and the node-proxy checks' keys converge here alike.
    """
    needed = timeouts.consecutive
    history: dict[K, list[ProbeOutcome]] = {k: [] for k in keys}
    streak = dict.fromkeys(keys, 0)
    pending = list(keys)

    def one_round() -> tuple[int, bool]:
        nonlocal pending
        sent = [request(k) for k in pending]
        results = cluster.probe(sent, timeouts.probe)
        still = []
        changed = False
        for key, probe, result in zip(pending, sent, results, strict=True):
            outcome = ProbeOutcome.from_json(result, probe.request_id)
            previous = history[key][-1] if history[key] else None
            history[key].append(outcome)
            same = previous is not None and previous.signature == outcome.signature
            streak[key] = streak[key] + 1 if same else 1
            changed = changed or (previous is not None and not same)
            if streak[key] < needed:
                still.append(key)
        pending = still
        return len(pending), changed

    converge_rounds(one_round, timeouts, sleep)
    return history


def converged(history: Sequence[ProbeOutcome], needed: int) -> bool:
    """Whether the last `needed` outcomes are identical (outcome and peer): the key converged."""
    tail = history[-needed:]
    return len(tail) == needed and len({o.signature for o in tail}) == 1


class Prober:
    """Observes cells on a cluster, converging each, and remembers observations per mesh mode."""

    def __init__(self, cluster: Cluster, world: World, timeouts: TimeoutConfig) -> None:
        self.cluster = cluster
        self.world = world
        self.timeouts = timeouts
        self._cache: dict[tuple[CellKey, str], Observation] = {}
        self._run = secrets.token_hex(3)
        self._counter = itertools.count()
        self.probes_sent = 0

    def _address(self, cell: CellKey) -> str:
        fixed = dialled_address(cell)
        if fixed is not None:
            return fixed
        server = self.world.server_for(cell)
        # A dual cell dials the server's address of its client family; a single-stack one the run's.
        family = cell.client_family.value if cell.client_family is not None else None
        if cell.path is Path.SERVICE:
            return self.cluster.service_ip(server.namespace, server.app, family)
        return self.cluster.pod_ip(server, family)

    def _request(self, cell: CellKey) -> ProbeRequest:
        request_id = f"mic-{self._run}-{next(self._counter)}"
        return ProbeRequest(
            self.world.source_pod(cell), cell.protocol.value, self._address(cell), dialled_port(cell), request_id
        )

    def _classify(self, cell: CellKey, outcome: ProbeOutcome) -> str | None:
        # The client (and `self`) of a dual cell is the pod's address of the cell's client family.
        family = cell.client_family.value if cell.client_family is not None else None
        server_ip = self.cluster.pod_ip(self.world.server_for(cell), family)
        source = self.world.source_pod(cell)
        client_ip = self.cluster.pod_ip(source, family) if cell.path.from_other_pod else None
        return classify_source(outcome.peer, cell.ip_family, client_ip, server_ip, cell.client_family)

    def observe(self, cells: Sequence[CellKey], fresh: bool = False) -> dict[CellKey, Observation]:
        """Converged observations of `cells` under the cluster's current mode (cached unless `fresh`).

        A cache miss observes every not-yet-observed cell of the same profiles at once: the rounds of one big
        batch cost about what the rounds of a small one cost (one exec per client pod on kind), so the later
        tests of the profile find their cells ready.
        """
        mode = self.cluster.inbound_mode
        wanted = list(dict.fromkeys(cells))
        todo = [c for c in wanted if fresh or (c, mode) not in self._cache]
        if todo and not fresh:
            profiles = {c.profile for c in todo}
            families = {c.ip_family for c in todo}
            asked = set(todo)
            todo += [
                c
                for c in all_cells(profiles, families)
                if (c, mode) not in self._cache and c not in asked and self.world.deployed(c)
            ]
        if todo:
            for cell, observation in self._converge(todo).items():
                self._cache[(cell, mode)] = observation
        return {c: self._cache[(c, mode)] for c in wanted}

    def _converge(self, cells: Sequence[CellKey]) -> dict[CellKey, Observation]:
        needed = self.timeouts.consecutive
        history = converge(self.cluster, cells, self._request, self.timeouts)
        self.probes_sent += sum(len(attempts) for attempts in history.values())
        dead = [d for d in self.cluster.deaths() if d.ongoing]
        observations = {}
        for cell in cells:
            last = history[cell][-1]
            pods = {self.world.server_for(cell), self.world.source_pod(cell)}
            voided = tuple(d.summary for d in dead if pods.intersection(d.pods))
            observations[cell] = Observation(
                cell, last, converged(history[cell], needed), history[cell], self._classify(cell, last), voided
            )
        return observations
