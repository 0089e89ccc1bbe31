"""What the kind and kubeconfig backends observe in the running pods: probes, records, readiness, the precheck.

Probes run inside the client pods with the echo program's batch mode: one exec per source pod per round, all
sources side by side, the batch as an argument. The echo control port (request records, probe connections) is
read through the API server's pod proxy. Container readiness comes from the pod's status, watched while it can
still change. `istioctl x precheck` is cross-checked with the suite's own checker, fed by each pod's listeners
and its proxy's inbound clusters.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conformance.backends.base import BackendError, ContainerReadiness, ProbeRequest, by_source
from conformance.backends.kind import pod_exec, watches
from conformance.backends.kind.cluster import ClusterSite
from conformance.backends.kind.runner import Pending, Result
from conformance.backends.kind.workloads import APP_CONTAINER, PROXY_CONTAINER, Workloads
from conformance.backends.precheck import CAT_COMMAND, PrecheckRun, check_pod, parse_istioctl, split_proc_net
from conformance.backends.timeouts import TimeoutConfig
from conformance.world.pods import PodRef
from conformance.world.ports import CONTROL_PORT

_INBOUND_CLUSTER = re.compile(r'"name":\s*"inbound\|(\d+)\|')


class PodProbes:
    """Observations of the workloads' pods, made through the cluster's API."""

    def __init__(self, site: ClusterSite, workloads: Workloads, timeouts: TimeoutConfig) -> None:
        self.site = site
        self.api = site.api
        self.planning = site.planning
        self.workloads = workloads
        self.timeouts = timeouts

    # --- probes and records ----------------------------------------------------------------------------

    def probe(self, requests: Sequence[ProbeRequest], timeout: float) -> list[dict[str, object]]:
        """One `kubectl exec ... echo.py probe --batch JSON` per source pod, all sources side by side.

        The batch is an argument, not stdin: an exec whose stdin must be half-closed to end the input hangs on
        API servers and kubectl versions that do not forward the close (`kubectl exec -i` over SPDY before v5 of
        the remotecommand protocol).
        """
        waits: list[tuple[PodRef, list[int], Pending]] = []
        for source, indexes in by_source(requests).items():
            batch = {"timeout": timeout, "targets": [requests[i].target_json() for i in indexes]}
            command = ["python3", "/app/echo.py", "probe", "--batch", json.dumps(batch, separators=(",", ":"))]
            pod = self.workloads.name_of(source)
            seconds = timeout * 2 + self.timeouts.command
            pending = pod_exec.start_exec(
                self.api, source.namespace, pod, APP_CONTAINER, command, f"probe from {source}", seconds
            )
            waits.append((source, indexes, pending))
        results: list[dict[str, object]] = [{} for _ in requests]
        try:
            for source, indexes, pending in waits:
                self._collect(source, indexes, pending.wait(timeout * 2 + self.timeouts.command + 5), results)
        except BackendError:
            for _, _, pending in waits:
                pending.cancel()
            raise
        return results

    def _collect(self, source: PodRef, indexes: list[int], out: Result, results: list[dict[str, object]]) -> None:
        if not self.planning:
            if out.returncode != 0:
                raise BackendError(
                    f"probe from {source}: the echo program exited {out.returncode}: "
                    f"{' '.join((out.stderr or out.stdout).split())[:200]}"
                )
            # A broken answer is the harness failing, not the mesh: stop with one line rather than record
            # "error" outcomes (or crash on a JSON traceback).
            parsed = _probe_results(out.stdout)
            if parsed is None or len(parsed) != len(indexes):
                preview = " ".join(out.stdout.split())[:200]
                raise BackendError(
                    f"probe from {source}: expected the echo program's results for {len(indexes)} targets, "
                    f"got {preview!r}"
                )
            for i, result in zip(indexes, parsed, strict=True):
                results[i] = result

    def request_record(self, pod: PodRef, request_ids: Sequence[str]) -> list[dict[str, object]]:
        """The echo control port through the API server's pod proxy.

        A sidecar pod excludes the port from capture (its annotation); an enrolled pod has no such exclusion
        (ambient capture ignores it), so the request crosses ztunnel's plaintext inbound, which lets it through
        under PERMISSIVE, the mode the run keeps its enrolled namespace in.
        """
        records: list[dict[str, object]] = []
        ids = list(request_ids)
        for start in range(0, len(ids), 100):
            query = "&".join(f"id={i}" for i in ids[start : start + 100])
            name = self.workloads.name_of(pod)
            out = self.api.proxy_get(
                pod.namespace, name, CONTROL_PORT, "requests", query, f"read the request record of {pod}"
            )
            records += json.loads(out or '{"requests": []}').get("requests", [])
        return records

    # --- the probed containers (issue 11) ---------------------------------------------------------------

    def _pod_json(self, pod: PodRef) -> dict[str, Any]:
        return self.api.pod(pod.namespace, self.workloads.name_of(pod), f"read {pod}")

    def container_readiness(self, pod: PodRef) -> dict[str, ContainerReadiness]:
        """containerStatuses[].ready through the API; settled once Ready, or once the probe had its chances.

        A container that is not Ready has settled when it has run longer than its readiness probe needs to fail
        `failureThreshold` times (initialDelaySeconds + periodSeconds x failureThreshold + timeoutSeconds). While
        one has not settled, the pod is watched until a container's readiness changes or the first of them would
        settle, so a caller that asks again and again is answered by the API server's events, not by polling.
        """
        data = self._pod_json(pod)
        out = _readiness(data)
        waits = [r.settles_in for r in out.values() if not r.readiness.settled and r.settles_in is not None]
        if self.planning or not waits:
            return {name: r.readiness for name, r in out.items()}
        before = {name: r.readiness.ready for name, r in out.items()}

        def changed(items: list[dict[str, Any]]) -> str | None:
            now = {n: r.readiness.ready for n, r in _readiness(items[0]).items()} if items else before
            return None if now != before else "no container's readiness changed"

        name = self.workloads.name_of(pod)
        seconds = min(max(min(waits), 0.5), 30.0)
        data = (
            watches.watch_pod(self.api, pod.namespace, name, changed, seconds, f"watch the readiness of {pod}") or data
        )
        return {name: r.readiness for name, r in _readiness(data).items()}

    def probe_connections(self, pod: PodRef, container: str, after: int = 0) -> list[dict[str, object]]:
        """The container's echo record of accepted connections, through the API server's pod proxy."""
        data = self._pod_json(pod)
        spec = next((c for c in data.get("spec", {}).get("containers", []) if c.get("name") == container), None)
        args = [str(a) for a in (spec or {}).get("args", [])]
        if "--control-port" not in args:
            raise BackendError(f"{pod}: no container {container} with a control port")
        port = args[args.index("--control-port") + 1]
        name = self.workloads.name_of(pod)
        out = self.api.proxy_get(
            pod.namespace,
            name,
            port,
            "connections",
            f"after={after}",
            f"read the probe connections of {pod}/{container}",
        )
        records: list[dict[str, object]] = json.loads(out or '{"connections": []}').get("connections", [])
        return records

    # --- the precheck ----------------------------------------------------------------------------------

    def precheck(self, namespace: str) -> PrecheckRun:
        """Run `istioctl x precheck`, cross-checked with the suite's checker fed by the proxies' own state."""
        self.site.runner.note(
            f"precheck with istioctl {self.site.precheck_version}, once no pod of the run is Terminating"
        )
        self.workloads.wait_no_terminating()
        result = self.site.run(
            self.site.istioctl("x", "precheck", binary=self.site.tools.istioctl_precheck),
            "istioctl x precheck",
            check=False,
        )
        run = parse_istioctl(result.stdout, result.stderr, result.returncode)
        self._ignore_stale_findings(run)
        findings = []
        for ref in [d for d in self.workloads.deployments if d.namespace == namespace and d.app != "client"]:
            pod = self.workloads.name_of(ref)
            try:
                # The pod's listeners from /proc/net/tcp{,6} of its network namespace, read in the echo container:
                # istioctl's `ss` in istio-proxy is not there in a distroless proxy, and pilot-agent is its own binary.
                listing = pod_exec.exec_in(
                    self.api, namespace, pod, APP_CONTAINER, list(CAT_COMMAND), f"list the listeners of {ref}"
                )
                dump = pod_exec.exec_in(
                    self.api,
                    namespace,
                    pod,
                    PROXY_CONTAINER,
                    ["pilot-agent", "request", "GET", "config_dump?resource=dynamic_active_clusters&mask=cluster.name"],
                    f"read the inbound clusters of {ref}",
                )
            except BackendError as err:
                run.warnings.append(f"cross-check skipped for {ref}: {err}")
                continue
            if not _whole_proc_net(listing) or dump.returncode != 0:
                run.warnings.append(f"cross-check skipped for {ref}: could not read its listeners or clusters")
                continue
            exposed = {int(p) for p in _INBOUND_CLUSTER.findall(dump.stdout)}
            findings += check_pod(namespace, pod, exposed, split_proc_net(listing.stdout))
        ours = {(f.namespace, f.pod, f.port) for f in findings}
        theirs = {(f.namespace, f.pod, f.port) for f in run.findings if f.namespace == namespace}
        if not self.planning and ours != theirs:
            run.warnings.append(
                "istioctl and the suite's checker disagree: only istioctl "
                f"{sorted(theirs - ours)}, only the checker {sorted(ours - theirs)}"
            )
        return run

    def _ignore_stale_findings(self, run: PrecheckRun) -> None:
        """Findings about pods of the run's namespaces that are not its current pods say nothing about this run."""
        namespaces = self.workloads.namespaces
        current = {(ref.namespace, name) for ref, name in self.workloads.pod_names.items()}
        stale = [f for f in run.findings if f.namespace in namespaces and (f.namespace, f.pod) not in current]
        if not stale:
            return
        run.findings = [f for f in run.findings if f not in stale]
        run.ignored = stale
        pods = sorted({f"{f.namespace}/{f.pod}" for f in stale})
        run.notes.append(
            f"ignored {len(stale)} istioctl finding(s) for pods that are not this run's current pods: {', '.join(pods)}"
        )


