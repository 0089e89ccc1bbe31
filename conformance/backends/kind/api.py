"""One cluster's Kubernetes API for the kind and kubeconfig backends, through the official `kubernetes` client.

No kubectl binary is needed, so kubectl's version skew with the cluster stops mattering. Each call is one step of
the run's transcript (Runner.call): the plan and the commands log show the HTTP request it makes and the kubectl
command a person could paste to repeat it by hand. A refused request is one line: what the step was for, the
HTTP status and the API server's own message (`HTTP 403: pods "x" is forbidden: ...`).

This module is the session (configuration, one ApiClient per thread, the request, errors as one line) and the
plain reads; what changes the cluster is in apply.py, waiting in watches.py, exec in pod_exec.py, and the text
for people in describe.py, each a step made through this session.

The client's calls are those of kubernetes 37 (pyproject.toml declares the range; `tox -e kubefloor` runs the
tests on its lower bound): ApiClient.param_serialize and call_api(method, url, headers, body, post_params,
_request_timeout), and kubernetes.stream for exec (kubeclient.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

from conformance.backends.base import BackendError
from conformance.backends.kind.runner import CommandError, Runner
from conformance.backends.kubeclient import api_reason, first_line, load_configuration


class ApiError(CommandError):
    """A request the API server refused (or could not be sent); `status` is the HTTP status, 0 when none."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class KubeApi:
    """One cluster's API, reached through the run's kubeconfig (read on first use: kind writes it mid-run)."""

    def __init__(self, kubeconfig: Callable[[], str], runner: Runner, timeout: float) -> None:
        self._kubeconfig = kubeconfig
        self.runner = runner
        self.timeout = timeout
        self._configuration: Any = None
        self._local = threading.local()
        self._lock = threading.Lock()

    # --- the session ------------------------------------------------------------------------------------

    def configuration(self) -> Any:
        """The client's configuration from the kubeconfig, loaded once."""
        with self._lock:
            if self._configuration is None:
                try:
                    self._configuration = load_configuration(self._kubeconfig())
                except ValueError as err:
                    raise BackendError(str(err)) from None
                self._configuration.retries = 1
            return self._configuration

    def client(self) -> Any:
        """The calling thread's ApiClient, for plain requests and watches."""
        from kubernetes import client

        api = getattr(self._local, "client", None)
        if api is None:
            api = self._local.client = client.ApiClient(self.configuration())
        return api

    def kubectl(self, *args: str) -> list[str]:
        """The kubectl command that does the same by hand."""
        return ["kubectl", "--kubeconfig", self._kubeconfig(), *args]

    def call(
        self,
        fn: Callable[[], Any],
        *,
        what: str,
        kubectl: Sequence[str],
        request: str,
        stdin: str | None = None,
    ) -> Any:
        """`fn` as one step of the transcript, shown as `request` and the kubectl command that repeats it."""
        return self.runner.call(
            self.errors(fn, what), what=what, kubectl=self.kubectl(*kubectl), request=request, stdin=stdin
        )

    def errors(self, fn: Callable[[], Any], what: str) -> Callable[[], Any]:
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

    def request(
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

        client = self.client()
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

    def get_json(self, path: str, query: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
        """A GET's JSON object ({} when the answer is empty or not an object)."""
        document = json.loads(self.request("GET", path, query) or b"{}")
        return document if isinstance(document, dict) else {}

    # --- reading ---------------------------------------------------------------------------------------

    def server_version(self) -> str:
        """The API server's gitVersion (and proof that the kubeconfig reaches it)."""
        return str(
            self.call(
                lambda: self.get_json("/version").get("gitVersion", "?"),
                what="reach the cluster",
                kubectl=["version"],
                request="GET /version",
            )
        )

    def nodes(self) -> list[dict[str, Any]]:
        """The cluster's nodes."""
        items = self.call(
            lambda: self.get_json("/api/v1/nodes").get("items", []),
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
                self.request("GET", path)
            except ApiException as err:
                if err.status == 404:
                    return False
                raise
            return True

        found = self.call(
            look, what=what, kubectl=["-n", namespace, "get", kind, name, "-o", "name"], request=f"GET {path}"
        )
        return bool(found) or found is None  # a plan assumes it is there

    def get_or_none(self, path: str, what: str, kubectl: list[str]) -> dict[str, Any] | None:
        """One object, or None when the API server says it does not exist (404 is an answer here)."""
        from kubernetes.client.exceptions import ApiException

        def look() -> dict[str, Any] | None:
            try:
                return self.get_json(path)
            except ApiException as err:
                if err.status == 404:
                    return None
                raise

        found = self.call(look, what=what, kubectl=kubectl, request=f"GET {path}")
        return dict(found) if isinstance(found, dict) else None

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's pods, as the API returns them (camelCase JSON)."""
        path = f"/api/v1/namespaces/{namespace}/pods"
        items = self.call(
            lambda: self.get_json(path).get("items", []),
            what=f"list the pods of {namespace}",
            kubectl=["-n", namespace, "get", "pods", "-o", "json"],
            request=f"GET {path}",
        )
        return list(items or [])

    def services(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's Services."""
        path = f"/api/v1/namespaces/{namespace}/services"
        items = self.call(
            lambda: self.get_json(path).get("items", []),
            what=f"list the Services of {namespace}",
            kubectl=["-n", namespace, "get", "services", "-o", "json"],
            request=f"GET {path}",
        )
        return list(items or [])

    def pod(self, namespace: str, name: str, what: str) -> dict[str, Any]:
        """One pod."""
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        found = self.call(
            lambda: self.get_json(path),
            what=what,
            kubectl=["-n", namespace, "get", "pod", name, "-o", "json"],
            request=f"GET {path}",
        )
        return dict(found or {})

    def proxy_get(self, namespace: str, pod: str, port: int | str, path: str, query: str, what: str) -> str:
        """GET a pod's port through the API server's pod proxy (it reaches ports the mesh does not capture)."""
        full = f"/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/{path}"
        pairs = [tuple(p.split("=", 1)) for p in query.split("&") if "=" in p]
        text = self.call(
            lambda: self.request("GET", full, [(k, v) for k, v in pairs]).decode(errors="replace"),
            what=what,
            kubectl=["get", "--raw", f"{full}?{query}" if query else full],
            request=f"GET {full}?{query}" if query else f"GET {full}",
        )
        return str(text or "")
