"""A small fake Kubernetes API server speaking real HTTP (and the exec websocket), for the official client.

Standard library only. It serves the few endpoints `impact` uses, with the shapes, status codes and Status
bodies the real API server returns:

  GET   /api/v1/namespaces[/NAME]                 (404 NotFound for an unknown namespace)
  GET   /api/v1/pods, /api/v1/namespaces/NS/pods  (?labelSelector=k=v,... ; 400 BadRequest for other syntax)
  GET   /api/v1/services, /api/v1/namespaces/NS/services
  GET   /api/v1/namespaces/NS/pods/NAME
  GET   /api/v1/namespaces/NS/pods/NAME/exec      (websocket, subprotocol v5.channel.k8s.io or v4.channel.k8s.io
                                                   as `exec_protocols` allow, the client's order winning: channel
                                                   1 stdout, 2 stderr, 3 the Status; 403 Forbidden before the
                                                   upgrade when the bearer token may not create pods/exec)
  PATCH /api/v1/namespaces/NS/pods/NAME/ephemeralcontainers
  GET   /api/v1/namespaces/NS/pods/NAME/log?container=C

The "node" behind it: each pod has /proc/net/tcp and tcp6 contents; each container can run `cat` or not (a
distroless image cannot: exec then fails the way runc reports it); an ephemeral container runs its command with
its image, which can print files if the image is in `images_with_cat`, and its log is what it printed.
Every request is logged (method, path, token) so a test can see what the client did.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
RUNC_NO_CAT = (
    'failed to exec in container: failed to start exec "0123abcd": OCI runtime exec failed: exec failed: unable '
    'to start container process: exec: "cat": executable file not found in $PATH: unknown'
)


@dataclass
class FakePod:
    """A pod on the fake node."""

    namespace: str
    name: str
    containers: dict[str, bool]
    """Container name -> whether its image has `cat`, in spec order."""
    proc_net_tcp: str
    proc_net_tcp6: str | None = ""
    """None: the pod has IPv6 disabled, /proc/net/tcp6 does not exist."""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    ports: list[tuple[str, str, int]] = field(default_factory=list)
    """(container, port name, containerPort)."""
    phase: str = "Running"
    ephemeral: list[dict[str, Any]] = field(default_factory=list)
    pod_ips: tuple[str, ...] = ("10.244.0.9",)
    """status.podIPs, the primary (status.podIP) first: one of each family on a dual-stack pod."""

    def manifest(self, images_with_cat: set[str]) -> dict[str, Any]:
        containers = [
            {
                "name": name,
                "image": f"registry.example/{name}:1",
                "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for c, n, p in self.ports if c == name],
            }
            for name in self.containers
        ]
        statuses = []
        for eph in self.ephemeral:
            code = 0 if eph["image"] in images_with_cat else 127
            statuses.append(
                {
                    "name": eph["name"],
                    "image": eph["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}},
                }
            )
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": self.labels,
                "annotations": self.annotations,
                "uid": f"uid-{self.namespace}-{self.name}",
            },
            "spec": {"containers": containers, "ephemeralContainers": self.ephemeral},
            "status": {
                "phase": self.phase,
                "podIP": self.pod_ips[0],
                "podIPs": [{"ip": ip} for ip in self.pod_ips],
                "ephemeralContainerStatuses": statuses,
            },
        }

    def cat_output(self) -> str:
        return self.proc_net_tcp + (self.proc_net_tcp6 or "")


# The exec subprotocols; kubernetes 37 offers `v5.channel.k8s.io,v4.channel.k8s.io`, in that order.
V4_CHANNEL = "v4.channel.k8s.io"
V5_CHANNEL = "v5.channel.k8s.io"
EXEC_PROTOCOLS_BEFORE_1_30 = (V4_CHANNEL, "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
EXEC_PROTOCOLS_FROM_1_30 = (V5_CHANNEL, *EXEC_PROTOCOLS_BEFORE_1_30)
"""What an API server accepts for exec: v5 (the CLOSE signal on channel 255) from Kubernetes 1.30, where the
TranslateStreamCloseWebsocketRequests feature gate is on by default (beta; alpha and off in 1.29)."""


def negotiate(offered: str, supported: tuple[str, ...]) -> str | None:
    """The subprotocol the API server picks: the first the client offers that it supports (the client's order
    wins, as in apimachinery's wsstream handshake); None when it supports none of them."""
    for protocol in (p.strip() for p in offered.split(",")):
        if protocol in supported:
            return protocol
    return None


def unsupported_protocols(handler: BaseHTTPRequestHandler, supported: tuple[str, ...]) -> str:
    """What the API server says when the client offers no subprotocol it supports."""
    offered = [p.strip() for p in handler.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    return f"requested protocol(s) are not supported: {offered}; supports {list(supported)}"


def upgrade_to_websocket(handler: BaseHTTPRequestHandler, protocol: str = V4_CHANNEL) -> bool:
    """Answer the client's websocket handshake with `protocol` (see negotiate); False if it did not ask for one."""
    key = handler.headers.get("Sec-WebSocket-Key", "")
    if handler.headers.get("Upgrade", "").lower() != "websocket" or not key:
        return False
    accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
    handler.send_response(101, "Switching Protocols")
    handler.send_header("Upgrade", "websocket")
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Sec-WebSocket-Accept", accept)
    handler.send_header("Sec-WebSocket-Protocol", protocol)
    handler.end_headers()
    return True


def send_frame(handler: BaseHTTPRequestHandler, payload: bytes, opcode: int = 0x2) -> None:
    """One websocket frame, server side (final, unmasked); binary unless `opcode` says otherwise."""
    length = len(payload)
    if length < 126:
        header = bytes([0x80 | opcode, length])
    elif length < 1 << 16:
        header = bytes([0x80 | opcode, 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 127]) + length.to_bytes(8, "big")
    handler.wfile.write(header + payload)
    handler.wfile.flush()


def close_websocket(handler: BaseHTTPRequestHandler) -> None:
    """Send the close frame (1000), wait a little for the client's, and end the connection."""
    send_frame(handler, (1000).to_bytes(2, "big"), opcode=0x8)
    handler.close_connection = True
    handler.connection.settimeout(2)
    with contextlib.suppress(OSError):
        handler.connection.recv(1024)  # the client's close frame


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    """The Kubernetes Status the API server answers a failed request with."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass
class FakeKubeApi:
    """The cluster state and the HTTP server in front of it."""

    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    pods: list[FakePod] = field(default_factory=list)
    services: list[dict[str, Any]] = field(default_factory=list)
    tokens_without_exec: set[str] = field(default_factory=set)
    images_with_cat: set[str] = field(default_factory=set)
    exec_seconds: float = 0.0
    """How long each exec takes on the node (to watch how many run at once)."""
    exec_protocols: tuple[str, ...] = EXEC_PROTOCOLS_FROM_1_30
    """The exec subprotocols this API server accepts (EXEC_PROTOCOLS_BEFORE_1_30: a Kubernetes 1.29 or older)."""
    negotiated: list[str] = field(default_factory=list)
    """The subprotocol of each exec, in order."""
    log: list[tuple[str, str, str]] = field(default_factory=list)
    max_concurrent_execs: int = 0
    _running_execs: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    # --- lifecycle ---

    def start(self) -> FakeKubeApi:
        api = self

        class Handler(_Handler):
            fake = api

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def kubeconfig(self, path: Path, users: dict[str, str]) -> Path:
        """A kubeconfig with one context per user (context name = user name), bearer tokens."""
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": u, "user": {"token": t}} for u, t in users.items()],
            "contexts": [{"name": u, "context": {"cluster": "fake", "user": u}} for u in users],
            "current-context": next(iter(users)),
        }
        path.write_text(json.dumps(doc))
        return path

    def pod(self, namespace: str, name: str) -> FakePod | None:
        return next((p for p in self.pods if (p.namespace, p.name) == (namespace, name)), None)


class ApiHandler(BaseHTTPRequestHandler):
    """What both fake API servers (this one and kind_api.py) answer with: kept-alive HTTP/1.1, quiet, JSON."""

    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes: with Nagle's algorithm on, each answer on a kept-alive
    # connection waits for the client's delayed ACK (~40 ms), as a real API server's never does.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Handler(ApiHandler):
    fake: FakeKubeApi

    def _token(self) -> str:
        return self.headers.get("Authorization", "").removeprefix("Bearer ").strip()

    def _selected(self, labels: dict[str, str], query: dict[str, list[str]]) -> bool | None:
        selector = query.get("labelSelector", [""])[0]
        wanted = {}
        for term in filter(None, selector.split(",")):
            key, sep, value = term.partition("==") if "==" in term else term.partition("=")
            if not sep or not key or "!" in key or " " in term:
                return None
            wanted[key] = value
        return all(labels.get(k) == v for k, v in wanted.items())

    def _list(self, kind: str, items: list[dict[str, Any]]) -> None:
        self._send(200, {"apiVersion": "v1", "kind": f"{kind}List", "metadata": {}, "items": items})

    def do_GET(self) -> None:
        fake = self.fake
        url = urlparse(self.path)
        query = parse_qs(url.query)
        parts = url.path.strip("/").split("/")
        fake.log.append(("GET", url.path, self._token()))
        if parts[:2] != ["api", "v1"]:
            return self._send(404, status_body(404, "NotFound", "the server could not find the requested resource"))
        rest = parts[2:]
        if rest == ["namespaces"]:
            return self._list(
                "Namespace",
                [{"metadata": {"name": n, "labels": labels}} for n, labels in fake.namespaces.items()],
            )
        if len(rest) == 2 and rest[0] == "namespaces":
            if rest[1] not in fake.namespaces:
                return self._send(404, status_body(404, "NotFound", f'namespaces "{rest[1]}" not found'))
            return self._send(
                200,
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": rest[1], "labels": fake.namespaces[rest[1]]},
                },
            )
        namespace = rest[1] if len(rest) >= 3 and rest[0] == "namespaces" else None
        resource = rest[2:] if namespace else rest
        if resource == ["pods"]:
            pods = [p for p in fake.pods if namespace in (None, p.namespace)]
            chosen = [self._selected(p.labels, query) for p in pods]
            if None in chosen:
                return self._send(
                    400,
                    status_body(
                        400,
                        "BadRequest",
                        "unable to parse requirement: found '(', expected: '=', '!=', '==' or 'in', 'notin'",
                    ),
                )
            return self._list(
                "Pod", [p.manifest(fake.images_with_cat) for p, ok in zip(pods, chosen, strict=True) if ok]
            )
        if resource == ["services"]:
            return self._list("Service", [s for s in fake.services if namespace in (None, s["metadata"]["namespace"])])
        if namespace and len(resource) >= 2 and resource[0] == "pods":
            pod = fake.pod(namespace, resource[1])
            if pod is None:
                return self._send(404, status_body(404, "NotFound", f'pods "{resource[1]}" not found'))
            if len(resource) == 2:
                return self._send(200, pod.manifest(fake.images_with_cat))
            if resource[2] == "log":
                container = query.get("container", [""])[0]
                eph = next((e for e in pod.ephemeral if e["name"] == container), None)
                if eph is None:
                    return self._send(400, status_body(400, "BadRequest", f"container {container} is not valid"))
                can_cat = eph["image"] in fake.images_with_cat
                return self._send(200, pod.cat_output() if can_cat else 'exec: "cat": not found\n', "text/plain")
            if resource[2] == "exec":
                return self._exec(pod, query)
        return self._send(404, status_body(404, "NotFound", "the server could not find the requested resource"))

    def do_PATCH(self) -> None:
        fake = self.fake
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        fake.log.append(("PATCH", url.path, self._token()))
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        if len(parts) == 7 and parts[6] == "ephemeralcontainers":
            pod = fake.pod(parts[3], parts[5])
            if pod is None:
                return self._send(404, status_body(404, "NotFound", f'pods "{parts[5]}" not found'))
            for eph in body.get("spec", {}).get("ephemeralContainers", []):
                pod.ephemeral.append(eph)
            return self._send(200, pod.manifest(fake.images_with_cat))
        return self._send(404, status_body(404, "NotFound", "the server could not find the requested resource"))

    # --- exec over a websocket (RFC 6455, server side: unmasked frames) ---

    def _exec(self, pod: FakePod, query: dict[str, list[str]]) -> None:
        if self._token() in self.fake.tokens_without_exec:
            message = (
                f'pods "{pod.name}" is forbidden: User "fake" cannot create resource "pods/exec" in API group "" '
                f'in the namespace "{pod.namespace}"'
            )
            return self._send(403, status_body(403, "Forbidden", message))
        supported = self.fake.exec_protocols
        protocol = negotiate(self.headers.get("Sec-WebSocket-Protocol", ""), supported)
        if protocol is None:
            return self._send(400, status_body(400, "BadRequest", unsupported_protocols(self, supported)))
        if not upgrade_to_websocket(self, protocol):
            return self._send(400, status_body(400, "BadRequest", "exec needs a websocket upgrade"))
        self.fake.negotiated.append(protocol)
        container = query.get("container", [""])[0]
        command = query.get("command", [])
        fake = self.fake
        with fake._lock:
            fake._running_execs += 1
            fake.max_concurrent_execs = max(fake.max_concurrent_execs, fake._running_execs)
        time.sleep(fake.exec_seconds)
        with fake._lock:
            fake._running_execs -= 1
        if command[:1] == ["cat"] and pod.containers.get(container):
            self._frame(b"\x01" + pod.cat_output().encode())
            status: dict[str, Any] = {"metadata": {}, "status": "Success"}
            if pod.proc_net_tcp6 is None and "/proc/net/tcp6" in command:
                # busybox/coreutils cat prints what it can, complains about the rest and exits 1.
                self._frame(b"\x02cat: can't open '/proc/net/tcp6': No such file or directory\n")
                message = "command terminated with non-zero exit code: exit status 1"
                status = status_body(500, "NonZeroExitCode", message)
                status["details"] = {"causes": [{"reason": "ExitCode", "message": "1"}]}
        else:
            status = status_body(500, "InternalError", RUNC_NO_CAT)
        self._frame(b"\x03" + json.dumps(status).encode())
        close_websocket(self)

    def _frame(self, payload: bytes) -> None:
        send_frame(self, payload)
