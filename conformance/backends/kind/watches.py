"""Waiting on the kind and kubeconfig backends' clusters: list-then-watch, the pattern of client-go's informers.

List (a complete, consistent state), judge, watch from the list's resourceVersion and judge again after every
event; when a watch ends (the server closes it at timeoutSeconds) or cannot be served from that resourceVersion,
list again. The watch cache says the latter with HTTP 200 and one ERROR event holding a Status (cacher
newErrWatcher): 410 Expired ("too old resource version"), or 504 with the ResourceVersionTooLarge cause (its cache
is behind the list's). An ERROR with another code ends the wait in one line. Nothing sleeps, except as long as a
Status's retryAfterSeconds asks.

Watches are read here, line by line, rather than through kubernetes.watch: its ERROR handling looks up
`raw_object`, which it sets only when it deserializes every object into the client's models.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from conformance.backends.base import BackendError
from conformance.backends.kind.api import ApiError, KubeApi
from conformance.backends.kubeclient import first_line, status_message

WATCH_ROUND_SECONDS = 60
"""How long one watch request may stay open before it is listed and watched again."""
RELIST_CODES = (410, 504)
"""The codes of a watch's ERROR event after which the wait lists again: 410 Expired (the resourceVersion is older
than the watch cache's window) and 504 (the cache has not reached it yet: "Too large resource version")."""

Judge = Callable[[list[dict[str, Any]]], str | None]
"""Looks at the objects of a list or watch: None when the wait is over, else why not yet (one line)."""


class NotReady(BackendError):
    """What a wait is still waiting for (one line); the watch goes on until the timeout."""


def judge_from(check: Callable[[list[dict[str, Any]]], None]) -> Judge:
    """A watch's judge from a check that raises NotReady with the reason it is not done yet."""

    def judged(items: list[dict[str, Any]]) -> str | None:
        try:
            check(items)
        except NotReady as err:
            return str(err)
        return None

    return judged


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


def _watch_until(api: KubeApi, path: str, judge: Judge, timeout: float, quiet: bool = False, **select: str) -> Any:
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
        listing = api.get_json(path, query)
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
            error = _watch(api, path, watch, seconds + 15, objects, judge)
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
    api: KubeApi,
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

    client = api.client()
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


def rollout(api: KubeApi, namespace: str, kind: str, name: str, timeout: float, what: str) -> None:
    """Wait until a Deployment or DaemonSet has rolled out (`kubectl rollout status`), by watching it."""
    path = f"/apis/apps/v1/namespaces/{namespace}/{kind}s"

    def judge(items: list[dict[str, Any]]) -> str | None:
        return rollout_reason(kind, next((i for i in items if i["metadata"]["name"] == name), None))

    short = "deploy" if kind == "deployment" else "ds"
    api.call(
        lambda: _watch_until(api, path, judge, timeout, field_selector=f"metadata.name={name}"),
        what=what,
        kubectl=["-n", namespace, "rollout", "status", f"{short}/{name}", f"--timeout={int(timeout)}s"],
        request=f"GET {path}?fieldSelector=metadata.name={name}, then watch",
    )


def watch_pod(
    api: KubeApi, namespace: str, name: str, judge: Judge, seconds: float, what: str
) -> dict[str, Any] | None:
    """Watch one pod for up to `seconds` until `judge` is content; the pod as last seen (None: it is gone)."""
    path = f"/api/v1/namespaces/{namespace}/pods"

    def watch() -> Any:
        items = _watch_until(
            api,
            path,
            judge,
            seconds,
            quiet=True,
            field_selector=f"metadata.name={name}",
        )
        return items[0] if items else None

    found = api.call(
        watch,
        what=what,
        kubectl=["-n", namespace, "get", "pod", name, "-o", "json", "--watch"],
        request=f"GET {path}?fieldSelector=metadata.name={name}, then watch",
    )
    return dict(found) if found else None


def wait_pods(api: KubeApi, namespace: str, judge: Judge, timeout: float, what: str) -> list[dict[str, Any]]:
    """Watch the namespace's pods until `judge` is content; the pods it judged."""
    path = f"/api/v1/namespaces/{namespace}/pods"
    items = api.call(
        lambda: _watch_until(api, path, judge, timeout),
        what=what,
        kubectl=["-n", namespace, "get", "pods", "-o", "json", "--watch"],
        request=f"GET {path}, then watch",
    )
    return list(items or [])


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
