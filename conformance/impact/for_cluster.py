"""The `impact` source for a running backend of the suite (used by the suite's cross-check with the precheck).

The emulated backend is read directly (its pods are this process's namespaces); the kind and kubeconfig
backends through the Kubernetes API of the kubeconfig they use, the way a platform team runs `impact`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from conformance.backends.base import BackendError, Cluster
from conformance.impact.sources import ImpactSource


def source_for(cluster: Cluster, manifests: Sequence[Mapping[str, Any]]) -> ImpactSource:
    """An ImpactSource over the cluster the run brought up with these manifests."""
    from conformance.backends.emulated.cluster import EmulatedCluster

    if isinstance(cluster, EmulatedCluster):
        from conformance.impact.emulated_source import EmulatedSource

        return EmulatedSource(cluster, manifests)
    kubeconfig = getattr(cluster, "kubeconfig", "")
    if not kubeconfig:
        raise BackendError(f"{cluster.backend} backend: no kubeconfig to read the cluster's pods through")
    from conformance.impact.kube_source import KubeSource

    return KubeSource(str(kubeconfig))
