"""A fake Kubernetes API server (real HTTP, the exec websocket) in front of fakebin's cluster model.

Fake kind and istioctl stay subprocesses that read and write the model in the state file; this server, in a
thread of the test process, serves the same file to the official `kubernetes` client, so both see one cluster.
Each request takes the model lock, loads the state, answers, saves the state if it changed and unlocks (a watch
or an exec then writes its stream without the lock). Failures are Kubernetes Status bodies, with the codes and
messages the real API server uses. Paths are matched decoded (`NAME%3APORT` is `NAME:PORT`).

  GET    /version                                           (the first kind cluster's node version)
  GET    /api/v1/nodes                                      (one control-plane node per kind cluster)
  GET    /api/v1/namespaces, /api/v1/namespaces/NAME
  PATCH  /api/v1/namespaces/NAME                            (server-side apply)
  DELETE /api/v1/namespaces/NAME                            (the namespace and its objects go at once)
  GET    /api/v1/namespaces/NS/pods                         (?labelSelector, ?fieldSelector, ?watch)
  GET    /api/v1/namespaces/NS/pods/NAME
  GET    /api/v1/namespaces/NS/pods/NAME/log                (?container=C: `C: started`)
  GET    /api/v1/namespaces/NS/pods/NAME/exec               (websocket, v5.channel.k8s.io from Kubernetes 1.30,
                                                             else v4.channel.k8s.io: fakebin's exec; POST too)
  GET    /api/v1/namespaces/NS/pods/NAME:PORT/proxy/PATH    (the echo control port: requests, connections)
  GET    /api/v1/namespaces/NS/services[/NAME]
  PATCH  /api/v1/namespaces/NS/services/NAME                (server-side apply)
  GET    /api/v1/namespaces/NS/events                       (one Normal Started event per pod)
  GET    /api/v1/namespaces/istio-system/configmaps/istio   (the mesh config: proxyMetadata by the install's overlays)
  GET    /apis/apps/v1/namespaces/NS/deployments[/NAME]     (?fieldSelector, ?watch; istiod when Istio is in)
  PATCH  /apis/apps/v1/namespaces/NS/deployments/NAME       (server-side apply; a strategic merge patch setting
                                                             the restartedAt annotation is a rollout restart)
  GET    /apis/apps/v1/namespaces/NS/daemonsets[/NAME]      (istio-cni-node and ztunnel with the ambient overlay)
  GET    /apis/networking.istio.io/V/namespaces/NS/sidecars[/NAME]   (V: v1alpha3, v1beta1, v1)
  PATCH  /apis/networking.istio.io/V/namespaces/NS/sidecars/NAME     (server-side apply)
  PATCH  /apis/networking.istio.io/V/namespaces/NS/destinationrules/NAME   (server-side apply)
  PATCH  /apis/security.istio.io/v1beta1/namespaces/NS/peerauthentications/NAME   (server-side apply)

Anything else is 404 NotFound. Every request is kept in `requests`, in order. Objects carry uid, resourceVersion
and generation, and every rollout is complete. A list's resourceVersion names its items: a watch (`watch=true`)
from it sends what changed since (ADDED, MODIFIED, DELETED), one from no (or an unknown) resourceVersion an ADDED
event per current object; then the watch stays open, silent, until its timeoutSeconds (at most
`watch_stall_seconds`) and ends cleanly. No event is sent while a watch is open. A watch the API server cannot
serve from the resourceVersion asked is, as the real watch cache answers it (cacher newErrWatcher), HTTP 200 with
one ERROR event whose object is a Status, then the end of the stream: `expired` (410, the resourceVersion is too
old) and `too_large` (504, the cache has not reached it yet) build those Statuses.

An exec negotiates its subprotocol as the API server does: the first the client offers that the server supports,
v5.channel.k8s.io (with the CLOSE signal on channel 255) from Kubernetes 1.30 on, v4.channel.k8s.io before
(by the first node's kubelet version; `exec_protocols` overrides it). The frames of an exec without stdin are
the same in both: channel 1 stdout, 2 stderr, 3 the Status, then the websocket's close.

Knobs, attributes a test sets: `fail` (METHOD, path prefix) -> (code, reason, message) answers that Status;
`stall_watches` N: the next N watches send no event; `watch_errors`: Statuses, each the ERROR event of the next
watch; `gone_pods`: an exec in one of these pods is 404; `exec_fail` (command substring) -> (exit code, stderr):
the exec runs and exits so; `exec_hangs` (command substring) -> how the exec never ends (EXEC_HANGS); stop()
releases every hanging exec.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml
from fakes import fakebin
from fakes.kube_api import (
    EXEC_PROTOCOLS_BEFORE_1_30,
    EXEC_PROTOCOLS_FROM_1_30,
    ApiHandler,
    close_websocket,
    negotiate,
    send_frame,
    status_body,
    unsupported_protocols,
    upgrade_to_websocket,
)

NO_SUCH_RESOURCE = "the server could not find the requested resource"
CREATED_AT = "2026-11-30T02:50:00Z"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
SIDECAR_VERSIONS = ("v1alpha3", "v1beta1", "v1")
EXEC_HANGS = {
    "before-upgrade": "the API server takes the exec request and never answers it (no 101, no error)",
    "after-upgrade": "the websocket opens, then nothing comes (the command never ends)",
    "mid-frame": "a frame's header arrives and only part of its payload (the connection stalls mid-frame)",
    "drop": "some stdout, then the TCP connection ends without a websocket close (an API server restart)",
}
HANG_SECONDS = 60.0
"""The longest a hanging exec holds its connection (stop() releases it sooner)."""


def expired(resource_version: str, oldest: int = 1) -> dict[str, Any]:
    """The Status of a watch from a resourceVersion the watch cache no longer has (410 Expired)."""
    return status_body(410, "Expired", f"too old resource version: {resource_version} ({oldest - 1})")


def too_large(resource_version: int, current: int) -> dict[str, Any]:
    """The Status of a watch from a resourceVersion newer than the watch cache's (504, storage's
    NewTooLargeResourceVersionError: a Timeout with the ResourceVersionTooLarge cause, retry after 1 s)."""
    body = status_body(504, "Timeout", f"Timeout: Too large resource version: {resource_version}, current: {current}")
    body["details"] = {
        "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
        "retryAfterSeconds": 1,
    }
    return body


class ApiError(Exception):
    """The request fails with this Kubernetes Status."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.body = status_body(code, reason, message)
        if details is not None:
            self.body["details"] = details

    @property
    def code(self) -> int:
        return int(self.body["code"])


