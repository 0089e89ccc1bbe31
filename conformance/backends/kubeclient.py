"""What the backends and `impact` share about the official `kubernetes` client: configuration, errors, exec.

The client reports a refused request as an ApiException whose body is a Kubernetes Status, and a refused exec
upgrade as a websocket handshake error with the Status inside a string. A user needs one line from either: the
HTTP status and the Status message (e.g. `HTTP 403: pods "x" is forbidden: User "dev" cannot create resource
"pods/exec"`), never the client's multi-line dump of headers.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def first_line(text: str) -> str:
    """The first non-blank line of `text` ('' if none)."""
    return text.strip().splitlines()[0] if text.strip() else ""


def status_message(body: object) -> str:
    """The `message` of a Kubernetes Status body, or '' when the body is not one."""
    if not isinstance(body, str | bytes):
        return ""
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    return str(doc.get("message", "")) if isinstance(doc, dict) else ""


def api_reason(err: Exception) -> str:
    """One line from an ApiException: the HTTP status and the Status message (or the client's reason)."""
    status = getattr(err, "status", None)
    message = status_message(getattr(err, "body", None)) or first_line(str(getattr(err, "reason", "") or err))
    return f"HTTP {status}: {message}" if status else message


_HANDSHAKE = re.compile(
    r"Handshake status (?P<code>\d{3}) (?P<text>[^-]*?)\s*(-\+-\+-.*-\+-\+-\s*(?P<body>.*))?$", re.S
)


def handshake_reason(err: Exception) -> tuple[int | None, str]:
    """The HTTP status and message of a refused exec upgrade (websocket-client puts both in one string)."""
    text = str(getattr(err, "reason", "") or err).strip()
    match = _HANDSHAKE.search(text)
    if not match:
        return None, first_line(text) or type(err).__name__
    message = status_message(match["body"] or "") or match["text"]
    return int(match["code"]), f"HTTP {match['code']}: {first_line(message)}"


def load_configuration(kubeconfig: str | None, context: str | None = None) -> Any:
    """A client Configuration from a kubeconfig file; ValueError with one line naming the file if it is unusable."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    except (ConfigException, OSError, TypeError, ValueError, KeyError) as err:
        where = kubeconfig or "the default kubeconfig (KUBECONFIG or ~/.kube/config)"
        raise ValueError(f"kubeconfig {where}: {first_line(str(err)) or type(err).__name__}") from None
    return configuration


EXEC_GRACE_SECONDS = 0.5
"""What an exec may take beyond its own bound: reading what arrived (the close handshake happens after)."""


@dataclass(frozen=True)
class ExecOutput:
    """What a command run through the API's exec printed, and whether it ended within its time."""

    finished: bool
    stdout: str
    stderr: str
    status: dict[str, Any]
    """The Status on channel 3 (`exec_status`): `{"status": "Success"}`, or the failure and its exit code."""


class ExecRefused(Exception):
    """The API server refused the exec's websocket upgrade.

    `code` is its HTTP status (None if none was read), `reason` one line (`HTTP 403: pods "x" is forbidden: ...`).
    """

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ExecDropped(Exception):
    """The exec's connection ended before the command did (no websocket close, no Status): `reason` is one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def run_exec(
    configuration: Any, namespace: str, pod: str, container: str, command: Sequence[str], timeout: float
) -> ExecOutput:
    """Run `command` in a container through the API's exec websocket, with no stdin (nothing to half-close).

    A wall-clock bound: the call returns within `timeout` (plus EXEC_GRACE_SECONDS) with `finished` False if the
    command has not ended, whatever the connection does. The client applies no timeout to a websocket opened with
    `_preload_content=False` (kubernetes.stream's `_request_timeout` only bounds a preloaded call, and
    websocket-client's socket has none): an upgrade the API server never answers, or a frame that stops half way,
    would block for good. So the exec runs in a thread of its own, which this call stops waiting for at the bound;
    its websocket, once open, is shut down then, which ends the thread (a finished exec's close handshake also
    happens there, after the answer is in). One client per exec (kubernetes.stream swaps its ApiClient's call_api
    while the exec runs).

    The client offers v5.channel.k8s.io and v4.channel.k8s.io; Kubernetes 1.30 and later pick v5 (which adds the
    CLOSE signal on channel 255, for stdin), older ones v4. Without stdin both carry the same frames: channel 1
    stdout, 2 stderr, 3 the Status, then the websocket's close.

    ExecRefused for a refused upgrade (`handshake_reason` reads the HTTP status and message from the client's
    exception); ExecDropped when the connection ends without the websocket's close (an API server restart, a TCP
    reset): websocket-client raises WebSocketConnectionClosedException, which is no OSError.
    """
    call = _Exec(configuration, namespace, pod, container, list(command), time.monotonic() + timeout)
    thread = threading.Thread(target=call.run, name=f"exec in {namespace}/{pod}", daemon=True)
    thread.start()
    call.done.wait(timeout + EXEC_GRACE_SECONDS)
    return call.result()


class _Exec:
    """One exec in its thread: open, read until the end or the deadline, close; the caller reads `result`."""

    def __init__(
        self, configuration: Any, namespace: str, pod: str, container: str, command: list[str], deadline: float
    ) -> None:
        self.configuration = configuration
        self.args = (namespace, pod, container, command)
        self.deadline = deadline
        self._lock = threading.Lock()
        self._ws: Any = None
        self._abandoned = False
        self._output: ExecOutput | None = None
        self._error: Exception | None = None
        self.done = threading.Event()
        """Set once the output (or the error) is there."""

    def run(self) -> None:
        from kubernetes import client

        try:
            with client.ApiClient(self.configuration) as api:
                self._run(client.CoreV1Api(api))
        except (ExecRefused, ExecDropped) as err:
            self._error = err
        except Exception as err:  # a bug, or what the client raises besides: still one line for the caller
            self._error = ExecDropped(f"{type(err).__name__}: {first_line(str(err))}")
        finally:
            self.done.set()

    def _run(self, core_api: Any) -> None:
        from kubernetes.stream import stream
        from websocket import WebSocketException

        namespace, pod, container, command = self.args
        try:
            ws = stream(
                core_api.connect_get_namespaced_pod_exec,
                pod,
                namespace,
                container=container,
                command=command,
                stdin=False,
                stdout=True,
                stderr=True,
                tty=False,
                _preload_content=False,
            )
        except Exception as err:  # the client wraps every handshake failure in ApiException(status=0)
            raise ExecRefused(*handshake_reason(err)) from None
        with self._lock:
            self._ws = ws
            abandoned = self._abandoned
        finished = False
        try:
            if not abandoned:
                ws.run_forever(timeout=max(self.deadline - time.monotonic(), 0.001))
                finished = not ws.is_open()
                stdout, stderr, error = ws.read_channel(1), ws.read_channel(2), ws.read_channel(3)
                self._output = ExecOutput(finished, stdout, stderr, exec_status(error))
                self.done.set()
        except (WebSocketException, OSError) as err:
            raise ExecDropped(first_line(str(err)) or type(err).__name__) from None
        finally:
            if finished:
                ws.close()
            else:  # the command still runs (or the connection is gone): no close handshake to wait for
                _abort(ws)

    def result(self) -> ExecOutput:
        """What the exec gave by now: its output, or an unfinished one if it is still under way."""
        with self._lock:
            self._abandoned = True
            ws = self._ws
            output, error = self._output, self._error
        if error is not None:
            raise error
        if output is not None:
            return output
        if ws is not None:
            _abort(ws)  # the thread's read ends now
        return ExecOutput(False, "", "", {})


def _abort(ws: Any) -> None:
    """Shut an exec's websocket down at once (a blocked read in another thread ends)."""
    sock = getattr(ws, "sock", None)
    with contextlib.suppress(Exception):
        if sock is not None:
            sock.abort()
            sock.shutdown()


def exec_status(text: str) -> dict[str, Any]:
    """The Status an exec ends with on channel 3; {} when there is none, a Failure with the text if not JSON."""
    try:
        doc = json.loads(text) if text.strip() else {}
    except ValueError:
        return {"status": "Failure", "message": text.strip()}
    return doc if isinstance(doc, dict) else {}
