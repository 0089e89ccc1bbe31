"""The dimensions of a conformance cell, with the names the report, the CLI and the tests all use.

A cell is one question the suite asks a mesh: "an app bound *this* way, on a port declared (or not) in a
Service, reached along *this* path from *this* client, under *this* mesh profile: what does the app see?".
Each dimension is a closed set of domain names so that a typo is an error, not a silently empty table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property


class Profile(StrEnum):
    """How the pod that runs the app is meshed."""

    BASELINE = "baseline"
    """No sidecar in the server pod: plain Kubernetes networking, the behaviour 1.10 aligned with."""
    LEGACY = "legacy"
    """Istio <= 1.9 semantics (or a newer Istio switched back): the sidecar forwards to 127.0.0.1."""
    PASSTHROUGH = "passthrough"
    """Istio >= 1.10 default: the sidecar forwards to the pod IP the client dialled, from 127.0.0.6."""
    AMBIENT = "ambient"
    """No sidecar: the pod is enrolled in ambient mode and the node's ztunnel takes its traffic (in-pod capture)."""


MESH_PROFILES: tuple[Profile, ...] = (Profile.LEGACY, Profile.PASSTHROUGH)
"""The profiles in which the server pod carries a sidecar."""

AMBIENT_MESH_SETTING = Profile.LEGACY
"""The mesh-wide inbound setting while ambient cells run: LOCALHOST (legacy), present and changing nothing
(probes-ambient.md §2 "No override"). Ambient runs last, after the legacy round trip: on kind it has an install of
its own (the ambient profile), made once and never left."""


class IpFamily(StrEnum):
    """The IP family of one run: a cluster is single-stack, or dual-stack, for the whole run."""

    IPV4 = "ipv4"
    IPV6 = "ipv6"
    DUAL = "dual"
    """Every pod has an IPv4 and an IPv6 address, Istio installed with ISTIO_DUAL_STACK=true (settings-dualstack.md
    §2); a cell's `client_family` says which family its connection uses (spec/dualstack.py)."""


SINGLE_STACK: tuple[IpFamily, ...] = (IpFamily.IPV4, IpFamily.IPV6)
"""The single-stack families: where a family is one address family (a cell's client family, a world's pods, the
family of a suite run), not the run's setting."""


class Bind(StrEnum):
    """The address the app listens on."""

    LOOPBACK = "loopback"
    """127.0.0.1 / ::1: an admin port meant for the pod only."""
    POD_IP = "pod_ip"
    """The pod's own eth0 address, typical of stateful apps (Elasticsearch, ZooKeeper)."""
    WILDCARD = "wildcard"
    """0.0.0.0 / ::, what most apps do; an IPv6 wildcard is IPv6-only (IPV6_V6ONLY on), separate from IPv4."""
    DUAL_WILDCARD = "dual_wildcard"
    """[::] with IPV6_V6ONLY off, the socket Go's `net.Listen("tcp", ":8080")` and Java open: it accepts IPv4 too,
    IPv4-mapped (settings-dualstack.md §5). Asked in IPv6 and dual runs: in an IPv4 run it is `wildcard`. On a
    dual-stack pod it behaves as `wildcard`, which binds 0.0.0.0 and an IPv6-only [::] there."""


ONE_FAMILY_BINDS: tuple[Bind, ...] = (Bind.LOOPBACK, Bind.POD_IP, Bind.WILDCARD)
"""The binds every family asks. `dual_wildcard` differs from `wildcard` only where an IPv4 connection enters a pod
with IPv6; the probes of an IPv6 pod and the node proxy's own cells never make one, so they ask these three only
(a dual-stack pod's probes do: they dial its IPv4 primary pod IP, `probes.probe_binds`)."""


def binds(family: IpFamily) -> tuple[Bind, ...]:
    """The binds a run of this family asks its traffic cells of: `dual_wildcard` too where the pod has IPv6.

    In a dual-stack pod the echo program binds each of them in both families (loopback 127.0.0.1 and ::1, pod_ip
    both pod IPs, wildcard 0.0.0.0 and an IPv6-only [::], dual_wildcard one [::] socket with V6ONLY off).
    """
    return ONE_FAMILY_BINDS if family is IpFamily.IPV4 else tuple(Bind)


class PortKind(StrEnum):
    """Whether a Kubernetes Service selecting the pod declares the port, and under which number."""

    DECLARED = "declared"
    """A Service declares it with `port` == `targetPort`."""
    UNDECLARED = "undeclared"
    REMAPPED = "remapped"
    """A Service declares it as its `targetPort` under another `port` (the ClusterIP is dialled on `port`, the
    pod IP on the container port); a Sidecar lists it by the container port (reference section 4)."""

    @property
    def declared(self) -> bool:
        """True when a Service selects this port (as `targetPort`)."""
        return self is not PortKind.UNDECLARED


