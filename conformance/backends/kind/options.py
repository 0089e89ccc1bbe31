"""Options of the kind and kubeconfig backends, and their validation (one line per mistake)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

KIND_OPTIONS = {
    "istio_version": "--istio-version",
    "istioctl": "--istioctl",
    "istioctl_url": "--istioctl-url",
    "istioctl_sha256": "--istioctl-sha256",
    "istioctl_version": "--istioctl-version",
    "kind_bin": "--kind-bin",
    "cluster_name": "--cluster-name",
    "keep_cluster": "--keep-cluster",
    "kubeconfig": "--kubeconfig",
    "allow_mesh_install": "--allow-mesh-install",
    "istio_hub": "--istio-hub",
    "istio_tag": "--istio-tag",
    "install_values": "--install-values",
    "istio_variant": "--istio-variant",
    "load_image": "--load-image",
    "echo_image": "--echo-image",
    "node_image": "--node-image",
    "plan": "--plan",
    "preflight": "--preflight",
}


def add_options(group: Any) -> None:
    """Register the kind/kubeconfig options in the suite's group."""
    group.addoption("--istio-version", default=None, help="kind/kubeconfig: the Istio release to install (e.g. 1.10.6)")
    group.addoption("--istioctl", default=None, help="kind/kubeconfig: istioctl binary to use (else downloaded)")
    group.addoption(
        "--istioctl-url",
        default=None,
        help="custom build: https URL of its istioctl (a binary or a .tar.gz holding `istioctl`); verified by "
        "--istioctl-sha256, else by the publisher's <URL>.sha256",
    )
    group.addoption("--istioctl-sha256", default=None, help="custom build: sha256 of the --istioctl-url download")
    group.addoption(
        "--istioctl-version",
        default=None,
        help="kind/kubeconfig: istioctl release for the precheck, when it differs from the mesh (upgrade check)",
    )
    group.addoption("--kind-bin", default=None, help="kind: kind binary (else PATH, else downloaded)")
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
        "--istio-variant",
        default=None,
        help="kind/kubeconfig: the image variant every install uses, `default` (HUB/NAME:TAG) or `distroless` "
        "(HUB/NAME:TAG-distroless); default: each install profile's own (the ambient profile's is distroless)",
    )
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
        "--preflight",
        action="store_true",
        default=False,
        help="kind: only check what this machine lacks for the run (Docker, cgroups, kernel modules, sysctls, "
        "disk, memory), one line per problem with its fix; exit 0 or 1",
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
    mesh_version = getattr(opt, "mesh_version", None)
    if values["istio_version"] and mesh_version and values["istio_version"] != mesh_version:
        # One version names the mesh on a real cluster: two that disagree would install one and judge another.
        raise ValueError(
            f"--istio-version {values['istio_version']} and --mesh-version {mesh_version} disagree: on --backend "
            f"{backend} give --istio-version only (the release installed, or the one a custom build claims)"
        )
    if not values["istio_version"] and not mesh_version:
        raise ValueError(
            f"--backend {backend} needs --istio-version X (the release to install, or the one a custom build claims)"
        )
    values["istio_version"] = values["istio_version"] or mesh_version
    _check_istioctl_source(values)
    if backend == "kubeconfig":
        if not values["kubeconfig"]:
            raise ValueError("--backend kubeconfig needs --kubeconfig PATH")
        for name in ("kind_bin", "keep_cluster", "load_image", "node_image"):
            if _given(opt, name):
                raise ValueError(f"{KIND_OPTIONS[name]} is an option of --backend kind, not of kubeconfig")
    elif values["kubeconfig"] or values["allow_mesh_install"]:
        flag = "--kubeconfig" if values["kubeconfig"] else "--allow-mesh-install"
        raise ValueError(f"{flag} is an option of --backend kubeconfig, not of kind")
    for name in ("istioctl", "kind_bin", "install_values", "kubeconfig"):
        if values[name] and not Path(str(values[name])).is_file():
            raise ValueError(f"{KIND_OPTIONS[name]} {values[name]}: no such file")
    if bool(values["istio_hub"]) != bool(values["istio_tag"]):
        raise ValueError("--istio-hub and --istio-tag go together (a custom build is HUB/pilot:TAG, HUB/proxyv2:TAG)")
    from conformance.backends.kind import images

    if values["istio_variant"] is not None and values["istio_variant"] not in images.VARIANTS:
        raise ValueError(
            f"--istio-variant {values['istio_variant']!r}: expected {' or '.join(images.VARIANTS)} "
            "(HUB/NAME:TAG, or HUB/NAME:TAG-distroless)"
        )
    images.values_variant(values["install_values"])  # a variant the overlay sets must be readable
    if values["istio_variant"] == "distroless":
        from conformance.spec.capabilities import Capability, istio_capabilities

        if Capability.PRECHECK_LOCALHOST in istio_capabilities(str(values["capability_version"])).capabilities:
            # istioctl 1.10-1.20 runs `ss` in istio-proxy and skips a pod without it, silently (istio#37235): the
            # precheck would find nothing it should, on a build that does nothing wrong.
            raise ValueError(
                f"--istio-variant distroless: the localhost precheck of Istio {values['istio_version']} runs `ss` in "
                "istio-proxy, which a distroless proxy lacks (istioctl then skips the pod): use the default variant"
            )
    return values


