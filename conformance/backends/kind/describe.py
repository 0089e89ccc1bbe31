"""What a person reads about pods on failure: read through the API and rendered as `kubectl describe` and `get`.

The backends read pods, logs and events through the official client (api.py), so no kubectl prints them; these
lines carry what a failed run's reader looks for first: phase, addresses, conditions, each container's state, ready
flag and restarts, and the events, oldest first. Each read is one step of the transcript; the diagnostics turn a
read that fails into its own text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from conformance.backends.kind.api import KubeApi

_ISTIO_NETWORKING = "networking.istio.io"
_SIDECAR_VERSION = "v1beta1"
"""The Sidecar API version listed for diagnostics (served by every Istio from 1.9 on)."""


def event_line(event: Mapping[str, Any]) -> str:
    """One event: when, type, reason, object, message (and how many times)."""
    involved = event.get("involvedObject", {})
    when = event.get("lastTimestamp") or event.get("eventTime") or ""
    count = event.get("count")
    times = f" (x{count})" if count and int(count) > 1 else ""
    return (
        f"{when}  {event.get('type', '')}  {event.get('reason', '')}  "
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}  {event.get('message', '')}{times}"
    )


def pod_line(pod: Mapping[str, Any]) -> str:
    """One pod: ready containers, phase (Terminating when deleted), restarts, IP, node."""
    meta, status = pod.get("metadata", {}), pod.get("status", {})
    statuses = status.get("containerStatuses", [])
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
    phase = "Terminating" if meta.get("deletionTimestamp") else status.get("phase", "?")
    return (
        f"pod/{meta.get('name')}  {ready}/{len(statuses)}  {phase}  restarts {restarts}  "
        f"{status.get('podIP', '')}  {pod.get('spec', {}).get('nodeName', '')}"
    )


def describe_pod(pod: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> str:
    """A pod's phase, addresses, conditions, containers and events, one fact per line."""
    meta, status = pod.get("metadata", {}), pod.get("status", {})
    lines = [
        f"Name:       {meta.get('name')}",
        f"Namespace:  {meta.get('namespace')}",
        f"Node:       {pod.get('spec', {}).get('nodeName', '')}",
        f"Status:     {'Terminating' if meta.get('deletionTimestamp') else status.get('phase', '?')}",
        f"IPs:        {', '.join(i.get('ip', '') for i in status.get('podIPs', [])) or status.get('podIP', '')}",
        "Conditions: " + ", ".join(f"{c.get('type')}={c.get('status')}" for c in status.get("conditions", [])),
    ]
    for kind in ("initContainerStatuses", "containerStatuses"):
        for c in status.get(kind, []):
            state = c.get("state", {})
            (name, detail), *_ = state.items() if state else [("unknown", {})]
            why = detail.get("reason") or detail.get("exitCode") or ""
            lines.append(
                f"Container {c.get('name')}: {name}{f' ({why})' if why != '' else ''}, ready={c.get('ready')}, "
                f"restarts={c.get('restartCount', 0)}, image={c.get('image', '')}"
            )
    lines.append("Events:")
    lines += [f"  {event_line(e)}" for e in events] or ["  (none)"]
    return "\n".join(lines)


def logs(api: KubeApi, namespace: str, pod: str, container: str, tail: int, what: str) -> str:
    """The last `tail` lines of a container's log."""
    path = f"/api/v1/namespaces/{namespace}/pods/{pod}/log"
    text = api.call(
        lambda: api.request("GET", path, [("container", container), ("tailLines", str(tail))]).decode(errors="replace"),
        what=what,
        kubectl=["-n", namespace, "logs", pod, "-c", container, f"--tail={tail}"],
        request=f"GET {path}?container={container}&tailLines={tail}",
    )
    return str(text or "")


