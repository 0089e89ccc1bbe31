"""What a pod's listeners mean for the ports its Services target, under each inbound behaviour.

Pure functions over plain values, shared by every source of pods and listeners. The semantics are the ones the
suite's spec encodes (shared/reference/inbound-semantics.md section 1, probes-ambient.md sections 2 and 3):

- a Service port's targetPort, under a sidecar in passthrough mode (Istio >= 1.10, the default), is dialled at
  the pod IP: an app listening on loopback only is unreachable from other pods;
- under legacy behaviour (Istio <= 1.9, `PILOT_ENABLE_INBOUND_PASSTHROUGH=false` up to 1.20,
  `inboundTrafficPolicy.mode: LOCALHOST` from 1.22, or a Sidecar `defaultEndpoint: 127.0.0.1:PORT`) the proxy
  dials localhost: a loopback-only app is reachable, and so exposed to other pods it never meant to serve,
  while an app listening on the pod IP only is refused;
- under ambient, ztunnel always dials the pod IP and no override exists: loopback-only is unreachable.

The loopback test is the IST0143 one (`conformance.backends.precheck.Listener.loopback`); a port is a finding only when
*every* listener on it is loopback (or every one is a pod address): a wildcard listener serves either way.

A dual-stack pod (an IPv4 and an IPv6 address) is judged per family (`serving`), because a client of each family
meets the listeners of its own family (settings-dualstack.md sections 2 and 5): its findings carry the family.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from conformance.backends.precheck import Listener

SIDECAR = "sidecar"
AMBIENT = "ambient"
NO_MESH = "none"

PROXY_CONTAINER = "istio-proxy"
SIDECAR_STATUS_ANNOTATION = "sidecar.istio.io/status"
DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
AMBIENT_REDIRECTION_ANNOTATION = "ambient.istio.io/redirection"

LOOPBACK_ONLY = "loopback-only"
POD_IP_ONLY = "pod-ip-only"

BEHAVIOURS = ("passthrough", "legacy", "ambient")
"""The three inbound behaviours a finding is judged under (see the module docstring)."""

CONSEQUENCES: Mapping[str, Mapping[str, str]] = {
    LOOPBACK_ONLY: {
        "passthrough": "unreachable from other pods",
        "legacy": "reachable, and exposed to other pods",
        "ambient": "unreachable, and no override brings it back",
    },
    POD_IP_ONLY: {
        "passthrough": "reachable",
        "legacy": "unreachable (the proxy dials localhost; also under a Sidecar 127.0.0.1 defaultEndpoint)",
        "ambient": "reachable",
    },
}


IPV4 = "ipv4"
IPV6 = "ipv6"
FAMILIES = (IPV4, IPV6)

LEGACY_DUAL: Mapping[str, str] = {
    "reachable+exposed": "reachable, and exposed to other pods (legacy sends every client, IPv6 too, to 127.0.0.1, "
    "where the app listens on loopback)",
    "reachable": "reachable (legacy sends every client, IPv6 too, to 127.0.0.1, where an IPv4 wildcard listens)",
    "unreachable": "unreachable (legacy sends every client, IPv6 too, to 127.0.0.1, where the app does not listen; "
    "also under a Sidecar 127.0.0.1 defaultEndpoint)",
}
"""The legacy consequence on a dual-stack pod, for a finding of either family: Istio dials 127.0.0.1:PORT for every
client (localHosts[Dual][0], settings-dualstack.md section 2), so the pod's IPv4 listeners decide it."""

SHORT: Mapping[str, Mapping[str, str]] = {
    LOOPBACK_ONLY: {"passthrough": "unreachable", "legacy": "reachable+exposed", "ambient": "unreachable"},
    POD_IP_ONLY: {"passthrough": "reachable", "legacy": "unreachable", "ambient": "reachable"},
}
"""CONSEQUENCES in one word, for the table."""


class SelectorError(ValueError):
    """A label selector that is not in Kubernetes' syntax."""


