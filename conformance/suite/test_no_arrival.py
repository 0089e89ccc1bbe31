"""Proof from the app's side, read from the echo program's request record.

A request that must not arrive was never received; one that was answered was received once, from the
peer it echoed.
"""

from __future__ import annotations

from conformance.suite.cases import ConformanceCase, every_cell
from conformance.suite.checks import ConformanceRun

CASES = (
    ConformanceCase(
        name="UnreachableRequestsNeverArrive",
        description="None of the requests sent for an unreachable cell appears in the server's request record "
        "(a 503 or a close must come from the proxy, not from an app that saw the request).",
        select=every_cell,
        reached=False,
        part="arrival",
        interception=None,
    ),
    ConformanceCase(
        name="AnsweredRequestsWereRecorded",
        description="Every request the app answered appears in its request record with the same peer.",
        select=every_cell,
        reached=True,
        part="arrival",
        interception=None,
    ),
)


def test_request_record(conformance: ConformanceRun, case: ConformanceCase) -> None:
    """The request record agrees with what the clients observed."""
    conformance.check_arrival(case)
