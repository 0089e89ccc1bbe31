"""The images each `istioctl install` of a run pulls, and the image variant it installs.

A run installs Istio once per profile group (mesh.py): the sidecar profiles on istioctl's minimal profile, the
ambient profile on Istio's ambient profile. The ambient profile sets `global.variant: distroless` (Istio's
manifests/helm-profiles/ambient.yaml, read at 1.22.8 through 1.30.3 and on later master), so that install pulls
`HUB/{pilot,proxyv2,install-cni,ztunnel}:TAG-distroless`, sidecars included; Istio's image builder makes only the
default variant unless DOCKER_BUILD_VARIANTS says otherwise (tools/docker-builder/types.go), so a custom build
without the distroless images would wait out the install's readiness timeout. `--istio-variant` (or
`values.global.variant` in `--install-values`) names the variant every install of the run uses instead.

How a tag becomes an image (shared/reference/tools-versions-ci.md, last section):
- the charts (istiod, istio-cni, ztunnel): `HUB/NAME:TAG` followed by `-VARIANT` when the variant is not empty
  (`{{with (.Values.variant | default .Values.global.variant)}}-{{.}}{{end}}`);
- the injector (sidecars and their init container, pkg/kube/inject/inject.go `updateImageTypeIfPresent`): a known
  variant suffix (`-distroless`, `-debug`) already on the tag is dropped first, and `default` adds nothing.
`--set values.global.variant=` (empty) installs the default variant under the ambient profile: Istio's own
integration tests install the ambient profile that way with default-variant images
(pkg/test/framework/components/istio: `values.global.variant=` + the test's variant, empty unless asked).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from conformance.spec.capabilities import Capability, istio_capabilities

RELEASE_HUB = "docker.io/istio"
"""Where Istio's releases are published (a custom build names its own hub)."""
SIDECAR = "sidecar"
"""The install the sidecar profiles (legacy, passthrough) run on: istioctl's minimal profile, as sidecar users run."""
AMBIENT = "ambient"
"""The install the ambient profile runs on: Istio's ambient profile (istio-cni, ztunnel)."""
SIDECAR_PROFILES = ("legacy", "passthrough")
"""The profiles that run on the sidecar install."""

AMBIENT_PROFILE_VARIANT = "distroless"
"""`global.variant` of Istio's ambient profile."""
VARIANTS = ("default", "distroless")
"""What `--istio-variant` accepts: `default` (HUB/NAME:TAG, whatever the profile says) or `distroless`."""
_KNOWN_SUFFIXES = ("distroless", "debug")
"""The variants the injector strips from a tag before adding its own (inject.go KnownImageTypes)."""

CHART_IMAGES = {SIDECAR: ("pilot",), AMBIENT: ("pilot", "install-cni", "ztunnel")}
"""The images the charts of each install deploy (istiod; with the ambient profile also istio-cni and ztunnel)."""
PROXY_IMAGE = "proxyv2"
"""The injected sidecar's image (and its init container's: istio-init, or istio-validation under istio-cni)."""


class VariantError(ValueError):
    """An install values file whose variant cannot be read (one line)."""


@dataclass(frozen=True)
class Install:
    """One `istioctl install` of the run: its group, the variant its images come in, and those images."""

    group: str
    hub: str
    tag: str
    variant: str
    """The variant the images come in: "" for the default images."""
    chosen_by: str
    """Why that variant: the install profile, --istio-variant, or --install-values."""

    @property
    def images(self) -> list[str]:
        """Every image this install pulls: istiod, the sidecar proxy, and with ambient istio-cni and ztunnel."""
        charts = [f"{self.hub}/{name}:{chart_tag(self.tag, self.variant)}" for name in CHART_IMAGES[self.group]]
        return [charts[0], f"{self.hub}/{PROXY_IMAGE}:{proxy_tag(self.tag, self.variant)}", *charts[1:]]

    def describe(self) -> str:
        """One line: which install, which variant and why, and its images."""
        profile = "the ambient profile" if self.group == AMBIENT else "istioctl's minimal profile"
        users = "ambient" if self.group == AMBIENT else "the sidecar profiles"
        variant = self.variant or "default"
        return f"images of the install for {users} ({profile}, variant {variant} from {self.chosen_by}): " + ", ".join(
            self.images
        )


def chart_tag(tag: str, variant: str) -> str:
    """The tag a chart gives its image: TAG, or TAG-VARIANT."""
    return f"{tag}-{variant}" if variant else tag


def proxy_tag(tag: str, variant: str) -> str:
    """The tag the injector gives the sidecar image (inject.go updateImageTypeIfPresent)."""
    if not variant:
        return tag
    for known in _KNOWN_SUFFIXES:
        if tag.endswith(f"-{known}"):
            tag = tag[: -len(known) - 1]
            break
    return tag if variant == "default" else f"{tag}-{variant}"


def option_value(variant: str | None) -> str | None:
    """What `--set values.global.variant=` gets for --istio-variant: "" for default; None when not given."""
    if variant is None:
        return None
    return "" if variant == "default" else variant


def values_variant(install_values: str | Path | None) -> str | None:
    """`spec.values.global.variant` of an IstioOperator overlay, when it sets one; VariantError if unreadable."""
    if not install_values:
        return None
    try:
        data: Any = yaml.safe_load(Path(install_values).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise VariantError(f"--install-values {install_values}: {' '.join(str(err).split())}") from None
    node: Any = data
    for key in ("spec", "values", "global"):
        node = node.get(key) if isinstance(node, Mapping) else None
    if not isinstance(node, Mapping) or "variant" not in node:
        return None
    value = node["variant"]
    return "" if value is None else str(value)


def installs(
    groups: Sequence[str], hub: str, tag: str, variant: str | None = None, install_values: str | Path | None = None
) -> list[Install]:
    """The run's installs, in order, with the variant each installs.

    `variant` is --istio-variant (it is passed as `--set`, so it wins over the install values); then a variant the
    install values set; else each profile's own: the default variant for the minimal profile, distroless for the
    ambient profile.
    """
    chosen = option_value(variant)
    overlay = values_variant(install_values)
    out = []
    for group in groups:
        if chosen is not None:
            out.append(Install(group, hub, tag, chosen, "--istio-variant"))
        elif overlay is not None:
            out.append(Install(group, hub, tag, overlay, "--install-values"))
        else:
            own = AMBIENT_PROFILE_VARIANT if group == AMBIENT else ""
            out.append(Install(group, hub, tag, own, "the install profile"))
    return out


def pulled(run_installs: Sequence[Install]) -> list[str]:
    """Every image the run's installs pull, once each, in order."""
    return list(dict.fromkeys(image for install in run_installs for image in install.images))


def run_installs(options: Mapping[str, Any]) -> list[Install]:
    """The installs a run with these backend options makes, in order, with the images each pulls.

    Ambient (where the version has it and the run selects it) gets an install of its own, the ambient profile;
    the sidecar profiles run first, on istioctl's minimal profile; a run of ambient alone makes only its install.
    """
    version = str(options["istio_version"])
    wanted = set(options.get("profiles") or ("baseline", *SIDECAR_PROFILES, "ambient"))
    ambient = Capability.PROFILE_AMBIENT in istio_capabilities(version).capabilities and "ambient" in wanted
    groups = [SIDECAR]
    if ambient:
        groups = [SIDECAR, AMBIENT] if wanted & set(SIDECAR_PROFILES) else [AMBIENT]
    hub = str(options.get("istio_hub") or RELEASE_HUB)
    tag = str(options.get("istio_tag") or version)
    return installs(groups, hub, tag, options.get("istio_variant"), options.get("install_values"))