def daemonset_logs(api: KubeApi, namespace: str, name: str, tail: int, what: str) -> str:
    """The logs of every container of every pod of a DaemonSet (`kubectl logs ds/NAME` reads only one pod)."""

    def read() -> str:
        ds = api.get_json(f"/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}")
        labels = ds.get("spec", {}).get("selector", {}).get("matchLabels", {})
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = api.get_json(f"/api/v1/namespaces/{namespace}/pods", [("labelSelector", selector)])
        parts = []
        for pod in pods.get("items", []):
            pod_name = pod["metadata"]["name"]
            for container in pod.get("spec", {}).get("containers", []):
                log = api.request(
                    "GET",
                    f"/api/v1/namespaces/{namespace}/pods/{pod_name}/log",
                    [("container", container["name"]), ("tailLines", str(tail))],
                ).decode(errors="replace")
                parts.append(f"== {pod_name}/{container['name']}\n{log.rstrip()}")
        return "\n".join(parts)

    text = api.call(
        read,
        what=what,
        kubectl=["-n", namespace, "logs", f"ds/{name}", "--all-containers", f"--tail={tail}"],
        request=f"GET the DaemonSet {namespace}/{name}, its pods, then each container's log",
    )
    return str(text or "")


def events(api: KubeApi, namespace: str, what: str, pod: str | None = None) -> str:
    """The namespace's events (or one pod's), oldest first, one line each."""
    path = f"/api/v1/namespaces/{namespace}/events"
    query = [("fieldSelector", f"involvedObject.name={pod}")] if pod else []

    def read() -> str:
        items = api.get_json(path, query).get("items", [])
        items.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        return "\n".join(event_line(e) for e in items) or "(no events)"

    args = ["-n", namespace, "get", "events", "--sort-by=.lastTimestamp"]
    if pod:
        args += ["--field-selector", f"involvedObject.name={pod}"]
    text = api.call(
        read, what=what, kubectl=args, request=f"GET {path}" + (f"?{query[0][0]}={query[0][1]}" if query else "")
    )
    return str(text or "")


def overview(api: KubeApi, namespace: str, what: str) -> str:
    """Deployments, pods, Services and Sidecars of a namespace, one line each (`kubectl get all,sidecars`)."""

    def read() -> str:
        from kubernetes.client.exceptions import ApiException

        lines = []
        for d in api.get_json(f"/apis/apps/v1/namespaces/{namespace}/deployments").get("items", []):
            status = d.get("status", {})
            lines.append(
                f"deployment/{d['metadata']['name']}  ready {status.get('readyReplicas', 0)}/"
                f"{d.get('spec', {}).get('replicas', 1)}  updated {status.get('updatedReplicas', 0)}"
            )
        for p in api.get_json(f"/api/v1/namespaces/{namespace}/pods").get("items", []):
            lines.append(pod_line(p))
        for s in api.get_json(f"/api/v1/namespaces/{namespace}/services").get("items", []):
            ports = ",".join(
                f"{p.get('port')}>{p.get('targetPort', p.get('port'))}" for p in s.get("spec", {}).get("ports", [])
            )
            lines.append(f"service/{s['metadata']['name']}  {s.get('spec', {}).get('clusterIP', '')}  {ports}")
        try:
            sidecars = api.get_json(
                f"/apis/{_ISTIO_NETWORKING}/{_SIDECAR_VERSION}/namespaces/{namespace}/sidecars"
            ).get("items", [])
        except ApiException as err:
            if err.status != 404:
                raise
            sidecars = []  # no Istio CRDs (yet)
        lines += [f"sidecar/{s['metadata']['name']}" for s in sidecars]
        return "\n".join(lines)

    text = api.call(
        read,
        what=what,
        kubectl=["-n", namespace, "get", "all,sidecars", "-o", "wide"],
        request=f"GET the deployments, pods, services and sidecars of {namespace}",
    )
    return str(text or "")


def describe(api: KubeApi, namespace: str, pod: str, what: str) -> str:
    """A pod's phase, addresses, conditions, containers and events (`kubectl describe pod`)."""

    def read() -> str:
        data = api.get_json(f"/api/v1/namespaces/{namespace}/pods/{pod}")
        events = api.get_json(
            f"/api/v1/namespaces/{namespace}/events", [("fieldSelector", f"involvedObject.name={pod}")]
        ).get("items", [])
        return describe_pod(data, events)

    text = api.call(
        read,
        what=what,
        kubectl=["-n", namespace, "describe", "pod", pod],
        request=f"GET /api/v1/namespaces/{namespace}/pods/{pod} and its events",
    )
    return str(text or "")