def not_found(message: str = NO_SUCH_RESOURCE) -> ApiError:
    return ApiError(404, "NotFound", message)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


@dataclass
class Request:
    """One request as the handlers see it: path segments decoded, query parsed, body parsed (JSON or YAML)."""

    method: str
    parts: list[str]
    query: dict[str, list[str]]
    content_type: str
    body: Any

    def arg(self, name: str, default: str = "") -> str:
        return self.query.get(name, [default])[-1]

    @property
    def watch(self) -> bool:
        return self.arg("watch") in ("true", "1")


@dataclass
class Reply:
    """A plain answer: JSON (or text) with a status code."""

    code: int
    body: Any
    content_type: str = "application/json"


@dataclass
class WatchReply:
    """A watch stream: these events, then silence for `seconds`, then the end of the stream."""

    events: list[dict[str, Any]]
    seconds: float


@dataclass
class ExecReply:
    """An exec: what the command wrote, and the Status that ends the stream (channel 3)."""

    stdout: str
    stderr: str
    status: dict[str, Any]
    protocols: tuple[str, ...] = EXEC_PROTOCOLS_BEFORE_1_30
    """The subprotocols the API server accepts."""
    hang: str | None = None
    """How the exec never ends (a key of EXEC_HANGS), or None."""


Answer = Reply | WatchReply | ExecReply
Handler = Callable[..., Answer]


