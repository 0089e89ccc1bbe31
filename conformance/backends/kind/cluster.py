"""The cluster a kind or kubeconfig run works on, and the binaries that act on it.

Apart from the mesh and the workloads because it is what they stand on, and what a run creates and deletes: the
kind cluster (created at the row's kind release and node image, or reused if it is the row's Kubernetes and the
run's family), or the existing cluster a kubeconfig reaches; the kubeconfig itself; kind and istioctl (given,
found on PATH at the right version, or downloaded and verified; a plan names them without downloading); the
images loaded into the nodes; and the machine's preflight. Its KubeApi reads the kubeconfig on first use, since
kind writes it mid-run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.backends.base import BackendError
from conformance.backends.kind import download, pins, preflight, tools
from conformance.backends.kind.api import KubeApi
from conformance.backends.kind.matrix import Row
from conformance.backends.kind.runner import PlanRunner, Result, Runner
from conformance.backends.timeouts import TimeoutConfig
from conformance.world.resources import echo_digest, echo_program, fixture

ECHO_REPOSITORY = "localhost/mesh-inbound-conformance/echo"


@dataclass(frozen=True)
class Tools:
    """The binaries a run uses."""

    kind: str
    istioctl: str
    istioctl_precheck: str


def node_family(spec: dict[str, Any]) -> str:
    """A node's pod family from its spec: `dual` where podCIDRs has a CIDR of each family (podCIDR is the first)."""
    cidr = str(spec.get("podCIDR", ""))
    kinds = {"ipv6" if ":" in str(c) else "ipv4" for c in spec.get("podCIDRs") or [cidr] if c}
    return "dual" if len(kinds) == 2 else ("ipv6" if ":" in cidr else "ipv4")


