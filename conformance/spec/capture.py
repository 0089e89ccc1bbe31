"""Ports left out of the sidecar's inbound capture: the rules of the `capture` coordinate, and their expect().

A sidecar pod can keep ports away from its proxy: `traffic.sidecar.istio.io/excludeInboundPorts` (RETURN before
the REDIRECT, with include `*`) or `traffic.sidecar.istio.io/includeInboundPorts: ""` (no inbound capture at all).
Traffic to such a port never meets the server's proxy, so each cell is the same cell of profile baseline: this
module names that baseline cell and the rules, and `semantics.expect()` delegates to the baseline cell's
expectation with these rules first in `because`.
Facts: shared/reference/settings-dualstack.md §3, inbound-semantics.md §6.

Out of the spec: ambient's `ambient.istio.io/bypass-inbound-capture: "true"` (probes-ambient.md §2: it "only drops
the 15006 redirect"). That traces the plain client (straight to the app), but not the sidecar client, whose path to
an enrolled pod (plaintext on the dropped redirect, or HBONE on 15008, which the annotation leaves in place) the
notes do not settle; the rule `ambient-sidecar-client-original-source` accepts either only because both give the
same result when 15006 is captured. So no `bypassed` cells (docs/spec.md says so).
"""

from __future__ import annotations

from dataclasses import replace

from conformance.spec.dimensions import MESH_PROFILES, UNCAPTURED, CellKey, InboundCapture, Path, Profile
from conformance.spec.rules import Rule

CAPTURE_RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        Rule(
            "excluded-inbound-port",
            "A port listed in the pod annotation traffic.sidecar.istio.io/excludeInboundPorts, with "
            "includeInboundPorts `*` (the default), gets `-p tcp --dport P -j RETURN` in ISTIO_INBOUND before the "
            "jump to the REDIRECT to 15006, so no inbound connection to it meets the proxy. The injector passes "
            "`-d 15090,15021,<the annotation's ports + the status port 15020>` and `-b <includeInboundPorts, else "
            "*>`; exclusions apply only when the include list is `*`.",
            "pkg/kube/inject/template.go excludeInboundPort (1.9.0, 1.10.0, master); injection-template.yaml "
            "`-b`/`-d` (1.9.0, 1.10.0; master reads values.global.proxy.includeInboundPorts, default `*`); "
            'tools/istio-iptables/pkg/cmd/run.go handleInboundPortsInclude (1.10.0: `if InboundPortsInclude == "*"` '
            "then the RETURN per excluded port, else one REDIRECT per included port); master "
            "tools/istio-iptables/pkg/capture/run.go handleInboundPortsInclude",
            "settings-dualstack.md §3; inbound-semantics.md §6",
        ),
        Rule(
            "not-included-no-inbound-capture",
            'The pod annotation traffic.sidecar.istio.io/includeInboundPorts: "" is used as-is (an annotation that '
            "is present is never replaced by the default `*`), and istio-iptables writes no PREROUTING jump to "
            "ISTIO_INBOUND for an empty include list: no inbound connection meets the proxy, on any port.",
            "pkg/kube/inject/template.go getAnnotation (1.9.0, 1.10.0, master: the default only when the key is "
            "absent); tools/istio-iptables/pkg/cmd/run.go handleInboundPortsInclude (1.9.0, 1.10.0: `if "
            'InboundPortsInclude != ""` guards the PREROUTING -> ISTIO_INBOUND rule); master '
            "tools/istio-iptables/pkg/capture/run.go L93",
            "settings-dualstack.md §3",
        ),
        Rule(
            "uncaptured-as-baseline",
            "Traffic to a port left out of capture never meets the server's proxy, so the cell is the same cell of "
            "profile baseline (no sidecar in the server; expect() delegates to it): the app sees the client's IP, "
            "a loopback-only app refuses a plain client, and a meshed client's own sidecar answers as it does for "
            "a baseline server. A sidecar client originates auto-mTLS to such a port unless a DestinationRule "
            "disables TLS for the host (Istio's documented workaround): the world applies one per such server.",
            "istio/istio#30311 (auto mTLS and {exclude,include}InboundPorts); istio/istio.io#8917 (FAQ: "
            "DestinationRule trafficPolicy.tls.mode DISABLE); the capture rules above",
            "settings-dualstack.md §3 (an excluded port hits RETURN ...; Caveat)",
        ),
    )
}

_SETTING_RULE = {
    InboundCapture.EXCLUDED: "excluded-inbound-port",
    InboundCapture.NOT_INCLUDED: "not-included-no-inbound-capture",
}


def captures(profile: Profile, path: Path) -> tuple[InboundCapture, ...]:
    """The capture settings asked of a profile's servers along a path.

    Only the sidecar profiles have capture rules to leave ports out of, and only connections from another pod
    meet inbound capture: in-pod paths are never captured (rule `in-pod-not-captured`), so on these servers
    they would repeat the cells of `echo-none` and are not asked.
    """
    if profile in MESH_PROFILES and path.from_other_pod:
        return (InboundCapture.ALL, *UNCAPTURED)
    return (InboundCapture.ALL,)


def baseline_cell(cell: CellKey) -> CellKey:
    """The cell of profile baseline that an uncaptured cell behaves as."""
    return replace(cell, profile=Profile.BASELINE, capture=InboundCapture.ALL)


def uncaptured_because(cell: CellKey) -> tuple[str, str]:
    """The rules that lead an uncaptured cell's `because`, before those of its baseline cell."""
    if cell.capture is InboundCapture.ALL:
        raise ValueError(f"{cell.id}: every port is captured")
    return _SETTING_RULE[cell.capture], "uncaptured-as-baseline"
