"""The node proxy's own contract under ambient: its tunnel's answer, and pods enrolled while it runs.

Two parts of ztunnel's behaviour that the traffic cells never isolate, each as cells beside them (like probes.py):

- **tunnel cells** ask the tunnel directly: a plain (non-enrolled) pod sends `CONNECT <server pod IP>:<port>` to
  the enrolled server's 15008, which istio-cni never redirects. ztunnel connects to the local workload first and
  answers `200` only once that worked, `503` when it failed (ztunnel src/proxy/inbound.rs `serve_connect`: "Wait on
  establishing the upstream connection ... before sending the 200 response"; a failed `freebind_connect` is
  `StatusCode::SERVICE_UNAVAILABLE`, ResponseFlags::ConnectionFailure; master, commit 0045b42). Behind a 200 the
  app sees the tunnel peer's address, the plain client pod's IP (`enable_original_source` binds the connection's
  `src`). In traffic cells both ends of a tunnel are the program under test and the client sees a close either way,
  so a tunnel that answers 200 regardless passes them: only these cells tell. Real HBONE is HTTP/2 CONNECT inside
  mutual TLS with SPIFFE identities, which a plain pod cannot speak: these cells need `plaintext-tunnel`, which only
  the emulated mesh (whose tunnel is plain HTTP/1.1 CONNECT) has.
- **late cells** ask a pod enrolled after the mesh started (its namespace labelled `istio.io/dataplane-mode=ambient`
  while it runs): it must be captured and reached like the pods enrolled from the start, so each late cell expects
  what the same ambient traffic cell expects. Enrolment needs no restart: istio-cni's node agent enrols the running
  pods of a namespace when its label changes (cni/pkg/nodeagent/informers.go reconcileNamespace -> AddPodToMesh;
  probes-ambient.md §2 "Enrolment"), and the node proxy learns the pod from it.

Both exist only under the ambient profile.
"""

from __future__ import annotations

from dataclasses import dataclass

from conformance.spec.dimensions import (
    ONE_FAMILY_BINDS,
    Bind,
    CellKey,
    Client,
    DefaultEndpoint,
    IpFamily,
    Path,
    PortKind,
    Profile,
    Protocol,
)
from conformance.spec.outcome import Expectation
from conformance.spec.rules import Rule
from conformance.spec.semantics import expect

TUNNEL_PORT = 15008
"""ztunnel's HBONE port in every enrolled pod, never redirected (cni/pkg/iptables default.golden `! --dport 15008`)."""

TUNNEL_PORTS: tuple[PortKind, ...] = (PortKind.DECLARED, PortKind.UNDECLARED)
"""The tunnel targets the pod IP and the container port, whether a Service declares it or not (probes-ambient.md §2:
"Ports need not be declared in a Service: the HBONE target is pod IP + requested port")."""

LATE_CLIENTS: tuple[Client, ...] = (Client.PLAIN, Client.AMBIENT)
"""Who dials the late pod: a plain pod (inbound capture of the new pod) and an enrolled one (the node proxy's
outbound side learns the new destination too)."""


ZTUNNEL_RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        Rule(
            "ambient-tunnel-answer",
            "ztunnel answers an HBONE CONNECT to an enrolled pod's 15008 only after it has connected to the local "
            "workload IP at the requested port: 200 when that worked (the app then sees the tunnel peer's address), "
            "503 Service Unavailable when it failed (an app bound to loopback only).",
            "ztunnel src/proxy/inbound.rs serve_connect (master, 0045b42): freebind_connect error -> "
            "StatusCode::SERVICE_UNAVAILABLE, ResponseFlags::ConnectionFailure; the 200 is sent after the upstream "
            "connection is established; tests/integration/ambient/baseline_test.go TestServices (503 for "
            "LocalhostIP ports, #55421)",
            "probes-ambient.md §2 (table: 'ztunnel answers the HBONE CONNECT with 503')",
        ),
        Rule(
            "ambient-enrolled-late",
            "A pod whose namespace is labelled istio.io/dataplane-mode=ambient while it runs is enrolled without a "
            "restart: istio-cni writes its in-pod rules and hands it to the node's ztunnel, after which it is "
            "captured and reached exactly like a pod enrolled from the start.",
            "cni/pkg/nodeagent/informers.go (master): reconcileNamespace enqueues a namespace's running pods when "
            "its istio.io/dataplane-mode label changes, reconcilePod calls AddPodToMesh (in-pod rules, the pod's "
            "netns sent to ztunnel by ztunnelserver.go) and the pod is annotated ambient.istio.io/redirection",
            "probes-ambient.md §2 (Enrolment: namespace or pod label)",
        ),
    )
}


@dataclass(frozen=True)
class TunnelCellKey:
    """A plain pod asks an enrolled server's 15008 for `CONNECT <pod IP>:<port>` of the app bound `bind`."""

    bind: Bind
    port: PortKind
    ip_family: IpFamily
    profile: Profile = Profile.AMBIENT

    @property
    def id(self) -> str:
        """`tunnel/ambient/<bind>/<port>/plain/<family>` (traffic ids never start with `tunnel/`)."""
        return "/".join(("tunnel", self.profile.value, self.bind.value, self.port.value, "plain", self.ip_family.value))

    def to_json(self) -> dict[str, object]:
        """The cell's keys."""
        return {
            "profile": self.profile.value,
            "bind": self.bind.value,
            "port": self.port.value,
            "client": Client.PLAIN.value,
            "ip_family": self.ip_family.value,
        }