def _whole_proc_net(result: Result) -> bool:
    """`cat /proc/net/tcp /proc/net/tcp6` printed both; or tcp whole and only tcp6 missing (IPv6 off in the pod)."""
    printed = "local_address" in result.stdout
    return printed and (result.returncode == 0 or "tcp6" in result.stderr)


def _probe_results(stdout: str) -> list[dict[str, object]] | None:
    """The `results` of `echo.py probe` output, or None if it is not such a document."""
    try:
        document = json.loads(stdout)
    except ValueError:
        return None
    results = document.get("results") if isinstance(document, dict) else None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        return None
    return results


@dataclass(frozen=True)
class _Probed:
    """A probed container's readiness, and in how many seconds it settles if it has not (None: never known)."""

    readiness: ContainerReadiness
    settles_in: float | None


_PROBE_FIELDS = ("readinessProbe", "livenessProbe", "startupProbe")
RESTART_SLACK_SECONDS = 5.0
"""How long after a liveness or startup probe could have killed a container its restart may take to show in
`restartCount` (the kill's grace, the runtime's restart, the status update): a container not restarted by then has
settled as "never restarted"."""


def _needs(probe: dict[str, Any]) -> float:
    """Seconds a probe needs to fail failureThreshold times from the container's start."""
    return (
        float(probe.get("initialDelaySeconds", 0))
        + float(probe.get("periodSeconds", 10)) * int(probe.get("failureThreshold", 3))
        + float(probe.get("timeoutSeconds", 1))
    )


