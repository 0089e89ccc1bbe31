"""The world's workloads on a kind or kubeconfig cluster: applied, waited for, and known by name and address.

The backend deploys the same manifests the emulated backend runs (server-side apply, the echo image set in each
Deployment), plus, in each namespace enrolled in ambient, a PeerAuthentication that keeps it PERMISSIVE. It waits
with watches until every Deployment has its one Ready pod, and keeps what the probes need: each pod's name and
IP of the run's family (of each family on a dual-stack run), each Service's ClusterIPs, and which namespaces are
injected or enrolled (a re-install of the mesh restarts those).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import yaml

from conformance.backends.base import BackendError, Manifest
from conformance.backends.kind import apply, watches
from conformance.backends.kind.cluster import ClusterSite
from conformance.backends.kind.watches import NotReady, judge_from
from conformance.backends.timeouts import TimeoutConfig
from conformance.world.namespaces import DATAPLANE_MODE_LABEL, PART_OF
from conformance.world.pods import PodRef
from conformance.world.probe_pods import PROBE_POD_LABEL

PROXY_CONTAINER = "istio-proxy"
APP_CONTAINER = "echo"
PERMISSIVE_POLICY = "mic-permissive"
"""The PeerAuthentication that keeps an enrolled namespace PERMISSIVE whatever the mesh-wide policy: plaintext from
plain clients and the API server's pod proxy (the request record) reaches its pods through ztunnel only then."""


