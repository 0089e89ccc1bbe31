"""Kubelet health probes, the injector's probe rewrite and "Ready means reachable": probe cells and their rules.

Probe cells sit beside the traffic cells (`cells.py`) without reshaping them. A probe cell asks: "a container
whose app binds *this* way, with a readiness (liveness, startup) probe of *this* kind, in a pod of *this* profile
whose probes are (or are not) rewritten by the injector: is it Ready, is it restarted, and who did the app see
probing it?".

The probe's use (issue 22 item 3): Istio rewrites liveness and startup probes exactly as readiness ones, so each
passes exactly where the readiness probe of the same container would; what differs is what the kubelet does with a
failure. A failing liveness probe restarts the container again and again (the pain of istio/istio#36894: a
loopback-only app under 1.10+ passthrough), a failing startup probe restarts it and it is never Ready, a failing
readiness probe never restarts anything. Readiness cells keep the ids they had before the use was a coordinate.

The facts come from `shared/reference/probes-ambient.md` section 1 (here "probes reference") and, for the legacy
switch's effect on probes, `inbound-semantics.md` section 3; on dual-stack pods from settings-dualstack.md §4 and §5
(rule `dual-probe-primary-ipv4`: every probe there dials the primary, IPv4, pod IP, so a dual cell is decided in
that family, with a fourth bind, `dual_wildcard`, which an IPv4 probe enters). Where Istio versions differ the rule
says so, and `ProbeBehaviour` picks the row: the emulated reference mesh models the current release (passthrough by
default, legacy by the switch, TCP probes rewritten).

An unrewritten probe dials the pod IP like any other client: it meets the sidecar's inbound capture, so its
outcome is the traffic spec's `expect()` for a plain client dialling the pod IP on a declared port (the probe
ports are declared in the probe pod's Service, so probes and traffic share one inbound cluster).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from packaging.version import Version

from conformance.spec.capabilities import claimed_version
from conformance.spec.dimensions import (
    Bind,
    CellKey,
    Client,
    DefaultEndpoint,
    IpFamily,
    Path,
    PortKind,
    Profile,
    Protocol,
    Source,
)
from conformance.spec.dualstack import DUAL_BINDS, DUAL_PROFILES, probe_binds, probe_family, probe_profiles
from conformance.spec.rules import Rule
from conformance.spec.semantics import expect

DUAL_PROBE_RULE = "dual-probe-primary-ipv4"
"""The probe rule of dual-stack pods (settings-dualstack.md §4, §5): defined with the other probe rules below."""


class ProbeKind(StrEnum):
    """The kind of a container's readiness probe."""

    HTTP = "http"
    """`httpGet`: kubelet (or pilot-agent) sends GET and wants a 2xx/3xx."""
    TCP = "tcp"
    """`tcpSocket`: an accepted connection is a pass."""


class ProbeUse(StrEnum):
    """What the kubelet does with a probe (kubernetes.io, Pod Lifecycle, "Container probes")."""

    READINESS = "readiness"
    """`readinessProbe`: a failure takes the pod out of its Services' endpoints; never a restart."""
    LIVENESS = "liveness"
    """`livenessProbe`: `failureThreshold` failures in a row and the kubelet kills and restarts the container."""
    STARTUP = "startup"
    """`startupProbe`: holds liveness and readiness until it passes; failing, it kills and restarts the container."""


PROBE_KINDS_OF_USE: dict[ProbeUse, tuple[ProbeKind, ...]] = {
    ProbeUse.READINESS: (ProbeKind.HTTP, ProbeKind.TCP),
    ProbeUse.LIVENESS: (ProbeKind.HTTP,),
    ProbeUse.STARTUP: (ProbeKind.HTTP,),
}
"""The probe kinds each use has cells for. Liveness and startup: httpGet only. A tcpSocket liveness or startup
probe is dialled exactly as the readiness one (same rewrite, same destination), so its pass or fail is the TCP
readiness cell's and its restart follows from that; leaving it out keeps 36 cells and 24 containers out of a run
(speed is a target of the suite)."""


class ProbeSource(StrEnum):
    """Who the app saw probing it, by meaning."""

    KUBELET = "kubelet"
    """The node's address: kubelet's probe arrived without a proxy in between."""
    INBOUND_PASSTHROUGH = "inbound_passthrough"
    """127.0.0.6 / ::6: pilot-agent's rewritten probe (>= 1.10), or a probe through an inbound cluster."""
    LOCALHOST = "localhost"
    """127.0.0.1 / ::1: pilot-agent <= 1.9 (no bind), or the legacy inbound cluster."""


