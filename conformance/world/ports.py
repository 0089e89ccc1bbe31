"""The echo server's ports: one per bind x protocol x port kind, the anchor, the control port, and what a cell dials.

Every server of a family serves the same ports: one per bind x protocol, declared in its Service, one more per
bind x protocol that no Service declares, one more declared under another Service port (remapped), and an
`anchor` port that the "unlisted" Sidecar lists instead of the test ports. The binds are the family's
(`dimensions.binds`: IPv6 adds `dual_wildcard`). Which port answers a cell is data here, shared by the manifests
(layout.py, probe_pods.py) and the prober.
"""

from __future__ import annotations

from dataclasses import dataclass

from conformance.spec.dimensions import Bind, CellKey, IpFamily, Path, PortKind, Protocol, binds

CONTROL_PORT = 19000
"""The echo program's control port (request record, batch probes). Excluded from capture, as on kind."""
EXCLUDE_INBOUND_ANNOTATION = "traffic.sidecar.istio.io/excludeInboundPorts"
"""The pod annotation that keeps the control ports out of the sidecar's inbound capture."""


@dataclass(frozen=True)
class EchoPort:
    """One port of the echo server, with its bind and protocol as data (like Istio's echo `Port`)."""

    number: int
    bind: Bind
    protocol: Protocol
    declared: bool
    role: str = ""
    """Names a port that is not a test port (the anchor), so Service port names stay unique."""
    service_port: int | None = None
    """The Service `port` when it differs from this container port (the targetPort); None: the same number."""

    @property
    def kind(self) -> PortKind:
        """The cell dimension this port answers."""
        if not self.declared:
            return PortKind.UNDECLARED
        return PortKind.REMAPPED if self.service_port is not None else PortKind.DECLARED

    @property
    def name(self) -> str:
        """The Service port name; its prefix tells Istio the protocol (`http-...`, `tcp-...`)."""
        suffix = "-remapped" if self.service_port is not None else ""
        return f"{self.protocol.value}-{self.role or self.bind.value.replace('_', '-')}{suffix}"

    @property
    def spec(self) -> str:
        """The echo program's PORT:BIND:PROTO argument."""
        return f"{self.number}:{self.bind.value}:{self.protocol.value}"


def _port_number(bind: Bind, protocol: Protocol, kind: PortKind) -> int:
    # 8xxx http, 9xxx tcp; x08x declared, x18x undeclared, x28x remapped; last digit: 1 loopback, 2 pod_ip,
    # 3 wildcard, 4 dual_wildcard.
    base = 8000 if protocol is Protocol.HTTP else 9000
    offset = {PortKind.DECLARED: 80, PortKind.UNDECLARED: 180, PortKind.REMAPPED: 280}[kind]
    return base + offset + 1 + list(Bind).index(bind)


REMAPPED_SERVICE_OFFSET = 10000
"""A remapped port's Service `port` is its container port + this (8281 is served as Service port 18281)."""


def _test_port(bind: Bind, protocol: Protocol, kind: PortKind) -> EchoPort:
    number = _port_number(bind, protocol, kind)
    service_port = number + REMAPPED_SERVICE_OFFSET if kind is PortKind.REMAPPED else None
    return EchoPort(number, bind, protocol, kind.declared, service_port=service_port)


TEST_PORTS: tuple[EchoPort, ...] = tuple(_test_port(b, p, k) for k in PortKind for p in Protocol for b in Bind)
"""Every bind's test ports; a server serves those of its family's binds (`family_test_ports`)."""
ANCHOR_PORT = EchoPort(7070, Bind.WILDCARD, Protocol.HTTP, declared=True, role="anchor")
"""Listed by the `unlisted` Sidecar, so that Sidecar has an ingress listener that is not a test port."""


def family_test_ports(family: IpFamily) -> tuple[EchoPort, ...]:
    """The test ports a server of this family serves: one per bind the family asks (`dimensions.binds`)."""
    return tuple(p for p in TEST_PORTS if p.bind in binds(family))


def server_ports(family: IpFamily) -> tuple[EchoPort, ...]:
    """Every port a server of this family serves: its test ports and the anchor."""
    return (*family_test_ports(family), ANCHOR_PORT)


def port_for(bind: Bind, protocol: Protocol, port: PortKind) -> EchoPort:
    """The server port that answers a cell's (bind, protocol, port kind) coordinates."""
    for candidate in TEST_PORTS:
        if (candidate.bind, candidate.protocol, candidate.kind) == (bind, protocol, port):
            return candidate
    raise LookupError(f"no port for {bind}/{protocol}/{port}")


def dialled_port(cell: CellKey) -> int:
    """The port a cell's connection dials: the Service `port` on the ClusterIP path, else the container port."""
    port = port_for(cell.bind, cell.protocol, cell.port)
    if cell.path is Path.SERVICE and port.service_port is not None:
        return port.service_port
    return port.number


def dialled_address(cell: CellKey) -> str | None:
    """The fixed address an in-pod localhost cell dials; None where the address is a pod or Service IP.

    A dual cell dials the loopback of its client family.
    """
    if cell.path is Path.LOCALHOST:
        family = cell.client_family if cell.ip_family is IpFamily.DUAL else cell.ip_family
        return "127.0.0.1" if family is IpFamily.IPV4 else "::1"
    return None
