"""The kind and kubeconfig backends: real Kubernetes, a real Istio release or custom build, real tools.

Thin by design: every action is a kind, istioctl or docker command, or a Kubernetes API call made with the
official client (api.py), run through a Runner in an order `--plan` prints without running anything. No kubectl
binary is needed. The backend installs Istio with `istioctl install` (requests lowered for small runners), once per
profile group: the sidecar profiles on istioctl's minimal profile (what a sidecar user runs: istio-init, default
images), ambient on Istio's ambient profile (istio-cni, ztunnel, distroless images, HBONE on every sidecar), the
ambient install last. It switches each install between passthrough and legacy in place as each version allows,
deploys the same manifests the emulated backend runs (server-side apply), waits with watches, and probes from
inside the client pods with the echo program's batch mode (one exec per client per round, the batch as an
argument).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from conformance.backends.base import BackendError, Cluster, ContainerReadiness, Manifest, ProbeRequest, by_source
from conformance.backends.kind import images, matrix
from conformance.backends.kind.api import KubeApi
from conformance.backends.kind.images import AMBIENT, SIDECAR
from conformance.backends.kind.runner import CommandError, Pending, PlanRunner, Result, Runner
from conformance.backends.precheck import CAT_COMMAND, PrecheckRun, check_pod, parse_istioctl, split_proc_net
from conformance.backends.timeouts import TimeoutConfig
from conformance.spec.capabilities import Capability, LegacySwitch, istio_capabilities, parse_version, version_row
from conformance.spec.dimensions import IpFamily
from conformance.world.namespaces import DATAPLANE_MODE_LABEL, PART_OF
from conformance.world.pods import PodRef
from conformance.world.ports import CONTROL_PORT
from conformance.world.probe_pods import PROBE_POD_LABEL
from conformance.world.resources import echo_program, fixture

ISTIO_NAMESPACE = "istio-system"
RELEASE_HUB = "docker.io/istio"
ECHO_REPOSITORY = "localhost/mesh-inbound-conformance/echo"
PROXY_CONTAINER = "istio-proxy"
APP_CONTAINER = "echo"
INIT_CONTAINERS = {SIDECAR: "istio-init", AMBIENT: "istio-validation"}
"""The init container injected pods get: istio-init sets up their capture, unless istio-cni does (the ambient
profile), whose injected pods get istio-validation, which only checks the rules (reference, last section)."""
SIDECAR_PROFILES = ("legacy", "passthrough")
PERMISSIVE_POLICY = "mic-permissive"
"""The PeerAuthentication that keeps an enrolled namespace PERMISSIVE whatever the mesh-wide policy: plaintext from
plain clients and the API server's pod proxy (the request record) reaches its pods through ztunnel only then."""
_INBOUND_CLUSTER = re.compile(r'"name":\s*"inbound\|(\d+)\|')


@dataclass(frozen=True)
class Tools:
    """The binaries a run uses."""

    kind: str
    istioctl: str
    istioctl_precheck: str


class NotReady(BackendError):
    """What a wait is still waiting for (one line); the watch goes on until the timeout."""


