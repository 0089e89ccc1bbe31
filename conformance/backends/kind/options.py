"""Options of the kind and kubeconfig backends, and their validation (one line per mistake)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

KIND_OPTIONS = {
    "istio_version": "--istio-version",
    "istioctl": "--istioctl",
    "istioctl_version": "--istioctl-version",
    "kind_bin": "--kind-bin",
    "kubectl_bin": "--kubectl-bin",
    "cluster_name": "--cluster-name",
    "keep_cluster": "--keep-cluster",
    "kubeconfig": "--kubeconfig",
    "allow_mesh_install": "--allow-mesh-install",
    "istio_hub": "--istio-hub",
    "istio_tag": "--istio-tag",
    "install_values": "--install-values",
    "load_image": "--load-image",
    "echo_image": "--echo-image",
    "node_image": "--node-image",
    "plan": "--plan",
}


def add_options(group: Any) -> None:
    """Register the kind/kubeconfig options in the suite's group."""
    group.addoption("--istio-version", default=None, help="kind/kubeconfig: the Istio release to install (e.g. 1.10.6)")
    group.addoption("--istioctl", default=None, help="kind/kubeconfig: istioctl binary to use (else downloaded)")
    group.addoption(
        "--istioctl-version",
        default=None,
        help="kind/kubeconfig: istioctl release for the precheck, when it differs from the mesh (upgrade check)",
    )
    group.addoption("--kind-bin", default=None, help="kind: kind binary (else PATH, else downloaded)")
    group.addoption("--kubectl-bin", default=None, help="kind/kubeconfig: kubectl binary (else PATH, else downloaded)")
    group.addoption("--cluster-name", default="mic", help="kind: cluster name (reused if it exists)")
    group.addoption("--keep-cluster", action="store_true", default=False, help="kind: do not delete the cluster")
    group.addoption("--kubeconfig", default=None, help="kubeconfig backend: the cluster to use")
    group.addoption(
        "--allow-mesh-install",
        action="store_true",
        default=False,
        help="kubeconfig backend: allow the suite to install, reconfigure and remove Istio",
    )
    group.addoption("--istio-hub", default=None, help="custom build: image hub (e.g. ghcr.io/me/istio)")
    group.addoption("--istio-tag", default=None, help="custom build: image tag")
    group.addoption("--install-values", default=None, help="custom build: extra istioctl install overlay (YAML file)")
    group.addoption(
        "--load-image", action="append", default=[], help="kind: image to `kind load docker-image` (repeatable)"
    )
    group.addoption(
        "--echo-image", default=None, help="kind/kubeconfig: echo image (default: built from workloads/echo)"
    )
    group.addoption(
        "--node-image", default=None, help="kind: node image (default: the version matrix row's, by digest)"
    )
    group.addoption(
        "--plan",
        action="store_true",
        default=False,
        help="kind/kubeconfig: print every command and manifest, then exit",
    )


def _given(opt: Any, name: str) -> bool:
    value = getattr(opt, name, None)
    if name == "cluster_name":
        return bool(value) and value != "mic"
    return bool(value)


def validate(opt: Any, backend: str) -> dict[str, Any]:
    """The backend options as a dict; ValueError with one line for a misuse."""
    if backend == "emulated":
        misplaced = [flag for name, flag in KIND_OPTIONS.items() if _given(opt, name)]
        if misplaced:
            raise ValueError(f"{misplaced[0]} is an option of --backend kind/kubeconfig, not of the emulated backend")
        return {}
    values = {name: getattr(opt, name, None) for name in KIND_OPTIONS}
    if not values["istio_version"] and not getattr(opt, "mesh_version", None):
        raise ValueError(
            f"--backend {backend} needs --istio-version X (the release to install, or the one a custom build claims)"
        )
    values["istio_version"] = values["istio_version"] or opt.mesh_version
    if backend == "kubeconfig":
        if not values["kubeconfig"]:
            raise ValueError("--backend kubeconfig needs --kubeconfig PATH")
        for name in ("kind_bin", "keep_cluster", "load_image", "node_image"):
            if _given(opt, name):
                raise ValueError(f"{KIND_OPTIONS[name]} is an option of --backend kind, not of kubeconfig")
    elif values["kubeconfig"] or values["allow_mesh_install"]:
        flag = "--kubeconfig" if values["kubeconfig"] else "--allow-mesh-install"
        raise ValueError(f"{flag} is an option of --backend kubeconfig, not of kind")
    for name in ("istioctl", "kind_bin", "kubectl_bin", "install_values", "kubeconfig"):
        if values[name] and not Path(str(values[name])).is_file():
            raise ValueError(f"{KIND_OPTIONS[name]} {values[name]}: no such file")
    if bool(values["istio_hub"]) != bool(values["istio_tag"]):
        raise ValueError("--istio-hub and --istio-tag go together (a custom build is HUB/pilot:TAG, HUB/proxyv2:TAG)")
    return values


def maybe_plan(config: pytest.Config, settings: Any) -> None:
    """--plan: print every command and manifest the run would use, in order, without running any; then exit."""
    if not getattr(config.option, "plan", False):
        return
    from conformance.backends.kind.plan import plan_text

    try:
        text = plan_text(settings)
    except ValueError as err:
        raise pytest.UsageError(f"--plan: {err}") from None
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture(in_=True)
    sys.stdout.write(text)
    sys.stdout.flush()
    pytest.exit("--plan: printed the plan; nothing was run", returncode=0)
