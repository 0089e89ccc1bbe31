"""The session of a run: the cluster, the world deployed on it, the prober and the report, from setup to teardown.

The plugin's session fixture creates one (`make_cluster`, `ConformanceSession`) and lives through `live`; the checks
a test makes (`conformance.suite.checks`) read the cluster, the world and the report through it, and switch the
mesh to their profile with `switch`.
"""

from __future__ import annotations

import datetime
import gc
import time
from collections.abc import Iterator, Sequence

import pytest

from conformance.backends.base import BackendError, Cluster
from conformance.engine.probe import Prober
from conformance.report.files import Report
from conformance.run import diagnostics
from conformance.run.settings import Outputs, Settings
from conformance.spec.dimensions import AMBIENT_MESH_SETTING, MESH_PROFILES, Profile
from conformance.spec.semantics import traffic_behaviour
from conformance.world.layout import World

GC_THRESHOLD = 10_000
"""Allocations between two collections of the garbage collector's first generation during a run (Python: 700)."""


def make_cluster(settings: Settings) -> Cluster:
    """The backend the options ask for (not started)."""
    if settings.backend == "emulated":
        from conformance.backends.emulated.cluster import EmulatedCluster

        return EmulatedCluster(
            settings.family.value,
            sidecar_command=settings.emulator_sidecar,
            inbound_mode=settings.mesh.default_profile.value,
            ready_timeout=settings.timeouts.pod_ready,
            ztunnel_command=settings.emulator_ztunnel,
        )
    from conformance.backends.kind.backend import make_kube_cluster

    options = {**settings.backend_options, "artifacts_dir": settings.artifacts_dir}
    return make_kube_cluster(settings.backend, settings.family.value, options, settings.timeouts)


class ConformanceSession:
    """The cluster, the world, the prober and the report of one run."""

    def __init__(self, settings: Settings, cluster: Cluster) -> None:
        self.settings = settings
        self.cluster = cluster
        self.world = World.for_mesh(settings.family, settings.mesh)
        self.prober = Prober(cluster, self.world, settings.timeouts)
        # Where releases differ in the spec (the emulated mesh models the current release), cells are judged
        # as the mesh under test's release behaves.
        self.traffic = traffic_behaviour(None if settings.mesh.name == "emulated" else settings.mesh.version)
        # Every profile appears in the report: one the mesh lacks shows as skipped, with its reasons; one no
        # selected test belongs to (--profile, -k) as not selected.
        self.report = Report(
            settings.report_dir, settings.mesh, cluster.mesh_info(), cluster.backend, settings.family, tuple(Profile)
        )
        where = f"under {settings.artifacts_dir}/<profile>/<Case>/" if settings.artifacts_dir else "above"
        self.report.timeout_hint = f"in the failed test's diagnostics, {where}"
        self.started = time.perf_counter()
        self.shown_pods: set[str] = set()

    def live(self, planned: Sequence[Profile], outputs: Outputs | None) -> Iterator[ConformanceSession]:
        """Deploy the world, yield the session, tear everything down at the end (also on failure or Ctrl-C).

        `planned` holds the profile of each collected suite test. A cluster that cannot be set up fails the first
        test with one line (its diagnostics saved); one that cannot be torn down fails the same way.
        """
        settings, cluster = self.settings, self.cluster
        self.report.planned = {p.value: planned.count(p) for p in Profile}
        if outputs is not None and outputs.artifacts is not None:
            # Only what an earlier run recorded writing (checked before anything ran): a folder present means
            # this run failed there. The kind/kubeconfig commands log stays, appended to.
            outputs.artifacts.clear(outputs.artifacts.places)
        self.report.write()
        # What pytest and the suite have loaded lives as long as the run: frozen, it is out of the garbage
        # collector's full passes, which the probes' allocations trigger, and pytest's last one at exit (~0.2 s of
        # a run otherwise). It stays frozen: the process ends with the run.
        gc.freeze()
        # The probes allocate by the hundred thousand (streams, results, observations that live as long as the run):
        # at Python's default threshold (700) that was ~750 collections a run, their passes over the surviving
        # observations ~0.4 s of the harness's one thread. A larger first generation makes them ~15x rarer; only
        # reference cycles wait for the collector, and they wait a little longer.
        gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
        start = time.perf_counter()
        try:
            problem = None
            try:
                cluster.up(self.world.manifests())
            except BackendError as err:
                problem = f"{cluster.backend} backend: {err}"
            if problem is not None:
                logs = diagnostics.save_setup(
                    cluster,
                    self.world.servers + tuple(self.world.clients.values()),
                    settings.artifacts_dir,
                    outputs.claim() if outputs is not None else None,
                )
                if outputs is not None:
                    outputs.claim_backend_files()
                self.report.record_setup_error(problem, logs)
                self.report.write()
                pytest.fail(problem, pytrace=False)
            self.report.timings["setup"] = time.perf_counter() - start
            yield self
        finally:
            start = time.perf_counter()
            teardown_problem = None
            try:
                self.note_deaths()
                cluster.down()
            except BackendError as err:
                teardown_problem = f"{cluster.backend} backend, tearing down: {err}"
            self.report.timings["teardown"] = time.perf_counter() - start
            self.report.write()
        # Reached only when nothing else is on its way out (a failure or Ctrl-C keeps its own message).
        if teardown_problem is not None:
            pytest.fail(teardown_problem, pytrace=False)

    def switch(self, profile: Profile) -> None:
        """Put the mesh in the profile's install and mode (baseline servers are unaffected by either)."""
        # Ambient runs with the mesh in LOCALHOST mode, which must change nothing there (AMBIENT_MESH_SETTING).
        target = AMBIENT_MESH_SETTING if profile is Profile.AMBIENT else profile
        start = time.perf_counter()
        if target in MESH_PROFILES and self.cluster.use_profile(profile.value, target.value):
            self.report.timings["profile_switches"] = self.report.timings.get("profile_switches", 0.0) + (
                time.perf_counter() - start
            )

    def note_deaths(self) -> None:
        """Record the build's processes that died (each once; the report and the summary name them first)."""
        for death in self.cluster.deaths():
            self.report.record_death(death)

    def finish(self, interrupted: bool) -> None:
        """The report's last write: when the run ended, whether it was interrupted, how long it took."""
        self.report.finished = datetime.datetime.now(datetime.UTC)
        self.report.interrupted = interrupted
        self.report.timings["total"] = time.perf_counter() - self.started
        self.report.write(final=True)

    def ci_skip_problem(self) -> str | None:
        """Under CI the emulated run must run every case: the line that says it skipped some (None: it did not)."""
        skipped = [t for t in self.report.tests.values() if t.outcome == "skipped"]
        if self.settings.in_ci and self.settings.backend == "emulated" and skipped:
            return f"CI=true: the emulated run skipped {len(skipped)} test(s); it must run every case"
        return None


RUN = pytest.StashKey[ConformanceSession]()
"""The run's session on pytest's config, once the session fixture has made it."""