def _readiness(data: dict[str, Any]) -> dict[str, _Probed]:
    """The probed containers of a pod (the proxy's own readiness is not the app's) from its JSON.

    A container is settled once Ready with only a readiness probe; once restarted (`restartCount` > 0: the
    verdict of a liveness or startup probe); or once it has run longer than its probes need to fail
    `failureThreshold` times (plus RESTART_SLACK_SECONDS where one would restart it).
    """
    specs = {c["name"]: c for c in data.get("spec", {}).get("containers", [])}
    out: dict[str, _Probed] = {}
    for status in data.get("status", {}).get("containerStatuses", []):
        name = str(status.get("name"))
        probes = {f: specs.get(name, {}).get(f) or {} for f in _PROBE_FIELDS}
        if name == PROXY_CONTAINER or not any(probes.values()):
            continue
        started = _started_at(status)
        restarts = int(status.get("restartCount", 0) or 0)
        restarting = bool(probes["livenessProbe"] or probes["startupProbe"])
        needs = max(_needs(p) for p in probes.values() if p) + (RESTART_SLACK_SECONDS if restarting else 0.0)
        ready = bool(status.get("ready"))
        left = None if started is None else needs - (_now() - started)
        settled = (ready and not restarting) or restarts > 0 or (left is not None and left <= 0)
        reason = "" if ready else "containerStatuses ready=false"
        if restarts:
            waiting = status.get("state", {}).get("waiting", {}).get("reason")
            last = status.get("lastState", {}).get("terminated", {}).get("reason")
            reason = "; ".join(r for r in (reason, f"restartCount {restarts}", waiting, last and f"last: {last}") if r)
        out[name] = _Probed(ContainerReadiness(ready, settled, reason, started, restarts), None if settled else left)
    return out


def _now() -> float:
    return datetime.datetime.now(datetime.UTC).timestamp()


def _started_at(status: dict[str, Any]) -> float | None:
    """When a container's current run started (containerStatuses[].state.running.startedAt), epoch seconds."""
    text = status.get("state", {}).get("running", {}).get("startedAt")
    if not text:
        return None
    return datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
