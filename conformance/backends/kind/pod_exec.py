"""Commands in the pods of the kind and kubeconfig backends' clusters, over the API's exec websocket.

v5.channel.k8s.io from Kubernetes 1.30, v4.channel.k8s.io before; the probe batch is an argument, so no stdin
half-close is needed (old API servers do not forward it). The exit status comes from the Status on channel 3.
Every exec has a wall-clock bound (kubeclient.run_exec): the timeout config's `command` unless the caller gives
one. A refused, dropped or unfinished exec is one line (ApiError).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conformance.backends.kind.api import ApiError, KubeApi
from conformance.backends.kind.runner import Pending, Result
from conformance.backends.kubeclient import ExecDropped, ExecRefused, run_exec


def _exec(api: KubeApi, namespace: str, pod: str, container: str, command: Sequence[str], timeout: float) -> Result:
    """The exec, bounded by `timeout` however the connection behaves (kubeclient.run_exec); one line if not."""
    try:
        out = run_exec(api.configuration(), namespace, pod, container, command, timeout)
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


def exec_in(
    api: KubeApi,
    namespace: str,
    pod: str,
    container: str,
    command: Sequence[str],
    what: str,
    timeout: float | None = None,
) -> Result:
    """Run a command in a container; its exit status, stdout and stderr (a non-zero status is not an error)."""
    seconds = timeout or api.timeout
    result = api.call(
        lambda: _exec(api, namespace, pod, container, command, seconds),
        what=what,
        kubectl=["-n", namespace, "exec", pod, "-c", container, "--", *command],
        request=_exec_request(namespace, pod, container),
    )
    return result if isinstance(result, Result) else Result(tuple(command), 0, "", "")


def start_exec(
    api: KubeApi, namespace: str, pod: str, container: str, command: Sequence[str], what: str, timeout: float
) -> Pending:
    """Start an exec now, in a thread, so that execs in several pods run side by side; wait() gives a Result."""
    return api.runner.start_call(
        api.errors(lambda: _exec(api, namespace, pod, container, command, timeout), what),
        what=what,
        kubectl=api.kubectl("-n", namespace, "exec", pod, "-c", container, "--", *command),
        request=_exec_request(namespace, pod, container),
    )


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