@dataclass(frozen=True)
class TunnelExpectation:
    """The tunnel's status line, and (behind a 200) who the app sees."""

    status: int
    client_source: bool
    because: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        """The `expected` object of a tunnel cell."""
        return {
            "status": self.status,
            "source": "client" if self.client_source else None,
            "because": list(self.because),
        }


def expect_tunnel(cell: TunnelCellKey) -> TunnelExpectation:
    """200 with the client's address where the bind admits the pod IP, else 503."""
    reached = cell.bind is not Bind.LOOPBACK
    because = ("ambient-tunnel-answer", "ambient-local-workload", "bind-admits")
    if reached:
        return TunnelExpectation(200, True, (*because, "ambient-original-source"))
    return TunnelExpectation(503, False, because)


@dataclass(frozen=True)
class LateCellKey:
    """A client dials the declared port (bind, protocol) of a pod enrolled after the mesh started."""

    bind: Bind
    protocol: Protocol
    client: Client
    ip_family: IpFamily
    profile: Profile = Profile.AMBIENT

    @property
    def id(self) -> str:
        """`late/ambient/<bind>/declared/<protocol>/pod_ip/<client>/<family>`."""
        parts = (self.profile.value, self.bind.value, PortKind.DECLARED.value, self.protocol.value, Path.POD_IP.value)
        return "/".join(("late", *parts, self.client.value, self.ip_family.value))

    def to_json(self) -> dict[str, object]:
        """The cell's keys."""
        return {
            "profile": self.profile.value,
            "bind": self.bind.value,
            "port": PortKind.DECLARED.value,
            "protocol": self.protocol.value,
            "path": Path.POD_IP.value,
            "client": self.client.value,
            "ip_family": self.ip_family.value,
        }

    @property
    def traffic_cell(self) -> CellKey:
        """The ambient traffic cell of a pod enrolled from the start that this one must behave like."""
        return CellKey(
            Profile.AMBIENT, DefaultEndpoint.NONE, self.bind, PortKind.DECLARED, self.protocol, Path.POD_IP,
            self.client, self.ip_family,
        )  # fmt: skip


def expect_late(cell: LateCellKey) -> Expectation:
    """The traffic cell's expectation, led by the rule that makes it apply to a late pod."""
    traffic = expect(cell.traffic_cell)
    return Expectation(traffic.reachable, traffic.source, traffic.failure, ("ambient-enrolled-late", *traffic.because))


def tunnel_cells(profiles: tuple[Profile, ...], families: tuple[IpFamily, ...]) -> tuple[TunnelCellKey, ...]:
    """Every tunnel cell (ambient only), in a stable order: family, port, bind."""
    if Profile.AMBIENT not in profiles:
        return ()
    return tuple(
        TunnelCellKey(bind, port, family) for family in families for port in TUNNEL_PORTS for bind in ONE_FAMILY_BINDS
    )


def late_cells(profiles: tuple[Profile, ...], families: tuple[IpFamily, ...]) -> tuple[LateCellKey, ...]:
    """Every late-enrolment cell (ambient only), in a stable order: family, client, protocol, bind."""
    if Profile.AMBIENT not in profiles:
        return ()
    return tuple(
        LateCellKey(bind, protocol, client, family)
        for family in families
        for client in LATE_CLIENTS
        for protocol in Protocol
        for bind in ONE_FAMILY_BINDS
    )


def ztunnel_spec_entries(profiles: tuple[Profile, ...], families: tuple[IpFamily, ...]) -> dict[str, object]:
    """The node proxy's part of the spec document: `ztunnel_rules`, `tunnel_cells`, `late_cells`."""
    return {
        "ztunnel_rules": [r.to_json() for r in ZTUNNEL_RULES.values()],
        "tunnel_cells": [
            {"id": c.id, **c.to_json(), "expected": expect_tunnel(c).to_json()}
            for c in tunnel_cells(profiles, families)
        ],
        "late_cells": [
            {"id": c.id, **c.to_json(), "expected": expect_late(c).to_json()} for c in late_cells(profiles, families)
        ],
    }


def ztunnel_spec_markdown(profiles: tuple[Profile, ...], families: tuple[IpFamily, ...]) -> list[str]:
    """Per family, the tunnel's answers and the late pod's cells (ambient only)."""
    if Profile.AMBIENT not in profiles:
        return []
    lines: list[str] = []
    columns = " | ".join(b.value for b in ONE_FAMILY_BINDS) + " |"
    rule = "---|" * len(ONE_FAMILY_BINDS)
    for family in families:
        lines += ["", f"## ambient ({family.value}): the tunnel asked directly (CONNECT to 15008 from a plain pod)", ""]
        lines += ["| port | " + columns, "|---|" + rule]
        for port in TUNNEL_PORTS:
            row = f"| {port.value} |"
            for bind in ONE_FAMILY_BINDS:
                want = expect_tunnel(TunnelCellKey(bind, port, family))
                row += f" {want.status}{' (client IP)' if want.client_source else ''} |"
            lines.append(row)
        lines += ["", f"## ambient ({family.value}): a pod enrolled while the run is under way", ""]
        lines += ["| protocol | client | " + columns, "|---|---|" + rule]
        for client in LATE_CLIENTS:
            for protocol in Protocol:
                row = f"| {protocol.value} | {client.value} |"
                for bind in ONE_FAMILY_BINDS:
                    late = expect_late(LateCellKey(bind, protocol, client, family))
                    failure = " or ".join(f.value for f in late.failure)
                    row += " ✓ client IP |" if late.reachable else f" ✗ {failure} |"
                lines.append(row)
    return lines