@dataclass(frozen=True)
class ProbeCellKey:
    """The coordinates of one probe cell; `rewrite` is None where no sidecar is injected (baseline, ambient)."""

    profile: Profile
    bind: Bind
    probe: ProbeKind
    rewrite: bool | None
    ip_family: IpFamily
    use: ProbeUse = ProbeUse.READINESS

    @property
    def id(self) -> str:
        """A stable identifier, distinct from traffic cell ids (which never start with `probe/`).

        A readiness cell's id has no use segment (as before the use was a coordinate: reports are compared by
        id); a liveness or startup cell's has one after the probe kind: `probe/passthrough/loopback/http/liveness/
        rewrite/ipv4`.
        """
        rewrite = {None: "no_sidecar", True: "rewrite", False: "no_rewrite"}[self.rewrite]
        use = () if self.use is ProbeUse.READINESS else (self.use.value,)
        parts = ("probe", self.profile.value, self.bind.value, self.probe.value, *use, rewrite, self.ip_family.value)
        return "/".join(parts)

    @property
    def container(self) -> str:
        """The probed container's name in the probe pod (one per bind, probe kind and use)."""
        base = f"{self.bind.value.replace('_', '-')}-{self.probe.value}"
        return base if self.use is ProbeUse.READINESS else f"{base}-{self.use.value}"

    def to_json(self) -> dict[str, object]:
        """The cell's keys; `protocol`, `path`, `client` of traffic cells do not apply (`probe` is set)."""
        return {
            "profile": self.profile.value,
            "bind": self.bind.value,
            "probe": self.probe.value,
            "use": self.use.value,
            "rewrite": self.rewrite,
            "ip_family": self.ip_family.value,
        }