@dataclass
class FakeKindApi:
    """The HTTP server in front of the state file `state_path`; fakebin reads its knobs from `env`."""

    state_path: Path
    env: MutableMapping[str, str]
    fail: dict[tuple[str, str], tuple[int, str, str]] = field(default_factory=dict)
    """(METHOD, path prefix) -> (code, reason, message): a matching request answers that Status."""
    stall_watches: int = 0
    """The next N watches send no event at all (and end at their timeout, as always)."""
    watch_errors: list[dict[str, Any]] = field(default_factory=list)
    """Statuses (`expired`, `too_large`, ...): each of the next watches sends one as an ERROR event, then ends."""
    watch_stall_seconds: float = 1.0
    """The longest a watch stays open (its timeoutSeconds, capped by this)."""
    gone_pods: set[str] = field(default_factory=set)
    """Pod names whose exec answers 404 NotFound before the websocket upgrade."""
    exec_fail: dict[str, tuple[int, str]] = field(default_factory=dict)
    """A substring of an exec's command line -> (exit code, stderr): the command runs and exits so."""
    exec_hangs: dict[str, str] = field(default_factory=dict)
    """A substring of an exec's command line -> how the exec never ends (a key of EXEC_HANGS)."""
    exec_protocols: tuple[str, ...] | None = None
    """The exec subprotocols the server accepts; None: those of the first node's Kubernetes version."""
    negotiated: list[str] = field(default_factory=list)
    """The subprotocol each exec was upgraded to, in order."""
    requests: list[dict[str, Any]] = field(default_factory=list)
    """Every request, in order: method, path (decoded), query, content_type, body (parsed JSON or None)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _log_lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _previous_env: MutableMapping[str, str] | None = None
    _snapshots: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """The items of each list (and watch) by the resourceVersion it showed, for watches from it."""
    _released: threading.Event = field(default_factory=threading.Event)
    """Set by stop(): hanging execs end."""

    # --- lifecycle ---

    def start(self) -> FakeKindApi:
        """Serve in a daemon thread; fakebin reads `env` from now on, and env["FAKE_API_URL"] is this server."""
        api = self

        class Handler(_Handler):
            fake = api

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._previous_env = fakebin.ENV
        fakebin.ENV = self.env
        self.env["FAKE_API_URL"] = self.url
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._previous_env is not None:
            fakebin.ENV = self._previous_env
            self._previous_env = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def kubeconfig(self, path: Path, cluster: str = "mic") -> Path:
        """Write the kubeconfig fake kind writes for `cluster` (this server, a bearer token) to `path`."""
        path.write_text(fakebin.API_KUBECONFIG.format(name=cluster, url=self.url))
        return path

    # --- serving ---

    def record(self, request: Request, path: str) -> None:
        entry = {
            "method": request.method,
            "path": path,
            "query": request.query,
            "content_type": request.content_type,
            "body": request.body,
        }
        with self._log_lock:
            self.requests.append(entry)

    def answer(self, request: Request, path: str) -> Answer:
        """The answer to one request, computed on the model under the lock (saved if it changed)."""
        for (method, prefix), (code, reason, message) in list(self.fail.items()):
            if method == request.method and path.startswith(prefix):
                raise ApiError(code, reason, message)
        handler, captured = _route(request.method, request.parts)
        with self._lock:
            # The standard library's json here (fakebin parses by hand to start fast; in-process, speed is json's).
            text = self.state_path.read_text() if self.state_path.exists() else "{}"
            state = fakebin.load_state(str(self.state_path), text=json.loads(text))
            before = json.dumps(state, sort_keys=True)
            answer = handler(self, state, request, **captured)
            if json.dumps(state, sort_keys=True) != before:
                scratch = self.state_path.with_name(self.state_path.name + ".api")
                scratch.write_text(json.dumps(state, indent=1, ensure_ascii=False))
                scratch.replace(self.state_path)
        return answer

    def scripted_watch(self, request: Request) -> WatchReply | None:
        """If this request is a watch: the next of `watch_errors` (an ERROR event, then the end), else a silent
        watch if it is one of the `stall_watches`; None for the ordinary answer (call under the lock)."""
        if not request.watch:
            return None
        if self.watch_errors:
            return WatchReply([{"type": "ERROR", "object": self.watch_errors.pop(0)}], 0.0)
        if self.stall_watches <= 0:
            return None
        self.stall_watches -= 1
        return WatchReply([], self._watch_seconds(request))

    def hold(self) -> None:
        """Keep a hanging exec's connection until stop() (or HANG_SECONDS)."""
        self._released.wait(HANG_SECONDS)

    def listing(self, api_version: str, kind: str, items: list[dict[str, Any]], request: Request) -> Answer:
        """The selected items as a list whose resourceVersion names them (kept), or as a watch.

        A watch from a resourceVersion this server handed out sends what changed since (ADDED, MODIFIED,
        DELETED); one from none (or another) sends an ADDED event for every current object.
        """
        selected = _select(items, request)
        version = _version_of(selected)
        self._snapshots[version] = selected
        if not request.watch:
            meta = {"resourceVersion": version}
            return Reply(200, {"apiVersion": api_version, "kind": kind, "metadata": meta, "items": selected})
        return WatchReply(
            _changes(self._snapshots.get(request.arg("resourceVersion"), []), selected), self._watch_seconds(request)
        )

    def _watch_seconds(self, request: Request) -> float:
        timeout = request.arg("timeoutSeconds")
        return min(float(timeout), self.watch_stall_seconds) if timeout else self.watch_stall_seconds

    # --- core/v1 ---

    def get_version(self, state: dict[str, Any], request: Request) -> Answer:
        nodes = fakebin._nodes(state)
        version = nodes[0]["status"]["nodeInfo"]["kubeletVersion"] if nodes else "v1.20.15"
        major, minor = version.lstrip("v").split(".")[:2]
        return Reply(
            200,
            {
                "major": major,
                "minor": minor,
                "gitVersion": version,
                "gitCommit": "8f1e5bf0b9729a899b8df86249b56e2c74aebc55",
                "gitTreeState": "clean",
                "buildDate": "2022-01-19T17:23:01Z",
                "goVersion": "go1.15.15",
                "compiler": "gc",
                "platform": "linux/amd64",
            },
        )

    def list_nodes(self, state: dict[str, Any], request: Request) -> Answer:
        return self.listing("v1", "NodeList", [_node(n) for n in fakebin._nodes(state)], request)

    def list_namespaces(self, state: dict[str, Any], request: Request) -> Answer:
        items = [_namespace(ns) for ns in fakebin.objects(state, "Namespace")]
        return self.listing("v1", "NamespaceList", items, request)

    def get_namespace(self, state: dict[str, Any], request: Request, name: str) -> Answer:
        return Reply(200, _namespace(_find_namespace(state, name)))

    def apply_namespace(self, state: dict[str, Any], request: Request, name: str) -> Answer:
        doc, created = _server_side_apply(state, request, "v1", "Namespace", None, name)
        return Reply(201 if created else 200, _namespace(doc))

    def delete_namespace(self, state: dict[str, Any], request: Request, name: str) -> Answer:
        gone = _namespace(_find_namespace(state, name))
        fakebin.delete_namespaces(state, {name})
        gone["metadata"]["deletionTimestamp"] = fakebin.STARTED_AT
        gone["spec"] = {"finalizers": ["kubernetes"]}
        gone["status"] = {"phase": "Terminating"}
        return Reply(200, gone)

    def list_pods(self, state: dict[str, Any], request: Request, ns: str) -> Answer:
        scripted = self.scripted_watch(request)
        if scripted is not None:
            return scripted
        return self.listing("v1", "PodList", [_pod(p) for p in _pods(state, ns, listing=True)], request)

    def get_pod(self, state: dict[str, Any], request: Request, ns: str, name: str) -> Answer:
        return Reply(200, _pod(_find_pod(state, ns, name)))

    def pod_log(self, state: dict[str, Any], request: Request, ns: str, name: str) -> Answer:
        pod = _find_pod(state, ns, name)
        container = request.arg("container")
        if not container and len(pod["spec"]["containers"]) == 1:
            container = pod["spec"]["containers"][0]["name"]
        names = [c["name"] for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", [])]
        if container not in names:
            raise bad_request(f"container {container} is not valid for pod {name}")
        return Reply(200, f"{container}: started\n", "text/plain")

    def pod_exec(self, state: dict[str, Any], request: Request, ns: str, name: str) -> Answer:
        if name in self.gone_pods:
            raise not_found(f'pods "{name}" not found')
        pod = _find_pod(state, ns, name)
        container = request.arg("container")
        if container not in [c["name"] for c in pod["spec"]["containers"]]:
            raise bad_request(f"container {container} is not valid for pod {name}")
        command = request.query.get("command", [])
        protocols = self.exec_protocols or _exec_protocols(state)
        for needle, hang in self.exec_hangs.items():
            if needle in " ".join(command):
                if hang not in EXEC_HANGS:
                    raise ValueError(f"exec_hangs: {hang!r} is not one of {', '.join(EXEC_HANGS)}")
                return ExecReply("", "", {}, protocols, hang)
        try:
            for needle, (code, stderr) in self.exec_fail.items():
                if needle in " ".join(command):
                    raise fakebin.Failure(stderr, code)
            out = fakebin._exec(state, ns, name, container, command, None)
        except fakebin.Failure as failure:
            message = (
                "command terminated with non-zero exit code: error executing command "
                f"[{' '.join(command)}], exit code {failure.code}"
            )
            status = {
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(failure.code)}]},
            }
            return ExecReply("", failure.stderr + "\n", status, protocols)
        return ExecReply(out, "", {"metadata": {}, "status": "Success"}, protocols)

    def pod_proxy(self, state: dict[str, Any], request: Request, ns: str, target: str, path: str) -> Answer:
        name = next((p for p in target.split(":") if p not in ("http", "https")), "")
        _find_pod(state, ns, name)
        if path == "requests":
            return Reply(200, {"pod": name, "namespace": ns, "requests": []})
        if path == "connections":
            return Reply(200, {"connections": []})
        raise not_found()

    def list_services(self, state: dict[str, Any], request: Request, ns: str) -> Answer:
        return self.listing("v1", "ServiceList", [_object(s) for s in fakebin.services(state, ns)], request)

    def get_service(self, state: dict[str, Any], request: Request, ns: str, name: str) -> Answer:
        return Reply(200, _service(state, ns, name))

    def apply_service(self, state: dict[str, Any], request: Request, ns: str, name: str) -> Answer:
        _, created = _server_side_apply(state, request, "v1", "Service", ns, name)
        return Reply(201 if created else 200, _service(state, ns, name))

    def list_events(self, state: dict[str, Any], request: Request, ns: str) -> Answer:
        return self.listing("v1", "EventList", [_started_event(p) for p in _pods(state, ns)], request)

    # --- apps/v1 ---

    def list_workloads(self, state: dict[str, Any], request: Request, ns: str, resource: str) -> Answer:
        scripted = self.scripted_watch(request)
        if scripted is not None:
            return scripted
        if resource == "deployments":
            return self.listing("apps/v1", "DeploymentList", _deployments(state, ns), request)
        return self.listing("apps/v1", "DaemonSetList", _daemonsets(state, ns), request)

    def get_deployment(self, state: dict[str, Any], request: Request, ns: str, name: str) -> Answer:
        return Reply(200, _find_deployment(state, ns, name))

    def get_configmap(self, state: dict[str, Any], request: Request, ns: str, name: str) -> Answer:
        if ns == "istio-system" and name == "istio" and state["istio"]:
            return Reply(200, _mesh_config_map(state))
        raise not_found(f'configmaps "{name}" not found')

    def get_daemonset(self, state: dict[str, Any], request: Request, ns: str, name: str) -> Answer:
        for daemonset in _daemonsets(state, ns):
            if daemonset["metadata"]["name"] == name:
                return Reply(200, daemonset)
        raise not_found(f'daemonsets.apps "{name}" not found')

    def patch_deployment(self, state: dict[str, Any], request: Request, ns: str, name: str) -> Answer:
        if _is(request.content_type, "application/apply-patch+yaml"):
            _, created = _server_side_apply(state, request, "apps/v1", "Deployment", ns, name)
            return Reply(201 if created else 200, _find_deployment(state, ns, name))
        if not _is(request.content_type, "application/strategic-merge-patch+json", "application/merge-patch+json"):
            raise _unsupported(request.content_type)
        _find_deployment(state, ns, name)
        if not isinstance(request.body, dict):
            raise bad_request("the body of the request is not a JSON object")
        doc = next(d for d in fakebin.objects(state, "Deployment", ns) if d["metadata"]["name"] == name)
        _merge(doc, request.body)
        restarted = doc["spec"]["template"].get("metadata", {}).get("annotations", {}).get(RESTARTED_AT)
        seen = state.setdefault("restarts", {}).setdefault(ns, [])
        if restarted and restarted not in seen:
            # Every Deployment of the namespace gets the same timestamp: the namespace restarts once.
            seen.append(restarted)
            fakebin.restart(state, ns)
        return Reply(200, _find_deployment(state, ns, name))

    # --- networking.istio.io ---

    def list_sidecars(self, state: dict[str, Any], request: Request, version: str, ns: str) -> Answer:
        _sidecar_kind(state, version)
        items = [_object(s) for s in fakebin.objects(state, "Sidecar", ns)]
        return self.listing(f"networking.istio.io/{version}", "SidecarList", items, request)

    def get_sidecar(self, state: dict[str, Any], request: Request, version: str, ns: str, name: str) -> Answer:
        _sidecar_kind(state, version)
        for sidecar in fakebin.objects(state, "Sidecar", ns):
            if sidecar["metadata"]["name"] == name:
                return Reply(200, _object(sidecar))
        raise not_found(f'sidecars.networking.istio.io "{name}" not found')

    def apply_sidecar(self, state: dict[str, Any], request: Request, version: str, ns: str, name: str) -> Answer:
        _sidecar_kind(state, version)
        doc, created = _server_side_apply(state, request, f"networking.istio.io/{version}", "Sidecar", ns, name)
        return Reply(201 if created else 200, _object(doc))

    def apply_destination_rule(
        self, state: dict[str, Any], request: Request, version: str, ns: str, name: str
    ) -> Answer:
        _sidecar_kind(state, version)  # served with the same versions, once Istio's CRDs are in
        api_version = f"networking.istio.io/{version}"
        doc, created = _server_side_apply(state, request, api_version, "DestinationRule", ns, name)
        return Reply(201 if created else 200, _object(doc))

    def apply_peer_authentication(self, state: dict[str, Any], request: Request, ns: str, name: str) -> Answer:
        if not state["istio"]:
            raise not_found()  # the kind exists once Istio (its CRDs) is installed
        api_version = "security.istio.io/v1beta1"
        doc, created = _server_side_apply(state, request, api_version, "PeerAuthentication", ns, name)
        return Reply(201 if created else 200, _object(doc))