class Workloads:
    """The run's namespaces, Deployments, pods and Services on the cluster."""

    def __init__(self, site: ClusterSite, timeouts: TimeoutConfig) -> None:
        self.site = site
        self.api = site.api
        self.runner = site.runner
        self.family = site.family
        self.timeouts = timeouts
        self.pod_names: dict[PodRef, str] = {}
        self.pod_ips: dict[PodRef, dict[str, str]] = {}
        """Each pod's address per family (`ipv4`, `ipv6`): the run's family, or both on a dual-stack run."""
        self.service_ips: dict[tuple[str, str], dict[str, str]] = {}
        """Each Service's ClusterIP per family (spec.clusterIPs; a RequireDualStack Service has one of each)."""
        self.namespaces: list[str] = []
        self.injected_namespaces: list[str] = []
        self.enrolled_namespaces: list[str] = []
        """Namespaces enrolled in ambient (their pods' traffic goes through ztunnel)."""
        self.namespace_manifests: dict[str, dict[str, Any]] = {}
        """Each Namespace as applied: enrolling one later applies it again with the label (same field manager)."""
        self.deployments: list[PodRef] = []
        self.probe_pods: set[PodRef] = set()
        """Pods whose probed containers may never be Ready by design: waited for on their main containers."""

    def name_of(self, pod: PodRef) -> str:
        """The pod's current name (its app's name until the pods have been read, as in a plan)."""
        return self.pod_names.get(pod, pod.app)

    # --- deploying -------------------------------------------------------------------------------------

    def deploy(self, manifests: Sequence[Manifest], echo_image: str) -> None:
        """Apply the manifests (the echo image in every Deployment), then wait for the workloads."""
        rendered: list[dict[str, Any]] = [dict(m) for m in manifests]
        for manifest in rendered:
            if manifest.get("kind") == "Deployment":
                _set_image(manifest, echo_image)
                meta = manifest["metadata"]
                self.deployments.append(PodRef(str(meta["namespace"]), str(meta["name"])))
                if meta.get("labels", {}).get(PROBE_POD_LABEL) == "true":
                    self.probe_pods.add(self.deployments[-1])
            if manifest.get("kind") == "Namespace":
                meta = manifest["metadata"]
                self.namespaces.append(str(meta["name"]))
                self.namespace_manifests[str(meta["name"])] = manifest
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
        apply.apply(self.api, rendered, text, "apply the workloads")
        self.wait()

    def enrol(self, namespace: str) -> None:
        """Label a running namespace istio.io/dataplane-mode=ambient; wait until istio-cni has enrolled its pods.

        The Namespace is applied again as the run applied it, with the label added (a server-side apply by the same
        field manager that left the label out would drop the others), after the PERMISSIVE policy the enrolled
        namespaces get. istio-cni marks each pod it enrolled with `ambient.istio.io/redirection: enabled`.
        """
        manifest = copy.deepcopy(self.namespace_manifests.get(namespace) or {})
        if not manifest:
            raise BackendError(f"enrol {namespace}: not a namespace of this run")
        manifest["metadata"].setdefault("labels", {})[DATAPLANE_MODE_LABEL] = "ambient"
        docs = [_permissive(namespace), manifest]
        apply.apply(self.api, docs, yaml.safe_dump_all(docs, sort_keys=False), f"enrol {namespace} in ambient")
        self.namespace_manifests[namespace] = manifest
        self.enrolled_namespaces.append(namespace)
        self.runner.note(f"ambient: namespace {namespace} enrolled while its pods run ({DATAPLANE_MODE_LABEL}=ambient)")

        def redirected(items: list[dict[str, Any]]) -> None:
            waiting = [
                p["metadata"]["name"]
                for p in items
                if p["metadata"].get("deletionTimestamp") is None
                and (p["metadata"].get("annotations") or {}).get(REDIRECTION_ANNOTATION) != "enabled"
            ]
            if waiting:
                raise NotReady(f"not yet enrolled by istio-cni: {', '.join(sorted(waiting))}")

        what = f"wait until istio-cni has enrolled the pods of {namespace}"
        watches.wait_pods(self.api, namespace, judge_from(redirected), self.timeouts.pod_ready, what)

    def restart(self, namespaces: Sequence[str]) -> None:
        """Restart every Deployment of these namespaces (`kubectl rollout restart`), then wait for the workloads."""
        for namespace in namespaces:
            apply.restart_deployments(self.api, namespace, f"restart the workloads of {namespace}")
        self.wait()

    def delete_namespaces(self) -> None:
        """Delete the run's namespaces (the kubeconfig backend's teardown); what could not be is noted."""
        if not self.namespaces:
            return
        try:
            apply.delete_namespaces(self.api, self.namespaces, "delete the test namespaces")
        except BackendError as err:
            self.runner.note(f"left behind: {err}")
        self.namespaces = []

    # --- waiting ---------------------------------------------------------------------------------------

    def wait(self) -> None:
        """Rollouts, then each namespace's pods watched until every Deployment has its one Ready pod; addresses."""
        for ref in self.deployments:
            if ref not in self.probe_pods:  # never "available" while a probed container is not Ready
                what = f"wait for {ref.namespace}/{ref.app}"
                watches.rollout(self.api, ref.namespace, "deployment", ref.app, self.timeouts.pod_ready, what)
        for namespace in self.namespaces:
            refs = [d for d in self.deployments if d.namespace == namespace]
            # The judge records each pod it can already name, so that a setup that times out still describes
            # real pods in its diagnostics; the pick after it records them from the answer (a plan never judges).
            pods = watches.wait_pods(
                self.api,
                namespace,
                judge_from(lambda items, refs=refs: self._pick_pods(refs, items)),  # type: ignore[misc]
                self.timeouts.pod_ready,
                f"wait for the pods of {namespace}",
            )
            self._pick_pods(refs, pods)
            for item in self.api.services(namespace):
                spec = item["spec"]
                ips = [str(ip) for ip in spec.get("clusterIPs") or [spec.get("clusterIP", "")] if ip]
                self.service_ips[(namespace, item["metadata"]["name"])] = _by_family(ips)

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
        by_family = _by_family([str(ip) for ip in ips if ip])
        # A dual-stack pod is ready with an address of each family (a dual cell dials the one of its client family).
        wanted = ("ipv4", "ipv6") if self.family == "dual" else (self.family,)
        if any(f not in by_family for f in wanted):
            raise NotReady(f"{ref}: no {self.family} pod IP yet")
        self.pod_names[ref] = pod["metadata"]["name"]
        self.pod_ips[ref] = {f: by_family[f] for f in wanted}
        containers = {c["name"] for c in pod["spec"]["containers"]}
        if ref.namespace == "mic-mesh" and PROXY_CONTAINER not in containers:
            raise BackendError(
                f"{ref}: no {PROXY_CONTAINER} container: sidecar injection did not happen in {ref.namespace}"
            )

    def wait_no_terminating(self) -> None:
        """Wait until no pod of the run's namespaces has a deletionTimestamp.

        After a profile switch's rollout restart the old pods stay Terminating for a while, and istioctl 1.10
        selects pods by label only: it would port-forward and run `ss` in them too.
        """

        def gone(items: list[dict[str, Any]]) -> None:
            leaving = [p["metadata"]["name"] for p in items if p["metadata"].get("deletionTimestamp")]
            if leaving:
                raise NotReady(f"still Terminating: {', '.join(sorted(leaving))}")

        for namespace in self.namespaces:
            what = f"wait until no pod of {namespace} is Terminating"
            watches.wait_pods(self.api, namespace, judge_from(gone), self.timeouts.pod_ready, what)

    # --- addresses -------------------------------------------------------------------------------------

    def _family(self, family: str | None) -> str:
        """The family asked for, or the run's primary one (IPv4 on a dual-stack run) when None."""
        if family is None:
            return "ipv4" if self.family == "dual" else self.family
        return family

    def pod_ip(self, pod: PodRef, family: str | None = None) -> str:
        """The pod's IP of `family` (None: the run's primary family)."""
        try:
            ips = self.pod_ips[pod]
        except KeyError:
            raise BackendError(f"no pod {pod} in the cluster") from None
        wanted = self._family(family)
        if wanted not in ips:
            raise BackendError(f"pod {pod} has no {wanted} address on this {self.family} run")
        return ips[wanted]

    def service_ip(self, namespace: str, name: str, family: str | None = None) -> str:
        """The Service's ClusterIP of `family` (None: the run's primary family)."""
        try:
            ips = self.service_ips[(namespace, name)]
        except KeyError:
            raise BackendError(f"no Service {namespace}/{name} in the cluster") from None
        wanted = self._family(family)
        if wanted not in ips:
            raise BackendError(f"Service {namespace}/{name} has no {wanted} ClusterIP on this {self.family} run")
        return ips[wanted]


REDIRECTION_ANNOTATION = "ambient.istio.io/redirection"
"""What istio-cni writes on a pod once its in-pod redirection is in place (`enabled`)."""


def _by_family(ips: Sequence[str]) -> dict[str, str]:
    """The first address of each family in `ips` (the API lists the primary first), keyed `ipv4` / `ipv6`."""
    out: dict[str, str] = {}
    for ip in ips:
        out.setdefault("ipv6" if ":" in ip else "ipv4", ip)
    return out


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


def _set_image(deployment: dict[str, Any], image: str) -> None:
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        container["image"] = image
