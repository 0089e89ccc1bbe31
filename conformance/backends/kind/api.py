"""The Kubernetes API work of the kind and kubeconfig backends, through the official `kubernetes` client.

No kubectl binary is needed, so kubectl's version skew with the cluster stops mattering. Each method is one step of
the run's transcript (Runner.call): the plan and the commands log show the HTTP request it makes and the kubectl
command a person could paste to repeat it by hand. A refused request is one line: what the step was for, the
HTTP status and the API server's own message (`HTTP 403: pods "x" is forbidden: ...`).

- Manifests go in by server-side apply (PATCH, application/apply-patch+yaml, field manager
  mesh-inbound-conformance), without `force`: fields another manager owns are a 409 Conflict the user must see,
  not something the suite takes over silently on a cluster that is not only its own.
- Waiting is list-then-watch, the pattern of client-go's informers: list (a complete, consistent state), judge,
  watch from the list's resourceVersion and judge again after every event; when a watch ends (the server closes
  it at timeoutSeconds) or cannot be served from that resourceVersion, list again. The watch cache says the
  latter with HTTP 200 and one ERROR event holding a Status (cacher newErrWatcher): 410 Expired ("too old
  resource version"), or 504 with the ResourceVersionTooLarge cause (its cache is behind the list's). An ERROR
  with another code ends the wait in one line. Nothing sleeps, except as long as a Status's retryAfterSeconds asks.
- Exec goes over the API's websocket (v5.channel.k8s.io from Kubernetes 1.30, v4.channel.k8s.io before); the
  probe batch is an argument, so no stdin half-close is needed (old API servers do not forward it). The exit
  status comes from the Status on channel 3. Every exec has a wall-clock bound (kubeclient.run_exec): the
  timeout config's `command` unless the caller gives one.
- The client's calls are those of kubernetes 37 (pyproject.toml declares the range; `tox -e kubefloor` runs the
  tests on its lower bound): ApiClient.param_serialize and call_api(method, url, headers, body, post_params,
  _request_timeout), and kubernetes.stream for exec. Watches are read here, line by line, rather than through
  kubernetes.watch: its ERROR handling looks up `raw_object`, which it sets only when it deserializes every
  object into the client's models.
"""

from __future__ import annotations

import datetime
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from conformance.backends.base import BackendError
from conformance.backends.kind.describe import describe_pod, event_line, pod_line
from conformance.backends.kind.runner import CommandError, Pending, Result, Runner
from conformance.backends.kubeclient import (
    ExecDropped,
    ExecRefused,
    api_reason,
    first_line,
    load_configuration,
    run_exec,
    status_message,
)

FIELD_MANAGER = "mesh-inbound-conformance"
WATCH_ROUND_SECONDS = 60
"""How long one watch request may stay open before it is listed and watched again."""
RELIST_CODES = (410, 504)
"""The codes of a watch's ERROR event after which the wait lists again: 410 Expired (the resourceVersion is older
than the watch cache's window) and 504 (the cache has not reached it yet: "Too large resource version")."""

# Where each kind the world deploys lives in the API: (path prefix, plural, namespaced).
_RESOURCES: dict[str, tuple[str, str, bool]] = {
    "v1/Namespace": ("/api/v1", "namespaces", False),
    "v1/Service": ("/api/v1", "services", True),
    "v1/ConfigMap": ("/api/v1", "configmaps", True),
    "apps/v1/Deployment": ("/apis/apps/v1", "deployments", True),
    "apps/v1/DaemonSet": ("/apis/apps/v1", "daemonsets", True),
}
_ISTIO_NETWORKING = "networking.istio.io"
_SIDECAR_VERSION = "v1beta1"
"""The Sidecar API version listed for diagnostics (served by every Istio from 1.9 on)."""

Judge = Callable[[list[dict[str, Any]]], str | None]
"""Looks at the objects of a list or watch: None when the wait is over, else why not yet (one line)."""