PROBE_RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        Rule(
            "probe-rewrite",
            "The injector rewrites a container's HTTP readiness probe (TCP from 1.12) to pilot-agent's status "
            "port 15020, path /app-health/<container>/readyz, and hands the original probes to the proxy "
            '(ISTIO_KUBE_APP_PROBERS). The pod annotation sidecar.istio.io/rewriteAppHTTPProbers: "false" '
            "or values.sidecarInjectorWebhook.rewriteAppHTTPProbe=false turns it off.",
            "pkg/kube/inject/app_probe.go; tools/istio-iptables excludes 15020 (run.go -d 15090,15021,15020)",
            "probes reference §1",
        ),
        Rule(
            "probe-agent-pod-ip",
            "pilot-agent >= 1.10 sends a rewritten probe to the pod IP:port, dialled from 127.0.0.6 (::6 on "
            "IPv6, #32877): the app sees 127.0.0.6 and must admit the pod IP.",
            "pilot/cmd/pilot-agent/status/server.go (1.10.0, #31121): upstreamLocalAddress, appProbersDestination",
            "probes reference §1 (table)",
        ),
        Rule(
            "probe-agent-legacy-localhost",
            "With REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION=true (set by the injector when the mesh is switched "
            "back to legacy: PILOT_ENABLE_INBOUND_PASSTHROUGH=false 1.10-1.21 templates, inboundTrafficPolicy "
            "LOCALHOST from 1.22) pilot-agent sends the rewritten probe to localhost:port, still from 127.0.0.6.",
            "pilot/cmd/pilot-agent/status/server.go (1.10+); pkg/kube/inject templates (1.10-1.21 pilot env, "
            "1.22+ meshConfig, #50700)",
            "probes reference §1; inbound-semantics.md §3",
        ),
        Rule(
            "probe-agent-1.9-localhost",
            "pilot-agent <= 1.9 sends a rewritten probe to localhost:port with no bind: the app sees 127.0.0.1 "
            "(::1) and a pod-IP-only app is never Ready (#25177, #16110).",
            "pilot/cmd/pilot-agent/status/server.go (1.9.0)",
            "probes reference §1 (table)",
        ),
        Rule(
            "probe-unrewritten-captured",
            "Without the rewrite kubelet dials the pod IP and is captured like any client: an HTTP probe reaches "
            "the app exactly as a plain client's request to the pod IP on that (declared) port does, under "
            "PERMISSIVE mTLS (an inference, not tested upstream).",
            "tools/istio-iptables/pkg/cmd/run.go (ISTIO_INBOUND); cluster.go inbound clusters",
            "probes reference §1 ('Without the rewrite')",
        ),
        Rule(
            "probe-unrewritten-tcp-passes",
            "An unrewritten TCP probe always passes in a meshed pod: Envoy accepts the connection itself, whether "
            "or not the app can be reached (a false Ready). TCP probes were never rewritten before 1.12 (#33734).",
            "tests/integration/pilot/tcp_probe_test.go 'norewrite-success' (openPort: false); #33734; "
            "REWRITE_TCP_PROBES removed in 1.19 (#44593)",
            "probes reference §1",
        ),
        Rule(
            "probe-ambient-bypass",
            "Ambient: istio-cni SNATs the kubelet's probes to an enrolled pod to 169.254.7.127 (fd16:9254:7127:1337:"
            "ffff:ffff:ffff:ffff on IPv6, from 1.23.0) on the node, and the pod's capture rules let that source past "
            "ztunnel: plain Kubernetes probe behaviour, never rewritten (no sidecar). Ready when the bind admits the "
            "pod IP; the app sees the SNAT address (the kubelet's probe, by meaning).",
            "cni/pkg/iptables/testdata/hostprobe.golden (ISTIO_POSTRT SNAT --to-source 169.254.7.127); "
            "default.golden ISTIO_PRERT '-s 169.254.7.127/32 -p tcp -j ACCEPT' (1.24.0); the IPv6 address came with "
            "#50747 (1.23.0), with which ambient first runs on IPv6",
            "probes reference §2 (Inside the pod: 'Kubelet probes are SNAT'd to 169.254.7.127 and bypass ztunnel')",
        ),
        Rule(
            "probe-rewrite-all-uses",
            "The injector rewrites liveness and startup probes exactly as readiness ones, to /app-health/<container>/"
            "livez and /startupz on the status port, and pilot-agent accepts exactly the paths /app-health/<c>/"
            "(livez|readyz|startupz), each running that container's original probe the same way: a liveness or "
            "startup probe passes exactly where the readiness probe of the same container would.",
            "pkg/kube/inject/app_probe.go (1.9.0 and 1.10.0 L165-173: convertAppProber for ReadinessProbe, "
            "LivenessProbe, StartupProbe; status.FormatProberURL); pilot/cmd/pilot-agent/status/server.go (1.10.0 "
            "L75: appProberPattern)",
            "probes reference §1; settings-dualstack.md §4",
        ),
        Rule(
            "probe-readiness-no-restart",
            "A failing readiness probe takes the pod out of its Services' endpoints and never restarts the "
            "container: its restart count stays 0.",
            "Kubernetes pkg/kubelet/prober (readiness results feed the pod's Ready condition only); kubernetes.io "
            "Pod Lifecycle, 'Container probes' (readinessProbe)",
            "probes reference §1 (kubelet behaviour); settings-dualstack.md §4",
        ),
        Rule(
            "probe-liveness-restarts",
            "failureThreshold failed liveness probes in a row and the kubelet kills the container, which its pod's "
            "restartPolicy (Always, a Deployment's) starts again with a back-off: a probe that keeps failing "
            "restarts it again and again and restartCount grows. A container without a readiness probe is Ready "
            "while each run lasts, so its readiness is not judged where the liveness probe fails. This is "
            "istio/istio#36894 (a loopback-only app after the 1.10 upgrade, its rewritten liveness probe sent to "
            "the pod IP) and #45482 (`dial tcp 127.0.0.6:0->podIP:9090: connection refused`).",
            "kubernetes.io Pod Lifecycle, 'Container probes' (livenessProbe: 'the kubelet kills the container, and "
            "the container is subjected to its restart policy') and 'Container restart policy' (back-off); "
            "pilot/cmd/pilot-agent/status/server.go (1.10.0, #31121: the probe's destination)",
            "probes reference §1 (kubelet behaviour, user reports); settings-dualstack.md §4",
        ),
        Rule(
            "probe-startup-holds",
            "A startup probe disables the liveness and readiness probes until it passes; a container without a "
            "readiness probe is Ready once it has. failureThreshold failed startup probes and the kubelet kills the "
            "container and restarts it: never Ready, restarted again and again.",
            "kubernetes.io Pod Lifecycle, 'Container probes' (startupProbe: 'All other probes are disabled if a "
            "startup probe is provided, until it succeeds. If the startup probe fails, the kubelet kills the "
            "container')",
            "probes reference §1 (kubelet behaviour); settings-dualstack.md §4",
        ),
        Rule(
            "probe-kubelet-direct",
            "Without a sidecar kubelet's probe reaches the pod IP from the node: Ready when the bind admits the "
            "pod IP, and the app sees the node's address.",
            "Kubernetes pkg/probe (httpGet/tcpSocket to status.podIP)",
            "probes reference §1 (consequences, 'app on the pod IP')",
        ),
        Rule(
            DUAL_PROBE_RULE,
            "Dual-stack pod whose primary pod IP (status.podIP, pilot-agent's INSTANCE_IP) is IPv4: pilot-agent sends "
            "a rewritten probe to the IPv4 pod IP from 127.0.0.6 (with the legacy destination to localhost, from "
            "127.0.0.6: 127.0.0.1), and the kubelet's own probe (unrewritten, or no sidecar) dials the IPv4 pod IP "
            "from the node: every probe cell is decided as the IPv4 family's, an IPv4 connection into the pod. Each "
            "bind is open in both families there (dual-bind-admits); `dual_wildcard`, one [::] socket with "
            "IPV6_V6ONLY off, accepts the IPv4 probe and reports 127.0.0.6 IPv4-mapped, dotted as Go prints it (an "
            "app with only an IPv6-only [::] socket would fail the probe, and its liveness probe restart it).",
            "pilot/cmd/pilot-agent/status/server.go (HEAD L215-222: upstreamLocalAddress 127.0.0.6 when INSTANCE_IP "
            "is IPv4, ::6 when IPv6; 1.10.0 L203-208); Kubernetes pkg/probe (the pod IP, status.podIP, the first of "
            "status.podIPs); golang/go src/net/ipsock_posix.go favoriteAddrFamily, src/net/ip.go IP.String",
            "settings-dualstack.md §4 ('On Dual the agent probes the primary pod IP from 127.0.0.6 when INSTANCE_IP "
            "is IPv4'), §5 (Dual-stack pod, IPv4 paths: 'Rewritten probes to an IPv4 primary pod IP: the probe fails "
            "on a V6ONLY socket'); probes reference §1 (table)",
        ),
    )
}