class Protocol(StrEnum):
    """The app protocol; it decides how a sidecar reports a failed upstream (503 or a close)."""

    HTTP = "http"
    TCP = "tcp"


class Path(StrEnum):
    """Who dials what."""

    POD_IP = "pod_ip"
    """Another pod dials the server's pod IP."""
    SERVICE = "service"
    """Another pod dials the Service's ClusterIP (declared ports only)."""
    LOCALHOST = "localhost"
    """A process inside the server pod dials loopback."""
    SELF_POD_IP = "self_pod_ip"
    """A process inside the server pod dials its own pod IP."""

    @property
    def from_other_pod(self) -> bool:
        """True when the connection crosses the pod boundary (and so can meet inbound capture)."""
        return self in (Path.POD_IP, Path.SERVICE)


class Client(StrEnum):
    """The pod that dials, for paths from another pod."""

    PLAIN = "plain"
    """A pod without a sidecar."""
    MESHED = "meshed"
    """A pod with a sidecar: its outbound connection goes through its own proxy first."""
    AMBIENT = "ambient"
    """A pod enrolled in ambient mode: its outbound connection goes through ztunnel, tunnelled to the server's."""


class DefaultEndpoint(StrEnum):
    """The Sidecar resource's `spec.ingress[].defaultEndpoint` that applies to the cell's port.

    `none` means no Sidecar resource selects the pod; `unlisted` means a Sidecar with ingress listeners
    selects the pod but lists other ports only; `empty` is the empty host `:P` (reference section 4). Every
    literal is a cell in both families: istiod resolves the host by the proxy's IP family.
    """

    NONE = "none"
    LOCALHOST_V4 = "127.0.0.1"
    INSTANCE_V4 = "0.0.0.0"
    LOCALHOST_V6 = "[::1]"
    INSTANCE_V6 = "[::]"
    EMPTY = "empty"
    UNLISTED = "unlisted"

    @property
    def is_override(self) -> bool:
        """True for the four literal forms, which each configure the port's inbound endpoint."""
        return self not in (DefaultEndpoint.NONE, DefaultEndpoint.UNLISTED)

    @property
    def targets_localhost(self) -> bool:
        """True for `127.0.0.1:P` and `[::1]:P`."""
        return self in (DefaultEndpoint.LOCALHOST_V4, DefaultEndpoint.LOCALHOST_V6)

    @property
    def targets_instance_ip(self) -> bool:
        """True for `0.0.0.0:P` and `[::]:P`, which forward to the pod IP."""
        return self in (DefaultEndpoint.INSTANCE_V4, DefaultEndpoint.INSTANCE_V6)

    def for_port(self, port: int) -> str:
        """The value written into a Sidecar resource for `port` (`127.0.0.1:8081`)."""
        if not self.is_override:
            raise ValueError(f"{self.value!r} is not a defaultEndpoint form")
        if self is DefaultEndpoint.EMPTY:
            return f":{port}"
        return f"{self.value}:{port}"

    def family(self) -> IpFamily | None:
        """The IP family a literal host belongs to (None for the empty host and the non-literals)."""
        if self in (DefaultEndpoint.LOCALHOST_V4, DefaultEndpoint.INSTANCE_V4):
            return IpFamily.IPV4
        if self in (DefaultEndpoint.LOCALHOST_V6, DefaultEndpoint.INSTANCE_V6):
            return IpFamily.IPV6
        return None


OVERRIDES_BY_FAMILY: dict[IpFamily, tuple[DefaultEndpoint, DefaultEndpoint]] = {
    # Each family uses its own literal forms; `[::1]`/`[::]` exist since Istio 1.14.4 and 1.15.0 (PR #40265,
    # #40520; reference section 4).
    IpFamily.IPV4: (DefaultEndpoint.LOCALHOST_V4, DefaultEndpoint.INSTANCE_V4),
    IpFamily.IPV6: (DefaultEndpoint.LOCALHOST_V6, DefaultEndpoint.INSTANCE_V6),
}

