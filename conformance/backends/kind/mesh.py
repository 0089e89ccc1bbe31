"""The Istio under test on a kind or kubeconfig cluster: its installs and the switches between them.

`istioctl install` (requests lowered for small runners), once per profile group: the sidecar profiles on
istioctl's minimal profile (what a sidecar user runs: istio-init, default images), ambient on Istio's ambient
profile (istio-cni, ztunnel, distroless images, HBONE on every sidecar), the ambient install last. Each install is
switched between passthrough and legacy in place, as each version allows (the legacy switch is a pilot env or a
meshConfig overlay). On a kubeconfig cluster the Istio already installed is used as it is, unless
--allow-mesh-install lets the suite install (and afterwards remove) its own.

This module owns which install is in place and in which mode; restarting the workloads after a re-install is the
backend's (backend.py), since only it knows both.
"""

from __future__ import annotations

from typing import Any

import yaml

from conformance.backends.base import BackendError
from conformance.backends.kind import images, watches
from conformance.backends.kind.cluster import ClusterSite
from conformance.backends.kind.images import AMBIENT, RELEASE_HUB, SIDECAR, SIDECAR_PROFILES
from conformance.backends.timeouts import TimeoutConfig
from conformance.spec.capabilities import Capability, LegacySwitch, istio_capabilities, parse_version, version_row
from conformance.spec.dimensions import IpFamily
from conformance.world.resources import fixture

ISTIO_NAMESPACE = "istio-system"
IP_FAMILY_POLICY_SINCE = "1.20.0"
"""The first release whose chart has `values.pilot.ipFamilyPolicy` (settings-dualstack.md §2)."""


def dual_stack_overlays(family: str, istio_version: str) -> list[str]:
    """The install overlays of a dual-stack run (none otherwise): the flag, and istiod's Service policy (1.20+)."""
    if family != IpFamily.DUAL.value:
        return []
    overlays = [str(fixture("mesh", "dual-stack.yaml"))]
    if parse_version(istio_version).release >= parse_version(IP_FAMILY_POLICY_SINCE).release:
        overlays.append(str(fixture("mesh", "dual-stack-ip-family-policy.yaml")))
    return overlays


def _go_true(value: str | None) -> bool:
    """Go's strconv.ParseBool true values: how istiod and the agent read a boolean env variable."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


def _proxy_metadata(mesh: str) -> dict[str, str]:
    """defaultConfig.proxyMetadata of the `mesh` key of Istio's ConfigMap ({} when absent or unreadable)."""
    try:
        document = yaml.safe_load(mesh) or {}
    except yaml.YAMLError:
        return {}
    default = document.get("defaultConfig") if isinstance(document, dict) else None
    metadata = default.get("proxyMetadata") if isinstance(default, dict) else None
    return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}


