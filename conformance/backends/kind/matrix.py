"""The version matrix (fixtures/versions.yaml): which kind release and node image each Istio version runs on.

The same file feeds the nightly workflow's matrix, and a test keeps the two in step. A row says nothing about
profiles: those are the capabilities of its Istio version (conformance/spec/capabilities.py), which decide what a
run installs and tests; a key no reader uses is refused rather than left to drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from packaging.version import Version

from conformance.spec.capabilities import parse_version
from conformance.world.resources import fixture

MATRIX_FORMAT = "mesh-inbound-conformance/versions"
REQUIRED = ("name", "istio", "kubernetes", "kind", "node_image")
OPTIONAL = ("istioctl_precheck",)


@dataclass(frozen=True)
class Row:
    """One Istio release with the cluster it is verified on."""

    name: str
    istio: str
    kubernetes: str
    kind: str
    node_image: str
    istioctl_precheck: str | None = None

    @property
    def minor(self) -> Version:
        """The Istio minor version of the row."""
        v = parse_version(self.istio)
        return Version(f"{v.major}.{v.minor}")


def load_matrix(path: Path | None = None) -> list[Row]:
    """Read and check the matrix file; ValueError names the problem."""
    source = path or fixture("versions.yaml")
    data: Any = yaml.safe_load(source.read_text())
    if not isinstance(data, dict) or data.get("format") != MATRIX_FORMAT or data.get("version") != 1:
        raise ValueError(f"{source}: expected format {MATRIX_FORMAT} version 1")
    rows = []
    for item in data.get("rows", []):
        missing = set(REQUIRED) - set(item)
        if missing:
            raise ValueError(f"{source}: row {item.get('name', '?')} lacks {', '.join(sorted(missing))}")
        unknown = set(item) - set(REQUIRED) - set(OPTIONAL)
        if unknown:
            raise ValueError(
                f"{source}: row {item['name']}: no reader uses {', '.join(sorted(unknown))} (a row has "
                f"{', '.join(REQUIRED + OPTIONAL)}; its profiles are its Istio version's capabilities)"
            )
        if "@sha256:" not in item["node_image"]:
            raise ValueError(f"{source}: row {item['name']}: node_image must be pinned by digest")
        rows.append(
            Row(
                name=str(item["name"]),
                istio=str(item["istio"]),
                kubernetes=str(item["kubernetes"]),
                kind=str(item["kind"]),
                node_image=str(item["node_image"]),
                istioctl_precheck=str(item["istioctl_precheck"]) if item.get("istioctl_precheck") else None,
            )
        )
    return rows


def row_for(istio_version: str, rows: list[Row] | None = None) -> Row:
    """The row of the same Istio minor; any other release runs on the newest Kubernetes its minor supports.

    That Kubernetes, its node image and kind release come from fixtures/kubernetes.yaml (support.py); a release
    outside every known range is a ValueError naming the known ranges.
    """
    from conformance.backends.kind.support import load_support

    rows = rows if rows is not None else load_matrix()
    version = parse_version(istio_version)
    minor = Version(f"{version.major}.{version.minor}")
    for row in rows:
        if row.minor == minor:
            return row
    support = load_support()
    try:
        image = support.cluster_for(istio_version)
    except ValueError:
        newest = max(rows, key=lambda r: r.minor)
        if minor > newest.minor:
            # A build of a minor the project does not know yet (1.32-dev) runs on the newest row's cluster.
            return newest
        raise
    return Row(
        name=f"istio-{minor}-k8s-{image.kubernetes}",
        istio=istio_version,
        kubernetes=image.kubernetes,
        kind=image.kind,
        node_image=image.image,
    )