# --- routing --------------------------------------------------------------------------------------------------------

_ROUTES: list[tuple[str, str, str]] = [
    ("GET", "version", "get_version"),
    ("GET", "api/v1/nodes", "list_nodes"),
    ("GET", "api/v1/namespaces", "list_namespaces"),
    ("GET", "api/v1/namespaces/{name}", "get_namespace"),
    ("PATCH", "api/v1/namespaces/{name}", "apply_namespace"),
    ("DELETE", "api/v1/namespaces/{name}", "delete_namespace"),
    ("GET", "api/v1/namespaces/{ns}/pods", "list_pods"),
    ("GET", "api/v1/namespaces/{ns}/pods/{name}", "get_pod"),
    ("GET", "api/v1/namespaces/{ns}/pods/{name}/log", "pod_log"),
    ("GET", "api/v1/namespaces/{ns}/pods/{name}/exec", "pod_exec"),
    ("POST", "api/v1/namespaces/{ns}/pods/{name}/exec", "pod_exec"),
    ("GET", "api/v1/namespaces/{ns}/pods/{target}/proxy/{*path}", "pod_proxy"),
    ("GET", "api/v1/namespaces/{ns}/services", "list_services"),
    ("GET", "api/v1/namespaces/{ns}/services/{name}", "get_service"),
    ("PATCH", "api/v1/namespaces/{ns}/services/{name}", "apply_service"),
    ("GET", "api/v1/namespaces/{ns}/events", "list_events"),
    ("GET", "api/v1/namespaces/{ns}/configmaps/{name}", "get_configmap"),
    ("GET", "apis/apps/v1/namespaces/{ns}/{resource}", "list_workloads"),
    ("GET", "apis/apps/v1/namespaces/{ns}/deployments/{name}", "get_deployment"),
    ("PATCH", "apis/apps/v1/namespaces/{ns}/deployments/{name}", "patch_deployment"),
    ("GET", "apis/apps/v1/namespaces/{ns}/daemonsets/{name}", "get_daemonset"),
    ("GET", "apis/networking.istio.io/{version}/namespaces/{ns}/sidecars", "list_sidecars"),
    ("GET", "apis/networking.istio.io/{version}/namespaces/{ns}/sidecars/{name}", "get_sidecar"),
    ("PATCH", "apis/networking.istio.io/{version}/namespaces/{ns}/sidecars/{name}", "apply_sidecar"),
    ("PATCH", "apis/networking.istio.io/{version}/namespaces/{ns}/destinationrules/{name}", "apply_destination_rule"),
    ("PATCH", "apis/security.istio.io/v1beta1/namespaces/{ns}/peerauthentications/{name}", "apply_peer_authentication"),
]


