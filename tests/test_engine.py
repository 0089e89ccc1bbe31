"""The probe engine's pacing: rounds follow each other as Istio's echo calls retry (no pause after a success)."""

from __future__ import annotations

import pytest

from conformance.backends.timeouts import TimeoutConfig
from conformance.engine.probe import BACKOFF_LIMIT, converge_rounds


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