@dataclass(frozen=True)
class ProbeBehaviour:
    """How one Istio version probes, by the facts of probes reference section 1."""

    legacy_agent: str
    """`localhost_unbound` (<= 1.9) or `localhost_from_passthrough` (>= 1.10 with the switch)."""
    tcp_rewritten: bool
    """Whether the injector rewrites tcpSocket probes (>= 1.12)."""


TCP_REWRITE_SINCE = "1.12"
AGENT_POD_IP_SINCE = "1.10"
CURRENT = ProbeBehaviour(legacy_agent="localhost_from_passthrough", tcp_rewritten=True)
"""The current release, which the emulated reference mesh models (legacy = the >= 1.10 switch)."""


def probe_behaviour(version_text: str | None) -> ProbeBehaviour:
    """The probing behaviour of an Istio version; None (an emulated or unversioned mesh) is the current one."""
    version = claimed_version(version_text)
    if version is None:
        return CURRENT
    minor = Version(f"{version.major}.{version.minor}")
    return ProbeBehaviour(
        legacy_agent="localhost_unbound" if minor < Version(AGENT_POD_IP_SINCE) else "localhost_from_passthrough",
        tcp_rewritten=minor >= Version(TCP_REWRITE_SINCE),
    )


@dataclass(frozen=True)
class ProbeExpectation:
    """Ready or not, who the app sees (None: not judged), whether traffic reaches it, and the rules applied."""

    ready: bool | None
    """None where readiness is not judged: a liveness-probed container without a readiness probe whose liveness
    probe fails is Ready while each run lasts and not between runs."""
    source: ProbeSource | None
    reachable: bool
    because: tuple[str, ...]
    source_judged: bool = True
    """False where the spec cannot say whether the app sees the probe (an unrewritten TCP probe races Envoy)."""
    restarts: bool = False
    """The kubelet restarts the container again and again (its restart count is never 0 once the probe had its
    chances); False: it is never restarted."""

    @property
    def false_ready(self) -> bool:
        """Ready although no other pod can reach the probed port: users should know."""
        return bool(self.ready) and not self.reachable

    def to_json(self) -> dict[str, object]:
        """The `expected` object of a probe cell."""
        return {
            "ready": self.ready,
            "source": self.source.value if self.source else None,
            "reachable": self.reachable,
            "false_ready": self.false_ready,
            "source_judged": self.source_judged,
            "restarts": self.restarts,
            "because": list(self.because),
        }


