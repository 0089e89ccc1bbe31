"""Kubelet health probes, the injector's probe rewrite and "Ready means reachable": probe cells and their rules.

Probe cells sit beside the traffic cells (`cells.py`) without reshaping them. A probe cell asks: "a container
whose app binds *this* way, with a readiness probe of *this* kind, in a pod of *this* profile whose probes are
(or are not) rewritten by the injector: is it Ready, and who did the app see probing it?".

The facts come from `shared/reference/probes-ambient.md` section 1 (here "probes reference") and, for the
legacy switch's effect on probes, `inbound-semantics.md` section 3. Where Istio versions differ the rule says
so, and `ProbeBehaviour` picks the row: the emulated reference mesh models the current release (passthrough by
default, legacy by the switch, TCP probes rewritten).

An unrewritten probe dials the pod IP like any other client: it meets the sidecar's inbound capture, so its
outcome is the traffic spec's `expect()` for a plain client dialling the pod IP on a declared port (the probe
ports are declared in the probe pod's Service, so probes and traffic share one inbound cluster).
"""

from __future__ import annotations

from dataclasses import dataclass
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
from conformance.spec.rule import Rule
from conformance.spec.semantics import expect


class ProbeKind(StrEnum):
    """The kind of a container's readiness probe."""

    HTTP = "http"
    """`httpGet`: kubelet (or pilot-agent) sends GET and wants a 2xx/3xx."""
    TCP = "tcp"
    """`tcpSocket`: an accepted connection is a pass."""


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

    @property
    def id(self) -> str:
        """A stable identifier, distinct from traffic cell ids (which never start with `probe/`)."""
        rewrite = {None: "no_sidecar", True: "rewrite", False: "no_rewrite"}[self.rewrite]
        return "/".join(("probe", self.profile.value, self.bind.value, self.probe.value, rewrite, self.ip_family.value))

    @property
    def container(self) -> str:
        """The probed container's name in the probe pod (one per bind and probe kind)."""
        return f"{self.bind.value.replace('_', '-')}-{self.probe.value}"

    def to_json(self) -> dict[str, object]:
        """The cell's keys; `protocol`, `path`, `client` of traffic cells do not apply (`probe` is set)."""
        return {
            "profile": self.profile.value,
            "bind": self.bind.value,
            "probe": self.probe.value,
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
            "probe-kubelet-direct",
            "Without a sidecar kubelet's probe reaches the pod IP from the node: Ready when the bind admits the "
            "pod IP, and the app sees the node's address.",
            "Kubernetes pkg/probe (httpGet/tcpSocket to status.podIP)",
            "probes reference §1 (consequences, 'app on the pod IP')",
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

    ready: bool
    source: ProbeSource | None
    reachable: bool
    because: tuple[str, ...]
    source_judged: bool = True
    """False where the spec cannot say whether the app sees the probe (an unrewritten TCP probe races Envoy)."""

    @property
    def false_ready(self) -> bool:
        """Ready although no other pod can reach the probed port: users should know."""
        return self.ready and not self.reachable

    def to_json(self) -> dict[str, object]:
        """The `expected` object of a probe cell."""
        return {
            "ready": self.ready,
            "source": self.source.value if self.source else None,
            "reachable": self.reachable,
            "false_ready": self.false_ready,
            "source_judged": self.source_judged,
            "because": list(self.because),
        }


def traffic_cell(cell: ProbeCellKey) -> CellKey:
    """The traffic cell of another pod dialling the probed port: what "reachable" means for this container."""
    protocol = Protocol.HTTP if cell.probe is ProbeKind.HTTP else Protocol.TCP
    return CellKey(
        cell.profile, DefaultEndpoint.NONE, cell.bind, PortKind.DECLARED, protocol, Path.POD_IP, Client.PLAIN,
        cell.ip_family,
    )  # fmt: skip


_SOURCE_OF_TRAFFIC = {
    Source.CLIENT: ProbeSource.KUBELET,
    Source.INBOUND_PASSTHROUGH: ProbeSource.INBOUND_PASSTHROUGH,
    Source.LOCALHOST: ProbeSource.LOCALHOST,
}


def expect_probe(cell: ProbeCellKey, behaviour: ProbeBehaviour = CURRENT) -> ProbeExpectation:
    """Apply the probe rules to one cell, for the version whose behaviour is given."""
    traffic = expect(traffic_cell(cell))
    reachable = traffic.reachable
    if cell.profile in (Profile.BASELINE, Profile.AMBIENT):
        ready = cell.bind is not Bind.LOOPBACK
        rules = ("probe-ambient-bypass",) if cell.profile is Profile.AMBIENT else ()
        return ProbeExpectation(
            ready, ProbeSource.KUBELET if ready else None, reachable, (*rules, "probe-kubelet-direct", "bind-admits")
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
    return ProbeExpectation(ready, source if ready else None, reachable, ("probe-rewrite", rule, "bind-admits"))


def rewrite_settings(profile: Profile) -> tuple[bool | None, ...]:
    """The rewrite settings a profile has cells for: none without a sidecar (baseline, ambient), on and off with one."""
    return (None,) if profile in (Profile.BASELINE, Profile.AMBIENT) else (True, False)


def probe_cells(profiles: tuple[Profile, ...], families: tuple[IpFamily, ...]) -> tuple[ProbeCellKey, ...]:
    """Every probe cell, in a stable order: family, profile, rewrite, probe, bind."""
    return tuple(
        ProbeCellKey(profile, bind, probe, rewrite, family)
        for family in families
        for profile in profiles
        for rewrite in rewrite_settings(profile)
        for probe in ProbeKind
        for bind in Bind
    )


def probe_spec_entries(profiles: tuple[Profile, ...], families: tuple[IpFamily, ...]) -> dict[str, object]:
    """The probe part of the spec document (`probe_rules`, `probe_cells`), for the current release."""
    return {
        "probe_rules": [
            {"id": r.id, "statement": r.statement, "istio_source": r.istio_source, "reference": r.reference}
            for r in PROBE_RULES.values()
        ],
        "probe_cells": [
            {"id": c.id, **c.to_json(), "expected": expect_probe(c).to_json()} for c in probe_cells(profiles, families)
        ],
    }


def probe_spec_markdown(profiles: tuple[Profile, ...], families: tuple[IpFamily, ...]) -> list[str]:
    """Per family and profile, a table of the probe cells: rows (probe, rewrite), columns binds."""
    lines: list[str] = []
    for family in families:
        for profile in profiles:
            lines += ["", f"## {profile.value} ({family.value}): health probes", ""]
            lines.append("| probe | rewrite | " + " | ".join(b.value for b in Bind) + " |")
            lines.append("|---|---|" + "---|" * len(Bind))
            for rewrite in rewrite_settings(profile):
                for probe in ProbeKind:
                    label = {None: "no sidecar", True: "on", False: "off"}[rewrite]
                    row = f"| {probe.value} | {label} |"
                    for bind in Bind:
                        want = expect_probe(ProbeCellKey(profile, bind, probe, rewrite, family))
                        text = "✓ Ready" if want.ready else "✗ not Ready"
                        text += f" ({want.source.value})" if want.source else ""
                        text += " ⚠️ false Ready" if want.false_ready else ""
                        row += f" {text} |"
                    lines.append(row)
    return lines