def _check_istioctl_source(values: dict[str, Any]) -> None:
    """An unreleased version has no istioctl to download: the build must bring its own (one line otherwise)."""
    from conformance.backends.kind.support import is_release, load_support
    from conformance.spec.capabilities import parse_version

    version = str(values["istio_version"])
    parse_version(version)
    url, sha = values.get("istioctl_url"), values.get("istioctl_sha256")
    if url and values.get("istioctl"):
        raise ValueError("--istioctl and --istioctl-url both name an istioctl: give one")
    if url and not str(url).startswith(("https://", "http://")):
        raise ValueError(f"--istioctl-url {url!r}: expected an http(s) URL of an istioctl binary or .tar.gz")
    if sha and not url:
        raise ValueError("--istioctl-sha256 verifies the --istioctl-url download: give --istioctl-url too")
    if sha and not re.fullmatch(r"[0-9a-f]{64}", str(sha).lower()):
        raise ValueError(f"--istioctl-sha256 {sha!r}: expected 64 hex digits")
    values["capability_version"] = version
    if not is_release(version):
        if not (values.get("istioctl") or url):
            raise ValueError(
                f"Istio {version} is not a release, so there is no istioctl to download: pass --istioctl PATH "
                "or --istioctl-url URL (with --istioctl-sha256) with the build's own istioctl"
            )
        values["capability_version"] = load_support().newest_known_release(version)


def maybe_preflight(config: pytest.Config, settings: Any) -> None:
    """--preflight: print what this machine lacks for the row, one line each with its fix; exit 0 or 1.

    It first lists the images the run's installs pull (a custom build must have every one).
    """
    from conformance.backends.kind import preflight
    from conformance.backends.kind.images import AMBIENT, run_installs
    from conformance.backends.kind.matrix import row_for

    options = settings.backend_options
    if settings.backend != "kind":
        raise pytest.UsageError("--preflight checks the machine for --backend kind")
    try:
        row = row_for(str(options["istio_version"]))
        installs = run_installs(options)
    except ValueError as err:
        raise pytest.UsageError(f"--preflight: {err}") from None
    problems = preflight.check(
        preflight.Host(),
        kubernetes=row.kubernetes,
        istio_version=row.istio,
        family=settings.family.value,
        ambient=any(i.group == AMBIENT for i in installs),
    )
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture(in_=True)
    for install in installs:
        sys.stdout.write(f"preflight: {install.describe()}\n")
    for line in problems:
        sys.stdout.write(f"preflight: {line}\n")
    sys.stdout.flush()
    if problems:
        pytest.exit(f"--preflight: {len(problems)} problem(s)", returncode=1)
    pytest.exit(f"--preflight: ready for Kubernetes {row.kubernetes} ({row.name})", returncode=0)


def maybe_plan(config: pytest.Config, settings: Any) -> None:
    """--plan: print every command and manifest the run would use, in order, without running any; then exit.

    `--preflight` is handled here too (both stop before anything is created).
    """
    if getattr(config.option, "preflight", False):
        maybe_preflight(config, settings)
    if not getattr(config.option, "plan", False):
        return
    from conformance.backends.base import BackendError
    from conformance.backends.kind.plan import plan_text

    try:
        text = plan_text(settings)
    except (ValueError, BackendError) as err:
        # A backend error (a tool that cannot be had, a version without a cluster) is the user's to fix: one line.
        raise pytest.UsageError(f"--plan: {err}") from None
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture(in_=True)
    sys.stdout.write(text)
    sys.stdout.flush()
    pytest.exit("--plan: printed the plan; nothing was run", returncode=0)