def traffic_cell(cell: ProbeCellKey) -> CellKey:
    """The traffic cell of another pod dialling the probed port: what "reachable" means for this container.

    On a dual-stack pod the other pod dials the pod IP the probes dial, the primary's family (`probe_family`).
    """
    protocol = Protocol.HTTP if cell.probe is ProbeKind.HTTP else Protocol.TCP
    client_family = probe_family(cell.ip_family) if cell.ip_family is IpFamily.DUAL else None
    return CellKey(
        cell.profile, DefaultEndpoint.NONE, cell.bind, PortKind.DECLARED, protocol, Path.POD_IP, Client.PLAIN,
        cell.ip_family, client_family=client_family,
    )  # fmt: skip


_SOURCE_OF_TRAFFIC = {
    Source.CLIENT: ProbeSource.KUBELET,
    Source.INBOUND_PASSTHROUGH: ProbeSource.INBOUND_PASSTHROUGH,
    Source.LOCALHOST: ProbeSource.LOCALHOST,
}


def expect_probe(cell: ProbeCellKey, behaviour: ProbeBehaviour = CURRENT) -> ProbeExpectation:
    """Apply the probe rules to one cell, for the version whose behaviour is given.

    A liveness or startup probe passes exactly where the readiness probe of the same container does
    (`probe-rewrite-all-uses`); its use says what the kubelet makes of a failure. A dual-stack pod's probe dials
    its primary, IPv4, pod IP (`dual-probe-primary-ipv4`, first in `because`): its family decides the traffic
    cell behind "reachable" and the bind rule (`dual-bind-admits`), the rest is every family's.
    """
    if cell.ip_family is IpFamily.DUAL and cell.profile not in DUAL_PROFILES:
        raise ValueError(f"{cell.id}: profile {cell.profile.value} is not asked on dual-stack pods")
    readiness = _expect_readiness(replace(cell, use=ProbeUse.READINESS), behaviour)
    if cell.ip_family is IpFamily.DUAL:
        readiness = replace(readiness, because=(DUAL_PROBE_RULE, *readiness.because))
    passes = bool(readiness.ready)
    if cell.use is ProbeUse.READINESS:
        return replace(readiness, because=(*readiness.because, "probe-readiness-no-restart"))
    rules = (*readiness.because, "probe-rewrite-all-uses")
    if cell.use is ProbeUse.LIVENESS:
        # No readiness probe: Ready while running; restarted where the probe fails, so Ready only between kills.
        return replace(
            readiness, ready=True if passes else None, restarts=not passes, because=(*rules, "probe-liveness-restarts")
        )
    return replace(readiness, ready=passes, restarts=not passes, because=(*rules, "probe-startup-holds"))


def _expect_readiness(cell: ProbeCellKey, behaviour: ProbeBehaviour) -> ProbeExpectation:
    """The readiness probe's verdict for a cell (its use aside)."""
    traffic = expect(traffic_cell(cell))
    reachable = traffic.reachable
    admits = DUAL_BINDS if cell.ip_family is IpFamily.DUAL else "bind-admits"
    if cell.profile in (Profile.BASELINE, Profile.AMBIENT):
        ready = cell.bind is not Bind.LOOPBACK
        rules = ("probe-ambient-bypass",) if cell.profile is Profile.AMBIENT else ()
        return ProbeExpectation(
            ready, ProbeSource.KUBELET if ready else None, reachable, (*rules, "probe-kubelet-direct", admits)
        )
    rewritten = bool(cell.rewrite) and (cell.probe is ProbeKind.HTTP or behaviour.tcp_rewritten)
    if not rewritten:
        if cell.probe is ProbeKind.TCP:
            # Envoy accepts; whether it then reaches the app before kubelet hangs up is a race: not judged.
            return ProbeExpectation(True, None, reachable, ("probe-unrewritten-tcp-passes",), source_judged=False)
        source = _SOURCE_OF_TRAFFIC[traffic.source] if traffic.reachable and traffic.source else None
        return ProbeExpectation(traffic.reachable, source, reachable, ("probe-unrewritten-captured", *traffic.because))
    if cell.profile is Profile.PASSTHROUGH:
        ready = cell.bind is not Bind.LOOPBACK
        source = ProbeSource.INBOUND_PASSTHROUGH
        rule = "probe-agent-pod-ip"
    elif behaviour.legacy_agent == "localhost_unbound":
        ready = cell.bind is not Bind.POD_IP
        source = ProbeSource.LOCALHOST
        rule = "probe-agent-1.9-localhost"
    else:
        ready = cell.bind is not Bind.POD_IP
        source = ProbeSource.INBOUND_PASSTHROUGH
        rule = "probe-agent-legacy-localhost"
    return ProbeExpectation(ready, source if ready else None, reachable, ("probe-rewrite", rule, admits))


