"""What the backends and `impact` share about the official `kubernetes` client: its configuration and its errors.

The client reports a refused request as an ApiException whose body is a Kubernetes Status, and a refused exec
upgrade as a websocket handshake error with the Status inside a string. A user needs one line from either: the
HTTP status and the Status message (e.g. `HTTP 403: pods "x" is forbidden: User "dev" cannot create resource
"pods/exec"`), never the client's multi-line dump of headers.
"""

from __future__ import annotations

import json
import re
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


@dataclass(frozen=True)
class ExecOutput:
    """What a command run through the API's exec printed, and whether it ended within its time."""

    finished: bool
    stdout: str
    stderr: str
    status: dict[str, Any]
    """The Status on channel 3 (`exec_status`): `{"status": "Success"}`, or the failure and its exit code."""


def open_exec(core_api: Any, namespace: str, pod: str, container: str, command: Sequence[str], timeout: float) -> Any:
    """Open an exec websocket (v4.channel.k8s.io) running `command`, with no stdin (nothing to half-close).

    A refused upgrade raises what the client raises (ApiException with status 0, or the websocket's own error):
    `handshake_reason` reads the HTTP status and message from it.
    """
    from kubernetes.stream import stream

    return stream(
        core_api.connect_get_namespaced_pod_exec,
        pod,
        namespace,
        container=container,
        command=list(command),
        stdin=False,
        stdout=True,
        stderr=True,
        tty=False,
        _preload_content=False,
        _request_timeout=timeout,
    )


def finish_exec(ws: Any, timeout: float) -> ExecOutput:
    """Read an open exec until it ends (or `timeout` passes), then close it."""
    try:
        ws.run_forever(timeout=timeout)
        finished = not ws.is_open()
        stdout, stderr, error = ws.read_channel(1), ws.read_channel(2), ws.read_channel(3)
    finally:
        ws.close()
    return ExecOutput(finished, stdout, stderr, exec_status(error))


def exec_status(text: str) -> dict[str, Any]:
    """The Status an exec ends with on channel 3; {} when there is none, a Failure with the text if not JSON."""
    try:
        doc = json.loads(text) if text.strip() else {}
    except ValueError:
        return {"status": "Failure", "message": text.strip()}
    return doc if isinstance(doc, dict) else {}
