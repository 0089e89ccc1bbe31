"""The node proxy's own contract under ambient, checked where the traffic cells cannot see it.

Both ends of a tunnel are the program under test, and an unreachable app looks the same to a client whether the
tunnel answered 503 or a lying 200 (the connection closes either way): `TunnelAnswer` asks the tunnel itself.
No traffic cell adds a pod after start: `EnrolledWhileRunning` enrols a namespace while its pod runs, so the node
proxy must learn it (on the emulated mesh: a rewritten configuration and SIGHUP). It runs last of the ambient tests.
The facts are `conformance.spec.ztunnel`.
"""

from __future__ import annotations

from conformance.spec.capabilities import Capability
from conformance.suite.cases import ConformanceCase
from conformance.suite.checks import ConformanceRun
from conformance.suite.ztunnel_checks import ZtunnelCase, check_late, check_tunnel

CASES = (
    ZtunnelCase(
        name="TunnelAnswer",
        description="A plain pod sends CONNECT <pod IP>:<port> to an enrolled server's 15008 (not redirected): 200 "
        "and the app sees the client's IP where the app admits the pod IP, 503 for a loopback-only app; declared "
        "and undeclared ports (plaintext tunnel: emulated mesh only).",
        part="tunnel",
        needs=frozenset({Capability.PLAINTEXT_TUNNEL}),
    ),
    ZtunnelCase(
        name="EnrolledWhileRunning",
        description="A namespace labelled istio.io/dataplane-mode=ambient while its pod runs: the pod is captured "
        "and reached like one enrolled from the start, from plain and ambient clients (each bind, HTTP and TCP).",
        part="late",
    ),
)

_CHECKS = {"tunnel": check_tunnel, "late": check_late}


def test_node_proxy(conformance: ConformanceRun, case: ConformanceCase) -> None:
    """Judge the case's cells."""
    assert isinstance(case, ZtunnelCase)
    _CHECKS[case.part](conformance, case)