def rewrite_settings(profile: Profile) -> tuple[bool | None, ...]:
    """The rewrite settings a profile has cells for: none without a sidecar (baseline, ambient), on and off with one."""
    return (None,) if profile in (Profile.BASELINE, Profile.AMBIENT) else (True, False)


def probe_cells(profiles: tuple[Profile, ...], families: tuple[IpFamily, ...]) -> tuple[ProbeCellKey, ...]:
    """Every probe cell, in a stable order: family, profile, use, rewrite, probe, bind (readiness first, as before).

    A dual family asks its profiles (no ambient) and binds (`dual_wildcard` too): `probe_profiles`, `probe_binds`.
    """
    return tuple(
        ProbeCellKey(profile, bind, probe, rewrite, family, use)
        for family in families
        for profile in probe_profiles(profiles, family)
        for use in ProbeUse
        for rewrite in rewrite_settings(profile)
        for probe in PROBE_KINDS_OF_USE[use]
        for bind in probe_binds(family)
    )


def probe_spec_entries(profiles: tuple[Profile, ...], families: tuple[IpFamily, ...]) -> dict[str, object]:
    """The probe part of the spec document (`probe_rules`, `probe_cells`), for the current release."""
    return {
        "probe_rules": [r.to_json() for r in PROBE_RULES.values()],
        "probe_cells": [
            {"id": c.id, **c.to_json(), "expected": expect_probe(c).to_json()} for c in probe_cells(profiles, families)
        ],
    }


def restart_text(use: ProbeUse, restarts: bool) -> str:
    """A liveness or startup cell's expected outcome in words (the spec's and the report's tables)."""
    if use is ProbeUse.LIVENESS:
        return "↻ restarted again and again" if restarts else "✓ never restarted"
    return "↻ restarted, never Ready" if restarts else "✓ Ready, never restarted"


def probe_spec_markdown(profiles: tuple[Profile, ...], families: tuple[IpFamily, ...]) -> list[str]:
    """Per family and profile, a table of the readiness cells, then one of the liveness and startup cells.

    Rows (probe, rewrite) and (use, probe, rewrite); columns binds.
    """
    lines: list[str] = []
    for family in families:
        columns = probe_binds(family)
        for profile in probe_profiles(profiles, family):
            lines += ["", f"## {profile.value} ({family.value}): health probes", ""]
            lines.append("| probe | rewrite | " + " | ".join(b.value for b in columns) + " |")
            lines.append("|---|---|" + "---|" * len(columns))
            for rewrite in rewrite_settings(profile):
                for probe in ProbeKind:
                    label = {None: "no sidecar", True: "on", False: "off"}[rewrite]
                    row = f"| {probe.value} | {label} |"
                    for bind in columns:
                        want = expect_probe(ProbeCellKey(profile, bind, probe, rewrite, family))
                        text = "✓ Ready" if want.ready else "✗ not Ready"
                        text += f" ({want.source.value})" if want.source else ""
                        text += " ⚠️ false Ready" if want.false_ready else ""
                        row += f" {text} |"
                    lines.append(row)
            lines += ["", "| use | probe | rewrite | " + " | ".join(b.value for b in columns) + " |"]
            lines.append("|---|---|---|" + "---|" * len(columns))
            for use in (ProbeUse.LIVENESS, ProbeUse.STARTUP):
                for rewrite in rewrite_settings(profile):
                    for probe in PROBE_KINDS_OF_USE[use]:
                        label = {None: "no sidecar", True: "on", False: "off"}[rewrite]
                        row = f"| {use.value} | {probe.value} | {label} |"
                        for bind in columns:
                            want = expect_probe(ProbeCellKey(profile, bind, probe, rewrite, family, use))
                            text = restart_text(use, want.restarts)
                            text += f" ({want.source.value})" if want.source else ""
                            row += f" {text} |"
                        lines.append(row)
    return lines
