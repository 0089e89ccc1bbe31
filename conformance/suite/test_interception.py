"""TPROXY interception (`sidecar.istio.io/interceptionMode: TPROXY`): the client's address is kept.

istio-iptables diverts inbound TCP with the mangle table's TPROXY target instead of nat REDIRECT, and Envoy's
original_src listener filter dials the app from the client's address (mark 1337), so where a REDIRECT sidecar
shows the app 127.0.0.6 / ::6 a TPROXY one shows the client pod's IP; a loopback-only app stays unreachable, and
the pod's own connections are not captured (spec/interception.py; docs/spec.md "TPROXY").
"""

from __future__ import annotations

from conformance.spec.dimensions import DefaultEndpoint, Interception
from conformance.suite.cases import ConformanceCase
from conformance.suite.checks import ConformanceRun

CASES = (
    ConformanceCase(
        name="TproxyFromOtherPods",
        description="A TPROXY server without a Sidecar, dialled from plain and meshed pods by pod IP and Service: "
        "declared, remapped and undeclared ports reach pod-IP and wildcard apps, which see the client's pod IP.",
        select=lambda c: c.path.from_other_pod and c.default_endpoint is DefaultEndpoint.NONE,
        interception=Interception.TPROXY,
    ),
    ConformanceCase(
        name="TproxySidecarInstanceEndpoint",
        description="A TPROXY server whose Sidecar says 0.0.0.0:P / [::]:P (its family's): the pod IP is dialled "
        "from the client's address, so pod-IP and wildcard apps see the client's pod IP.",
        select=lambda c: c.path.from_other_pod and c.default_endpoint.targets_instance_ip,
        interception=Interception.TPROXY,
    ),
    ConformanceCase(
        name="TproxyInPod",
        description="Inside a TPROXY pod, localhost and the pod's own IP are not captured (1.11+ lo RETURN rules): "
        "they reach the app as its bind allows.",
        select=lambda c: not c.path.from_other_pod,
        interception=Interception.TPROXY,
    ),
)


def test_tproxy(conformance: ConformanceRun, case: ConformanceCase) -> None:
    """Reachability, failure form and source address of each TPROXY cell match the spec."""
    conformance.check_cells(case)