class ApiError(CommandError):
    """A request the API server refused (or could not be sent); `status` is the HTTP status, 0 when none."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def resource_path(doc: Mapping[str, Any]) -> str:
    """The REST path of a manifest's object; BackendError for a kind the suite does not deploy."""
    api_version, kind = str(doc.get("apiVersion", "")), str(doc.get("kind", ""))
    meta = doc.get("metadata") or {}
    name, namespace = str(meta.get("name", "")), str(meta.get("namespace", ""))
    if api_version.startswith((f"{_ISTIO_NETWORKING}/", "security.istio.io/")):
        prefix, plural, namespaced = f"/apis/{api_version}", f"{kind.lower()}s", True
    elif f"{api_version}/{kind}" in _RESOURCES:
        prefix, plural, namespaced = _RESOURCES[f"{api_version}/{kind}"]
    else:
        raise BackendError(f"the suite does not know where {api_version} {kind} lives in the API")
    if not name or (namespaced and not namespace):
        raise BackendError(f"{kind} {namespace}/{name}: a manifest needs metadata.name (and metadata.namespace)")
    return f"{prefix}/namespaces/{namespace}/{plural}/{name}" if namespaced else f"{prefix}/{plural}/{name}"


def rollout_reason(kind: str, obj: Mapping[str, Any] | None) -> str | None:
    """Why a Deployment or DaemonSet has not finished rolling out (None: it has), as `kubectl rollout status`."""
    if obj is None:
        return "not found"
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status", {}) or {}
    if int(status.get("observedGeneration", 0)) < int(meta.get("generation", 0)):
        return "its controller has not seen the latest spec yet"
    if kind == "daemonset":
        desired = int(status.get("desiredNumberScheduled", 0))
        updated = int(status.get("updatedNumberScheduled", 0))
        available = int(status.get("numberAvailable", 0))
        if updated < desired:
            return f"{updated} of {desired} updated pods scheduled"
        if available < desired:
            return f"{available} of {desired} updated pods available"
        return None
    for condition in status.get("conditions", []):
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            raise BackendError(f"exceeded its progress deadline: {condition.get('message', '')}")
    replicas = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0))
    if updated < replicas:
        return f"{updated} of {replicas} new replicas updated"
    if int(status.get("replicas", 0)) > updated:
        return f"{int(status.get('replicas', 0)) - updated} old replicas pending termination"
    if int(status.get("availableReplicas", 0)) < updated:
        return f"{status.get('availableReplicas', 0)} of {updated} updated replicas available"
    return None


