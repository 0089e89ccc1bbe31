"""The world's three namespaces and the labels that place them: injected, enrolled in ambient, or neither.

- `mic-baseline` (no injection): the baseline server and the `plain` client;
- `mic-mesh` (injected): one server per Sidecar situation, and the `meshed` client;
- `mic-ambient` (enrolled, `istio.io/dataplane-mode=ambient`, where the mesh has ambient): the same servers, and
  the `ambient` client;
- `mic-late` (where the mesh has ambient): one server, deployed unenrolled and enrolled while the run is under way.

Everything the suite deploys carries `app.kubernetes.io/part-of: mesh-inbound-conformance` (PART_OF).
"""

from __future__ import annotations

Manifest = dict[str, object]

PART_OF = "mesh-inbound-conformance"
NS_BASELINE = "mic-baseline"
NS_MESH = "mic-mesh"
NS_AMBIENT = "mic-ambient"
NS_LATE = "mic-late"
"""Deployed unenrolled where the mesh has ambient; the run enrols it while its pod runs (the late-enrolment cells)."""
DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
"""Enrols a namespace's pods in ambient mode; no restart needed (probes-ambient.md §2)."""


def namespace_manifest(name: str, injected: bool) -> Manifest:
    """A namespace with sidecar injection enabled or disabled."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {"istio-injection": "enabled" if injected else "disabled", "app.kubernetes.io/part-of": PART_OF},
        },
    }


def enrolled_namespace_manifest(name: str) -> Manifest:
    """An uninjected namespace enrolled in ambient mode (the label istio-cni and ztunnel act on)."""
    manifest = namespace_manifest(name, injected=False)
    labels = manifest["metadata"]
    assert isinstance(labels, dict)
    labels["labels"][DATAPLANE_MODE_LABEL] = "ambient"
    return manifest