class KubeCluster(Cluster):
    """A kind cluster this run creates (or reuses), or an existing cluster reached through a kubeconfig."""

    def __init__(
        self,
        backend: str,
        family: str,
        options: dict[str, Any],
        timeouts: TimeoutConfig,
        runner: Runner | None = None,
        tools: Tools | None = None,
        work_dir: Path | None = None,
        host: Any = None,
    ) -> None:
        self.backend = backend
        self.family = family
        self.options = options
        self.timeouts = timeouts
        self.istio_version = str(options["istio_version"])
        self.row = _row(options, self.istio_version)
        self.cluster_name = str(options.get("cluster_name") or "mic")
        self.runner = runner or Runner(default_timeout=timeouts.command)
        self.planning = isinstance(self.runner, PlanRunner)
        self._tools = tools
        self._work_dir = work_dir
        # The machine a kind run checks before creating anything (preflight.Host); tests pass fake roots.
        self._host = host
        self.kubeconfig = str(options["kubeconfig"]) if options.get("kubeconfig") else ""
        self.hub = str(options.get("istio_hub") or RELEASE_HUB)
        self.tag = str(options.get("istio_tag") or self.istio_version)
        self.custom_build = bool(options.get("istio_hub"))
        self.switch = version_row(parse_version(self.istio_version)).legacy_switch
        mesh = istio_capabilities(self.istio_version, family=IpFamily(family))
        self.ambient = Capability.PROFILE_AMBIENT in mesh.capabilities  # IPv6: from 1.23.0
        default = version_row(parse_version(self.istio_version)).default_profile.value
        self._mode = default
        self._default_mode = default
        self.installs = {i.group: i for i in run_installs(options)}
        self.groups = list(self.installs)
        """The installs the run makes, in order: the sidecar profiles' first, ambient's last (it is never left)."""
        self._group = self.groups[0]
        self.created_cluster = False
        self.installed_mesh = False
        self.preexisting_mesh = False
        self.pod_names: dict[PodRef, str] = {}
        self.pod_ips: dict[PodRef, str] = {}
        self.service_ips: dict[tuple[str, str], str] = {}
        self.namespaces: list[str] = []
        self.injected_namespaces: list[str] = []
        self.enrolled_namespaces: list[str] = []
        """Namespaces enrolled in ambient (their pods' traffic goes through ztunnel)."""
        self.deployments: list[PodRef] = []
        self.probe_pods: set[PodRef] = set()
        """Pods whose probed containers may never be Ready by design: waited for on their main containers."""
        self.artifacts_dir = Path(options["artifacts_dir"]) if options.get("artifacts_dir") else None
        if self.artifacts_dir is not None and not self.planning and self.runner.log is None:
            self.runner.log = self.artifacts_dir / f"{backend}-commands.log"
        self.echo_image = str(options.get("echo_image") or "")
        self.api = KubeApi(lambda: self.kubeconfig, self.runner, timeouts.command)

    # --- tools and files -------------------------------------------------------------------------------

    @property
    def tools(self) -> Tools:
        """The binaries, resolved on first use (found, given, or downloaded and verified)."""
        if self._tools is None:
            from conformance.backends.kind import tools as toolbox

            precheck_version = self.options.get("istioctl_version") or self.row.istioctl_precheck or self.istio_version

            def get(tool: str, explicit: str | None, version: str) -> str:
                if explicit:
                    self.runner.note(f"{tool}: {explicit} (given)")
                    return explicit if self.planning else str(toolbox.resolve_tool(tool, explicit, version))
                url = self.options.get("istioctl_url")
                if tool == "istioctl" and url and version == self.istio_version:
                    pin = toolbox.url_pin(str(url), self.options.get("istioctl_sha256"), version)
                    check = f"sha256 {pin.sha256}" if pin.sha256 else f"sha256 from {pin.checksum_url}"
                    self.runner.note(f"istioctl of the custom build: {pin.url} ({check})")
                    if self.planning:
                        return str(toolbox.default_cache_dir() / tool / pin.version / pin.executable_name)
                    return str(toolbox.download(pin))
                # PATH is read (and a tool there asked its version) in a plan too: nothing is created.
                on_path, reason = toolbox.path_choice(tool, version)
                self.runner.note(reason)
                if on_path is not None:
                    return str(on_path)
                if self.planning:
                    pin = toolbox.pin_for(tool, version)
                    check = f"sha256 {pin.sha256}" if pin.sha256 else f"sha256 from {pin.checksum_url}"
                    self.runner.note(f"{tool} {version}: {pin.url} ({check})")
                    return str(toolbox.default_cache_dir() / tool / pin.version / pin.executable_name)
                return str(toolbox.resolve_tool(tool, None, version, use_path=False))

            kind = "" if self.backend != "kind" else get("kind", self.options.get("kind_bin"), self.row.kind)
            istioctl = get("istioctl", self.options.get("istioctl"), self.istio_version)
            ctl_precheck = (
                istioctl if precheck_version == self.istio_version else get("istioctl", None, precheck_version)
            )
            self._tools = Tools(kind, istioctl, ctl_precheck)
        return self._tools

    @property
    def work_dir(self) -> Path:
        """Where the run keeps its kubeconfig (a plan names one without creating it)."""
        if self._work_dir is None:
            if self.planning:
                self._work_dir = Path(tempfile.gettempdir()) / f"mic-kind-{self.cluster_name}"
            else:
                self._work_dir = Path(tempfile.mkdtemp(prefix="mic-kind-"))
        return self._work_dir

    def _istioctl(self, *args: str, binary: str | None = None) -> list[str]:
        return [binary or self.tools.istioctl, *args, "--kubeconfig", self.kubeconfig]

    def _run(self, argv: Sequence[str], what: str, **kwargs: Any) -> Result:
        return self.runner.run(argv, what=what, **kwargs)

    # --- lifecycle -------------------------------------------------------------------------------------

    def up(self, manifests: Sequence[Manifest]) -> None:
        """Cluster, images, mesh, workloads, readiness, addresses."""
        build = f"custom build {self.hub}:{self.tag}" if self.custom_build else "release"
        self.runner.note(
            f"{self.backend} backend: Istio {self.istio_version} ({build}), {self.family}, matrix row {self.row.name}"
        )
        if self.ambient:
            self.runner.note(self.groups_note())
        self._note_images()
        if self.backend == "kind" and not self.planning:
            self._preflight()
        _ = self.tools
        if self.backend == "kind":
            self._create_cluster()
        else:
            self._check_cluster()
        self._images()
        self._install_mesh(self._mode, self._group)
        self._deploy(manifests)

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

    def _note_images(self) -> None:
        """Every image the installs pull (a custom build must have each); and those no --load-image provides."""
        for group in self.groups:
            self.runner.note(self.installs[group].describe())
        loaded = {str(i) for i in self.options.get("load_image") or []}
        if self.custom_build and loaded:
            pulled = [i for i in images.pulled([self.installs[g] for g in self.groups]) if i not in loaded]
            if pulled:
                self.runner.note(f"not among --load-image, so the node pulls them from {self.hub}: {', '.join(pulled)}")

    def _preflight(self) -> None:
        """Stop before creating anything when the machine lacks something the row needs (--preflight lists it)."""
        from conformance.backends.kind import preflight

        host = self._host if self._host is not None else preflight.Host()
        problems = preflight.check(
            host,
            kubernetes=self.row.kubernetes,
            istio_version=self.row.istio,
            family=self.family,
            ambient=AMBIENT in self.groups,
        )
        if problems:
            raise BackendError(f"preflight ({len(problems)} problem(s), see --preflight): {' | '.join(problems)}")

    def _create_cluster(self) -> None:
        self.runner.note(f"cluster: kind {self.row.kind}, node image {self.node_image}")
        existing = self._run([self.tools.kind, "get", "clusters"], "list kind clusters").stdout.split()
        self.kubeconfig = str(self.work_dir / "kubeconfig")
        if self.cluster_name in existing:
            self.runner.note(f"reusing the existing kind cluster {self.cluster_name}")
            config = self._run(
                [self.tools.kind, "get", "kubeconfig", "--name", self.cluster_name], "read its kubeconfig"
            )
            if not self.planning:
                Path(self.kubeconfig).write_text(config.stdout)
                self._check_reused_cluster()
        else:
            self._run(
                [
                    self.tools.kind,
                    "create",
                    "cluster",
                    "--name",
                    self.cluster_name,
                    "--image",
                    self.node_image,
                    "--config",
                    str(fixture("kind", f"{self.family}.yaml")),
                    "--kubeconfig",
                    self.kubeconfig,
                    "--wait",
                    f"{int(self.timeouts.cluster_create)}s",
                ],
                "create the kind cluster",
                timeout=self.timeouts.cluster_create + 60,
            )
            self.created_cluster = True

    @property
    def node_image(self) -> str:
        """The row's node image (by digest), unless --node-image says otherwise."""
        return str(self.options.get("node_image") or self.row.node_image)

    def _check_reused_cluster(self) -> None:
        """A reused cluster must be the row's Kubernetes minor and the run's family, or results would lie."""
        for node in self.api.nodes():
            kubelet = str(node.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", ""))
            cidr = str(node.get("spec", {}).get("podCIDR", ""))
            family = "ipv6" if ":" in cidr else "ipv4"
            if not kubelet.startswith(f"v{self.row.kubernetes}.") or (cidr and family != self.family):
                raise BackendError(
                    f"the existing kind cluster {self.cluster_name} runs Kubernetes {kubelet or '?'} with {family} "
                    f"pods; this run needs {self.row.kubernetes} and {self.family}: delete it or pick another "
                    "--cluster-name"
                )

    def _check_cluster(self) -> None:
        self.runner.note(f"existing cluster from {self.kubeconfig}")
        self.api.server_version()
        self.preexisting_mesh = self.api.exists("deployment", ISTIO_NAMESPACE, "istiod", "look for an installed Istio")
        if not self.preexisting_mesh and not self.options.get("allow_mesh_install") and not self.planning:
            raise BackendError(
                f"no Istio in {ISTIO_NAMESPACE}: pass --allow-mesh-install to let the suite install "
                f"Istio {self.istio_version}"
            )
        wanted = self.options.get("profiles") or ("ambient",)
        if (
            self.preexisting_mesh
            and self.ambient
            and "ambient" in wanted
            and not self.options.get("allow_mesh_install")
        ):
            # The installed Istio is used as it is: the ambient profile needs its ztunnel, or every cell would fail.
            ztunnel = self.api.exists("daemonset", ISTIO_NAMESPACE, "ztunnel", "look for ztunnel (the ambient profile)")
            if not ztunnel:
                raise BackendError(
                    f"the Istio in {ISTIO_NAMESPACE} has no ztunnel DaemonSet, so the ambient profile cannot run: "
                    "install Istio with the ambient profile, or leave it out (--profile baseline,legacy,passthrough)"
                )
            self._group = AMBIENT  # every profile runs on it: the suite installs nothing

    def _images(self) -> None:
        if not self.echo_image:
            if self.backend != "kind":
                raise BackendError("--backend kubeconfig needs --echo-image (an echo image the cluster can pull)")
            digest = hashlib.sha256(echo_program().read_bytes()).hexdigest()[:12]
            self.echo_image = f"{ECHO_REPOSITORY}:{digest}"
            self.runner.note("echo image: built from workloads/echo, tagged by the content of echo.py")
            self._run(
                ["docker", "build", "--tag", self.echo_image, str(echo_program().parent)],
                "build the echo image",
                timeout=self.timeouts.command * 5,
            )
            self._load(self.echo_image)
        for index, image in enumerate(self.options.get("load_image") or []):
            self._load_archive(str(image), index)

    def _load(self, image: str) -> None:
        if self.backend != "kind":
            return
        self._run(
            [self.tools.kind, "load", "docker-image", image, "--name", self.cluster_name],
            f"load {image} into the kind nodes",
            timeout=self.timeouts.command * 5,
        )

    def _load_archive(self, image: str, index: int) -> None:
        """A pulled (often multi-arch) image goes through `docker save --platform` and `kind load image-archive`.

        `kind load docker-image` fails for pulled multi-arch images under Docker 29's containerd image store
        ("content digest ... not found", kind#3795, kind PR #4247); an archive of the one platform the nodes run
        does not (shared/reference/tools-versions-ci.md, "Hazards on real runners").
        """
        if self.backend != "kind":
            return
        from conformance.backends.kind.tools import current_platform

        platform = "linux/" + current_platform().split("-")[1]
        archive = str(self.work_dir / f"image-{index}.tar")
        self._run(
            ["docker", "save", "--platform", platform, "--output", archive, image],
            f"save {image} ({platform}) to an archive",
            timeout=self.timeouts.command * 5,
        )
        self._run(
            [self.tools.kind, "load", "image-archive", archive, "--name", self.cluster_name],
            f"load {image} into the kind nodes",
            timeout=self.timeouts.command * 5,
        )

    # --- the mesh ------------------------------------------------------------------------------------

    def _install_args(self, mode: str, group: str) -> list[str]:
        args = ["install", "-y", "-f", str(fixture("mesh", "base.yaml"))]
        if group == AMBIENT:
            args += ["-f", str(fixture("mesh", "ambient.yaml"))]
        if mode == "legacy" and self._default_mode != "legacy":
            overlay = {
                LegacySwitch.PILOT_ENV: "legacy-pilot-env.yaml",
                LegacySwitch.MESH_CONFIG: "legacy-mesh-config.yaml",
            }
            if self.switch not in overlay:
                raise BackendError(f"Istio {self.istio_version} has no legacy switch")
            args += ["-f", str(fixture("mesh", overlay[self.switch]))]
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

    def _installs_mesh(self) -> bool:
        return self.backend == "kind" or bool(self.options.get("allow_mesh_install"))

    def _install_mesh(self, mode: str, group: str) -> None:
        if not self._installs_mesh():
            self.runner.note(
                "using the Istio already installed (pass --allow-mesh-install to let the suite install it)"
            )
            return
        profile = " with the ambient profile" if group == AMBIENT else ""
        self.runner.note(f"mesh: istioctl install{profile}, inbound {mode}")
        self._run(
            self._istioctl(*self._install_args(mode, group)),
            f"install Istio {self.istio_version} ({mode}{', ambient profile' if group == AMBIENT else ''})",
            timeout=self.timeouts.mesh_install + 60,
        )
        self.installed_mesh = True
        self._rollout(ISTIO_NAMESPACE, "istiod")
        if group == AMBIENT:
            self.runner.note("ambient: istio-cni and ztunnel DaemonSets (profile ambient)")
            for daemonset in ("istio-cni-node", "ztunnel"):
                self._rollout(ISTIO_NAMESPACE, daemonset, kind="daemonset")

    def _rollout(self, namespace: str, name: str, kind: str = "deployment") -> None:
        self.api.rollout(namespace, kind, name, self.timeouts.pod_ready, f"wait for {namespace}/{name}")

    @property
    def inbound_mode(self) -> str:
        """The mode the mesh was last installed in."""
        return self._mode

    @property
    def install_group(self) -> str:
        """The install in place: `sidecar` (minimal profile) or `ambient` (the ambient profile)."""
        return self._group

    def use_profile(self, profile: str, mode: str) -> bool:
        """The profile's install (the sidecar profiles' or ambient's) in `mode`; whether anything changed.

        Baseline cells run on either install (their pods are not meshed); the suite runs the ambient tests last, so
        the ambient install is made once and never left.
        """
        group = self._group
        if self._installs_mesh():
            if profile == "ambient" and AMBIENT in self.groups:
                group = AMBIENT
            elif profile in SIDECAR_PROFILES and SIDECAR in self.groups:
                group = SIDECAR
        if group != self._group:
            self._switch_install(group, mode)
            return True
        if mode != self._mode:
            self.set_inbound_mode(mode)
            return True
        return False

    def _switch_install(self, group: str, mode: str) -> None:
        """Re-install as the other profile group wants, then restart every meshed and enrolled workload.

        istioctl prunes what the new install lacks (the ambient profile's DaemonSets on the way back). Injected pods
        are re-injected for the new install (istio-validation and HBONE under istio-cni, istio-init without it), and
        enrolled pods start afresh once istio-cni is (or is no longer) there.
        """
        if mode == "legacy" and self._default_mode != "legacy" and self.switch is LegacySwitch.NONE:
            raise BackendError(f"Istio {self.istio_version} cannot switch to legacy: it has no legacy switch")
        self.runner.note(f"install switch: {self._group} -> {group} install, inbound {mode}")
        self._install_mesh(mode, group)
        for namespace in [*self.injected_namespaces, *self.enrolled_namespaces]:
            self.api.restart_deployments(namespace, f"restart the workloads of {namespace}")
        self._wait_workloads()
        self._group, self._mode = group, mode

    def set_inbound_mode(self, mode: str) -> None:
        """Re-install with (or without) the version's legacy switch (istioctl rolls istiod), restart the workloads."""
        if mode == self._mode:
            return
        if mode == "legacy" and self._default_mode != "legacy" and self.switch is LegacySwitch.NONE:
            raise BackendError(f"Istio {self.istio_version} cannot switch to legacy: it has no legacy switch")
        if mode == "passthrough" and self._default_mode == "legacy":
            raise BackendError(f"Istio {self.istio_version} has no passthrough mode")
        if self.backend == "kubeconfig" and not self.options.get("allow_mesh_install"):
            raise BackendError("switching profiles reinstalls Istio: pass --allow-mesh-install")
        self.runner.note(f"profile switch: {self._mode} -> {mode}")
        # istioctl install restarts istiod itself when the switch is its env (the pod template changes) and waits
        # for it; a meshConfig change reaches istiod without a restart. Either way the rollout has finished here.
        self._install_mesh(mode, self._group)
        # New proxies pick up the injector's settings (REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION follows the switch).
        for namespace in self.injected_namespaces:
            self.api.restart_deployments(namespace, f"restart the workloads of {namespace}")
        self._wait_workloads()
        self._mode = mode

    def mesh_info(self) -> dict[str, str]:
        """The Istio under test."""
        build = "custom build" if self.custom_build else "release"
        return {"name": "istio", "version": self.istio_version, "build": build, "hub": self.hub, "tag": self.tag}

    # --- workloads -------------------------------------------------------------------------------------

    def _deploy(self, manifests: Sequence[Manifest]) -> None:
        rendered: list[dict[str, Any]] = [dict(m) for m in manifests]
        for manifest in rendered:
            if manifest.get("kind") == "Deployment":
                _set_image(manifest, self.echo_image)
                meta = manifest["metadata"]
                self.deployments.append(PodRef(str(meta["namespace"]), str(meta["name"])))
                if meta.get("labels", {}).get(PROBE_POD_LABEL) == "true":
                    self.probe_pods.add(self.deployments[-1])
            if manifest.get("kind") == "Namespace":
                meta = manifest["metadata"]
                self.namespaces.append(str(meta["name"]))
                if meta.get("labels", {}).get("istio-injection") == "enabled":
                    self.injected_namespaces.append(str(meta["name"]))
                if meta.get("labels", {}).get(DATAPLANE_MODE_LABEL) == "ambient":
                    self.enrolled_namespaces.append(str(meta["name"]))
                    self.runner.note(f"ambient: namespace {meta['name']} enrolled by {DATAPLANE_MODE_LABEL}=ambient")
        self.runner.note("workloads: the world's manifests (the same the emulated backend reads)")
        if self.enrolled_namespaces:
            # Right after the namespaces, before any pod: a namespace-wide policy wins over a mesh-wide one.
            at = max(i for i, m in enumerate(rendered) if m.get("kind") == "Namespace") + 1
            rendered[at:at] = [_permissive(namespace) for namespace in self.enrolled_namespaces]
            self.runner.note(
                f"ambient: {', '.join(self.enrolled_namespaces)} kept PERMISSIVE by a namespace-wide "
                "PeerAuthentication: plain clients and the API server's pod proxy (the request record) reach "
                "enrolled pods in plaintext through ztunnel"
            )
        text = yaml.safe_dump_all(rendered, sort_keys=False)
        self.api.apply(rendered, text, "apply the workloads")
        self._wait_workloads()

    def _wait_workloads(self) -> None:
        """Rollouts, then each namespace's pods watched until every Deployment has its one Ready pod; addresses."""
        for ref in self.deployments:
            if ref not in self.probe_pods:  # never "available" while a probed container is not Ready
                self._rollout(ref.namespace, ref.app)
        for namespace in self.namespaces:
            refs = [d for d in self.deployments if d.namespace == namespace]
            # The judge records each pod it can already name, so that a setup that times out still describes
            # real pods in its diagnostics; the pick after it records them from the answer (a plan never judges).
            pods = self.api.wait_pods(
                namespace,
                _judge(lambda items, refs=refs: self._pick_pods(refs, items)),  # type: ignore[misc]
                self.timeouts.pod_ready,
                f"wait for the pods of {namespace}",
            )
            self._pick_pods(refs, pods)
            for item in self.api.services(namespace):
                self.service_ips[(namespace, item["metadata"]["name"])] = item["spec"].get("clusterIP", "")

    def _pick_pods(self, refs: Sequence[PodRef], items: list[dict[str, Any]]) -> None:
        for ref in refs:
            self._pick_pod(ref, items)

    def _pick_pod(self, ref: PodRef, items: list[dict[str, Any]]) -> None:
        candidates = [
            p
            for p in items
            if p["metadata"].get("labels", {}).get("app") == ref.app
            and p["metadata"].get("deletionTimestamp") is None
            and p.get("status", {}).get("phase") == "Running"
            and all(
                c.get("ready")
                for c in p.get("status", {}).get("containerStatuses", [])
                if ref not in self.probe_pods or c.get("name") in (APP_CONTAINER, PROXY_CONTAINER)
            )
        ]
        if len(candidates) != 1:
            raise NotReady(f"{ref}: {len(candidates)} ready pods, want 1")
        pod = candidates[0]
        ips = [entry["ip"] for entry in pod["status"].get("podIPs", [])] or [pod["status"].get("podIP", "")]
        family_ips = [ip for ip in ips if (":" in ip) == (self.family == "ipv6")]
        if not family_ips:
            raise NotReady(f"{ref}: no {self.family} pod IP yet")
        self.pod_names[ref] = pod["metadata"]["name"]
        self.pod_ips[ref] = family_ips[0]
        containers = {c["name"] for c in pod["spec"]["containers"]}
        if ref.namespace == "mic-mesh" and PROXY_CONTAINER not in containers:
            raise BackendError(
                f"{ref}: no {PROXY_CONTAINER} container: sidecar injection did not happen in {ref.namespace}"
            )

    def pod_ip(self, pod: PodRef) -> str:
        """The pod's IP in the run's family."""
        try:
            return self.pod_ips[pod]
        except KeyError:
            raise BackendError(f"no pod {pod} in the cluster") from None

    def service_ip(self, namespace: str, name: str) -> str:
        """The Service's ClusterIP."""
        try:
            return self.service_ips[(namespace, name)]
        except KeyError:
            raise BackendError(f"no Service {namespace}/{name} in the cluster") from None

    # --- probes, records, precheck --------------------------------------------------------------------------

    def probe(self, requests: Sequence[ProbeRequest], timeout: float) -> list[dict[str, object]]:
        """One `kubectl exec ... echo.py probe --batch JSON` per source pod, all sources side by side.

        The batch is an argument, not stdin: an exec whose stdin must be half-closed to end the input hangs on
        API servers and kubectl versions that do not forward the close (`kubectl exec -i` over SPDY before v5 of
        the remotecommand protocol).
        """
        waits: list[tuple[PodRef, list[int], Pending]] = []
        for source, indexes in by_source(requests).items():
            batch = {"timeout": timeout, "targets": [requests[i].target_json() for i in indexes]}
            command = ["python3", "/app/echo.py", "probe", "--batch", json.dumps(batch, separators=(",", ":"))]
            pod = self.pod_names.get(source, source.app)
            seconds = timeout * 2 + self.timeouts.command
            pending = self.api.start_exec(
                source.namespace, pod, APP_CONTAINER, command, f"probe from {source}", seconds
            )
            waits.append((source, indexes, pending))
        results: list[dict[str, object]] = [{} for _ in requests]
        try:
            for source, indexes, pending in waits:
                self._collect(source, indexes, pending.wait(timeout * 2 + self.timeouts.command + 5), results)
        except BackendError:
            for _, _, pending in waits:
                pending.cancel()
            raise
        return results

    def _collect(self, source: PodRef, indexes: list[int], out: Result, results: list[dict[str, object]]) -> None:
        if not self.planning:
            if out.returncode != 0:
                raise BackendError(
                    f"probe from {source}: the echo program exited {out.returncode}: "
                    f"{' '.join((out.stderr or out.stdout).split())[:200]}"
                )
            # A broken answer is the harness failing, not the mesh: stop with one line rather than record
            # "error" outcomes (or crash on a JSON traceback).
            parsed = _probe_results(out.stdout)
            if parsed is None or len(parsed) != len(indexes):
                preview = " ".join(out.stdout.split())[:200]
                raise BackendError(
                    f"probe from {source}: expected the echo program's results for {len(indexes)} targets, "
                    f"got {preview!r}"
                )
            for i, result in zip(indexes, parsed, strict=True):
                results[i] = result

    def request_record(self, pod: PodRef, request_ids: Sequence[str]) -> list[dict[str, object]]:
        """The echo control port through the API server's pod proxy.

        A sidecar pod excludes the port from capture (its annotation); an enrolled pod has no such exclusion
        (ambient capture ignores it), so the request crosses ztunnel's plaintext inbound, which lets it through
        under PERMISSIVE, the mode the run keeps its enrolled namespace in.
        """
        records: list[dict[str, object]] = []
        ids = list(request_ids)
        for start in range(0, len(ids), 100):
            query = "&".join(f"id={i}" for i in ids[start : start + 100])
            name = self.pod_names.get(pod, pod.app)
            out = self.api.proxy_get(
                pod.namespace, name, CONTROL_PORT, "requests", query, f"read the request record of {pod}"
            )
            records += json.loads(out or '{"requests": []}').get("requests", [])
        return records

    def _pod_json(self, pod: PodRef) -> dict[str, Any]:
        return self.api.pod(pod.namespace, self.pod_names.get(pod, pod.app), f"read {pod}")

    def container_readiness(self, pod: PodRef) -> dict[str, ContainerReadiness]:
        """containerStatuses[].ready through the API; settled once Ready, or once the probe had its chances.

        A container that is not Ready has settled when it has run longer than its readiness probe needs to fail
        `failureThreshold` times (initialDelaySeconds + periodSeconds x failureThreshold + timeoutSeconds). While
        one has not settled, the pod is watched until a container's readiness changes or the first of them would
        settle, so a caller that asks again and again is answered by the API server's events, not by polling.
        """
        data = self._pod_json(pod)
        out = _readiness(data)
        waits = [r.settles_in for r in out.values() if not r.readiness.settled and r.settles_in is not None]
        if self.planning or not waits:
            return {name: r.readiness for name, r in out.items()}
        before = {name: r.readiness.ready for name, r in out.items()}

        def changed(items: list[dict[str, Any]]) -> str | None:
            now = {n: r.readiness.ready for n, r in _readiness(items[0]).items()} if items else before
            return None if now != before else "no container's readiness changed"

        name = self.pod_names.get(pod, pod.app)
        data = (
            self.api.watch_pod(
                pod.namespace, name, changed, min(max(min(waits), 0.5), 30.0), f"watch the readiness of {pod}"
            )
            or data
        )
        return {name: r.readiness for name, r in _readiness(data).items()}

    def probe_connections(self, pod: PodRef, container: str, after: int = 0) -> list[dict[str, object]]:
        """The container's echo record of accepted connections, through the API server's pod proxy."""
        data = self._pod_json(pod)
        spec = next((c for c in data.get("spec", {}).get("containers", []) if c.get("name") == container), None)
        args = [str(a) for a in (spec or {}).get("args", [])]
        if "--control-port" not in args:
            raise BackendError(f"{pod}: no container {container} with a control port")
        port = args[args.index("--control-port") + 1]
        name = self.pod_names.get(pod, pod.app)
        out = self.api.proxy_get(
            pod.namespace,
            name,
            port,
            "connections",
            f"after={after}",
            f"read the probe connections of {pod}/{container}",
        )
        records: list[dict[str, object]] = json.loads(out or '{"connections": []}').get("connections", [])
        return records

    def precheck(self, namespace: str) -> PrecheckRun:
        """Run `istioctl x precheck`, cross-checked with the suite's checker fed by the proxies' own state."""
        version = self.options.get("istioctl_version") or self.row.istioctl_precheck or self.istio_version
        self.runner.note(f"precheck with istioctl {version}, once no pod of the run is Terminating")
        self._wait_no_terminating()
        result = self._run(
            self._istioctl("x", "precheck", binary=self.tools.istioctl_precheck), "istioctl x precheck", check=False
        )
        run = parse_istioctl(result.stdout, result.stderr, result.returncode)
        self._ignore_stale_findings(run)
        findings = []
        for ref in [d for d in self.deployments if d.namespace == namespace and d.app != "client"]:
            pod = self.pod_names.get(ref, ref.app)
            try:
                # The pod's listeners from /proc/net/tcp{,6} of its network namespace, read in the echo container:
                # istioctl's `ss` in istio-proxy is not there in a distroless proxy, and pilot-agent is its own binary.
                listing = self.api.exec(
                    namespace, pod, APP_CONTAINER, list(CAT_COMMAND), f"list the listeners of {ref}"
                )
                dump = self.api.exec(
                    namespace,
                    pod,
                    PROXY_CONTAINER,
                    ["pilot-agent", "request", "GET", "config_dump?resource=dynamic_active_clusters&mask=cluster.name"],
                    f"read the inbound clusters of {ref}",
                )
            except BackendError as err:
                run.warnings.append(f"cross-check skipped for {ref}: {err}")
                continue
            if not _whole_proc_net(listing) or dump.returncode != 0:
                run.warnings.append(f"cross-check skipped for {ref}: could not read its listeners or clusters")
                continue
            exposed = {int(p) for p in _INBOUND_CLUSTER.findall(dump.stdout)}
            findings += check_pod(namespace, pod, exposed, split_proc_net(listing.stdout))
        ours = {(f.namespace, f.pod, f.port) for f in findings}
        theirs = {(f.namespace, f.pod, f.port) for f in run.findings if f.namespace == namespace}
        if not self.planning and ours != theirs:
            run.warnings.append(
                "istioctl and the suite's checker disagree: only istioctl "
                f"{sorted(theirs - ours)}, only the checker {sorted(ours - theirs)}"
            )
        return run

    def _wait_no_terminating(self) -> None:
        """Wait until no pod of the run's namespaces has a deletionTimestamp.

        After a profile switch's rollout restart the old pods stay Terminating for a while, and istioctl 1.10
        selects pods by label only: it would port-forward and run `ss` in them too.
        """

        def gone(items: list[dict[str, Any]]) -> None:
            leaving = [p["metadata"]["name"] for p in items if p["metadata"].get("deletionTimestamp")]
            if leaving:
                raise NotReady(f"still Terminating: {', '.join(sorted(leaving))}")

        for namespace in self.namespaces:
            self.api.wait_pods(
                namespace, _judge(gone), self.timeouts.pod_ready, f"wait until no pod of {namespace} is Terminating"
            )

    def _ignore_stale_findings(self, run: PrecheckRun) -> None:
        """Findings about pods of the run's namespaces that are not its current pods say nothing about this run."""
        current = {(ref.namespace, name) for ref, name in self.pod_names.items()}
        stale = [f for f in run.findings if f.namespace in self.namespaces and (f.namespace, f.pod) not in current]
        if not stale:
            return
        run.findings = [f for f in run.findings if f not in stale]
        run.ignored = stale
        pods = sorted({f"{f.namespace}/{f.pod}" for f in stale})
        run.notes.append(
            f"ignored {len(stale)} istioctl finding(s) for pods that are not this run's current pods: {', '.join(pods)}"
        )

    # --- diagnostics and teardown ---------------------------------------------------------------------

    def diagnostics(self, pods: Sequence[PodRef]) -> dict[str, str]:
        """Pod logs (app, istio-init or istio-validation, istio-proxy), proxy config, describe and events; kind logs."""
        out: dict[str, str] = {}

        def capture(title: str, argv: list[str]) -> None:
            try:
                result = self._run(argv, title, check=False, timeout=self.timeouts.command)
                out[title] = (result.stdout + result.stderr).strip()
            except CommandError as err:
                out[title] = str(err)

        def read(title: str, fn: Callable[[str], str]) -> None:
            try:
                out[title] = fn(title).strip()
            except BackendError as err:  # what could not be read is said where it would have been
                out[title] = str(err)

        api = self.api
        for namespace in sorted({p.namespace for p in pods}):
            read(f"{namespace} get all", lambda t, ns=namespace: api.overview(ns, t))  # type: ignore[misc]
            read(f"{namespace} events", lambda t, ns=namespace: api.events(ns, t))  # type: ignore[misc]
        for ref in pods:
            pod = self.pod_names.get(ref, ref.app)
            meshed = ref.namespace in self.injected_namespaces
            read(f"{ref} describe", lambda t, r=ref, p=pod: api.describe(r.namespace, p, t))  # type: ignore[misc]
            # Uninjected pods have no init container or istio-proxy: asking would only add an error to the report.
            init = INIT_CONTAINERS[self._group]
            for container in (APP_CONTAINER, init, PROXY_CONTAINER) if meshed else (APP_CONTAINER,):
                read(
                    f"{ref} log {container}",
                    lambda t, r=ref, p=pod, c=container: api.logs(r.namespace, p, c, 200, t),  # type: ignore[misc]
                )
            if meshed:
                for kind in ("listeners", "clusters"):
                    capture(
                        f"{ref} proxy-config {kind}", self._istioctl("proxy-config", kind, f"{pod}.{ref.namespace}")
                    )
        if self._group == AMBIENT and any(p.namespace in self.enrolled_namespaces for p in pods):
            # Enrolled pods' traffic goes through the node's ztunnel, set up by istio-cni: their logs say why.
            for daemonset in ("ztunnel", "istio-cni-node"):
                read(
                    f"{ISTIO_NAMESPACE} {daemonset} log",
                    lambda t, d=daemonset: api.daemonset_logs(ISTIO_NAMESPACE, d, 200, t),  # type: ignore[misc]
                )
        if self.backend == "kind":
            logs = (self.artifacts_dir or self.work_dir) / "kind-logs"
            capture("kind export logs", [self.tools.kind, "export", "logs", str(logs), "--name", self.cluster_name])
        return out

    def down(self) -> None:
        """Delete the kind cluster this run created (unless --keep-cluster); on a kubeconfig, our namespaces."""
        if self.backend == "kind":
            if self.created_cluster and not self.options.get("keep_cluster"):
                self._run(
                    [self.tools.kind, "delete", "cluster", "--name", self.cluster_name], "delete the kind cluster"
                )
                self.created_cluster = False
            else:
                self.runner.note(f"keeping the kind cluster {self.cluster_name}")
            return
        if self.namespaces:
            try:
                self.api.delete_namespaces(self.namespaces, "delete the test namespaces")
            except BackendError as err:
                self.runner.note(f"left behind: {err}")
            self.namespaces = []
        if self.installed_mesh and not self.preexisting_mesh:
            # The suite installed this Istio (--allow-mesh-install): it removes it again.
            self._run(self._istioctl("uninstall", "--purge", "-y"), "remove the Istio the suite installed", check=False)
            self.installed_mesh = False
        elif self.installed_mesh and (self._group, self._mode) != (self.groups[0], self._default_mode):
            self._install_mesh(self._default_mode, self.groups[0])
            self._group, self._mode = self.groups[0], self._default_mode


def _row(options: dict[str, Any], istio_version: str) -> matrix.Row:
    try:
        return matrix.row_for(istio_version)
    except ValueError:
        if options.get("node_image"):
            rows = matrix.load_matrix()
            newest = max(rows, key=lambda r: r.minor)
            return matrix.Row("custom", istio_version, newest.kubernetes, newest.kind, str(options["node_image"]))
        raise


def run_installs(options: dict[str, Any]) -> list[images.Install]:
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
    return images.installs(groups, hub, tag, options.get("istio_variant"), options.get("install_values"))


def _permissive(namespace: str) -> dict[str, Any]:
    """A namespace-wide PeerAuthentication in PERMISSIVE mode (security.istio.io/v1beta1, served from 1.5 on)."""
    return {
        "apiVersion": "security.istio.io/v1beta1",
        "kind": "PeerAuthentication",
        "metadata": {
            "name": PERMISSIVE_POLICY,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": PART_OF},
        },
        "spec": {"mtls": {"mode": "PERMISSIVE"}},
    }


def _whole_proc_net(result: Result) -> bool:
    """`cat /proc/net/tcp /proc/net/tcp6` printed both; or tcp whole and only tcp6 missing (IPv6 off in the pod)."""
    printed = "local_address" in result.stdout
    return printed and (result.returncode == 0 or "tcp6" in result.stderr)


def _judge(check: Callable[[list[dict[str, Any]]], None]) -> Callable[[list[dict[str, Any]]], str | None]:
    """A watch's judge from a check that raises NotReady with the reason it is not done yet."""

    def judge(items: list[dict[str, Any]]) -> str | None:
        try:
            check(items)
        except NotReady as err:
            return str(err)
        return None

    return judge


def _probe_results(stdout: str) -> list[dict[str, object]] | None:
    """The `results` of `echo.py probe` output, or None if it is not such a document."""
    try:
        document = json.loads(stdout)
    except ValueError:
        return None
    results = document.get("results") if isinstance(document, dict) else None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        return None
    return results


def _set_image(deployment: dict[str, Any], image: str) -> None:
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        container["image"] = image


def make_kube_cluster(backend: str, family: str, options: dict[str, Any], timeouts: TimeoutConfig) -> Cluster:
    """Build the backend's cluster object (nothing runs until up())."""
    try:
        return KubeCluster(backend, family, options, timeouts)
    except ValueError as err:
        raise BackendError(str(err)) from None


@dataclass(frozen=True)
class _Probed:
    """A probed container's readiness, and in how many seconds it settles if it has not (None: never known)."""

    readiness: ContainerReadiness
    settles_in: float | None


def _readiness(data: dict[str, Any]) -> dict[str, _Probed]:
    """The probed containers of a pod (the proxy's own readiness is not the app's) from its JSON."""
    probes = {c["name"]: c.get("readinessProbe") or {} for c in data.get("spec", {}).get("containers", [])}
    out: dict[str, _Probed] = {}
    for status in data.get("status", {}).get("containerStatuses", []):
        name = str(status.get("name"))
        if name == PROXY_CONTAINER or not probes.get(name):
            continue
        started = _started_at(status)
        probe = probes[name]
        needs = (
            float(probe.get("initialDelaySeconds", 0))
            + float(probe.get("periodSeconds", 10)) * int(probe.get("failureThreshold", 3))
            + float(probe.get("timeoutSeconds", 1))
        )
        ready = bool(status.get("ready"))
        left = None if started is None else needs - (_now() - started)
        settled = ready or (left is not None and left <= 0)
        reason = "" if ready else "containerStatuses ready=false"
        out[name] = _Probed(ContainerReadiness(ready, settled, reason, started), left)
    return out


def _now() -> float:
    return datetime.datetime.now(datetime.UTC).timestamp()


def _started_at(status: dict[str, Any]) -> float | None:
    """When a container's current run started (containerStatuses[].state.running.startedAt), epoch seconds."""
    text = status.get("state", {}).get("running", {}).get("startedAt")
    if not text:
        return None
    return datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