class Mesh:
    """The run's Istio installs, the one in place and its inbound mode."""

    def __init__(self, site: ClusterSite, options: dict[str, Any], timeouts: TimeoutConfig) -> None:
        self.site = site
        self.runner = site.runner
        self.options = options
        self.timeouts = timeouts
        self.istio_version = str(options["istio_version"])
        self.hub = str(options.get("istio_hub") or RELEASE_HUB)
        self.tag = str(options.get("istio_tag") or self.istio_version)
        self.custom_build = bool(options.get("istio_hub"))
        self.switch = version_row(parse_version(self.istio_version)).legacy_switch
        mesh = istio_capabilities(self.istio_version, family=IpFamily(site.family))
        self.ambient = Capability.PROFILE_AMBIENT in mesh.capabilities  # IPv6: from 1.23.0
        default = version_row(parse_version(self.istio_version)).default_profile.value
        self.mode = default
        """The inbound mode the mesh was last installed in."""
        self.default_mode = default
        self.installs = {i.group: i for i in images.run_installs(options)}
        self.groups = list(self.installs)
        """The installs the run makes, in order: the sidecar profiles' first, ambient's last (it is never left)."""
        self.group = self.groups[0]
        """The install in place: `sidecar` (minimal profile) or `ambient` (the ambient profile)."""
        self.installed = False
        self.preexisting = False

    # --- what the run says about it -------------------------------------------------------------------------

    def groups_note(self) -> str:
        """What the plan and the commands log say about the run's installs."""
        if self.groups == [SIDECAR, AMBIENT]:
            return (
                "installs: the sidecar profiles on istioctl's minimal profile (-f base.yaml: what sidecar users run, "
                "istio-init and default images), then ambient on its own install, the ambient profile "
                "(-f base.yaml -f ambient.yaml: istio-cni, ztunnel), after every sidecar test"
            )
        if self.groups == [AMBIENT]:
            return "installs: the ambient profile only (-f base.yaml -f ambient.yaml): no sidecar profile selected"
        return "installs: istioctl's minimal profile only (-f base.yaml): the ambient profile is not selected"

    def note_images(self) -> None:
        """Every image the installs pull (a custom build must have each); and those no --load-image provides."""
        for group in self.groups:
            self.runner.note(self.installs[group].describe())
        loaded = {str(i) for i in self.options.get("load_image") or []}
        if self.custom_build and loaded:
            pulled = [i for i in images.pulled([self.installs[g] for g in self.groups]) if i not in loaded]
            if pulled:
                self.runner.note(f"not among --load-image, so the node pulls them from {self.hub}: {', '.join(pulled)}")

    def info(self) -> dict[str, str]:
        """The Istio under test."""
        build = "custom build" if self.custom_build else "release"
        return {"name": "istio", "version": self.istio_version, "build": build, "hub": self.hub, "tag": self.tag}

    # --- installing ------------------------------------------------------------------------------------

    def check_existing(self) -> None:
        """On a kubeconfig cluster: the Istio there, unless the suite may install its own; ambient needs ztunnel."""
        api = self.site.api
        self.preexisting = api.exists("deployment", ISTIO_NAMESPACE, "istiod", "look for an installed Istio")
        if not self.preexisting and not self.options.get("allow_mesh_install") and not self.site.planning:
            raise BackendError(
                f"no Istio in {ISTIO_NAMESPACE}: pass --allow-mesh-install to let the suite install "
                f"Istio {self.istio_version}"
            )
        wanted = self.options.get("profiles") or ("ambient",)
        if self.preexisting and self.ambient and "ambient" in wanted and not self.options.get("allow_mesh_install"):
            # The installed Istio is used as it is: the ambient profile needs its ztunnel, or every cell would fail.
            ztunnel = api.exists("daemonset", ISTIO_NAMESPACE, "ztunnel", "look for ztunnel (the ambient profile)")
            if not ztunnel:
                raise BackendError(
                    f"the Istio in {ISTIO_NAMESPACE} has no ztunnel DaemonSet, so the ambient profile cannot run: "
                    "install Istio with the ambient profile, or leave it out (--profile baseline,legacy,passthrough)"
                )
            self.group = AMBIENT  # every profile runs on it: the suite installs nothing
        if self.preexisting and self.site.family == IpFamily.DUAL.value and not self.options.get("allow_mesh_install"):
            self._check_existing_dual_stack()

    def _check_existing_dual_stack(self) -> None:
        """An installed Istio used for a dual-stack run must have ISTIO_DUAL_STACK, in istiod and in its proxies.

        Without it in istiod's env, inbound clusters dial from 127.0.0.6 only; without it in the mesh's
        proxyMetadata, istio-init captures only the first pod address's family (settings-dualstack.md §2): every
        IPv6 cell would fail for a reason that is the install's, not the build's. ISTIO_AGENT_DUAL_STACK is the
        proxies' name in 1.17-1.18 (fixtures/mesh/dual-stack.yaml sets both, as the suite installs it).
        """
        if self.site.planning:
            return
        api = self.site.api
        path = f"/apis/apps/v1/namespaces/{ISTIO_NAMESPACE}/deployments/istiod"
        istiod = api.get_or_none(
            path, "read istiod's env", ["-n", ISTIO_NAMESPACE, "get", "deployment", "istiod", "-o", "json"]
        )
        containers = ((istiod or {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers")) or []
        env = {
            str(e.get("name")): str(e.get("value", ""))
            for c in containers
            if c.get("name") == "discovery"
            for e in c.get("env") or []
        }
        config = api.get_or_none(
            f"/api/v1/namespaces/{ISTIO_NAMESPACE}/configmaps/istio",
            "read the mesh config",
            ["-n", ISTIO_NAMESPACE, "get", "configmap", "istio", "-o", "json"],
        )
        metadata = _proxy_metadata(str(((config or {}).get("data") or {}).get("mesh", "")))
        missing = []
        if not _go_true(env.get("ISTIO_DUAL_STACK")):
            missing.append("istiod's env (values.pilot.env.ISTIO_DUAL_STACK)")
        if not any(_go_true(metadata.get(k)) for k in ("ISTIO_DUAL_STACK", "ISTIO_AGENT_DUAL_STACK")):
            missing.append(
                f"the mesh config's proxyMetadata (configmap {ISTIO_NAMESPACE}/istio, "
                "meshConfig.defaultConfig.proxyMetadata.ISTIO_DUAL_STACK)"
            )
        if missing:
            raise BackendError(
                f"the Istio in {ISTIO_NAMESPACE} is not dual-stack: ISTIO_DUAL_STACK=true is missing from "
                f"{' and '.join(missing)}; install it with fixtures/mesh/dual-stack.yaml, or pass "
                "--allow-mesh-install to let the suite install its own"
            )

    def _install_args(self, mode: str, group: str) -> list[str]:
        args = ["install", "-y", "-f", str(fixture("mesh", "base.yaml"))]
        if group == AMBIENT:
            args += ["-f", str(fixture("mesh", "ambient.yaml"))]
        if mode == "legacy" and self.default_mode != "legacy":
            overlay = {
                LegacySwitch.PILOT_ENV: "legacy-pilot-env.yaml",
                LegacySwitch.MESH_CONFIG: "legacy-mesh-config.yaml",
            }
            if self.switch not in overlay:
                raise BackendError(f"Istio {self.istio_version} has no legacy switch")
            args += ["-f", str(fixture("mesh", overlay[self.switch]))]
        args += [
            arg for overlay in dual_stack_overlays(self.site.family, self.istio_version) for arg in ("-f", overlay)
        ]
        if self.options.get("install_values"):
            args += ["-f", str(self.options["install_values"])]
        args += ["--set", f"hub={self.hub}", "--set", f"tag={self.tag}"]
        variant = images.option_value(self.options.get("istio_variant"))
        if variant is not None:
            # Empty: the default images even under the ambient profile, as Istio's own integration tests install it.
            args += ["--set", f"values.global.variant={variant}"]
        if self.custom_build or self.options.get("load_image"):
            # Loaded images must not be pulled again (a tag like `latest` would pull Always).
            args += ["--set", "values.global.imagePullPolicy=IfNotPresent"]
        args += ["--readiness-timeout", f"{int(self.timeouts.mesh_install)}s"]
        return args

    def _may_install(self) -> bool:
        return self.site.backend == "kind" or bool(self.options.get("allow_mesh_install"))

    def install(self, mode: str, group: str) -> None:
        """`istioctl install` of the group's profile in `mode`, then wait for istiod (and ambient's DaemonSets)."""
        if not self._may_install():
            self.runner.note(
                "using the Istio already installed (pass --allow-mesh-install to let the suite install it)"
            )
            return
        profile = " with the ambient profile" if group == AMBIENT else ""
        self.runner.note(f"mesh: istioctl install{profile}, inbound {mode}")
        self.site.run(
            self.site.istioctl(*self._install_args(mode, group)),
            f"install Istio {self.istio_version} ({mode}{', ambient profile' if group == AMBIENT else ''})",
            timeout=self.timeouts.mesh_install + 60,
        )
        self.installed = True
        self._rollout("istiod", "deployment")
        if group == AMBIENT:
            self.runner.note("ambient: istio-cni and ztunnel DaemonSets (profile ambient)")
            for daemonset in ("istio-cni-node", "ztunnel"):
                self._rollout(daemonset, "daemonset")

    def _rollout(self, name: str, kind: str) -> None:
        what = f"wait for {ISTIO_NAMESPACE}/{name}"
        watches.rollout(self.site.api, ISTIO_NAMESPACE, kind, name, self.timeouts.pod_ready, what)

    # --- switching -------------------------------------------------------------------------------------

    def group_for(self, profile: str) -> str:
        """The install a profile's cells run on (baseline runs on either: its pods are not meshed)."""
        if self._may_install():
            if profile == "ambient" and AMBIENT in self.groups:
                return AMBIENT
            if profile in SIDECAR_PROFILES and SIDECAR in self.groups:
                return SIDECAR
        return self.group

    def switch_install(self, group: str, mode: str) -> None:
        """Re-install as the other profile group wants; the workloads must restart before it is in force.

        istioctl prunes what the new install lacks (the ambient profile's DaemonSets on the way back).
        """
        if mode == "legacy" and self.default_mode != "legacy" and self.switch is LegacySwitch.NONE:
            raise BackendError(f"Istio {self.istio_version} cannot switch to legacy: it has no legacy switch")
        self.runner.note(f"install switch: {self.group} -> {group} install, inbound {mode}")
        self.install(mode, group)

    def switch_mode(self, mode: str) -> None:
        """Re-install the install in place with (or without) the version's legacy switch.

        istioctl install restarts istiod itself when the switch is its env (the pod template changes) and waits
        for it; a meshConfig change reaches istiod without a restart. Either way the rollout has finished here.
        """
        if mode == "legacy" and self.default_mode != "legacy" and self.switch is LegacySwitch.NONE:
            raise BackendError(f"Istio {self.istio_version} cannot switch to legacy: it has no legacy switch")
        if mode == "passthrough" and self.default_mode == "legacy":
            raise BackendError(f"Istio {self.istio_version} has no passthrough mode")
        if self.site.backend == "kubeconfig" and not self.options.get("allow_mesh_install"):
            raise BackendError("switching profiles reinstalls Istio: pass --allow-mesh-install")
        self.runner.note(f"profile switch: {self.mode} -> {mode}")
        self.install(mode, self.group)

    def in_force(self, group: str, mode: str) -> None:
        """The install and mode the workloads now run with (once they have restarted after a re-install)."""
        self.group, self.mode = group, mode

    def restore(self) -> None:
        """Teardown on a kubeconfig cluster: remove the Istio the suite installed, or put back the first install."""
        if self.installed and not self.preexisting:
            # The suite installed this Istio (--allow-mesh-install): it removes it again.
            self.site.run(
                self.site.istioctl("uninstall", "--purge", "-y"), "remove the Istio the suite installed", check=False
            )
            self.installed = False
        elif self.installed and (self.group, self.mode) != (self.groups[0], self.default_mode):
            self.install(self.default_mode, self.groups[0])
            self.in_force(self.groups[0], self.default_mode)
