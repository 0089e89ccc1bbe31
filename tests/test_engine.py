"""The probe engine's pacing: rounds follow each other as Istio's echo calls retry (no pause after a success)."""

from __future__ import annotations

import pytest

from conformance.backends.base import ProbeRequest
from conformance.backends.timeouts import TimeoutConfig
from conformance.engine.probe import BACKOFF_LIMIT, Prober, converge_rounds
from conformance.spec.cells import all_cells
from conformance.spec.dimensions import IpFamily, Profile
from conformance.world.layout import World
from conformance.world.ports import dialled_port


def _run(rounds: list[tuple[int, bool]], timeouts: TimeoutConfig | None = None) -> tuple[int, list[float]]:
    """Feed `rounds` to converge_rounds; how many it asked for, and the pauses it made."""
    pauses: list[float] = []
    asked = 0

    def one_round() -> tuple[int, bool]:
        nonlocal asked
        asked += 1
        return rounds[min(asked, len(rounds)) - 1]

    converge_rounds(one_round, timeouts or TimeoutConfig(), sleep=pauses.append)
    return asked, pauses


def test_rounds_that_only_extend_streaks_follow_each_other_without_a_pause() -> None:
    # Three rounds, as three identical outcomes of every cell take: "Skip delay if we have a success".
    assert _run([(5, False), (5, False), (0, False)]) == (3, [0.0, 0.0])


def test_a_round_in_which_an_outcome_changed_pauses_and_each_later_pause_doubles_up_to_16x() -> None:
    interval = TimeoutConfig().poll_interval
    rounds = [(4, False)] + [(4, True)] * 7 + [(4, False), (4, False), (0, False)]
    asked, pauses = _run(rounds)
    assert asked == len(rounds)
    changed = [interval * 2**k for k in range(5)] + [interval * BACKOFF_LIMIT] * 2
    assert pauses == pytest.approx([0.0, *changed, 0.0, 0.0])


def test_the_pause_is_the_configured_interval() -> None:
    asked, pauses = _run([(1, True), (0, False)], TimeoutConfig(poll_interval=0.5))
    assert (asked, pauses) == (2, [0.5])


def test_cells_that_never_settle_stop_at_the_converge_timeout() -> None:
    # A flapping cell pauses ever longer (in the test's sleep, which does not sleep) until `converge` has passed.
    asked, pauses = _run([(1, True)], TimeoutConfig(converge=0.05, poll_interval=0.001))
    assert asked >= 2
    assert max(pauses) <= 0.001 * BACKOFF_LIMIT


class _ScriptedCluster:
    """What the prober asks of a cluster, with each cell's outcomes scripted in the order they are asked."""

    inbound_mode = "passthrough"

    def __init__(self, script: dict[tuple[str, int], list[str]]) -> None:
        self.script = script
        self.asked: list[int] = []

    def probe(self, requests: list[ProbeRequest], timeout: float) -> list[dict[str, object]]:
        self.asked.append(len(requests))
        return [{"outcome": self.script[(r.address, r.port)].pop(0), "peer": "10.0.0.9"} for r in requests]

    def pod_ip(self, pod: object, family: str | None = None) -> str:
        return f"10.0.0.{sum(map(ord, str(pod))) % 250 + 2}"

    def service_ip(self, namespace: str, app: str, family: str | None = None) -> str:
        return "10.96.0.2"

    def deaths(self) -> list[object]:
        return []


def test_the_prober_converges_each_cell_on_three_identical_outcomes_pausing_only_after_a_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World(IpFamily.IPV4)
    steady, settling = [c for c in all_cells((Profile.PASSTHROUGH,), (IpFamily.IPV4,)) if world.deployed(c)][:2]
    prober = Prober(_ScriptedCluster({}), world, TimeoutConfig())  # type: ignore[arg-type]
    keys = {cell: (prober._address(cell), dialled_port(cell)) for cell in (steady, settling)}
    assert keys[steady] != keys[settling]
    cluster = _ScriptedCluster({keys[steady]: ["ok"] * 3, keys[settling]: ["refused", "ok", "ok", "ok"]})
    prober.cluster = cluster  # type: ignore[assignment]
    pauses: list[float] = []
    monkeypatch.setattr("conformance.engine.probe.time.sleep", pauses.append)
    observed = prober.observe([steady, settling], fresh=True)
    # Round 1 (first outcomes, no pause), round 2 (the settling cell changed: a pause), round 3 (the steady cell
    # converged), round 4 (the settling cell's third "ok").
    assert cluster.asked == [2, 2, 2, 1]
    assert pauses == pytest.approx([0.0, TimeoutConfig().poll_interval, 0.0])
    assert [o.outcome for o in observed[settling].attempts] == ["refused", "ok", "ok", "ok"]
    assert observed[steady].converged
    assert observed[settling].converged
    assert prober.probes_sent == 7
