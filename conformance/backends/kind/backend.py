"""The kind and kubeconfig backends (see issue: kind + Istio backend)."""

from __future__ import annotations

from typing import Any

from conformance.backends.base import BackendError, Cluster
from conformance.timeouts import TimeoutConfig


def make_kube_cluster(backend: str, family: str, options: dict[str, Any], timeouts: TimeoutConfig) -> Cluster:
    """Build the backend's cluster object."""
    raise BackendError(f"--backend {backend} is not implemented yet")