@dataclass(frozen=True)
class PodInfo:
    """What the analysis needs of a pod: identity, labels, containers, named container ports, namespace labels."""

    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    containers: tuple[str, ...] = ()
    """Regular containers, in spec order (each is a candidate to print /proc/net/tcp)."""
    init_containers: tuple[str, ...] = ()
    """Init containers (Istio's native-sidecar injection puts istio-proxy here, restartPolicy Always)."""
    named_ports: Mapping[str, int] = field(default_factory=dict)
    """containerPort by name, over every container: how a named targetPort resolves."""
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    phase: str = "Running"
    ips: tuple[str, ...] = ()
    """The pod's addresses (status.podIPs), primary first; empty when the source does not tell."""

    @property
    def key(self) -> str:
        """`namespace/name`, as kubectl and istioctl >= 1.12 print a pod."""
        return f"{self.namespace}/{self.name}"

    @property
    def dual_stack(self) -> bool:
        """Whether the pod has an IPv4 and an IPv6 address: then its ports are judged per family."""
        return {":" in ip for ip in self.ips} == {False, True}


@dataclass(frozen=True)
class ServicePort:
    """One port of a Service: its name, number and targetPort (a number or a container port's name)."""

    name: str
    port: int
    target: int | str
    protocol: str = "TCP"


@dataclass(frozen=True)
class ServiceInfo:
    """A Service with a selector (Services without one select no pod and are ignored)."""

    namespace: str
    name: str
    selector: Mapping[str, str]
    ports: tuple[ServicePort, ...]

    def selects(self, pod: PodInfo) -> bool:
        """Kubernetes' rule: same namespace, non-empty selector, every selector label equal."""
        return (
            pod.namespace == self.namespace
            and bool(self.selector)
            and all(pod.labels.get(k) == v for k, v in self.selector.items())
        )


@dataclass(frozen=True, order=True)
class TargetedPort:
    """A pod port that Services send traffic to, with the Service ports that do (`svc:port-name`)."""

    port: int
    services: tuple[str, ...]


@functools.total_ordering
@dataclass(frozen=True)
class PortFinding:
    """A targeted port whose listeners are all loopback (or all pod-address): what each behaviour does to it.

    On a dual-stack pod a finding is about one family's clients (`family`, `ipv4` or `ipv6`) and `legacy` is the
    legacy consequence, which there depends on the IPv4 listeners whatever the family (LEGACY_DUAL). On a
    single-stack pod both are None and the finding reads as it always did.
    """

    namespace: str
    pod: str
    port: int
    kind: str
    mode: str
    addresses: tuple[str, ...]
    services: tuple[str, ...]
    family: str | None = None
    legacy: str | None = None
    """A key of LEGACY_DUAL on dual-stack pods; None on single-stack pods (CONSEQUENCES says it)."""

    def _key(self) -> tuple[str, str, int, str, str, str, tuple[str, ...], tuple[str, ...], str]:
        return (
            self.namespace,
            self.pod,
            self.port,
            self.family or "",
            self.kind,
            self.mode,
            self.addresses,
            self.services,
            self.legacy or "",
        )

    def __lt__(self, other: object) -> bool:
        """Namespace, pod, port, then family (ipv4 before ipv6): a port's two findings stay side by side."""
        if not isinstance(other, PortFinding):
            return NotImplemented
        return self._key() < other._key()

    @property
    def consequences(self) -> Mapping[str, str]:
        """What happens to the port's traffic from other pods under each behaviour."""
        if self.family is None or self.legacy is None:
            return CONSEQUENCES[self.kind]
        clients = "IPv4" if self.family == IPV4 else "IPv6"
        own = CONSEQUENCES[self.kind]
        return {
            "passthrough": f"{own['passthrough']} ({clients} clients)",
            "legacy": LEGACY_DUAL[self.legacy],
            "ambient": f"{own['ambient']} ({clients} clients)",
        }

    @property
    def short(self) -> Mapping[str, str]:
        """The consequences in one word each, for the table."""
        if self.legacy is None:
            return SHORT[self.kind]
        return {**SHORT[self.kind], "legacy": self.legacy}

    @property
    def breaks_by_default(self) -> bool:
        """Whether the default behaviour of the pod's detected mode breaks it.

        Sidecar pods default to passthrough from Istio 1.10, ambient has no other behaviour: both break a
        loopback-only port. `impact` cannot see a mesh-wide LOCALHOST mode or a pod's Sidecar resource.
        """
        return self.kind == LOOPBACK_ONLY and self.mode in (SIDECAR, AMBIENT)


