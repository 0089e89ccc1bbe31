"""The kind and kubeconfig backends: real Kubernetes, a real Istio release or custom build, real tools.

Thin by design: every action is a kind, istioctl or docker command, or a Kubernetes API call made with the
official client (api.py), run through a Runner in an order `--plan` prints without running anything. No kubectl
binary is needed. KubeCluster is the suite's Cluster for both, made of three parts that each keep their own state:
the cluster and its tools (cluster.py), the mesh's installs and switches (mesh.py), and the workloads (workloads.py),
which the probes observe (probing.py). KubeCluster orders them: what `up` does in turn, what a profile switch
re-installs and restarts, what a failure's diagnostics read, and what teardown removes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from conformance.backends.base import (
    BackendError,
    Cluster,
    ContainerReadiness,
    Manifest,
    ProbeRequest,
)
from conformance.backends.kind import describe, matrix
from conformance.backends.kind.cluster import ClusterSite, Tools
from conformance.backends.kind.images import AMBIENT, SIDECAR
from conformance.backends.kind.mesh import ISTIO_NAMESPACE, Mesh
from conformance.backends.kind.probing import PodProbes
from conformance.backends.kind.runner import CommandError, Runner
from conformance.backends.kind.workloads import APP_CONTAINER, PROXY_CONTAINER, Workloads
from conformance.backends.precheck import PrecheckRun
from conformance.backends.timeouts import TimeoutConfig
from conformance.world.pods import PodRef

INIT_CONTAINERS = {SIDECAR: "istio-init", AMBIENT: "istio-validation"}
"""The init container injected pods get: istio-init sets up their capture, unless istio-cni does (the ambient
profile), whose injected pods get istio-validation, which only checks the rules (reference, last section)."""


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
        self.timeouts = timeouts
        self.istio_version = str(options["istio_version"])
        row = _row(options, self.istio_version)
        self.runner = runner or Runner(default_timeout=timeouts.command)
        self.site = ClusterSite(backend, family, options, timeouts, self.runner, row, tools, work_dir, host)
        self.planning = self.site.planning
        self.mesh = Mesh(self.site, options, timeouts)
        self.workloads = Workloads(self.site, timeouts)
        self.probes = PodProbes(self.site, self.workloads, timeouts)
        self.artifacts_dir = Path(options["artifacts_dir"]) if options.get("artifacts_dir") else None
        if self.artifacts_dir is not None and not self.planning and self.runner.log is None:
            self.runner.log = self.artifacts_dir / f"{backend}-commands.log"

    @property
    def kubeconfig(self) -> str:
        """The kubeconfig the run reaches the cluster through (`impact` reads the pods with it)."""
        return self.site.kubeconfig

    # --- lifecycle -------------------------------------------------------------------------------------

    def up(self, manifests: Sequence[Manifest]) -> None:
        """Cluster, images, mesh, workloads, readiness, addresses."""
        mesh, site = self.mesh, self.site
        build = f"custom build {mesh.hub}:{mesh.tag}" if mesh.custom_build else "release"
        self.runner.note(
            f"{self.backend} backend: Istio {self.istio_version} ({build}), {self.family}, matrix row {site.row.name}"
        )
        if mesh.ambient:
            self.runner.note(mesh.groups_note())
        mesh.note_images()
        if self.backend == "kind" and not self.planning:
            site.preflight(ambient=AMBIENT in mesh.groups)
        _ = site.tools
        if self.backend == "kind":
            site.create()
        else:
            site.check_reachable()
            mesh.check_existing()
        site.load_images()
        mesh.install(mesh.mode, mesh.group)
        self.workloads.deploy(manifests, site.echo_image)

    def down(self) -> None:
        """Delete the kind cluster this run created (unless --keep-cluster); on a kubeconfig, our namespaces."""
        if self.backend == "kind":
            self.site.delete()
            return
        self.workloads.delete_namespaces()
        self.mesh.restore()

    # --- the mesh --------------------------------------------------------------------------------------

    @property
    def inbound_mode(self) -> str:
        """The mode the mesh was last installed in."""
        return self.mesh.mode

    def use_profile(self, profile: str, mode: str) -> bool:
        """The profile's install (the sidecar profiles' or ambient's) in `mode`; whether anything changed.

        Baseline cells run on either install (their pods are not meshed); the suite runs the ambient tests last, so
        the ambient install is made once and never left.
        """
        group = self.mesh.group_for(profile)
        if group != self.mesh.group:
            # Injected pods are re-injected for the new install (istio-validation and HBONE under istio-cni,
            # istio-init without it), and enrolled pods start afresh once istio-cni is (or is no longer) there.
            self.mesh.switch_install(group, mode)
            self.workloads.restart([*self.workloads.injected_namespaces, *self.workloads.enrolled_namespaces])
            self.mesh.in_force(group, mode)
            return True
        if mode != self.mesh.mode:
            self.set_inbound_mode(mode)
            return True
        return False

    def set_inbound_mode(self, mode: str) -> None:
        """Re-install with (or without) the version's legacy switch (istioctl rolls istiod), restart the workloads."""
        if mode == self.mesh.mode:
            return
        self.mesh.switch_mode(mode)
        # New proxies pick up the injector's settings (REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION follows the switch).
        self.workloads.restart(self.workloads.injected_namespaces)
        self.mesh.in_force(self.mesh.group, mode)

    def mesh_info(self) -> dict[str, str]:
        """The Istio under test."""
        return self.mesh.info()

    # --- the workloads and what is observed in them ------------------------------------------------------

    def pod_ip(self, pod: PodRef, family: str | None = None) -> str:
        """The pod's IP of `family` (None: the run's; IPv4 on a dual-stack run, whose pods have both)."""
        return self.workloads.pod_ip(pod, family)

    def service_ip(self, namespace: str, name: str, family: str | None = None) -> str:
        """The Service's ClusterIP of `family` (None: the run's; a dual-stack run's Services have both)."""
        return self.workloads.service_ip(namespace, name, family)

    def probe(self, requests: Sequence[ProbeRequest], timeout: float) -> list[dict[str, object]]:
        """One exec of the echo program's batch mode per source pod, all sources side by side (probing.py)."""
        return self.probes.probe(requests, timeout)

    def request_record(self, pod: PodRef, request_ids: Sequence[str]) -> list[dict[str, object]]:
        """The echo control port's request record, through the API server's pod proxy (probing.py)."""
        return self.probes.request_record(pod, request_ids)

    def container_readiness(self, pod: PodRef) -> dict[str, ContainerReadiness]:
        """The pod's probed containers, Ready or not and whether that is settled (probing.py)."""
        return self.probes.container_readiness(pod)

    def probe_connections(self, pod: PodRef, container: str, after: int = 0) -> list[dict[str, object]]:
        """The container's echo record of accepted connections (probing.py)."""
        return self.probes.probe_connections(pod, container, after)

    def enrol(self, namespace: str) -> None:
        """Label the running namespace for ambient and wait until istio-cni has enrolled its pods."""
        self.workloads.enrol(namespace)

    def precheck(self, namespace: str) -> PrecheckRun:
        """`istioctl x precheck`, cross-checked with the suite's checker (probing.py)."""
        return self.probes.precheck(namespace)

    # --- diagnostics -----------------------------------------------------------------------------------

    def diagnostics(self, pods: Sequence[PodRef]) -> dict[str, str]:
        """Pod logs (app, istio-init or istio-validation, istio-proxy), proxy config, describe and events; kind logs."""
        out: dict[str, str] = {}

        def capture(title: str, argv: list[str]) -> None:
            try:
                result = self.site.run(argv, title, check=False, timeout=self.timeouts.command)
                out[title] = (result.stdout + result.stderr).strip()
            except CommandError as err:
                out[title] = str(err)

        def read(title: str, fn: Callable[[str], str]) -> None:
            try:
                out[title] = fn(title).strip()
            except BackendError as err:  # what could not be read is said where it would have been
                out[title] = str(err)

        api, workloads = self.site.api, self.workloads
        for namespace in sorted({p.namespace for p in pods}):
            read(f"{namespace} get all", lambda t, ns=namespace: describe.overview(api, ns, t))  # type: ignore[misc]
            read(f"{namespace} events", lambda t, ns=namespace: describe.events(api, ns, t))  # type: ignore[misc]
        for ref in pods:
            pod = workloads.name_of(ref)
            meshed = ref.namespace in workloads.injected_namespaces
            read(f"{ref} describe", lambda t, r=ref, p=pod: describe.describe(api, r.namespace, p, t))  # type: ignore[misc]
            # Uninjected pods have no init container or istio-proxy: asking would only add an error to the report.
            init = INIT_CONTAINERS[self.mesh.group]
            for container in (APP_CONTAINER, init, PROXY_CONTAINER) if meshed else (APP_CONTAINER,):
                read(
                    f"{ref} log {container}",
                    lambda t, r=ref, p=pod, c=container: describe.logs(api, r.namespace, p, c, 200, t),  # type: ignore[misc]
                )
            if meshed:
                for kind in ("listeners", "clusters"):
                    argv = self.site.istioctl("proxy-config", kind, f"{pod}.{ref.namespace}")
                    capture(f"{ref} proxy-config {kind}", argv)
        if self.mesh.group == AMBIENT and any(p.namespace in workloads.enrolled_namespaces for p in pods):
            # Enrolled pods' traffic goes through the node's ztunnel, set up by istio-cni: their logs say why.
            for daemonset in ("ztunnel", "istio-cni-node"):
                read(
                    f"{ISTIO_NAMESPACE} {daemonset} log",
                    lambda t, d=daemonset: describe.daemonset_logs(api, ISTIO_NAMESPACE, d, 200, t),  # type: ignore[misc]
                )
        if self.backend == "kind":
            capture("kind export logs", self.site.export_logs((self.artifacts_dir or self.site.work_dir) / "kind-logs"))
        return out


def _row(options: dict[str, Any], istio_version: str) -> matrix.Row:
    try:
        return matrix.row_for(istio_version)
    except ValueError:
        if options.get("node_image"):
            rows = matrix.load_matrix()
            newest = max(rows, key=lambda r: r.minor)
            return matrix.Row("custom", istio_version, newest.kubernetes, newest.kind, str(options["node_image"]))
        raise


def make_kube_cluster(backend: str, family: str, options: dict[str, Any], timeouts: TimeoutConfig) -> Cluster:
    """Build the backend's cluster object (nothing runs until up())."""
    try:
        return KubeCluster(backend, family, options, timeouts)
    except ValueError as err:
        raise BackendError(str(err)) from None