def _exec_protocols(state: dict[str, Any]) -> tuple[str, ...]:
    """The exec subprotocols of the cluster's API server, by the first node's Kubernetes version."""
    nodes = fakebin._nodes(state)
    version = nodes[0]["status"]["nodeInfo"]["kubeletVersion"] if nodes else "v1.20.15"
    minor = int(version.lstrip("v").split(".")[1])
    return EXEC_PROTOCOLS_FROM_1_30 if minor >= 30 else EXEC_PROTOCOLS_BEFORE_1_30


def _route(method: str, parts: list[str]) -> tuple[Handler, dict[str, str]]:
    """The handler for the request, and what its path's {placeholders} hold; NotFound if none serves it."""
    for route_method, pattern, handler in _ROUTES:
        if route_method != method:
            continue
        captured = _match(pattern.split("/"), parts)
        if captured is None:
            continue
        if captured.get("resource", "deployments") not in ("deployments", "daemonsets"):
            continue
        if captured.get("version", "v1") not in SIDECAR_VERSIONS:
            continue
        return getattr(FakeKindApi, handler), captured
    raise not_found()


def _match(pattern: list[str], parts: list[str]) -> dict[str, str] | None:
    captured: dict[str, str] = {}
    for i, want in enumerate(pattern):
        if want.startswith("{*"):
            captured[want[2:-1]] = "/".join(parts[i:])
            return captured
        if i >= len(parts):
            return None
        if want.startswith("{"):
            captured[want[1:-1]] = parts[i]
        elif want != parts[i]:
            return None
    return captured if len(parts) == len(pattern) else None