def mesh_mode(pod: PodInfo) -> str:
    """Detect the pod's data plane from what the injector, the namespace and istio-cni wrote, not from assumptions.

    A sidecar (an `istio-proxy` container, or the injector's `sidecar.istio.io/status` annotation) wins: ambient
    does not capture a pod that has one. Otherwise ztunnel's own mark (`ambient.istio.io/redirection: enabled`,
    set by istio-cni once redirection is in place) or the enrolment label `istio.io/dataplane-mode=ambient` on the
    pod or its namespace (a pod label `none` opts out): probes-ambient.md section 2.
    """
    if PROXY_CONTAINER in pod.containers or PROXY_CONTAINER in pod.init_containers:
        return SIDECAR
    if SIDECAR_STATUS_ANNOTATION in pod.annotations:
        return SIDECAR
    if pod.annotations.get(AMBIENT_REDIRECTION_ANNOTATION) == "enabled":
        return AMBIENT
    pod_mode = pod.labels.get(DATAPLANE_MODE_LABEL)
    if pod_mode == AMBIENT:
        return AMBIENT
    if pod_mode is None and pod.namespace_labels.get(DATAPLANE_MODE_LABEL) == AMBIENT:
        return AMBIENT
    return NO_MESH


def targeted_ports(pod: PodInfo, services: Iterable[ServiceInfo]) -> list[TargetedPort]:
    """The TCP ports of the pod that the Services selecting it target; a named targetPort resolves by name.

    A named targetPort the pod does not declare gets no endpoint in Kubernetes (no traffic): it is not targeted.
    """
    by_port: dict[int, list[str]] = {}
    for service in services:
        if not service.selects(pod):
            continue
        for sp in service.ports:
            if sp.protocol.upper() != "TCP":
                continue
            number = pod.named_ports.get(sp.target) if isinstance(sp.target, str) else sp.target
            if number is None:
                continue
            by_port.setdefault(number, []).append(f"{service.name}:{sp.name or sp.port}")
    return [TargetedPort(port, tuple(sorted(set(names)))) for port, names in sorted(by_port.items())]


def _ipv4_mapped(listener: Listener) -> ipaddress.IPv4Address | None:
    if not listener.ipv6 or listener.address == "*" or "%" in listener.address:
        return None
    try:
        return ipaddress.IPv6Address(listener.address).ipv4_mapped
    except ValueError:
        return None


def _as_ipv4(listener: Listener) -> Listener:
    """How an IPv4 client meets the socket: an IPv4-mapped bind as its IPv4 address, a dual `[::]` as `*`."""
    mapped = _ipv4_mapped(listener)
    if mapped is not None:
        return Listener("*" if mapped.is_unspecified else str(mapped), listener.port)
    return listener


def serving(listeners: Iterable[Listener], family: str) -> set[Listener]:
    """The listeners that accept a connection of `family` on a dual-stack pod (one port's, or a pod's).

    IPv6: the IPv6 sockets, except IPv4-mapped binds (`::ffff:a.b.c.d` takes IPv4 only). IPv4: the IPv4 sockets,
    the IPv4-mapped binds (as their IPv4 address), and a `[::]` socket with IPV6_V6ONLY off, which accepts IPv4
    too (Go's `net.Listen("tcp", ":P")`, settings-dualstack.md section 5).

    Where IPV6_V6ONLY is unknown (/proc/net/tcp6 does not show it), a `[::]:P` socket is taken to serve IPv4
    exactly when no IPv4 socket listens on P. Linux refuses to bind a dual `[::]:P` beside an IPv4 listener on P
    (EADDRINUSE, unless both set SO_REUSEPORT), so next to an IPv4 listener the `[::]` is V6ONLY; with none, either
    it takes IPv4 or nothing listens on IPv4 at all, and neither is a loopback-only or pod-IP-only finding.
    """
    every = list(listeners)
    if family == IPV6:
        return {lst for lst in every if lst.ipv6 and _ipv4_mapped(lst) is None}
    ipv4_ports = {lst.port for lst in every if not lst.ipv6 or _ipv4_mapped(lst) is not None}
    found = set()
    for lst in every:
        if not lst.ipv6 or _ipv4_mapped(lst) is not None:
            found.add(_as_ipv4(lst))
        elif lst.address == "*" and (lst.v6only is False or (lst.v6only is None and lst.port not in ipv4_ports)):
            found.add(Listener("*", lst.port))
    return found


