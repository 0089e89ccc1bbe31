"""What each Istio version can do, as data (the mesh's "supported features", in Gateway API's terms).

A conformance case needs capabilities; a mesh that lacks one gets the case skipped with the reason written
here, never failed and never silently passed. A custom build either claims a version (and inherits that
row) or claims capabilities outright.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from packaging.version import InvalidVersion, Version

from conformance.spec.dimensions import DefaultEndpoint, IpFamily, Profile
from conformance.spec.image_tags import image_tag_version


class Capability(StrEnum):
    """One thing a mesh build can do that some case needs."""

    PROFILE_LEGACY = "profile-legacy"
    """Declared ports can run with legacy (forward to 127.0.0.1) semantics."""
    PROFILE_PASSTHROUGH = "profile-passthrough"
    """Declared ports can run with 1.10 passthrough semantics."""
    LEGACY_SWITCH = "legacy-switch"
    """One install can switch between the two, by a setting."""
    SIDECAR_ENDPOINT_IPV4 = "sidecar-endpoint-ipv4"
    """Sidecar ingress defaultEndpoint `127.0.0.1:P` and `0.0.0.0:P`."""
    SIDECAR_ENDPOINT_IPV6 = "sidecar-endpoint-ipv6"
    """Sidecar ingress defaultEndpoint `[::1]:P` and `[::]:P` (1.14.4+, 1.15.0+)."""
    SIDECAR_ENDPOINT_EMPTY = "sidecar-endpoint-empty"
    """Sidecar ingress defaultEndpoint with an empty host, `:P` (ORIGINAL_DST from 1.10; localhost with no bind
    on 1.9, `semantics.traffic_behaviour`)."""
    SIDECAR_ENDPOINT_CROSS_FAMILY = "sidecar-endpoint-cross-family"
    """A literal of the other family resolved by the pod's family as 1.15+ does: `127.0.0.1:P` on an IPv6 pod
    dials ::1, `[::1]:P` on an IPv4 pod 127.0.0.1, `[::]:P` on a pod with no IPv6 address ::1 with no bind, and
    `0.0.0.0:P` on a pod with no IPv4 address 127.0.0.1 with no bind (1.10-1.14.3 dial IPAddresses[0] there:
    `semantics.traffic_behaviour`)."""
    PRECHECK_LOCALHOST = "precheck-localhost"
    """`istioctl x precheck` reports IST0143 for loopback-only listeners on exposed ports."""
    PROFILE_AMBIENT = "profile-ambient"
    """Pods can be enrolled in ambient mode (istio-cni + ztunnel, no sidecar)."""
    INTERCEPTION_TPROXY = "interception-tproxy"
    """Sidecar pods annotated `sidecar.istio.io/interceptionMode: TPROXY` are captured as istio-iptables 1.11+
    does, in the run's family (IPv6 from 1.12.0), and their inbound listeners keep the client's address."""
    PLAINTEXT_TUNNEL = "plaintext-tunnel"
    """A plain pod can ask ztunnel's 15008 for a CONNECT itself (the emulated mesh's plaintext HTTP/1.1 tunnel)."""
    DUAL_STACK = "dual-stack"
    """Dual-stack pods with ISTIO_DUAL_STACK=true (1.17.0+ experimental, alpha 1.24, beta 1.28): the dual cells."""


class LegacySwitch(StrEnum):
    """How an install is switched back to legacy semantics (reference section 3)."""

    NONE = "none"
    PILOT_ENV = "pilot-env"
    """istiod env PILOT_ENABLE_INBOUND_PASSTHROUGH=false (1.10 - 1.20, pilot/pkg/features/pilot.go)."""
    MESH_CONFIG = "mesh-config"
    """meshConfig.inboundTrafficPolicy.mode LOCALHOST (>= 1.22, PR #49035)."""
    EMULATED = "emulated"
    """The emulated control plane's own setting."""


class PrecheckScope(StrEnum):
    """Which pods `istioctl x precheck` examines for IST0143 (reference: tools-versions-ci.md, the table)."""

    NONE = "none"
    ALL_INJECTED = "all-injected"
    """istioctl 1.10.0 - 1.15.0 (and every 1.14.x): every injected pod (1.10-1.11 whatever its phase)."""
    LEGACY_PROXIES = "legacy-proxies"
    """istioctl 1.15.1 - 1.20.x: only pods whose istio-proxy image tag is < 1.10.0 or does not parse
    (#40602, cherry-picked to release-1.15 as #40922)."""


@dataclass(frozen=True)
class VersionRow:
    """One range of Istio minor versions with the same inbound behaviour, `first <= v < before`."""

    first: str
    before: str | None
    default_profile: Profile
    legacy_switch: LegacySwitch
    note: str

    def contains(self, version: Version) -> bool:
        """True when `version` (compared on major.minor) falls in this row."""
        minor = Version(f"{version.major}.{version.minor}")
        return Version(self.first) <= minor and (self.before is None or minor < Version(self.before))


ISTIO_VERSIONS: tuple[VersionRow, ...] = (
    VersionRow(
        "1.9",
        "1.10",
        Profile.LEGACY,
        LegacySwitch.NONE,
        "Legacy is the only behaviour: inbound clusters are STATIC 127.0.0.1 (cluster.go 1.9.0).",
    ),
    VersionRow(
        "1.10",
        "1.21",
        Profile.PASSTHROUGH,
        LegacySwitch.PILOT_ENV,
        "Passthrough by default; PILOT_ENABLE_INBOUND_PASSTHROUGH=false switches back (PR #30226).",
    ),
    VersionRow(
        "1.21",
        "1.22",
        Profile.PASSTHROUGH,
        LegacySwitch.NONE,
        "PILOT_ENABLE_INBOUND_PASSTHROUGH was removed (PR #48718); only the Sidecar resource remains.",
    ),
    VersionRow(
        "1.22",
        None,
        Profile.PASSTHROUGH,
        LegacySwitch.MESH_CONFIG,
        "meshConfig.inboundTrafficPolicy.mode LOCALHOST switches back (PR #49035).",
    ),
)

SIDECAR_IPV6_FORMS_SINCE: tuple[tuple[str, str | None], ...] = (("1.14.4", "1.15"), ("1.15.0", None))
"""`[::1]:PORT` and `[::]:PORT` defaultEndpoint forms, as `first <= v < before` patch ranges: PR #40265, cherry-
picked to release-1.14 as #40520, so 1.14.4+ and 1.15.0+ (reference section 4; earlier notes said 1.16)."""

SIDECAR_CROSS_FAMILY_SINCE = "1.10.0"
"""The cross-family literals are cells from 1.10: `127.0.0.1:P` on an IPv6 pod dials ::1 there as now, and
`0.0.0.0:P` on a pod without IPv4 dials IPAddresses[0] before 1.14.4 and 127.0.0.1 from 1.14.4 and 1.15.0 (reference
section 4; cluster.go at tag 1.14.4 already holds the 1.15 code, 1.14.3 does not): `semantics.traffic_behaviour`
tells them apart. 1.9 binds 127.0.0.6 for every family (reference section 4): not encoded. An IPv4 pod's `[::1]`
and `[::]` literals also need the IPv6 forms (1.14.4+), which resolve alike in every release that accepts them."""

PRECHECK_ROWS: tuple[tuple[str, str | None, PrecheckScope], ...] = (
    ("1.10.0", "1.15.1", PrecheckScope.ALL_INJECTED),
    ("1.15.1", "1.21.0", PrecheckScope.LEGACY_PROXIES),
    ("1.21.0", None, PrecheckScope.NONE),
)
"""The localhost check of `istioctl x precheck`, by istioctl patch version: #40602 reached release-1.15 as
#40922 (1.15.1-1.15.7), and the check was removed in 1.21.0 (#48449). Reference: tools-versions-ci.md, the
precheck table."""

PRECHECK_ANY_PHASE_BEFORE = "1.12.0"
"""istioctl 1.10-1.11 list injected pods whatever their phase; the `status.phase=Running` filter came in 1.12."""

RELEASE_HUB = "docker.io/istio"
"""The hub releases are installed from (tools-versions-ci.md, "Installing")."""

AMBIENT_SINCE = "1.22"
"""The `ambient` install profile: beta in 1.22 and 1.23, GA from 1.24 (probes-ambient.md §2); 1.22-1.23 capture
with TPROXY, 1.24+ with REDIRECT (#52622): the same inbound semantics."""

AMBIENT_ALPHA_SINCE = "1.18"
"""Ambient as alpha (profile and ztunnel chart; 1.21 already redirects in the pod): the suite starts at the beta."""

AMBIENT_IPV6_SINCE = "1.23.0"
"""Ambient on IPv6 pods: the 1.22 istio-cni node agent never receives its IPv6 setting (no ip6tables in-pod rules,
an IPv4-only probe ipset); #50747 fixed it in 1.23.0 (not backported; user report #51622), adding the IPv6 probe
SNAT address fd16:9254:7127:1337:ffff:ffff:ffff:ffff (probes-ambient.md §2, IPv6)."""

TPROXY_SINCE = "1.11.0"
"""TPROXY cells from this release: 1.10's rules TPROXY the pod's own traffic on lo to the proxy too (#31095, "app to
app calls not working in TPROXY"), fixed by the lo RETURN rules of #31165 in 1.11.0 (settings-dualstack.md §1(a));
what 1.10 does to the in-pod cells is not traced. 1.9 has no passthrough profile, the only one asked in TPROXY."""

TPROXY_IPV6_SINCE = "1.12.0"
"""IPv6 TPROXY: through 1.11 the TPROXY rules are IPv4-only and IPv6 inbound is nat REDIRECT; 1.12.0 writes them for
IPv6 (#34274, #35359 "More fixes for TPROXY + ipv6"). How IPv6 traffic to a TPROXY pod behaved before is
UNCONFIRMED (settings-dualstack.md §1(a))."""

DUAL_STACK_SINCE = "1.17.0"
"""Dual-stack support: experimental in 1.17.0 (#41618, release note 40394.yaml), alpha in 1.24 (#47998), beta in
1.28 (settings-dualstack.md §2); the flag ISTIO_DUAL_STACK still defaults to false."""

LEGACY_NETWORKING_BEFORE = "1.10.0"
"""istioctl 1.15.1 - 1.20 checks only proxies older than this (precheck.go fromLegacyNetworkingVersion)."""


def parse_version(text: str) -> Version:
    """Parse an Istio version or tag (`1.10.6`, `1.22.0-beta.1`, `1.23-dev`); ValueError says what is wrong."""
    try:
        return Version(text.removeprefix("v"))
    except InvalidVersion:
        raise ValueError(f"cannot read {text!r} as an Istio version: expected e.g. 1.10.6 or 1.22.0-beta.1") from None


def claimed_version(version_text: str | None) -> Version | None:
    """The version a mesh claims; None for none (an emulated mesh) or for one that does not read as a version.

    The behaviours that differ by release (semantics.traffic_behaviour, probes.probe_behaviour) take the current
    release's for None.
    """
    if version_text is None:
        return None
    try:
        return parse_version(version_text)
    except ValueError:
        return None


def version_row(version: Version) -> VersionRow:
    """The behaviour row of an Istio version; ValueError for versions the suite has no facts about."""
    for row in ISTIO_VERSIONS:
        if row.contains(version):
            return row
    raise ValueError(f"Istio {version} is older than 1.9: the suite has no facts for it (supported: >= 1.9)")


def _release(version: Version) -> Version:
    """major.minor.micro without pre-release or local parts: `1.15.1-beta.0` is on the 1.15.1 line."""
    return Version(f"{version.major}.{version.minor}.{version.micro}")


def in_range(version: Version, first: str, before: str | None) -> bool:
    """Whether the release line of `version` is in `first <= v < before` (no upper bound for None)."""
    release = _release(version)
    return Version(first) <= release and (before is None or release < Version(before))


def precheck_scope(istioctl: Version) -> PrecheckScope:
    """Which pods an istioctl of this (patch) version examines for IST0143."""
    for first, before, scope in PRECHECK_ROWS:
        if in_range(istioctl, first, before):
            return scope
    return PrecheckScope.NONE


def has_sidecar_ipv6_forms(version: Version) -> bool:
    """Whether a release accepts `[::1]:PORT` / `[::]:PORT` (1.14.4+, 1.15.0+)."""
    return any(in_range(version, first, before) for first, before in SIDECAR_IPV6_FORMS_SINCE)


def endpoint_capabilities(endpoint: DefaultEndpoint, family: IpFamily) -> frozenset[Capability]:
    """What a mesh must accept for a server with this Sidecar situation to be deployed in `family`.

    A literal needs its own family's forms, plus the cross-family resolution when it is not the pod's family;
    `unlisted` lists its anchor port with the family's own localhost form.
    """
    own = Capability.SIDECAR_ENDPOINT_IPV6 if family is IpFamily.IPV6 else Capability.SIDECAR_ENDPOINT_IPV4
    literal = endpoint.family()
    if literal is not None:
        # On a dual-stack pod every literal is of a family the pod has: no cross-family resolution.
        form = Capability.SIDECAR_ENDPOINT_IPV4 if literal is IpFamily.IPV4 else Capability.SIDECAR_ENDPOINT_IPV6
        own_family = literal is family or family is IpFamily.DUAL
        return frozenset({form} if own_family else {form, Capability.SIDECAR_ENDPOINT_CROSS_FAMILY})
    if endpoint is DefaultEndpoint.EMPTY:
        return frozenset({Capability.SIDECAR_ENDPOINT_EMPTY})
    if endpoint is DefaultEndpoint.UNLISTED:
        return frozenset({own})
    return frozenset()


def proxy_image(hub: str | None, tag: str | None, version: str) -> str:
    """The istio-proxy image reference a run deploys: HUB/proxyv2:TAG (release: docker.io/istio, the version)."""
    return f"{(hub or RELEASE_HUB).rstrip('/')}/proxyv2:{tag or version}"


def precheck_checks_proxy(scope: PrecheckScope, image: str) -> bool:
    """Whether an istioctl of `scope` examines a pod whose istio-proxy runs `image`."""
    if scope is PrecheckScope.ALL_INJECTED:
        return True
    if scope is PrecheckScope.LEGACY_PROXIES:
        tag = image_tag_version(image)
        return tag is None or tag < Version(LEGACY_NETWORKING_BEFORE)
    return False


@dataclass(frozen=True)
class MeshCapabilities:
    """The mesh under test: what it is, and what it can do."""

    name: str
    version: str
    default_profile: Profile
    legacy_switch: LegacySwitch
    capabilities: frozenset[Capability]
    precheck: PrecheckScope
    reasons: dict[Capability, str] = field(default_factory=dict)
    """Why a capability is missing, for skip messages."""
    proxy_image: str | None = None
    """The istio-proxy image reference the run deploys (what istioctl 1.15.1-1.20 reads the version from)."""
    precheck_any_phase: bool = False
    """istioctl 1.10-1.11: the precheck also lists injected pods that are not Running."""

    def profiles(self) -> tuple[Profile, ...]:
        """The profiles the mesh can run, baseline (no sidecar) always included."""
        out = [Profile.BASELINE]
        if Capability.PROFILE_LEGACY in self.capabilities:
            out.append(Profile.LEGACY)
        if Capability.PROFILE_PASSTHROUGH in self.capabilities:
            out.append(Profile.PASSTHROUGH)
        if Capability.PROFILE_AMBIENT in self.capabilities:
            out.append(Profile.AMBIENT)
        return tuple(out)

    def sidecar_capability(self, family: IpFamily) -> Capability:
        """The capability the literal defaultEndpoint forms of `family` need."""
        return Capability.SIDECAR_ENDPOINT_IPV4 if family is IpFamily.IPV4 else Capability.SIDECAR_ENDPOINT_IPV6

    def missing(self, needed: frozenset[Capability]) -> str | None:
        """None when every needed capability is there, else the reason for the first missing one.

        Profiles come first: a case under a profile the mesh cannot run is skipped for that reason.
        """
        for capability in sorted(needed, key=lambda c: (not c.value.startswith("profile-"), c.value)):
            if capability not in self.capabilities:
                return self.reasons.get(capability, f"{self.name} {self.version} does not claim {capability}")
        return None

    def to_json(self) -> dict[str, object]:
        """The mesh block of the conformance report."""
        return {
            "name": self.name,
            "version": self.version,
            "default_profile": self.default_profile.value,
            "legacy_switch": self.legacy_switch.value,
            "precheck": self.precheck.value,
            "precheck_any_phase": self.precheck_any_phase,
            "proxy_image": self.proxy_image,
            "capabilities": sorted(c.value for c in self.capabilities),
        }


DUAL_AMBIENT_OUT = "ambient on dual-stack pods is not traced (settings-dualstack.md §5: out of scope)"
DUAL_TPROXY_OUT = "TPROXY on dual-stack pods is not traced (the dual cells are REDIRECT only)"


def ambient_missing(version: Version, label: str, family: IpFamily) -> str | None:
    """Why a release cannot run the ambient profile in `family`, or None when it can."""
    if family is IpFamily.DUAL:
        return f"{label}: {DUAL_AMBIENT_OUT}"
    release = _release(version)
    if release < Version(AMBIENT_ALPHA_SINCE):
        return f"{label} has no ambient mode (alpha from 1.18, beta from 1.22, GA from 1.24)"
    if release < Version(AMBIENT_SINCE):
        return (
            f"{label} has ambient mode as alpha (1.18-1.21): alpha, not covered (the suite covers ambient from "
            "the 1.22 beta)"
        )
    if family is IpFamily.IPV6 and release < Version(AMBIENT_IPV6_SINCE):
        return (
            f"{label} cannot run ambient on IPv6: its istio-cni node agent never receives the IPv6 setting (no "
            "ip6tables in-pod rules, an IPv4-only probe ipset; user report #51622); fixed by #50747 in 1.23.0, "
            "not backported"
        )
    return None


def tproxy_missing(version: Version, label: str, family: IpFamily) -> str | None:
    """Why a release's TPROXY interception is not asked in `family`, or None when it is."""
    if family is IpFamily.DUAL:
        return f"{label}: {DUAL_TPROXY_OUT}"
    release = _release(version)
    if release < Version(TPROXY_SINCE):
        return (
            f"{label}: its TPROXY rules also divert the pod's own traffic on lo to the proxy (#31095, fixed by #31165 "
            "in 1.11.0); the suite encodes TPROXY from 1.11.0"
        )
    if family is IpFamily.IPV6 and release < Version(TPROXY_IPV6_SINCE):
        return (
            f"{label} writes TPROXY rules for IPv4 only (IPv6 inbound stays nat REDIRECT); IPv6 TPROXY came with "
            "#34274 and #35359 in 1.12.0"
        )
    return None


def istio_capabilities(
    version_text: str,
    istioctl_version: str | None = None,
    proxy_image_ref: str | None = None,
    family: IpFamily = IpFamily.IPV4,
) -> MeshCapabilities:
    """The capabilities of an Istio release (or of a custom build claiming to be that version) in `family`.

    `proxy_image_ref` is the istio-proxy image the run deploys (`proxy_image(hub, tag, version)`); istioctl
    1.15.1-1.20 decides from its tag, not from the claimed version. None: the release image of `version_text`.
    The family matters for ambient (IPv6 from 1.23.0) and TPROXY (IPv6 from 1.12.0).
    """
    version = parse_version(version_text)
    row = version_row(version)
    label = f"Istio {version_text}"
    caps: set[Capability] = {Capability.SIDECAR_ENDPOINT_IPV4}
    reasons: dict[Capability, str] = {}
    if row.default_profile is Profile.LEGACY or row.legacy_switch is not LegacySwitch.NONE:
        caps.add(Capability.PROFILE_LEGACY)
    else:
        reasons[Capability.PROFILE_LEGACY] = f"{label} cannot run legacy semantics: {row.note}"
    if row.default_profile is Profile.PASSTHROUGH:
        caps.add(Capability.PROFILE_PASSTHROUGH)
    else:
        reasons[Capability.PROFILE_PASSTHROUGH] = f"{label} has no inbound passthrough: {row.note}"
    if row.legacy_switch is not LegacySwitch.NONE:
        caps.add(Capability.LEGACY_SWITCH)
    else:
        reasons[Capability.LEGACY_SWITCH] = f"{label} has no legacy switch: {row.note}"
    if has_sidecar_ipv6_forms(version):
        caps.add(Capability.SIDECAR_ENDPOINT_IPV6)
    else:
        reasons[Capability.SIDECAR_ENDPOINT_IPV6] = (
            f"{label} predates the [::1]:PORT / [::]:PORT defaultEndpoint forms (added in 1.14.4 and 1.15.0)"
        )
    # `:PORT` is accepted from 1.9 on (1.9: localhost, no bind; 1.10+: ORIGINAL_DST; semantics.traffic_behaviour).
    caps.add(Capability.SIDECAR_ENDPOINT_EMPTY)
    if _release(version) >= Version(SIDECAR_CROSS_FAMILY_SINCE):
        caps.add(Capability.SIDECAR_ENDPOINT_CROSS_FAMILY)
    else:
        reasons[Capability.SIDECAR_ENDPOINT_CROSS_FAMILY] = (
            f"{label} binds 127.0.0.6 for every family: its cross-family defaultEndpoint resolution is not encoded"
        )
    no_ambient = ambient_missing(version, label, family)
    if no_ambient is None:
        caps.add(Capability.PROFILE_AMBIENT)
    else:
        reasons[Capability.PROFILE_AMBIENT] = no_ambient
    no_tproxy = tproxy_missing(version, label, family)
    if no_tproxy is None:
        caps.add(Capability.INTERCEPTION_TPROXY)
    else:
        reasons[Capability.INTERCEPTION_TPROXY] = no_tproxy
    # Dual-stack is asked of dual runs only: a single-stack run's capabilities stay as they were.
    if family is IpFamily.DUAL and _release(version) >= Version(DUAL_STACK_SINCE):
        caps.add(Capability.DUAL_STACK)
    elif family is IpFamily.DUAL:
        reasons[Capability.DUAL_STACK] = f"{label} has no dual-stack support (experimental from 1.17.0, #41618)"
    reasons[Capability.PLAINTEXT_TUNNEL] = (
        f"{label}'s ztunnel speaks HBONE (HTTP/2 CONNECT inside mutual TLS with SPIFFE identities): a plain pod "
        "cannot ask its 15008 for a tunnel, so the tunnel's own answer is checked on the emulated mesh only"
    )
    ctl = parse_version(istioctl_version) if istioctl_version else version
    image = proxy_image_ref or proxy_image(None, None, version_text)
    scope = precheck_scope(ctl)
    if precheck_checks_proxy(scope, image):
        caps.add(Capability.PRECHECK_LOCALHOST)
    elif scope is PrecheckScope.LEGACY_PROXIES:
        reasons[Capability.PRECHECK_LOCALHOST] = (
            f"istioctl {ctl} x precheck checks only proxies whose image tag is older than 1.10 or does not "
            f"parse (#40602, #40922); the proxies run {image}"
        )
    elif ctl < Version("1.10"):
        reasons[Capability.PRECHECK_LOCALHOST] = f"istioctl {ctl} has no localhost precheck (added in 1.10)"
    else:
        reasons[Capability.PRECHECK_LOCALHOST] = (
            f"istioctl {ctl} has no localhost precheck (istioctl >= 1.21 removed it, #48449)"
        )
    return MeshCapabilities(
        name="istio",
        version=version_text,
        default_profile=row.default_profile,
        legacy_switch=row.legacy_switch,
        capabilities=frozenset(caps),
        precheck=scope,
        reasons=reasons,
        proxy_image=image,
        precheck_any_phase=scope is PrecheckScope.ALL_INJECTED and _release(ctl) < Version(PRECHECK_ANY_PHASE_BEFORE),
    )


def emulated_capabilities(family: IpFamily | None = None) -> MeshCapabilities:
    """The emulated reference mesh does everything: it exists to show every cell.

    Everything the spec has cells for: on dual-stack pods (`family` DUAL) that leaves out ambient and TPROXY, whose
    profile then shows as skipped with the reason, as on a release that lacks them.
    """
    reasons: dict[Capability, str] = {}
    if family is IpFamily.DUAL:
        reasons = {
            Capability.PROFILE_AMBIENT: f"the emulated mesh: {DUAL_AMBIENT_OUT}",
            Capability.INTERCEPTION_TPROXY: f"the emulated mesh: {DUAL_TPROXY_OUT}",
        }
    return MeshCapabilities(
        name="emulated",
        version="reference",
        default_profile=Profile.PASSTHROUGH,
        legacy_switch=LegacySwitch.EMULATED,
        capabilities=frozenset(c for c in Capability if c not in reasons),
        precheck=PrecheckScope.ALL_INJECTED,
        reasons=reasons,
    )


def claimed_capabilities(base: MeshCapabilities, claimed: frozenset[Capability]) -> MeshCapabilities:
    """A custom build that states its capabilities outright instead of (or on top of) a version."""
    reasons = {c: f"the build under test does not claim {c}" for c in Capability if c not in claimed}
    return MeshCapabilities(
        name=base.name,
        version=base.version,
        default_profile=Profile.PASSTHROUGH if Capability.PROFILE_PASSTHROUGH in claimed else Profile.LEGACY,
        legacy_switch=base.legacy_switch,
        capabilities=claimed,
        precheck=base.precheck,
        reasons=reasons,
        proxy_image=base.proxy_image,
        precheck_any_phase=base.precheck_any_phase,
    )