class KubeApi:
    """One cluster's API, reached through the run's kubeconfig (read on first use: kind writes it mid-run)."""

    def __init__(self, kubeconfig: Callable[[], str], runner: Runner, timeout: float) -> None:
        self._kubeconfig = kubeconfig
        self.runner = runner
        self.timeout = timeout
        self._configuration: Any = None
        self._local = threading.local()
        self._lock = threading.Lock()

    # --- plumbing --------------------------------------------------------------------------------------

    def _configured(self) -> Any:
        with self._lock:
            if self._configuration is None:
                try:
                    self._configuration = load_configuration(self._kubeconfig())
                except ValueError as err:
                    raise BackendError(str(err)) from None
                self._configuration.retries = 1
            return self._configuration

    def _client(self) -> Any:
        """The calling thread's ApiClient, for plain requests and watches."""
        from kubernetes import client

        api = getattr(self._local, "client", None)
        if api is None:
            api = self._local.client = client.ApiClient(self._configured())
        return api

    def kubectl(self, *args: str) -> list[str]:
        """The kubectl command that does the same by hand."""
        return ["kubectl", "--kubeconfig", self._kubeconfig(), *args]

    def _call(
        self,
        fn: Callable[[], Any],
        *,
        what: str,
        kubectl: Sequence[str],
        request: str,
        stdin: str | None = None,
    ) -> Any:
        return self.runner.call(
            self._errors(fn, what), what=what, kubectl=self.kubectl(*kubectl), request=request, stdin=stdin
        )

    def _errors(self, fn: Callable[[], Any], what: str) -> Callable[[], Any]:
        """`fn` with the client's exceptions turned into one-line ApiErrors headed by `what`."""

        def run() -> Any:
            from kubernetes.client.exceptions import ApiException
            from urllib3.exceptions import HTTPError

            try:
                return fn()
            except ApiError as err:
                raise ApiError(f"{what}: {err}", err.status) from None
            except ApiException as err:
                raise ApiError(f"{what}: {api_reason(err)}", int(err.status or 0)) from None
            except (HTTPError, OSError) as err:
                host = self._configuration.host if self._configuration is not None else "?"
                raise ApiError(f"{what}: cannot reach the API server at {host}: {first_line(str(err))}") from None
            except json.JSONDecodeError as err:  # a proxy or gateway in front of the API server answered
                raise ApiError(f"{what}: the answer is not the API server's JSON ({err})") from None
            except BackendError as err:
                raise BackendError(f"{what}: {err}") from None

        return run

    def _request(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """One HTTP request through the client (its auth, TLS and proxies); ApiException unless 2xx."""
        from kubernetes.client.exceptions import ApiException

        client = self._client()
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        serialized = client.param_serialize(
            method, path, query_params=list(query), header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        response = client.call_api(*serialized, _request_timeout=timeout or self.timeout)
        response.read()
        data: bytes = response.data or b""
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=data.decode(errors="replace"), data=None)
        return data

    def _get_json(self, path: str, query: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
        document = json.loads(self._request("GET", path, query) or b"{}")
        return document if isinstance(document, dict) else {}

    # --- reading ---------------------------------------------------------------------------------------

    def server_version(self) -> str:
        """The API server's gitVersion (and proof that the kubeconfig reaches it)."""
        return str(
            self._call(
                lambda: self._get_json("/version").get("gitVersion", "?"),
                what="reach the cluster",
                kubectl=["version"],
                request="GET /version",
            )
        )

    def nodes(self) -> list[dict[str, Any]]:
        """The cluster's nodes."""
        items = self._call(
            lambda: self._get_json("/api/v1/nodes").get("items", []),
            what="read the nodes",
            kubectl=["get", "nodes", "-o", "json"],
            request="GET /api/v1/nodes",
        )
        return list(items or [])

    def exists(self, kind: str, namespace: str, name: str, what: str) -> bool:
        """Whether the Deployment or DaemonSet exists (404 is an answer here, not a failure)."""
        from kubernetes.client.exceptions import ApiException

        path = f"/apis/apps/v1/namespaces/{namespace}/{kind}s/{name}"

        def look() -> bool:
            try:
                self._request("GET", path)
            except ApiException as err:
                if err.status == 404:
                    return False
                raise
            return True

        found = self._call(
            look, what=what, kubectl=["-n", namespace, "get", kind, name, "-o", "name"], request=f"GET {path}"
        )
        return bool(found) or found is None  # a plan assumes it is there

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's pods, as the API returns them (camelCase JSON)."""
        path = f"/api/v1/namespaces/{namespace}/pods"
        items = self._call(
            lambda: self._get_json(path).get("items", []),
            what=f"list the pods of {namespace}",
            kubectl=["-n", namespace, "get", "pods", "-o", "json"],
            request=f"GET {path}",
        )
        return list(items or [])

    def services(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's Services."""
        path = f"/api/v1/namespaces/{namespace}/services"
        items = self._call(
            lambda: self._get_json(path).get("items", []),
            what=f"list the Services of {namespace}",
            kubectl=["-n", namespace, "get", "services", "-o", "json"],
            request=f"GET {path}",
        )
        return list(items or [])

    def pod(self, namespace: str, name: str, what: str) -> dict[str, Any]:
        """One pod."""
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        found = self._call(
            lambda: self._get_json(path),
            what=what,
            kubectl=["-n", namespace, "get", "pod", name, "-o", "json"],
            request=f"GET {path}",
        )
        return dict(found or {})

    def proxy_get(self, namespace: str, pod: str, port: int | str, path: str, query: str, what: str) -> str:
        """GET a pod's port through the API server's pod proxy (it reaches ports the mesh does not capture)."""
        full = f"/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/{path}"
        pairs = [tuple(p.split("=", 1)) for p in query.split("&") if "=" in p]
        text = self._call(
            lambda: self._request("GET", full, [(k, v) for k, v in pairs]).decode(errors="replace"),
            what=what,
            kubectl=["get", "--raw", f"{full}?{query}" if query else full],
            request=f"GET {full}?{query}" if query else f"GET {full}",
        )
        return str(text or "")

    # --- changing --------------------------------------------------------------------------------------

    def apply(self, docs: Sequence[Mapping[str, Any]], manifest_text: str, what: str) -> None:
        """Server-side apply of each object, in order (namespaces come first in the world's manifests)."""
        paths = [resource_path(doc) for doc in docs]

        def apply_all() -> None:
            for doc, path in zip(docs, paths, strict=True):
                meta = doc.get("metadata") or {}
                try:
                    self._request(
                        "PATCH",
                        path,
                        [("fieldManager", FIELD_MANAGER)],
                        body=json.dumps(doc),
                        content_type="application/apply-patch+yaml",
                    )
                except Exception as err:
                    status = int(getattr(err, "status", 0) or 0)
                    if status == 0:
                        raise
                    where = f"{doc.get('kind')} {meta.get('namespace', '')}/{meta.get('name')}".replace(" /", " ")
                    hint = ""
                    if status == 409:
                        hint = (
                            " (another field manager owns these fields: delete the object, or its namespace, "
                            "and run again)"
                        )
                    raise ApiError(f"{where}: {api_reason(err)}{hint}", status) from None

        self._call(
            apply_all,
            what=what,
            kubectl=["apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-"],
            request=f"PATCH (server-side apply, fieldManager={FIELD_MANAGER}) of {len(docs)} objects",
            stdin=manifest_text,
        )

    def restart_deployments(self, namespace: str, what: str) -> None:
        """`kubectl rollout restart deploy`: a new restartedAt annotation in every Deployment's pod template."""
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}}}

        def restart() -> None:
            for item in self._get_json(path).get("items", []):
                self._request(
                    "PATCH",
                    f"{path}/{item['metadata']['name']}",
                    body=patch,
                    content_type="application/strategic-merge-patch+json",
                )

        self._call(
            restart,
            what=what,
            kubectl=["-n", namespace, "rollout", "restart", "deploy"],
            request=f"GET {path}, then PATCH (strategic merge, restartedAt) each",
        )

    def delete_namespaces(self, names: Sequence[str], what: str) -> None:
        """Delete the namespaces without waiting for them to go (a namespace that is already gone is fine)."""
        from kubernetes.client.exceptions import ApiException

        def delete() -> None:
            for name in names:
                try:
                    self._request("DELETE", f"/api/v1/namespaces/{name}")
                except ApiException as err:
                    if err.status != 404:
                        raise

        self._call(
            delete,
            what=what,
            kubectl=["delete", "namespace", *names, "--wait=false"],
            request="DELETE " + ", ".join(f"/api/v1/namespaces/{n}" for n in names),
        )

    # --- waiting ---------------------------------------------------------------------------------------

    def _watch_until(self, path: str, judge: Judge, timeout: float, quiet: bool = False, **select: str) -> Any:
        """The objects, once `judge` is content with them; ApiError when `timeout` runs out (`quiet`: the objects).

        List and judge; watch from the list's resourceVersion and judge after each event; list again when the
        watch ends (timeoutSeconds) or cannot go on from that resourceVersion (RELIST_CODES, as an ERROR event or
        as the HTTP status of the watch request).
        """
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + timeout
        query = [(k, v) for k, v in (("fieldSelector", select.get("field_selector", "")),) if v]
        ended = ""  # how the last watch ended, when the API server ended it with an error
        while True:
            listing = self._get_json(path, query)
            objects = {o["metadata"]["name"]: o for o in listing.get("items", [])}
            reason = judge(list(objects.values()))
            if reason is None:
                return list(objects.values())
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if quiet:  # the caller only wanted to wait this long: the objects as they are now
                    return list(objects.values())
                raise ApiError(f"not done after {timeout:g} s: {reason}" + (f" ({ended})" if ended else ""))
            seconds = max(1, min(int(remaining + 0.999), WATCH_ROUND_SECONDS))
            version = str(listing.get("metadata", {}).get("resourceVersion") or "")
            watch = [*query, ("watch", "true"), *([("resourceVersion", version)] if version else [])]
            watch.append(("timeoutSeconds", str(seconds)))
            try:
                error = self._watch(path, watch, seconds + 15, objects, judge)
            except ApiException as err:
                if err.status not in RELIST_CODES:
                    raise
                error = {"code": err.status, "message": status_message(err.body) or str(err.reason)}
            if error is None:
                if judge(list(objects.values())) is None:
                    return list(objects.values())
                ended = ""
                continue
            code = int(error.get("code") or 0)
            message = first_line(str(error.get("message") or error.get("reason") or "no message"))
            if code not in RELIST_CODES:
                raise ApiError(f"the watch of {path} ended with HTTP {code}: {message}", code)
            ended = f"the API server ended the last watch with HTTP {code}: {message}"
            retry = float((error.get("details") or {}).get("retryAfterSeconds") or 0)
            if retry > 0:
                time.sleep(min(retry, max(deadline - time.monotonic(), 0)))

    def _watch(
        self,
        path: str,
        query: Sequence[tuple[str, str]],
        timeout: float,
        objects: dict[str, dict[str, Any]],
        judge: Judge,
    ) -> dict[str, Any] | None:
        """One watch request: apply its events to `objects` until `judge` is content or the stream ends.

        None when it ended (or the judge is content); the Status of an ERROR event, which ends a watch.
        """
        from kubernetes.client.exceptions import ApiException

        client = self._client()
        serialized = client.param_serialize(
            "GET",
            path,
            query_params=list(query),
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = client.call_api(*serialized, _request_timeout=timeout)
        raw = response.response  # the urllib3 response, not read yet: the events arrive as it streams
        try:
            if not 200 <= response.status <= 299:
                data = response.read() or b""
                raise ApiException.from_response(http_resp=response, body=data.decode(errors="replace"), data=None)
            for line in _lines(raw.stream(None, decode_content=True)):
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    return dict(obj)
                name = obj.get("metadata", {}).get("name")
                if name is None or event.get("type") == "BOOKMARK":
                    continue
                if event.get("type") == "DELETED":
                    objects.pop(name, None)
                else:
                    objects[name] = obj
                if judge(list(objects.values())) is None:
                    return None
        finally:  # as kubernetes.watch does: an unread rest must not go back to the pool with its connection
            raw.close()
            raw.release_conn()
        return None

    def rollout(self, namespace: str, kind: str, name: str, timeout: float, what: str) -> None:
        """Wait until a Deployment or DaemonSet has rolled out (`kubectl rollout status`), by watching it."""
        path = f"/apis/apps/v1/namespaces/{namespace}/{kind}s"

        def judge(items: list[dict[str, Any]]) -> str | None:
            return rollout_reason(kind, next((i for i in items if i["metadata"]["name"] == name), None))

        short = "deploy" if kind == "deployment" else "ds"
        self._call(
            lambda: self._watch_until(path, judge, timeout, field_selector=f"metadata.name={name}"),
            what=what,
            kubectl=["-n", namespace, "rollout", "status", f"{short}/{name}", f"--timeout={int(timeout)}s"],
            request=f"GET {path}?fieldSelector=metadata.name={name}, then watch",
        )

    def watch_pod(self, namespace: str, name: str, judge: Judge, seconds: float, what: str) -> dict[str, Any] | None:
        """Watch one pod for up to `seconds` until `judge` is content; the pod as last seen (None: it is gone)."""
        path = f"/api/v1/namespaces/{namespace}/pods"

        def watch() -> Any:
            items = self._watch_until(
                path,
                judge,
                seconds,
                quiet=True,
                field_selector=f"metadata.name={name}",
            )
            return items[0] if items else None

        found = self._call(
            watch,
            what=what,
            kubectl=["-n", namespace, "get", "pod", name, "-o", "json", "--watch"],
            request=f"GET {path}?fieldSelector=metadata.name={name}, then watch",
        )
        return dict(found) if found else None

    def wait_pods(self, namespace: str, judge: Judge, timeout: float, what: str) -> list[dict[str, Any]]:
        """Watch the namespace's pods until `judge` is content; the pods it judged."""
        path = f"/api/v1/namespaces/{namespace}/pods"
        items = self._call(
            lambda: self._watch_until(path, judge, timeout),
            what=what,
            kubectl=["-n", namespace, "get", "pods", "-o", "json", "--watch"],
            request=f"GET {path}, then watch",
        )
        return list(items or [])

    # --- exec ------------------------------------------------------------------------------------------

    def _exec(self, namespace: str, pod: str, container: str, command: Sequence[str], timeout: float) -> Result:
        """The exec, bounded by `timeout` however the connection behaves (kubeclient.run_exec); one line if not."""
        try:
            out = run_exec(self._configured(), namespace, pod, container, command, timeout)
        except ExecRefused as err:
            if err.code == 404:
                raise ApiError(f"pod {namespace}/{pod} is gone ({err.reason})", 404) from None
            raise ApiError(f"exec in {namespace}/{pod} refused: {err.reason}", err.code or 0) from None
        except ExecDropped as err:
            raise ApiError(
                f"exec in {namespace}/{pod}: the connection to the API server dropped before the command ended "
                f"({err.reason})"
            ) from None
        if not out.finished:
            raise ApiError(f"exec in {namespace}/{pod} did not finish within {timeout:g} s")
        return Result(tuple(command), _exit_code(out.status), out.stdout, out.stderr or _failure_message(out.status))

    def exec(
        self, namespace: str, pod: str, container: str, command: Sequence[str], what: str, timeout: float | None = None
    ) -> Result:
        """Run a command in a container; its exit status, stdout and stderr (a non-zero status is not an error)."""
        seconds = timeout or self.timeout
        result = self._call(
            lambda: self._exec(namespace, pod, container, command, seconds),
            what=what,
            kubectl=["-n", namespace, "exec", pod, "-c", container, "--", *command],
            request=_exec_request(namespace, pod, container),
        )
        return result if isinstance(result, Result) else Result(tuple(command), 0, "", "")

    def start_exec(
        self, namespace: str, pod: str, container: str, command: Sequence[str], what: str, timeout: float
    ) -> Pending:
        """Start an exec now, in a thread, so that execs in several pods run side by side; wait() gives a Result."""
        return self.runner.start_call(
            self._errors(lambda: self._exec(namespace, pod, container, command, timeout), what),
            what=what,
            kubectl=self.kubectl("-n", namespace, "exec", pod, "-c", container, "--", *command),
            request=_exec_request(namespace, pod, container),
        )

    # --- diagnostics (text for people; each failure becomes the text) -------------------------------------

    def logs(self, namespace: str, pod: str, container: str, tail: int, what: str) -> str:
        """The last `tail` lines of a container's log."""
        path = f"/api/v1/namespaces/{namespace}/pods/{pod}/log"
        text = self._call(
            lambda: self._request("GET", path, [("container", container), ("tailLines", str(tail))]).decode(
                errors="replace"
            ),
            what=what,
            kubectl=["-n", namespace, "logs", pod, "-c", container, f"--tail={tail}"],
            request=f"GET {path}?container={container}&tailLines={tail}",
        )
        return str(text or "")

    def daemonset_logs(self, namespace: str, name: str, tail: int, what: str) -> str:
        """The logs of every container of every pod of a DaemonSet (`kubectl logs ds/NAME` reads only one pod)."""

        def read() -> str:
            ds = self._get_json(f"/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}")
            labels = ds.get("spec", {}).get("selector", {}).get("matchLabels", {})
            selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            pods = self._get_json(f"/api/v1/namespaces/{namespace}/pods", [("labelSelector", selector)])
            parts = []
            for pod in pods.get("items", []):
                pod_name = pod["metadata"]["name"]
                for container in pod.get("spec", {}).get("containers", []):
                    log = self._request(
                        "GET",
                        f"/api/v1/namespaces/{namespace}/pods/{pod_name}/log",
                        [("container", container["name"]), ("tailLines", str(tail))],
                    ).decode(errors="replace")
                    parts.append(f"== {pod_name}/{container['name']}\n{log.rstrip()}")
            return "\n".join(parts)

        text = self._call(
            read,
            what=what,
            kubectl=["-n", namespace, "logs", f"ds/{name}", "--all-containers", f"--tail={tail}"],
            request=f"GET the DaemonSet {namespace}/{name}, its pods, then each container's log",
        )
        return str(text or "")

    def events(self, namespace: str, what: str, pod: str | None = None) -> str:
        """The namespace's events (or one pod's), oldest first, one line each."""
        path = f"/api/v1/namespaces/{namespace}/events"
        query = [("fieldSelector", f"involvedObject.name={pod}")] if pod else []

        def read() -> str:
            items = self._get_json(path, query).get("items", [])
            items.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
            return "\n".join(event_line(e) for e in items) or "(no events)"

        args = ["-n", namespace, "get", "events", "--sort-by=.lastTimestamp"]
        if pod:
            args += ["--field-selector", f"involvedObject.name={pod}"]
        text = self._call(
            read, what=what, kubectl=args, request=f"GET {path}" + (f"?{query[0][0]}={query[0][1]}" if query else "")
        )
        return str(text or "")

    def overview(self, namespace: str, what: str) -> str:
        """Deployments, pods, Services and Sidecars of a namespace, one line each (`kubectl get all,sidecars`)."""

        def read() -> str:
            from kubernetes.client.exceptions import ApiException

            lines = []
            for d in self._get_json(f"/apis/apps/v1/namespaces/{namespace}/deployments").get("items", []):
                status = d.get("status", {})
                lines.append(
                    f"deployment/{d['metadata']['name']}  ready {status.get('readyReplicas', 0)}/"
                    f"{d.get('spec', {}).get('replicas', 1)}  updated {status.get('updatedReplicas', 0)}"
                )
            for p in self._get_json(f"/api/v1/namespaces/{namespace}/pods").get("items", []):
                lines.append(pod_line(p))
            for s in self._get_json(f"/api/v1/namespaces/{namespace}/services").get("items", []):
                ports = ",".join(
                    f"{p.get('port')}>{p.get('targetPort', p.get('port'))}" for p in s.get("spec", {}).get("ports", [])
                )
                lines.append(f"service/{s['metadata']['name']}  {s.get('spec', {}).get('clusterIP', '')}  {ports}")
            try:
                sidecars = self._get_json(
                    f"/apis/{_ISTIO_NETWORKING}/{_SIDECAR_VERSION}/namespaces/{namespace}/sidecars"
                ).get("items", [])
            except ApiException as err:
                if err.status != 404:
                    raise
                sidecars = []  # no Istio CRDs (yet)
            lines += [f"sidecar/{s['metadata']['name']}" for s in sidecars]
            return "\n".join(lines)

        text = self._call(
            read,
            what=what,
            kubectl=["-n", namespace, "get", "all,sidecars", "-o", "wide"],
            request=f"GET the deployments, pods, services and sidecars of {namespace}",
        )
        return str(text or "")

    def describe(self, namespace: str, pod: str, what: str) -> str:
        """A pod's phase, addresses, conditions, containers and events (`kubectl describe pod`)."""

        def read() -> str:
            data = self._get_json(f"/api/v1/namespaces/{namespace}/pods/{pod}")
            events = self._get_json(
                f"/api/v1/namespaces/{namespace}/events", [("fieldSelector", f"involvedObject.name={pod}")]
            ).get("items", [])
            return describe_pod(data, events)

        text = self._call(
            read,
            what=what,
            kubectl=["-n", namespace, "describe", "pod", pod],
            request=f"GET /api/v1/namespaces/{namespace}/pods/{pod} and its events",
        )
        return str(text or "")


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """The lines of a watch's body as its chunks arrive (an event may span chunks, a chunk hold several)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if line.strip():
                yield line.decode("utf-8", errors="replace")
    if pending.strip():
        yield pending.decode("utf-8", errors="replace")


def _exec_request(namespace: str, pod: str, container: str) -> str:
    return f"GET /api/v1/namespaces/{namespace}/pods/{pod}/exec?container={container} (websocket)"


def _exit_code(doc: dict[str, Any]) -> int:
    """The exit status in the exec's channel-3 Status: 0 on Success, the ExitCode cause on NonZeroExitCode."""
    if not doc or doc.get("status") == "Success":
        return 0
    for cause in (doc.get("details") or {}).get("causes", []):
        if cause.get("reason") == "ExitCode" and str(cause.get("message", "")).isdigit():
            return int(cause["message"])
    return 126  # the command did not run at all (e.g. not found in the image)


def _failure_message(doc: dict[str, Any]) -> str:
    return "" if not doc or doc.get("status") == "Success" else str(doc.get("message", ""))
