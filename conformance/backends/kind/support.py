"""Which Kubernetes an Istio release runs on, and the kind node image for it (fixtures/kubernetes.yaml).

A release with a row in fixtures/versions.yaml runs on that row's cluster. Any other release from 1.9 on runs on
the newest Kubernetes its minor supports (istio.io "Supported releases") that has a node image pinned by digest
from a kind release's notes, with that kind release: so `--istio-version 1.20.8` needs no hand-picked image.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from packaging.version import Version

from conformance.spec.capabilities import parse_version
from conformance.world.resources import fixture

SUPPORT_FORMAT = "mesh-inbound-conformance/kubernetes"


@dataclass(frozen=True)
class NodeImage:
    """A kind node image of one Kubernetes minor, and the kind release that built it."""

    kubernetes: str
    image: str
    kind: str
    source: str


@dataclass(frozen=True)
class IstioSupport:
    """The Kubernetes minors one Istio minor supports, and its newest patch the project knows."""

    minor: str
    first: str
    last: str
    latest: str | None
    source: str

    def supports(self, kubernetes: str) -> bool:
        """Whether `kubernetes` (a minor like "1.29") is in the supported range."""
        return Version(self.first) <= Version(kubernetes) <= Version(self.last)


@dataclass(frozen=True)
class Support:
    """The whole table."""

    istio: dict[str, IstioSupport]
    node_images: dict[str, NodeImage]

    def known_ranges(self) -> str:
        """One line naming every Istio minor with its Kubernetes range (for error messages)."""
        return ", ".join(f"{s.minor} (k8s {s.first}-{s.last})" for s in self.istio.values())

    def cluster_for(self, istio_version: str) -> NodeImage:
        """The node image (newest supported Kubernetes with a pinned image) for an Istio release."""
        version = parse_version(istio_version)
        minor = f"{version.major}.{version.minor}"
        entry = self.istio.get(minor)
        if entry is None:
            raise ValueError(
                f"Istio {istio_version}: no known Kubernetes range for {minor} (known: {self.known_ranges()})"
            )
        usable = [image for k8s, image in self.node_images.items() if entry.supports(k8s)]
        if not usable:
            raise ValueError(
                f"Istio {istio_version} supports Kubernetes {entry.first}-{entry.last}, and no kind node image of "
                f"those is pinned in fixtures/kubernetes.yaml (pinned: {', '.join(self.node_images)})"
            )
        return max(usable, key=lambda i: Version(i.kubernetes))

    def newest_known_release(self, istio_version: str) -> str:
        """The newest release the project knows of the same minor, else the newest it knows at all.

        A custom build claiming an unreleased version (1.32-dev) gets the capabilities of that release.
        """
        version = parse_version(istio_version)
        entry = self.istio.get(f"{version.major}.{version.minor}")
        if entry is not None and entry.latest:
            return entry.latest
        known = [s.latest for s in self.istio.values() if s.latest]
        same_or_older = [v for v in known if Version(v) <= version] or known
        return str(max(same_or_older, key=Version))


def is_release(istio_version: str) -> bool:
    """Whether a version names a published release (X.Y.Z, no pre-release or dev part): one istioctl exists."""
    version = parse_version(istio_version)
    return len(version.release) == 3 and not version.is_prerelease and not version.is_devrelease


@cache
def load_support(path: Path | None = None) -> Support:
    """Read fixtures/kubernetes.yaml; ValueError names the problem."""
    source = path or fixture("kubernetes.yaml")
    data: Any = yaml.safe_load(source.read_text())
    if not isinstance(data, dict) or data.get("format") != SUPPORT_FORMAT or data.get("version") != 1:
        raise ValueError(f"{source}: expected format {SUPPORT_FORMAT} version 1")
    istio = {}
    for minor, item in (data.get("istio") or {}).items():
        first, last = (str(k) for k in item["kubernetes"])
        latest = str(item["latest"]) if item.get("latest") else None
        istio[str(minor)] = IstioSupport(str(minor), first, last, latest, str(item["source"]))
    images = {}
    for k8s, item in (data.get("node_images") or {}).items():
        image = str(item["image"])
        if "@sha256:" not in image or not image.startswith(f"kindest/node:v{k8s}."):
            raise ValueError(f"{source}: node image of {k8s} must be kindest/node:v{k8s}.N pinned by digest")
        images[str(k8s)] = NodeImage(str(k8s), image, str(item["kind"]), str(item["source"]))
    return Support(istio, images)
