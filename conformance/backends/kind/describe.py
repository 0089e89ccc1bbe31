"""What a person reads about pods on failure, rendered from the API's JSON: `kubectl describe` and `get` lines.

The backends read pods and events through the official client (api.py), so no kubectl prints them; these lines
carry what a failed run's reader looks for first: phase, addresses, conditions, each container's state, ready
flag and restarts, and the events, oldest first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


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