SIDECAR_FORMS_BY_FAMILY: dict[IpFamily, tuple[DefaultEndpoint, ...]] = {
    # The cells of each family: its own literals, the other family's literals (resolved by the pod's family,
    # reference section 4, "How the host is resolved"), then the empty host `:P`. On a dual-stack pod every
    # literal is of a family the pod has: the same four forms, none of them "cross" (spec/dualstack.py).
    **{
        family: (*OVERRIDES_BY_FAMILY[family], *OVERRIDES_BY_FAMILY[other], DefaultEndpoint.EMPTY)
        for family, other in ((IpFamily.IPV4, IpFamily.IPV6), (IpFamily.IPV6, IpFamily.IPV4))
    },
    IpFamily.DUAL: (*OVERRIDES_BY_FAMILY[IpFamily.IPV4], *OVERRIDES_BY_FAMILY[IpFamily.IPV6], DefaultEndpoint.EMPTY),
}


class Source(StrEnum):
    """The peer address the app sees on an accepted connection, by meaning rather than by value."""

    CLIENT = "client"
    """The client pod's IP: what Kubernetes without a mesh shows, and what ztunnel preserves in ambient mode."""
    INBOUND_PASSTHROUGH = "inbound_passthrough"
    """127.0.0.6 / ::6, the bind address of Istio's inbound passthrough clusters."""
    LOCALHOST = "localhost"
    """127.0.0.1 / ::1."""
    IPV4_LOCALHOST = "ipv4_localhost"
    """127.0.0.1 in an IPv6 run: an IPv4 connection on the pod's loopback, accepted by a `dual_wildcard` socket
    (IPv4-mapped, reported as the IPv4 address, as Go prints it); in a dual run, 127.0.0.1 seen by an IPv6
    client's cell (legacy mode dials every client at 127.0.0.1)."""
    IPV6_LOCALHOST = "ipv6_localhost"
    """::1 seen by an IPv4 client's cell of a dual run (a Sidecar `[::1]:P` from 1.18.6, 1.19.4, 1.20.0, 1.21+)."""
    IPV4_INBOUND_PASSTHROUGH = "ipv4_inbound_passthrough"
    """127.0.0.6 seen by an IPv6 client's cell of a dual run (a Sidecar `0.0.0.0:P` dials the IPv4 pod IP)."""
    IPV6_INBOUND_PASSTHROUGH = "ipv6_inbound_passthrough"
    """::6 seen by an IPv4 client's cell of a dual run (a Sidecar `[::]:P` dials the IPv6 pod IP)."""
    SELF = "self"
    """The server pod's own IP."""


class Interception(StrEnum):
    """How the server pod's inbound traffic reaches its sidecar (pod annotation `sidecar.istio.io/interceptionMode`).

    Only sidecar profiles have a mode; baseline and ambient cells are REDIRECT (the default) by convention.
    """

    REDIRECT = "redirect"
    """nat REDIRECT to 15006 (Istio's default): the sidecar's upstream binds 127.0.0.6 / ::6 where it dials."""
    TPROXY = "tproxy"
    """mangle TPROXY to 15006 with Envoy's original_src listener filter (interception.py)."""


class Failure(StrEnum):
    """How an unreachable cell may fail, as the client observes it."""

    REFUSED = "refused"
    """TCP RST on SYN: nothing listens and no proxy stands in the way."""
    HTTP_503 = "http_503"
    """A proxy accepted, could not reach the app, and answered 503 (Envoy on HTTP ports)."""
    RESET_OR_EOF = "reset_or_eof"
    """A proxy accepted, could not reach the app, and closed or reset (Envoy on TCP ports)."""


class InboundCapture(StrEnum):
    """Which inbound ports of the server pod its sidecar's capture rules take (a server-level setting).

    The pod annotations `traffic.sidecar.istio.io/excludeInboundPorts` and `includeInboundPorts` become
    istio-iptables' `-d` and `-b` (settings-dualstack.md §3; the rules are in `conformance.spec.capture`).
    """

    ALL = "all"
    """Every inbound port is captured (include `*`, only the injector's own ports excluded): every other cell."""
    EXCLUDED = "excluded"
    """`excludeInboundPorts` lists every test port (include `*`): they are RETURNed before the REDIRECT."""
    NOT_INCLUDED = "not_included"
    """`includeInboundPorts: ""`: no inbound capture at all."""


UNCAPTURED: tuple[InboundCapture, ...] = (InboundCapture.EXCLUDED, InboundCapture.NOT_INCLUDED)
"""The settings that leave the test ports out of capture, asked of the sidecar profiles (MESH_PROFILES)."""