# --- the model's objects as the API shows them -----------------------------------------------------------------------


def _version_of(value: Any) -> str:
    """A resourceVersion: a number that changes whenever the value does."""
    return str(zlib.crc32(json.dumps(value, sort_keys=True).encode()) or 1)


def _meta(kind: str, meta: dict[str, Any], content: Any, generation: int | None = None) -> dict[str, Any]:
    """The object's metadata with what the server adds: uid, resourceVersion, creationTimestamp (and generation)."""
    key = f"{kind}/{meta.get('namespace', '')}/{meta['name']}"
    out = {
        **meta,
        "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, key)),
        "resourceVersion": _version_of(content),
        "creationTimestamp": CREATED_AT,
        "labels": meta.get("labels") or {},
        "annotations": meta.get("annotations") or {},
    }
    if generation is not None:
        out["generation"] = generation
    return out


def _object(doc: dict[str, Any], generation: int | None = 1) -> dict[str, Any]:
    """A stored (or derived) object with the server's metadata."""
    return {**doc, "metadata": _meta(doc["kind"], doc["metadata"], doc, generation)}


def _changes(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The watch events that take a client from the objects `before` to those `after` (matched by name)."""
    old = {o["metadata"]["name"]: o for o in before}
    new = {o["metadata"]["name"]: o for o in after}
    events = [{"type": "DELETED", "object": o} for name, o in old.items() if name not in new]
    for name, obj in new.items():
        if name not in old:
            events.append({"type": "ADDED", "object": obj})
        elif obj != old[name]:
            events.append({"type": "MODIFIED", "object": obj})
    return events


def _select(items: list[dict[str, Any]], request: Request) -> list[dict[str, Any]]:
    """The items the request's labelSelector and fieldSelector keep (terms k=v, k==v, k!=v; a label also k, !k)."""
    terms = [("label", t) for t in request.arg("labelSelector").split(",") if t.strip()]
    terms += [("field", t) for t in request.arg("fieldSelector").split(",") if t.strip()]
    return [item for item in items if all(_holds(item, where, term.strip()) for where, term in terms)]


def _holds(item: dict[str, Any], where: str, term: str) -> bool:
    key, op, want = term.partition("!=") if "!=" in term else term.replace("==", "=").partition("=")
    key = key.strip()
    bare = key.removeprefix("!") if where == "label" and not op else key  # a label's `k` or `!k`
    if not bare or any(c in bare for c in " ()!"):
        raise bad_request(f"unable to parse requirement: found {term!r}, expected: '=', '!=', '==' or 'in', 'notin'")
    if where == "label":
        value = item["metadata"].get("labels", {}).get(key.lstrip("!"))
    else:
        value = item
        for step in key.split("."):
            value = value.get(step) if isinstance(value, dict) else None
    if not op:  # a label's existence (k) or absence (!k)
        return (value is None) if key.startswith("!") else (value is not None)
    holds = value is not None and str(value) == want.strip()
    return holds if op == "=" else not holds


def _node(node: dict[str, Any]) -> dict[str, Any]:
    name = node["metadata"]["name"]
    cidr = node["spec"]["podCIDR"]
    cidrs = node["spec"].get("podCIDRs") or [cidr]
    info = {
        "architecture": "amd64",
        "bootID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"boot/{name}")),
        "containerRuntimeVersion": "containerd://1.5.2",
        "kernelVersion": "6.1.0",
        "kubeProxyVersion": node["status"]["nodeInfo"]["kubeletVersion"],
        "kubeletVersion": node["status"]["nodeInfo"]["kubeletVersion"],
        "machineID": "0" * 32,
        "operatingSystem": "linux",
        "osImage": "Ubuntu 21.04",
        "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"system/{name}")),
    }
    meta = {
        "name": name,
        "labels": {"kubernetes.io/hostname": name, "node-role.kubernetes.io/control-plane": ""},
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": _meta("Node", meta, node),
        "spec": {"podCIDR": cidr, "podCIDRs": cidrs},
        "status": {
            "nodeInfo": info,
            "addresses": [{"type": "InternalIP", "address": "172.18.0.2"}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }


def _find_namespace(state: dict[str, Any], name: str) -> dict[str, Any]:
    for namespace in fakebin.objects(state, "Namespace"):
        if namespace["metadata"]["name"] == name:
            return namespace
    raise not_found(f'namespaces "{name}" not found')


def _namespace(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        **_object(doc, None),
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def _daemonset_pods(state: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    """The ambient DaemonSets' pods (one each, on the one node): NAME-abcde, one container NAME."""
    if namespace != "istio-system" or not fakebin.ambient(state):
        return []
    istio = state["istio"]
    out = []
    for index, name in enumerate(fakebin.AMBIENT_DAEMONSETS):
        container = {"name": name, "image": f"{istio.get('hub', 'docker.io/istio')}/{name}:{istio.get('tag', '')}"}
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"{name}-abcde", "namespace": namespace, "labels": {"k8s-app": name}},
                "spec": {"containers": [container], "initContainers": []},
                "status": {
                    "phase": "Running",
                    "podIP": f"172.18.0.{10 + index}",
                    "podIPs": [{"ip": f"172.18.0.{10 + index}"}],
                    "containerStatuses": [fakebin.container_status(container)],
                },
            }
        )
    return out


def _pods(state: dict[str, Any], namespace: str, listing: bool = False) -> list[dict[str, Any]]:
    """The namespace's pods; a `listing` also shows fakebin's Terminating pod while $FAKE_TERMINATING lasts."""
    workloads = fakebin.listed_pods(state, namespace) if listing else fakebin.pods(state, namespace)
    return workloads + _daemonset_pods(state, namespace)


def _find_pod(state: dict[str, Any], namespace: str, name: str) -> dict[str, Any]:
    for pod in _pods(state, namespace):
        if pod["metadata"]["name"] == name:
            return pod
    raise not_found(f'pods "{name}" not found')


def _pod(pod: dict[str, Any]) -> dict[str, Any]:
    out = _object(pod, None)
    out["spec"] = {**pod["spec"], "nodeName": "mic-control-plane", "restartPolicy": "Always"}
    out["status"] = {**pod["status"], "hostIP": "172.18.0.2", "startTime": fakebin.STARTED_AT}
    return out


def _service(state: dict[str, Any], namespace: str, name: str) -> dict[str, Any]:
    for service in fakebin.services(state, namespace):
        if service["metadata"]["name"] == name:
            return _object(service, None)
    raise not_found(f'services "{name}" not found')


def _started_event(pod: dict[str, Any]) -> dict[str, Any]:
    name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
    meta = {"name": f"{name}.{zlib.crc32(name.encode()):x}", "namespace": namespace}
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": meta,
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"Pod/{namespace}/{name}")),
            "fieldPath": "spec.containers{echo}",
        },
        "reason": "Started",
        "message": "Started container echo",
        "type": "Normal",
        "count": 1,
        "source": {"component": "kubelet", "host": "mic-control-plane"},
        "firstTimestamp": fakebin.STARTED_AT,
        "lastTimestamp": fakebin.STARTED_AT,
    }
    return _object(event, None)


