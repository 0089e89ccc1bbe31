"""The checks a conformance test makes of its cells: probe them, judge them against the spec, record, fail.

A test function in `conformance.suite` receives a `ConformanceRun` (the plugin's `conformance` fixture) and calls
the check its case's part names: `check_cells` (reachability, source address, in-pod paths), `check_arrival` (what
the servers recorded), `check_switch` (the legacy round trip) or `check_precheck` (istioctl's IST0143). Each
records every cell in the report and fails the test with every cell that differs, naming the pods involved
(`INVOLVED`) so the plugin attaches their diagnostics. The probe cases' checks are in `probe_checks`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import pytest

from conformance.backends.base import BackendError
from conformance.engine.probe import Observation, judge
from conformance.run.session import ConformanceSession
from conformance.spec.dimensions import CellKey, DefaultEndpoint, PortKind, Profile
from conformance.spec.semantics import expect, precheck_finding
from conformance.suite.cases import ConformanceCase
from conformance.world.namespaces import NS_MESH
from conformance.world.pods import PodRef
from conformance.world.probe_pods import probe_pods_of, probed_containers, restartable_ports

INVOLVED = pytest.StashKey[list[PodRef]]()
"""On a test's item: the pods its failed check involved, whose diagnostics the plugin attaches to the failure."""

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _backend_errors_fail(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """A backend that cannot do its part fails the test with its one line, not with a traceback of the suite."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except BackendError as err:
            message = f"backend: {err}"
        # Outside the except block, so the failure is not reported as raised "during handling" of the error.
        pytest.fail(message, pytrace=False)

    return wrapper


@dataclass
class ConformanceRun:
    """What a conformance test calls: judge its case's cells under its profile and record them."""

    session: ConformanceSession
    case: ConformanceCase
    profile: Profile
    item: pytest.Item

    @property
    def test_name(self) -> str:
        """The case and profile, as the report names the test."""
        return f"{self.case.name}[{self.profile.value}]"

    def cells(self, profile: Profile) -> tuple[CellKey, ...]:
        """The case's cells under `profile` that the deployed world can answer."""
        world = self.session.world
        cells = self.case.cells(profile, self.session.settings.family, self.session.traffic)
        return tuple(c for c in cells if world.deployed(c))

    def void(self, reason: str, pods: Sequence[PodRef]) -> str:
        """A failure's `reason`, led by the deaths of the build's processes that carry these pods' traffic.

        For checks that do not go through the prober's observations (probe cells): a dead process, not the
        rules, is then the cause.
        """
        if not reason:
            return reason
        self.session.note_deaths()
        dead = [d.summary for d in self.session.cluster.deaths() if d.ongoing and set(pods) & set(d.pods)]
        return f"void, {' and '.join(dead)}: {reason}" if dead else reason

    def _involve(self, cells: Sequence[Any]) -> None:
        pods = self.item.stash.setdefault(INVOLVED, [])
        world = self.session.world
        for cell in cells:
            for pod in (world.server_for(cell), world.source_pod(cell)):
                if pod not in pods:
                    pods.append(pod)

    def _observe(self, cells: Sequence[Any], fresh: bool = False) -> dict[Any, Observation]:
        start = time.perf_counter()
        observations = self.session.prober.observe(cells, fresh=fresh)
        self.session.note_deaths()
        timings = self.session.report.timings
        timings["probes"] = timings.get("probes", 0.0) + time.perf_counter() - start
        return observations

    @_backend_errors_fail
    def check_cells(self, case: ConformanceCase) -> None:
        """Probe (or reuse) the case's cells, judge the case's part of each, fail with every differing cell."""
        cells = self.cells(self.profile)
        self.session.switch(self.profile)
        self._judge(cells, self._observe(cells))

    def _judge(self, cells: Sequence[Any], observations: dict[Any, Observation]) -> None:
        failures = []
        for cell in cells:
            expected = expect(cell, self.session.traffic)
            verdict = judge(expected, observations[cell])
            self.session.report.record_cell(self.test_name, cell, expected, observations[cell], verdict, self.case.part)
            if not verdict.holds(self.case.part):
                failures.append((cell, verdict.reason))
        self._raise(failures, len(cells))

    def _raise(self, failures: list[tuple[Any, str]], total: int) -> None:
        if not failures:
            return
        self._involve([c for c, _ in failures])
        lines = [f"  {cell.id}: {reason}" for cell, reason in failures[:60]]
        if len(failures) > 60:
            lines.append(f"  ... and {len(failures) - 60} more (see the conformance report)")
        pytest.fail(f"{len(failures)} of {total} cells differ from the spec:\n" + "\n".join(lines), pytrace=False)

    @_backend_errors_fail
    def check_arrival(self, case: ConformanceCase) -> None:
        """Compare the servers' request records with what the clients observed."""
        cells = self.cells(self.profile)
        self.session.switch(self.profile)
        observations = self._observe(cells)
        world, cluster = self.session.world, self.session.cluster
        by_server: dict[PodRef, list[Any]] = {}
        for cell in cells:
            by_server.setdefault(world.server_for(cell), []).append(cell)
        failures = []
        for server, server_cells in by_server.items():
            ids = [i for c in server_cells for i in observations[c].request_ids]
            seen: dict[str, list[dict[str, object]]] = {}
            for record in cluster.request_record(server, ids):
                seen.setdefault(str(record.get("request_id")), []).append(record)
            for cell in server_cells:
                reason = _arrival_problem(expect(cell, self.session.traffic).reachable, observations[cell], seen)
                if reason is not None and observations[cell].voided_by:
                    reason = f"void, {' and '.join(observations[cell].voided_by)}: {reason}"
                self.session.report.record_arrival(self.test_name, cell, reason is None, reason or "")
                if reason is not None:
                    failures.append((cell, reason))
        self._raise(failures, len(cells))

    @_backend_errors_fail
    def check_switch(self, case: ConformanceCase) -> None:
        """Passthrough -> legacy -> passthrough on one install; after each switch the profile's cells hold.

        Scheduled after the other sidecar tests (ambient's come last): when the legacy tests have already switched
        the mesh (current mode legacy), the first leg is done and only the way back costs a switch; run alone, the
        test makes both switches itself.
        Observations are fresh, made after the switch.
        """
        legs: tuple[Profile, ...] = (Profile.LEGACY, Profile.PASSTHROUGH)
        if self.session.cluster.inbound_mode == Profile.PASSTHROUGH.value:
            legs = (Profile.PASSTHROUGH, *legs)
        for target in legs:
            self.session.switch(target)
            cells = self.cells(target)
            self._judge(cells, self._observe(cells, fresh=True))

    @_backend_errors_fail
    def check_precheck(self, case: ConformanceCase) -> None:
        """Run the precheck and compare its findings with the spec's."""
        self.session.switch(self.profile)
        world = self.session.world
        run = self.session.cluster.precheck(NS_MESH)
        expected = set()
        for server in world.mesh_servers:
            endpoint = world.endpoint_of(server)
            for port in world.server_ports:
                kind = port.kind
                if precheck_finding(endpoint, kind, port.bind)[0]:
                    expected.add((server.app, port.number))
        # The probe pods' probed ports are declared in their Services: a loopback one is a finding too. A container
        # the kubelet may restart (liveness, startup) listens nowhere between runs: its port is not asked.
        probe_pods = [p for p, _ in probe_pods_of(NS_MESH)]
        unasked = {(p.app, port) for p in probe_pods for port in restartable_ports(world.family)}
        for probe_server in probe_pods:
            for container in probed_containers(world.family):
                if container.may_restart:
                    continue
                if precheck_finding(DefaultEndpoint.NONE, PortKind.DECLARED, container.bind)[0]:
                    expected.add((probe_server.app, container.port))
        apps = sorted([*(s.app for s in world.mesh_servers), *(p.app for p in probe_pods)], key=len, reverse=True)
        got = set()
        problems = list(run.warnings)
        for finding in run.findings:
            # istioctl checks every namespace; on a shared cluster (--backend kubeconfig) other namespaces may
            # have findings of their own, which say nothing about this run's workloads.
            if finding.namespace != NS_MESH:
                continue
            app = next((a for a in apps if finding.pod.startswith(a + "-")), finding.pod)
            if (app, finding.port) not in unasked:
                got.add((app, finding.port))
        for line in run.stdout.splitlines():
            if "IST0143" in line and not any(f.printed_as(line.strip()) for f in [*run.findings, *run.ignored]):
                problems.append(f"not in istioctl's IST0143 format: {line!r}")
        missing, extra = sorted(expected - got), sorted(got - expected)
        if missing:
            problems.append("missing IST0143 for " + ", ".join(f"{a}:{p}" for a, p in missing))
        if extra:
            problems.append("unexpected IST0143 for " + ", ".join(f"{a}:{p}" for a, p in extra))
        want_exit = 1 if expected else 0
        if run.exit_code != want_exit:
            problems.append(f"exit status {run.exit_code}, istioctl's rules give {want_exit}")
        self.session.report.record_precheck(
            self.test_name, self.profile.value, run, [f"{a}:{p}" for a, p in sorted(expected)], problems
        )
        if problems:
            self.item.stash.setdefault(INVOLVED, []).extend(world.mesh_servers)
            pytest.fail("precheck differs:\n  " + "\n  ".join(problems) + "\n" + run.stdout + run.stderr, pytrace=False)


def _arrival_problem(reachable: bool, observation: Observation, seen: dict[str, list[dict[str, object]]]) -> str | None:
    if not reachable:
        arrived = [i for i in observation.request_ids if i in seen]
        if arrived:
            peers = {str(r.get("peer")) for i in arrived for r in seen[i]}
            return f"{len(arrived)} request(s) that must not arrive reached the app (from {', '.join(sorted(peers))})"
        return None
    for attempt in observation.attempts:
        if attempt.label != "ok":
            continue
        records = seen.get(attempt.request_id, [])
        if len(records) != 1:
            return f"request {attempt.request_id} was answered but recorded {len(records)} times"
        if records[0].get("peer") != attempt.peer:
            return f"request {attempt.request_id}: echoed peer {attempt.peer}, recorded {records[0].get('peer')}"
    return None