ADDRESSES: dict[IpFamily, dict[Source, str]] = {
    # The fixed addresses behind the Source names (reference section 1, util.go InboundPassthroughBind*).
    IpFamily.IPV4: {Source.LOCALHOST: "127.0.0.1", Source.INBOUND_PASSTHROUGH: "127.0.0.6"},
    IpFamily.IPV6: {Source.LOCALHOST: "::1", Source.INBOUND_PASSTHROUGH: "::6", Source.IPV4_LOCALHOST: "127.0.0.1"},
}

_OTHER_FAMILY: dict[IpFamily, dict[Source, Source]] = {
    # In a dual run, the names of the other family's fixed addresses, seen from a client of this family.
    IpFamily.IPV4: {
        Source.LOCALHOST: Source.IPV6_LOCALHOST,
        Source.INBOUND_PASSTHROUGH: Source.IPV6_INBOUND_PASSTHROUGH,
    },
    IpFamily.IPV6: {
        Source.LOCALHOST: Source.IPV4_LOCALHOST,
        Source.INBOUND_PASSTHROUGH: Source.IPV4_INBOUND_PASSTHROUGH,
    },
}


def source_addresses(family: IpFamily, client_family: IpFamily | None = None) -> dict[Source, str]:
    """The fixed addresses behind the Source names, for a cell of `family` whose connection uses `client_family`.

    A single-stack family has one table (`client_family` is None there); a dual cell's names are relative to its
    client family (LOCALHOST is 127.0.0.1 for an IPv4 client, ::1 for an IPv6 one), plus the other family's
    localhost and passthrough bind under their cross-family names.
    """
    if family is not IpFamily.DUAL:
        return dict(ADDRESSES[family])
    if client_family is None or client_family is IpFamily.DUAL:
        raise ValueError(f"a dual-stack cell needs a client family, not {client_family!r}")
    own, other = client_family, (IpFamily.IPV6 if client_family is IpFamily.IPV4 else IpFamily.IPV4)
    addresses: dict[Source, str] = {
        s: a for s, a in ADDRESSES[own].items() if s in (Source.LOCALHOST, Source.INBOUND_PASSTHROUGH)
    }
    for source, cross in _OTHER_FAMILY[own].items():
        addresses[cross] = ADDRESSES[other][source]
    return addresses


@dataclass(frozen=True)
class CellKey:
    """The coordinates of one cell; `client` is None for the in-pod paths.

    `interception` and `capture` come last with defaults, so the cells of REDIRECT-captured servers with every
    port captured keep their constructions and ids.
    """

    profile: Profile
    default_endpoint: DefaultEndpoint
    bind: Bind
    port: PortKind
    protocol: Protocol
    path: Path
    client: Client | None
    ip_family: IpFamily
    interception: Interception = Interception.REDIRECT
    capture: InboundCapture = InboundCapture.ALL
    client_family: IpFamily | None = None
    """None in single-stack runs; in a dual run the family the connection uses: for a path from another pod the
    family the client dials (pod IP or ClusterIP of that family), in the pod the family of the address dialled."""

    @cached_property
    def id(self) -> str:
        """A stable, human-readable identifier (also used as pytest id and report key).

        Computed once per key (cached on the instance, outside the fields, so equality and hashing are the
        fields' alone): a report rewrite asks every cell's id, and a run rewrites its report a dozen times.

        A REDIRECT cell of a fully captured server has the id it had before these were coordinates (reports are
        compared across versions by id); a TPROXY cell's profile segment reads `passthrough+tproxy`, a server
        with ports left out of capture's `passthrough+excluded` (or `+not_included`), a dual cell's family
        segment `dual+ipv4` (or `dual+ipv6`: its client family).
        """
        client = self.client.value if self.client else "in_pod"
        family = self.ip_family.value
        if self.client_family is not None:
            family += f"+{self.client_family.value}"
        profile = self.profile.value
        if self.interception is not Interception.REDIRECT:
            profile += f"+{self.interception.value}"
        if self.capture is not InboundCapture.ALL:
            profile += f"+{self.capture.value}"
        return "/".join(
            (
                profile,
                self.default_endpoint.value,
                self.bind.value,
                self.port.value,
                self.protocol.value,
                self.path.value,
                client,
                family,
            )
        )

    def to_json(self) -> dict[str, str | None]:
        """The cell's keys as the versioned JSON format names them."""
        return {
            "profile": self.profile.value,
            "default_endpoint": self.default_endpoint.value,
            "bind": self.bind.value,
            "port": self.port.value,
            "protocol": self.protocol.value,
            "path": self.path.value,
            "client": self.client.value if self.client else None,
            "ip_family": self.ip_family.value,
            "interception": self.interception.value,
            "capture": self.capture.value,
            "client_family": self.client_family.value if self.client_family else None,
        }
