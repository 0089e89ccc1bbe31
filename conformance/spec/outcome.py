"""What a cell's expectation is made of, and the model steps every family shares.

Shared by semantics.py and dualstack.py, which cannot import each other (semantics.expect() dispatches to
dualstack.expect_dual()).

`Expectation` is what `expect()` returns; `InboundTarget` names where a server's sidecar forwards (step 1 of the
model); `bind_admits` (step 2) and `failure_forms` (step 3) are the same for single-stack and dual-stack cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from conformance.spec.dimensions import (
    Bind,
    CellKey,
    Client,
    DefaultEndpoint,
    Failure,
    Path,
    PortKind,
    Profile,
    Protocol,
    Source,
)


class InboundTarget(StrEnum):
    """Where the server pod's sidecar forwards an inbound connection (step 1 of the model)."""

    LOCALHOST = "localhost"
    """A STATIC 127.0.0.1:P / [::1]:P endpoint, no upstream bind."""
    POD_IP = "pod_ip"
    """The pod IP (ORIGINAL_DST or the instance IP), dialled from 127.0.0.6 / ::6."""
    IPV4_LOCALHOST = "ipv4_localhost"
    """127.0.0.1 on a pod with no IPv4 address (`0.0.0.0:P` there, 1.14.4+ and 1.15+), no upstream bind."""
    IPV6_LOCALHOST = "ipv6_localhost"
    """::1 on a pod with no IPv6 address (`[::]:P` there, 1.14.4+ and 1.15+), no upstream bind."""


@dataclass(frozen=True)
class Expectation:
    """What the app sees, or how the client sees it fail; `because` lists the rules applied, in order."""

    reachable: bool
    source: Source | None
    failure: tuple[Failure, ...]
    because: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        """The `expected` object of the versioned formats."""
        return {
            "reachable": self.reachable,
            "source": self.source.value if self.source else None,
            "failure": [f.value for f in self.failure],
            "because": list(self.because),
        }


def bind_admits(bind: Bind, target: InboundTarget) -> bool:
    """Step 2: does an app bound to `bind` accept a connection to `target`'s address?"""
    if target in (InboundTarget.IPV4_LOCALHOST, InboundTarget.IPV6_LOCALHOST):
        # The other family's localhost (a single-stack pod of this family): only a dual [::] socket takes IPv4.
        return target is InboundTarget.IPV4_LOCALHOST and bind is Bind.DUAL_WILDCARD
    if bind in (Bind.WILDCARD, Bind.DUAL_WILDCARD):
        return True
    return (bind is Bind.LOOPBACK) == (target is InboundTarget.LOCALHOST)


def failure_forms(cell: CellKey) -> tuple[tuple[Failure, ...], str]:
    """Step 3: how an unreachable cell may look to the client, and the rule that says so."""
    server_proxied = cell.path.from_other_pod and cell.profile is not Profile.BASELINE
    client_proxied = cell.path.from_other_pod and cell.client is Client.MESHED
    if not (server_proxied or client_proxied):
        return (Failure.REFUSED,), "refused-without-proxy"
    if cell.protocol is Protocol.TCP:
        return (Failure.RESET_OR_EOF,), "envoy-upstream-failure"
    if server_proxied:
        # The server's sidecar answers: from its HTTP listener for a declared (and listed) port, or from the
        # catch-all chains, which sniff HTTP with no timeout. Either way exactly 503.
        sniffed = cell.port is PortKind.UNDECLARED or cell.default_endpoint is DefaultEndpoint.UNLISTED
        return (Failure.HTTP_503,), "inbound-sniffing-503" if sniffed else "envoy-upstream-failure"
    # Only the client's sidecar stands in the way: an HTTP listener for a Service's HTTP `port`, else the
    # outbound catch-all, a plain TCP proxy (a remapped port's pod IP is dialled on the container port).
    if cell.port is PortKind.UNDECLARED or (cell.port is PortKind.REMAPPED and cell.path is Path.POD_IP):
        return (Failure.RESET_OR_EOF,), "outbound-passthrough-tcp"
    return (Failure.HTTP_503,), "envoy-upstream-failure"