def _kind(on_port: set[Listener]) -> str | None:
    """LOOPBACK_ONLY, POD_IP_ONLY, or None (nobody listens, a wildcard does, or loopback beside a pod address)."""
    if not on_port or any(lst.address == "*" for lst in on_port):
        return None
    loopback = [lst.loopback for lst in on_port]
    if all(loopback):
        return LOOPBACK_ONLY
    if not any(loopback):
        return POD_IP_ONLY
    return None


def _legacy_dual(ipv4: set[Listener]) -> str:
    """LEGACY_DUAL's key: what a dial of 127.0.0.1:PORT meets among the port's IPv4 listeners."""
    if any(lst.address == "*" for lst in ipv4):
        return "reachable"
    if any(lst.loopback for lst in ipv4):
        return "reachable+exposed"
    return "unreachable"


def analyse(pod: PodInfo, targeted: Sequence[TargetedPort], listeners: Iterable[Listener]) -> list[PortFinding]:
    """The findings of one pod: targeted ports listened on only by loopback, or only by pod addresses.

    A port nobody listens on is not a finding (nothing to break); a wildcard listener, or loopback and pod
    address side by side, serves under every behaviour. A dual-stack pod is judged per family (`serving`).
    """
    mode = mesh_mode(pod)
    by_port: dict[int, set[Listener]] = {}
    for listener in listeners:
        by_port.setdefault(listener.port, set()).add(listener)
    findings = []
    for target in targeted:
        on_port = by_port.get(target.port, set())
        if not pod.dual_stack:
            kind = _kind(on_port)
            if kind is not None:
                addresses = tuple(sorted(lst.address for lst in on_port))
                findings.append(
                    PortFinding(pod.namespace, pod.name, target.port, kind, mode, addresses, target.services)
                )
            continue
        served = {family: serving(on_port, family) for family in FAMILIES}
        legacy = _legacy_dual(served[IPV4])
        for family in FAMILIES:
            kind = _kind(served[family])
            if kind is None:
                continue
            addresses = tuple(sorted(lst.address for lst in served[family]))
            findings.append(
                PortFinding(
                    pod.namespace, pod.name, target.port, kind, mode, addresses, target.services, family, legacy
                )
            )
    return findings


# --- label selectors ------------------------------------------------------------------------------------

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^(?P<key>{_KEY})\s+(?P<op>in|notin)\s+\((?P<values>[^()]*)\)$")
_EQ = re.compile(rf"^(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})$")
_EXISTS = re.compile(rf"^(?P<neg>!?)\s*(?P<key>{_KEY})$")


def _split_requirements(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return parts


Labels = Mapping[str, str]


def _requirement(requirement: str, text: str) -> Callable[[Labels], bool]:
    if match := _SET.match(requirement):
        key, values = match["key"], {v.strip() for v in match["values"].split(",")}
        if match["op"] == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EQ.match(requirement):
        key, value = match["key"], match["value"]
        if match["op"] == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _EXISTS.match(requirement):
        key, negated = match["key"], bool(match["neg"])
        return lambda labels: (key in labels) != negated
    raise SelectorError(
        f"label selector {text!r}: cannot read {requirement!r} "
        "(expected key=value, key!=value, key in (a,b), key notin (a,b), key or !key)"
    )


def parse_selector(text: str) -> Callable[[Labels], bool]:
    """Kubernetes' label selector syntax (`a=b,c!=d,e in (f,g),!h`) as a predicate; SelectorError otherwise."""
    if not text.strip():
        return lambda labels: True
    checks = [_requirement(r, text) for r in _split_requirements(text)]
    return lambda labels: all(check(labels) for check in checks)