def _rolled_out(doc: dict[str, Any], generation: int) -> dict[str, Any]:
    """A Deployment whose rollout of this generation is complete (one replica, ready and available)."""
    out = _object(doc, generation)
    out["spec"] = {"replicas": 1, **doc["spec"]}
    out["status"] = {
        "observedGeneration": generation,
        "replicas": 1,
        "updatedReplicas": 1,
        "readyReplicas": 1,
        "availableReplicas": 1,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
    }
    return out


def _istiod(state: dict[str, Any]) -> dict[str, Any]:
    istio = state["istio"]
    labels = {"app": "istiod", "istio": "pilot"}
    image = f"{istio.get('hub', 'docker.io/istio')}/pilot:{istio.get('tag', '')}"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "istiod", "namespace": "istio-system", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "discovery", "image": image, "env": _istiod_env(istio)}]},
            },
        },
    }


def _dual_stack(istio: dict[str, Any]) -> bool:
    """Whether the install had the dual-stack overlay (ISTIO_DUAL_STACK in istiod's env and the proxies')."""
    return "dual-stack.yaml" in istio.get("overlays", [])


def _istiod_env(istio: dict[str, Any]) -> list[dict[str, str]]:
    env = [{"name": "REVISION", "value": "default"}]
    return [*env, {"name": "ISTIO_DUAL_STACK", "value": "true"}] if _dual_stack(istio) else env


def _mesh_config_map(state: dict[str, Any]) -> dict[str, Any]:
    """istio-system/istio as istioctl writes it: the mesh config, proxyMetadata from the install's overlays."""
    metadata = {"ISTIO_DUAL_STACK": "true", "ISTIO_AGENT_DUAL_STACK": "true"} if _dual_stack(state["istio"]) else {}
    mesh = yaml.safe_dump(
        {"defaultConfig": {"discoveryAddress": "istiod.istio-system.svc:15012", "proxyMetadata": metadata}}
    )
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio", "namespace": "istio-system"}}
    return _object({**doc, "data": {"mesh": mesh}}, None)


def _deployments(state: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    generation = 1 + state["generation"].get(namespace, 0)
    docs = fakebin.objects(state, "Deployment", namespace)
    if namespace == "istio-system" and state["istio"]:
        docs = [_istiod(state), *docs]
    return [_rolled_out(d, generation) for d in docs]


def _find_deployment(state: dict[str, Any], namespace: str, name: str) -> dict[str, Any]:
    for deployment in _deployments(state, namespace):
        if deployment["metadata"]["name"] == name:
            return deployment
    raise not_found(f'deployments.apps "{name}" not found')


def _daemonsets(state: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    out = []
    for pod in _daemonset_pods(state, namespace):
        name = pod["metadata"]["labels"]["k8s-app"]
        labels = {"k8s-app": name}
        doc = {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": pod["spec"]["containers"]}},
            },
        }
        daemonset = _object(doc, 1)
        daemonset["status"] = {
            "observedGeneration": 1,
            "desiredNumberScheduled": 1,
            "currentNumberScheduled": 1,
            "updatedNumberScheduled": 1,
            "numberAvailable": 1,
            "numberReady": 1,
            "numberMisscheduled": 0,
        }
        out.append(daemonset)
    return out


def _sidecar_kind(state: dict[str, Any], version: str) -> None:
    """The Sidecar kind exists once Istio (its CRDs) is installed."""
    if not state["istio"] or version not in SIDECAR_VERSIONS:
        raise not_found()


# --- writes ---------------------------------------------------------------------------------------------------------


def _is(content_type: str, *wanted: str) -> bool:
    return content_type.partition(";")[0].strip().lower() in wanted


def _unsupported(content_type: str) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format ({content_type}): accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, "
        "application/strategic-merge-patch+json",
    )