class ClusterSite:
    """A kind cluster this run creates (or reuses), or an existing cluster reached through a kubeconfig."""

    def __init__(
        self,
        backend: str,
        family: str,
        options: dict[str, Any],
        timeouts: TimeoutConfig,
        runner: Runner,
        row: Row,
        tools: Tools | None = None,
        work_dir: Path | None = None,
        host: Any = None,
    ) -> None:
        self.backend = backend
        self.family = family
        self.options = options
        self.timeouts = timeouts
        self.runner = runner
        self.row = row
        self.planning = isinstance(runner, PlanRunner)
        self.istio_version = str(options["istio_version"])
        self.cluster_name = str(options.get("cluster_name") or "mic")
        self._tools = tools
        self._work_dir = work_dir
        self.host = host
        """The machine a kind run checks before creating anything (preflight.Host); tests pass fake roots."""
        self.kubeconfig = str(options["kubeconfig"]) if options.get("kubeconfig") else ""
        self.created_cluster = False
        self.echo_image = str(options.get("echo_image") or "")
        self.api = KubeApi(lambda: self.kubeconfig, runner, timeouts.command)

    # --- tools and files -------------------------------------------------------------------------------

    @property
    def precheck_version(self) -> str:
        """The istioctl release that runs the precheck: --istioctl-version, the row's, else the one installed."""
        return str(self.options.get("istioctl_version") or self.row.istioctl_precheck or self.istio_version)

    @property
    def tools(self) -> Tools:
        """The binaries, resolved on first use (found, given, or downloaded and verified)."""
        if self._tools is None:
            kind = "" if self.backend != "kind" else self._tool("kind", self.options.get("kind_bin"), self.row.kind)
            istioctl = self._tool("istioctl", self.options.get("istioctl"), self.istio_version)
            precheck = self.precheck_version
            ctl_precheck = istioctl if precheck == self.istio_version else self._tool("istioctl", None, precheck)
            self._tools = Tools(kind, istioctl, ctl_precheck)
        return self._tools

    def _tool(self, tool: str, explicit: str | None, version: str) -> str:
        """One binary: given, the custom build's istioctl, on PATH at `version`, or the pinned download."""
        if explicit:
            self.runner.note(f"{tool}: {explicit} (given)")
            return explicit if self.planning else str(tools.resolve_tool(tool, explicit, version))
        url = self.options.get("istioctl_url")
        if tool == "istioctl" and url and version == self.istio_version:
            pin = pins.url_pin(str(url), self.options.get("istioctl_sha256"), version)
            check = f"sha256 {pin.sha256}" if pin.sha256 else f"sha256 from {pin.checksum_url}"
            self.runner.note(f"istioctl of the custom build: {pin.url} ({check})")
            if self.planning:
                return str(download.default_cache_dir() / tool / pin.version / pin.executable_name)
            return str(download.download(pin))
        # PATH is read (and a tool there asked its version) in a plan too: nothing is created.
        on_path, reason = tools.path_choice(tool, version)
        self.runner.note(reason)
        if on_path is not None:
            return str(on_path)
        if self.planning:
            pin = pins.pin_for(tool, version)
            check = f"sha256 {pin.sha256}" if pin.sha256 else f"sha256 from {pin.checksum_url}"
            self.runner.note(f"{tool} {version}: {pin.url} ({check})")
            return str(download.default_cache_dir() / tool / pin.version / pin.executable_name)
        return str(tools.resolve_tool(tool, None, version, use_path=False))

    @property
    def work_dir(self) -> Path:
        """Where the run keeps its kubeconfig (a plan names one without creating it)."""
        if self._work_dir is None:
            if self.planning:
                self._work_dir = Path(tempfile.gettempdir()) / f"mic-kind-{self.cluster_name}"
            else:
                self._work_dir = Path(tempfile.mkdtemp(prefix="mic-kind-"))
        return self._work_dir

    def istioctl(self, *args: str, binary: str | None = None) -> list[str]:
        """An istioctl command on this cluster (the run's istioctl unless `binary` says otherwise)."""
        return [binary or self.tools.istioctl, *args, "--kubeconfig", self.kubeconfig]

    def run(self, argv: Sequence[str], what: str, **kwargs: Any) -> Result:
        """A command of the run, through its Runner (recorded; a plan only records it)."""
        return self.runner.run(argv, what=what, **kwargs)

    # --- the cluster -----------------------------------------------------------------------------------

    @property
    def node_image(self) -> str:
        """The row's node image (by digest), unless --node-image says otherwise."""
        return str(self.options.get("node_image") or self.row.node_image)

    def preflight(self, ambient: bool) -> None:
        """Stop before creating anything when the machine lacks something the row needs (--preflight lists it)."""
        host = self.host if self.host is not None else preflight.Host()
        problems = preflight.check(
            host,
            kubernetes=self.row.kubernetes,
            istio_version=self.row.istio,
            family=self.family,
            ambient=ambient,
        )
        if problems:
            raise BackendError(f"preflight ({len(problems)} problem(s), see --preflight): {' | '.join(problems)}")

    def create(self) -> None:
        """Create the kind cluster, or reuse the one of that name if it fits the row and the family."""
        self.runner.note(f"cluster: kind {self.row.kind}, node image {self.node_image}")
        existing = self.run([self.tools.kind, "get", "clusters"], "list kind clusters").stdout.split()
        self.kubeconfig = str(self.work_dir / "kubeconfig")
        if self.cluster_name in existing:
            self.runner.note(f"reusing the existing kind cluster {self.cluster_name}")
            config = self.run(
                [self.tools.kind, "get", "kubeconfig", "--name", self.cluster_name], "read its kubeconfig"
            )
            if not self.planning:
                Path(self.kubeconfig).write_text(config.stdout)
                self._check_reused_cluster()
        else:
            self.run(
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

    def _check_reused_cluster(self) -> None:
        """A reused cluster must be the row's Kubernetes minor and the run's family, or results would lie."""
        for node in self.api.nodes():
            kubelet = str(node.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", ""))
            cidr = str(node.get("spec", {}).get("podCIDR", ""))
            family = node_family(node.get("spec", {}))
            if not kubelet.startswith(f"v{self.row.kubernetes}.") or (cidr and family != self.family):
                raise BackendError(
                    f"the existing kind cluster {self.cluster_name} runs Kubernetes {kubelet or '?'} with {family} "
                    f"pods; this run needs {self.row.kubernetes} and {self.family}: delete it or pick another "
                    "--cluster-name"
                )

    def check_reachable(self) -> None:
        """The kubeconfig's cluster answers (the kubeconfig backend creates nothing) and has the run's families.

        A node's podCIDRs say which families its pods get; a cluster whose nodes carry none (some CNIs allocate
        addresses themselves) is not judged here: the pod wait says it if a family is missing.
        """
        self.runner.note(f"existing cluster from {self.kubeconfig}")
        self.api.server_version()
        needed = {"ipv4", "ipv6"} if self.family == "dual" else {self.family}
        for node in self.api.nodes():
            spec = node.get("spec", {})
            if not (spec.get("podCIDRs") or spec.get("podCIDR")):
                continue
            family = node_family(spec)
            has = {"ipv4", "ipv6"} if family == "dual" else {family}
            if not needed <= has:
                name = node.get("metadata", {}).get("name", "?")
                raise BackendError(
                    f"node {name} gives its pods {family} addresses only (spec.podCIDRs); this {self.family} run "
                    f"needs {' and '.join(sorted(needed))}: use a cluster of that family, or --ip-family {family}"
                )

    def delete(self) -> None:
        """Delete the kind cluster this run created, unless --keep-cluster (or it was reused)."""
        if self.created_cluster and not self.options.get("keep_cluster"):
            self.run([self.tools.kind, "delete", "cluster", "--name", self.cluster_name], "delete the kind cluster")
            self.created_cluster = False
        else:
            self.runner.note(f"keeping the kind cluster {self.cluster_name}")

    def export_logs(self, directory: Path) -> list[str]:
        """The command that exports the nodes' logs (kubelet, containerd, pods) into `directory`."""
        return [self.tools.kind, "export", "logs", str(directory), "--name", self.cluster_name]

    # --- images ----------------------------------------------------------------------------------------

    def load_images(self) -> None:
        """The echo image (built here unless --echo-image names one) and every --load-image, into the nodes."""
        if not self.echo_image:
            if self.backend != "kind":
                raise BackendError("--backend kubeconfig needs --echo-image (an echo image the cluster can pull)")
            self.echo_image = f"{ECHO_REPOSITORY}:{echo_digest()}"
            self.runner.note("echo image: built from workloads/echo, tagged by the content of its program's files")
            self.run(
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
        self.run(
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
        platform = "linux/" + pins.current_platform().split("-")[1]
        archive = str(self.work_dir / f"image-{index}.tar")
        self.run(
            ["docker", "save", "--platform", platform, "--output", archive, image],
            f"save {image} ({platform}) to an archive",
            timeout=self.timeouts.command * 5,
        )
        self.run(
            [self.tools.kind, "load", "image-archive", archive, "--name", self.cluster_name],
            f"load {image} into the kind nodes",
            timeout=self.timeouts.command * 5,
        )
