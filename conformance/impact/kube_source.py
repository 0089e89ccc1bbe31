"""The Kubernetes API as an `impact` source (official `kubernetes` client).

Listeners: every container of a pod shares the pod's network namespace, so any one that can run
`cat /proc/net/tcp /proc/net/tcp6` sees every listener of the pod (probes-ambient.md section 3: no other tool reads
these files, so distroless proxies without `ss` are no blind spot here). Each container is tried in spec order
(exec through the API's websocket channel); when none can print a file, and only with `--allow-debug-containers`,
an ephemeral container of the given image runs the same `cat` and its log is read. Ephemeral containers cannot be
removed from a pod (a maintainer found them "too expensive" for many pods, istio#37235): hence opt-in.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from conformance.backends.kubeclient import (
    ExecDropped,
    ExecRefused,
    api_reason,
    first_line,
    load_configuration,
    run_exec,
)
from conformance.backends.precheck import CAT_COMMAND, split_proc_net
from conformance.impact.analysis import PodInfo, SelectorError, ServiceInfo, ServicePort, parse_selector
from conformance.impact.sources import BadInput, ImpactSource, Inventory, ListenerRead, Unchecked

DEBUG_PREFIX = "mic-impact-"


def _looks_like_proc_net(text: str) -> bool:
    return "local_address" in text


class KubeSource(ImpactSource):
    """Pods, Services and listeners through the Kubernetes API of a kubeconfig context."""

    def __init__(
        self,
        kubeconfig: str | None = None,
        context: str | None = None,
        *,
        allow_debug_containers: bool = False,
        debug_image: str | None = None,
        parallel: int = 8,
        timeout: float = 30.0,
    ) -> None:
        from kubernetes import client

        try:
            configuration = load_configuration(kubeconfig, context)
        except ValueError as err:
            raise BadInput(str(err)) from None
        configuration.connection_pool_maxsize = max(4, parallel * 2)
        configuration.retries = 1
        self.api = client.CoreV1Api(client.ApiClient(configuration))
        self._configuration = configuration
        self.allow_debug = allow_debug_containers
        self.debug_image = debug_image
        self.timeout = timeout
        self.description = (
            f"kubeconfig {kubeconfig or '(default)'}, context {context or '(current)'}, {configuration.host}"
        )

    # --- listing --------------------------------------------------------------------------------------

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=self.timeout, **kwargs)
        except ApiException as err:
            raise BadInput(f"{what}: {api_reason(err)}") from None
        except (HTTPError, OSError) as err:
            raise BadInput(f"{what}: cannot reach the API server: {str(err).splitlines()[0]}") from None

    def _namespace_labels(self, namespaces: Sequence[str] | None) -> dict[str, dict[str, str]]:
        from kubernetes.client.exceptions import ApiException

        if not namespaces:
            listed = self._call("list namespaces", self.api.list_namespace)
            return {ns.metadata.name: dict(ns.metadata.labels or {}) for ns in listed.items}
        labels: dict[str, dict[str, str]] = {}
        for name in namespaces:
            try:
                ns = self.api.read_namespace(name, _request_timeout=self.timeout)
            except ApiException as err:
                if err.status == 404:
                    raise BadInput(f"namespace {name!r} not found") from None
                if err.status == 403:
                    labels[name] = {}  # may not read namespaces: pods still tell their own enrolment
                    continue
                raise BadInput(f"read namespace {name}: {api_reason(err)}") from None
            labels[name] = dict((ns.metadata.labels if ns.metadata else None) or {})
        return labels

    def inventory(self, namespaces: Sequence[str] | None, selector: str | None) -> Inventory:
        """Pods and Services of the namespaces (all when None), pods filtered by the label selector server-side."""
        try:
            parse_selector(selector or "")
        except SelectorError as err:
            raise BadInput(str(err)) from None
        ns_labels = self._namespace_labels(namespaces)
        kwargs = {"label_selector": selector} if selector else {}
        if namespaces:
            pods = [
                p
                for ns in namespaces
                for p in self._call(f"list pods in {ns}", self.api.list_namespaced_pod, ns, **kwargs).items
            ]
            services = [
                s
                for ns in namespaces
                for s in self._call(f"list Services in {ns}", self.api.list_namespaced_service, ns).items
            ]
        else:
            pods = self._call("list pods", self.api.list_pod_for_all_namespaces, **kwargs).items
            services = self._call("list Services", self.api.list_service_for_all_namespaces).items
        return Inventory(
            tuple(self._pod(p, ns_labels) for p in pods),
            tuple(self._service(s) for s in services),
            tuple(sorted(namespaces or ns_labels)),
        )

    @staticmethod
    def _pod(pod: Any, ns_labels: Mapping[str, Mapping[str, str]]) -> PodInfo:
        spec = pod.spec
        containers = list(spec.containers or [])
        init = list(spec.init_containers or [])
        named = {p.name: int(p.container_port) for c in (*containers, *init) for p in (c.ports or []) if p.name}
        phase = pod.status.phase if pod.status and pod.status.phase else "Unknown"
        if pod.metadata.deletion_timestamp is not None:
            phase = "Terminating"
        # status.podIPs (Kubernetes 1.16+) lists one address per family, the primary first; podIP alone before.
        status = pod.status
        ips = tuple(str(entry.ip) for entry in ((status.pod_ips if status else None) or []) if entry.ip)
        if not ips and status and status.pod_ip:
            ips = (str(status.pod_ip),)
        return PodInfo(
            namespace=pod.metadata.namespace,
            name=pod.metadata.name,
            labels=dict(pod.metadata.labels or {}),
            annotations=dict(pod.metadata.annotations or {}),
            containers=tuple(c.name for c in containers),
            init_containers=tuple(c.name for c in init),
            named_ports=named,
            namespace_labels=dict(ns_labels.get(pod.metadata.namespace, {})),
            phase=phase,
            ips=ips,
        )

    @staticmethod
    def _service(service: Any) -> ServiceInfo:
        ports = tuple(
            ServicePort(
                p.name or "",
                int(p.port),
                p.target_port if p.target_port is not None else int(p.port),
                p.protocol or "TCP",
            )
            for p in (service.spec.ports or [])
        )
        return ServiceInfo(service.metadata.namespace, service.metadata.name, dict(service.spec.selector or {}), ports)

    # --- listeners ------------------------------------------------------------------------------------

    def _exec(self, pod: PodInfo, container: str) -> tuple[str, str | None]:
        """The stdout of `cat` in the container, and None, or what went wrong (one line)."""
        try:  # an exec of its own client, bounded by the timeout however its connection behaves
            out = run_exec(self._configuration, pod.namespace, pod.name, container, CAT_COMMAND, self.timeout)
        except ExecRefused as err:
            if err.code == 403:
                return "", f"exec refused ({err.reason})"
            return "", f"exec failed: {err.reason}"
        except ExecDropped as err:
            return "", f"exec failed: the connection dropped before cat ended ({err.reason})"
        if not out.finished:
            # What arrived may be a part of the file: reading it as the pod's listeners would hide some.
            return "", f"cat did not finish within {self.timeout:.0f}s"
        stdout, stderr, status = out.stdout, out.stderr, out.status
        # Success; or cat printed tcp and failed on tcp6 only (IPv6 disabled in the pod): tcp is whole.
        if _looks_like_proc_net(stdout) and (status.get("status") == "Success" or "tcp6" in stderr):
            return stdout, None
        message = status.get("message") or stderr.strip() or "no output"
        return "", f"cat failed: {first_line(str(message))}"

    def _debug_container(self, pod: PodInfo) -> tuple[str, str | None]:
        """Add an ephemeral container running `cat`, wait until it ends, and read its log."""
        from kubernetes.client.exceptions import ApiException

        name = f"{DEBUG_PREFIX}{secrets.token_hex(3)}"
        body = {
            "spec": {
                "ephemeralContainers": [
                    {"name": name, "image": self.debug_image, "command": CAT_COMMAND, "stdin": False, "tty": False}
                ]
            }
        }
        try:
            self.api.patch_namespaced_pod_ephemeralcontainers(
                pod.name, pod.namespace, body, _request_timeout=self.timeout
            )
            deadline = time.monotonic() + self.timeout
            while True:
                current = self.api.read_namespaced_pod(pod.name, pod.namespace, _request_timeout=self.timeout)
                status = current.status
                statuses = {s.name: s for s in ((status.ephemeral_container_statuses if status else None) or [])}
                state = statuses[name].state if name in statuses else None
                if state is not None and state.terminated is not None:
                    break
                if (
                    state is not None
                    and state.waiting is not None
                    and state.waiting.reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName")
                ):
                    return "", f"debug container {name}: image {self.debug_image}: {state.waiting.reason}"
                if time.monotonic() > deadline:
                    return "", f"debug container {name} did not finish within {self.timeout:.0f}s"
                time.sleep(0.5)
            log = self.api.read_namespaced_pod_log(
                pod.name, pod.namespace, container=name, _request_timeout=self.timeout
            )
        except ApiException as err:
            return "", f"debug container: {api_reason(err)}"
        if _looks_like_proc_net(log):
            return log, None
        return "", f"debug container {name} printed no /proc/net/tcp (exit code {state.terminated.exit_code})"

    def read_listeners(self, pod: PodInfo) -> ListenerRead:
        """Try `cat` in each container, then (if allowed) a debug container; Unchecked with every reason."""
        reasons = []
        for container in pod.containers:
            text, problem = self._exec(pod, container)
            if problem is None:
                return ListenerRead(tuple(split_proc_net(text)), f"exec cat in container {container}")
            reasons.append(f"{container}: {problem}")
            if problem.startswith("exec refused (HTTP 403"):
                break  # RBAC is per pod, not per container: the others would be refused too
        if self.allow_debug and self.debug_image:
            text, problem = self._debug_container(pod)
            if problem is None:
                return ListenerRead(tuple(split_proc_net(text)), f"ephemeral container ({self.debug_image})")
            reasons.append(problem)
        elif not any("exec refused (HTTP 403" in r for r in reasons):
            reasons.append("no container can print a file; rerun with --allow-debug-containers --debug-image IMAGE")
        raise Unchecked("; ".join(reasons))
