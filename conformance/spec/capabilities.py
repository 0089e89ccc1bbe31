"""What each Istio version can do, as data (the mesh's "supported features", in Gateway API's terms).

A conformance case needs capabilities; a mesh that lacks one gets the case skipped with the reason written
here, never failed and never silently passed. A custom build either claims a version (and inherits that
row) or claims capabilities outright.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from packaging.version import InvalidVersion, Version

from conformance.spec.dimensions import IpFamily, Profile


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
    """Sidecar ingress defaultEndpoint `[::1]:P` and `[::]:P`."""
    PRECHECK_LOCALHOST = "precheck-localhost"
    """`istioctl x precheck` reports IST0143 for loopback-only listeners on exposed ports."""
    PROFILE_AMBIENT = "profile-ambient"
    """Pods can be enrolled in ambient mode (istio-cni + ztunnel, no sidecar)."""


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
    """Which pods `istioctl x precheck` examines for IST0143 (reference: tools-versions-ci.md)."""

    NONE = "none"
    ALL_INJECTED = "all-injected"
    """istioctl 1.10 - 1.15: every injected pod."""
    LEGACY_PROXIES = "legacy-proxies"
    """istioctl 1.16 - 1.20: only Running pods whose istio-proxy image tag is < 1.10 (#40602)."""


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

SIDECAR_IPV6_FORMS_SINCE = "1.16"
"""`[::1]:PORT` and `[::]:PORT` defaultEndpoint forms (istio/api sidecar.proto, reference section 4)."""

PRECHECK_ROWS: tuple[tuple[str, str | None, PrecheckScope], ...] = (
    ("1.10", "1.16", PrecheckScope.ALL_INJECTED),
    ("1.16", "1.21", PrecheckScope.LEGACY_PROXIES),
    ("1.21", None, PrecheckScope.NONE),
)
"""The localhost check of `istioctl x precheck`, by istioctl version (removed in 1.21, #48449)."""

AMBIENT_SINCE = "1.22"
"""The `ambient` install profile: beta in 1.22 and 1.23, GA from 1.24 (probes-ambient.md §2); 1.22-1.23 capture
with TPROXY, 1.24+ with REDIRECT (#52622): the same inbound semantics."""

LEGACY_NETWORKING_BEFORE = "1.10.0"
"""istioctl 1.16 - 1.20 checks only proxies older than this (precheck.go fromLegacyNetworkingVersion)."""


def parse_version(text: str) -> Version:
    """Parse an Istio version or tag (`1.10.6`, `1.22.0-beta.1`, `1.23-dev`); ValueError says what is wrong."""
    try:
        return Version(text.removeprefix("v"))
    except InvalidVersion:
        raise ValueError(f"cannot read {text!r} as an Istio version: expected e.g. 1.10.6 or 1.22.0-beta.1") from None


def version_row(version: Version) -> VersionRow:
    """The behaviour row of an Istio version; ValueError for versions the suite has no facts about."""
    for row in ISTIO_VERSIONS:
        if row.contains(version):
            return row
    raise ValueError(f"Istio {version} is older than 1.9: the suite has no facts for it (supported: >= 1.9)")


def precheck_scope(istioctl: Version) -> PrecheckScope:
    """Which pods an istioctl of this version examines for IST0143."""
    minor = Version(f"{istioctl.major}.{istioctl.minor}")
    for first, before, scope in PRECHECK_ROWS:
        if Version(first) <= minor and (before is None or minor < Version(before)):
            return scope
    return PrecheckScope.NONE


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
            "capabilities": sorted(c.value for c in self.capabilities),
        }


def istio_capabilities(version_text: str, istioctl_version: str | None = None) -> MeshCapabilities:
    """The capabilities of an Istio release (or of a custom build claiming to be that version)."""
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
    minor = Version(f"{version.major}.{version.minor}")
    if minor >= Version(SIDECAR_IPV6_FORMS_SINCE):
        caps.add(Capability.SIDECAR_ENDPOINT_IPV6)
    else:
        reasons[Capability.SIDECAR_ENDPOINT_IPV6] = (
            f"{label} predates the [::1]:PORT / [::]:PORT defaultEndpoint forms (added in 1.16)"
        )
    if minor >= Version(AMBIENT_SINCE):
        caps.add(Capability.PROFILE_AMBIENT)
    else:
        reasons[Capability.PROFILE_AMBIENT] = f"{label} has no ambient mode (beta from 1.22, GA from 1.24)"
    ctl = parse_version(istioctl_version) if istioctl_version else version
    scope = precheck_scope(ctl)
    if scope is PrecheckScope.ALL_INJECTED or (
        scope is PrecheckScope.LEGACY_PROXIES and version < Version(LEGACY_NETWORKING_BEFORE)
    ):
        caps.add(Capability.PRECHECK_LOCALHOST)
    elif scope is PrecheckScope.LEGACY_PROXIES:
        reasons[Capability.PRECHECK_LOCALHOST] = (
            f"istioctl {ctl} x precheck checks only proxies older than 1.10 (#40602); the proxies run {version_text}"
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
    )


def emulated_capabilities() -> MeshCapabilities:
    """The emulated reference mesh does everything: it exists to show every cell."""
    return MeshCapabilities(
        name="emulated",
        version="reference",
        default_profile=Profile.PASSTHROUGH,
        legacy_switch=LegacySwitch.EMULATED,
        capabilities=frozenset(Capability),
        precheck=PrecheckScope.ALL_INJECTED,
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
    )