def _server_side_apply(
    state: dict[str, Any], request: Request, api_version: str, kind: str, namespace: str | None, name: str
) -> tuple[dict[str, Any], bool]:
    """Store the applied object (fakebin.store); the stored document and whether it is new."""
    if not _is(request.content_type, "application/apply-patch+yaml"):
        raise _unsupported(request.content_type)
    if not request.arg("fieldManager"):
        # The real server validates the PatchOptions first: 422 Invalid.
        raise ApiError(
            422,
            "Invalid",
            'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
            {
                "group": "meta.k8s.io",
                "kind": "PatchOptions",
                "causes": [
                    {
                        "reason": "FieldValueRequired",
                        "message": "Required value: is required for apply patch",
                        "field": "fieldManager",
                    }
                ],
            },
        )
    doc = request.body
    if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
        raise bad_request("error decoding YAML: the body is not an object with metadata")
    if doc.get("apiVersion") != api_version:
        raise bad_request(
            f"the API version in the data ({doc.get('apiVersion')}) does not match the expected API version "
            f"({api_version})"
        )
    if doc.get("kind") != kind:
        raise bad_request(f"the kind in the data ({doc.get('kind')}) does not match the expected kind ({kind})")
    meta = doc["metadata"]
    if meta.get("name") != name:
        raise bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})")
    if namespace is not None and meta.setdefault("namespace", namespace) != namespace:
        raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
    try:
        created = fakebin.store(state, doc)
    except fakebin.NotFound as missing:
        raise not_found(missing.message) from None
    return doc, created


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """A merge patch: maps merge, anything else replaces, null deletes (enough for annotations and replicas)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


# --- HTTP -----------------------------------------------------------------------------------------------------------


class _Handler(ApiHandler):
    fake: FakeKindApi

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        content_type = self.headers.get("Content-Type", "")
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        request = Request(method, parts, parse_qs(url.query, keep_blank_values=True), content_type, _parse(raw))
        path = unquote(url.path)
        self.fake.record(request, path)
        try:
            answer = self.fake.answer(request, path)
        except ApiError as err:
            return self._send(err.code, err.body)
        except Exception as err:  # a bug of the fake (or a body it cannot take): say so, keep serving
            return self._send(500, status_body(500, "InternalError", f"fake API server: {type(err).__name__}: {err}"))
        if isinstance(answer, WatchReply):
            return self._stream(answer)
        if isinstance(answer, ExecReply):
            return self._exec(answer)
        return self._send(answer.code, answer.body, answer.content_type)

    def _stream(self, watch: WatchReply) -> None:
        """The watch: one JSON line per event, silence until its timeout, then the end of the chunked body."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with contextlib.suppress(OSError):  # the client may stop watching first
            for event in watch.events:
                data = (json.dumps(event) + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
            time.sleep(watch.seconds)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    def _exec(self, answer: ExecReply) -> None:
        fake = self.fake
        if answer.hang == "before-upgrade":
            fake.hold()
            self.close_connection = True
            return None
        protocol = negotiate(self.headers.get("Sec-WebSocket-Protocol", ""), answer.protocols)
        if protocol is None:
            return self._send(400, status_body(400, "BadRequest", unsupported_protocols(self, answer.protocols)))
        if not upgrade_to_websocket(self, protocol):
            return self._send(400, status_body(400, "BadRequest", "Upgrade request required"))
        with fake._log_lock:
            fake.negotiated.append(protocol)
        with contextlib.suppress(OSError):
            if answer.hang == "after-upgrade":
                fake.hold()
                self.close_connection = True
                return None
            if answer.hang == "mid-frame":
                # A binary frame of 1000 bytes announced; its channel byte and 9 more sent.
                self.wfile.write(bytes([0x82, 126]) + (1000).to_bytes(2, "big") + b"\x01LISTEN 0")
                self.wfile.flush()
                fake.hold()
                self.close_connection = True
                return None
            if answer.stdout or answer.hang == "drop":
                send_frame(self, b"\x01" + (answer.stdout or "LISTEN 0      4096   127.0.0.1:15000\n").encode())
            if answer.hang == "drop":
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return None
            if answer.stderr:
                send_frame(self, b"\x02" + answer.stderr.encode())
            send_frame(self, b"\x03" + json.dumps(answer.status).encode())
            close_websocket(self)


def _parse(raw: bytes) -> Any:
    """The body as JSON, else as one YAML document (fakebin's reader); None when empty or neither."""
    if not raw.strip():
        return None
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        docs = fakebin.load_yaml_stream(text)
    except ValueError:
        return None
    return docs[0] if len(docs) == 1 else None
