"""The pytest plugin: options, the cluster and probing fixtures, parametrization, failure context, the report.

Registered through the `pytest11` entry point, so `pytest --pyargs conformance.suite` finds it. Every option
lives in the `mesh-inbound-conformance` group; malformed or incompatible options stop the run in
`pytest_configure` with one line, before anything is created.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import os
import shlex
import time
import warnings
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

import pytest

from conformance.backends.base import BackendError, Cluster, PrerequisiteError
from conformance.backends.timeouts import TimeoutConfig, describe, parse_timeout_config
from conformance.engine.probe import Observation, Prober, judge
from conformance.report.files import Report
from conformance.report.json_document import JSON_NAME
from conformance.report.markdown import MD_NAME, death_lines
from conformance.report.record import TestRecord
from conformance.run import diagnostics
from conformance.run.interrupt import Interrupted, Interrupts, trim_traceback
from conformance.run.outputs import (
    SETUP_FOLDER,
    OutputFolder,
    artifacts_folder,
    case_dir,
    check_writable_dir,
    earlier_report_file,
    make_output_dirs,
    output_dir,
    report_folder,
)
from conformance.spec.capabilities import (
    Capability,
    MeshCapabilities,
    claimed_capabilities,
    emulated_capabilities,
    istio_capabilities,
    proxy_image,
)
from conformance.spec.dimensions import MESH_PROFILES, CellKey, DefaultEndpoint, IpFamily, PortKind, Profile
from conformance.spec.semantics import expect, precheck_finding, traffic_behaviour
from conformance.suite.cases import ConformanceCase
from conformance.world.layout import World
from conformance.world.namespaces import NS_MESH
from conformance.world.pods import PodRef
from conformance.world.ports import SERVER_PORTS
from conformance.world.probe_pods import PROBED_CONTAINERS, probe_pods_of

BACKENDS = ("emulated", "kind", "kubeconfig")
SUITE_MARKER = "conformance"


@dataclass
class Settings:
    """The validated options of a run."""

    backend: str
    family: IpFamily
    profiles: tuple[Profile, ...]
    explicit_profiles: bool
    report_dir: Path | None
    artifacts_dir: Path | None
    timeouts: TimeoutConfig
    mesh: MeshCapabilities
    emulator_sidecar: list[str] | None
    in_ci: bool
    backend_options: dict[str, Any] = field(default_factory=dict)
    emulator_ztunnel: list[str] | None = None


@dataclass(frozen=True)
class Outputs:
    """The run's output folders, checked and made before anything runs (None: not written)."""

    report: OutputFolder | None
    artifacts: OutputFolder | None


SETTINGS = pytest.StashKey[Settings]()
OUTPUTS = pytest.StashKey[Outputs]()
RUN = pytest.StashKey["ConformanceSession"]()
INVOLVED = pytest.StashKey[list[PodRef]]()
INTERRUPTS = pytest.StashKey[Interrupts]()
CASE_OF = pytest.StashKey[tuple[ConformanceCase, Profile]]()
AMBIENT_MESH_SETTING = Profile.LEGACY
"""The mesh-wide inbound setting while ambient cells run: LOCALHOST (legacy), present and changing nothing
(probes-ambient.md §2 "No override"). Ambient runs last, after the legacy round trip: on kind it has an install of
its own (the ambient profile), made once and never left."""


# --- options ---------------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """The suite's options, in one group."""
    group = parser.getgroup("mesh-inbound-conformance", "mesh inbound conformance")
    group.addoption("--backend", default="emulated", help="emulated (default), kind or kubeconfig")
    group.addoption("--ip-family", default="ipv4", help="ipv4 (default) or ipv6: the family of the whole run")
    group.addoption(
        "--profile",
        action="append",
        default=None,
        help="baseline, legacy, passthrough or ambient; repeatable. Default: every profile the mesh supports",
    )
    group.addoption(
        "--report-dir",
        default=None,
        help="where conformance-report.json/.md (and junit.xml unless --junitxml) go (default: reports/<family>)",
    )
    group.addoption(
        "--artifacts-dir",
        default=None,
        help="where diagnostics of failed tests go, as <profile>/<Case>/ (default: artifacts/<family>)",
    )
    group.addoption("--timeout-config", default="", help=f"KEY=SECONDS,... with KEY (default, max): {describe()}")
    group.addoption("--mesh-version", default=None, help="the Istio version a custom build claims to be")
    group.addoption(
        "--mesh-capabilities",
        default=None,
        help="comma-separated capabilities a custom build claims, overriding its version's: "
        + ", ".join(c.value for c in Capability),
    )
    group.addoption(
        "--emulator-sidecar",
        default=None,
        help='emulated backend: run "CMD ARGS" as every sidecar instead of the reference one (as uid 1337, '
        "config path appended; must listen on 15006 and 15001)",
    )
    group.addoption(
        "--emulator-ztunnel",
        default=None,
        help='emulated backend: run "CMD ARGS" as the node\'s ztunnel instead of the reference one (as root in the '
        "node namespace, config path appended; must listen on 15006, 15001 and 15008 inside each enrolled pod)",
    )
    from conformance.backends.kind import options as kind_options

    kind_options.add_options(group)


def _fail(message: str) -> NoReturn:
    raise pytest.UsageError(message)


def _settings(config: pytest.Config) -> Settings:
    opt = config.option
    backend = opt.backend
    if backend not in BACKENDS:
        _fail(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    try:
        family = IpFamily(opt.ip_family)
    except ValueError:
        _fail(f"--ip-family {opt.ip_family!r}: expected ipv4 or ipv6")
    requested = []
    for value in opt.profile or []:
        for item in filter(None, value.split(",")):
            try:
                requested.append(Profile(item))
            except ValueError:
                _fail(f"--profile {item!r}: expected one of {', '.join(p.value for p in Profile)}")
    try:
        timeouts = parse_timeout_config(opt.timeout_config)
    except ValueError as err:
        _fail(str(err))
    sidecar = _emulator_command("--emulator-sidecar", opt.emulator_sidecar, backend)
    ztunnel = _emulator_command("--emulator-ztunnel", opt.emulator_ztunnel, backend)
    from conformance.backends.kind import options as kind_options

    try:
        backend_options = kind_options.validate(opt, backend)
    except ValueError as err:
        _fail(str(err))
    mesh = _mesh(opt, backend, backend_options, family)
    report_dir = output_dir(opt.report_dir, "reports", family.value)
    artifacts_dir = output_dir(opt.artifacts_dir, "artifacts", family.value)
    for option, path in (("--report-dir", report_dir), ("--artifacts-dir", artifacts_dir)):
        problem = check_writable_dir(option, path) if path is not None else None
        if problem is not None:
            _fail(problem)
    # Absolute from here on: pytest changes to its invocation folder before pytest_sessionfinish, and the suite
    # shows ids relative to the rootdir by making that folder the rootdir (pytest_configure): the last report
    # write (`total`, `finished`, `interrupted`) landed under site-packages, relative to it.
    report_dir = report_dir.absolute() if report_dir is not None else None
    artifacts_dir = artifacts_dir.absolute() if artifacts_dir is not None else None
    profiles = tuple(dict.fromkeys(requested)) if requested else mesh.profiles()
    return Settings(
        backend=backend,
        family=family,
        profiles=profiles,
        explicit_profiles=bool(requested),
        report_dir=report_dir,
        artifacts_dir=artifacts_dir,
        timeouts=timeouts,
        mesh=mesh,
        emulator_sidecar=sidecar,
        in_ci=os.environ.get("CI", "").lower() in ("1", "true", "yes"),
        # The kind/kubeconfig backend checks what the selected profiles need (ztunnel for ambient).
        backend_options={**backend_options, "profiles": [p.value for p in profiles]},
        emulator_ztunnel=ztunnel,
    )


def _emulator_command(option: str, value: str | None, backend: str) -> list[str] | None:
    """A replacement program for an emulated component, split like a shell would; one line when it is wrong."""
    if value is None:
        return None
    if backend != "emulated":
        _fail(f"{option} works with --backend emulated only, not {backend}")
    try:
        command = shlex.split(value)
    except ValueError as err:
        _fail(f"{option} {value!r}: {err}")
    if not command:
        _fail(f"{option}: expected a command, got an empty string")
    from conformance.backends.emulated.cluster import sidecar_command_problem

    problem = sidecar_command_problem(command, option)
    if problem is not None:
        _fail(problem)
    return command


def _mesh(opt: Any, backend: str, backend_options: dict[str, Any], family: IpFamily) -> MeshCapabilities:
    try:
        if backend == "emulated":
            if opt.mesh_version:
                _fail("--mesh-version describes a real Istio build: use it with --backend kind or kubeconfig")
            mesh = emulated_capabilities()
        else:
            claimed = backend_options["istio_version"]
            # An unreleased custom build (1.32-dev) is judged by the newest known release of its minor.
            version = backend_options.get("capability_version") or claimed
            istioctl = backend_options.get("istioctl_version")
            if not istioctl:
                # The matrix row may name another istioctl for the precheck (1.9.9 is checked by a 1.10 istioctl).
                from conformance.backends.kind.matrix import row_for

                try:
                    istioctl = row_for(backend_options["istio_version"]).istioctl_precheck
                except ValueError:
                    istioctl = None
            # istioctl 1.15.1-1.20 decides from the tag of the proxy image the run deploys, not the claimed version.
            deployed = proxy_image(
                backend_options.get("istio_hub"), backend_options.get("istio_tag"), backend_options["istio_version"]
            )
            mesh = istio_capabilities(version, istioctl, proxy_image_ref=deployed, family=family)
            if version != claimed:
                mesh = replace(mesh, version=claimed)
    except ValueError as err:
        _fail(f"--mesh-version/--istio-version: {err}")
    if opt.mesh_capabilities:
        claimed = set()
        for item in filter(None, (i.strip() for i in opt.mesh_capabilities.split(","))):
            try:
                claimed.add(Capability(item))
            except ValueError:
                _fail(f"--mesh-capabilities {item!r}: expected some of {', '.join(c.value for c in Capability)}")
        mesh = claimed_capabilities(mesh, frozenset(claimed))
    return mesh


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Validate every option before anything starts; JUnit XML defaults to the family's report folder."""
    config.addinivalue_line("markers", f"{SUITE_MARKER}: a mesh inbound conformance test (the suite's own items)")
    # Our own interruption, swallowed where Python ignores exceptions, is said in one line (see interrupt.py):
    # not again as an "Exception ignored" warning, in a test or when pytest reports the rest at exit.
    swallowed = r"(?s)Exception ignored in.*conformance\.interrupt\.Interrupted"
    config.addinivalue_line("filterwarnings", f"ignore:{swallowed}:pytest.PytestUnraisableExceptionWarning")
    warnings.filterwarnings("ignore", swallowed, pytest.PytestUnraisableExceptionWarning)
    config.stash[SETTINGS] = settings = _settings(config)
    _pin_rootdir(config)
    # Before the junitxml plugin's own configure reads it: an IPv6 run never overwrites the IPv4 junit.xml.
    junit_here = settings.report_dir is not None and not getattr(config.option, "xmlpath", None)
    if junit_here and settings.report_dir is not None and _collects_suite(config):
        config.option.xmlpath = str(settings.report_dir / "junit.xml")
    if _collects_suite(config) and (config.rootpath / "conformance" / "suite").is_dir():
        # The rootdir is the installed package's folder (tox's --rootdir, _pin_rootdir): node ids are
        # `conformance/suite/test_x.py::...`. pytest prints them relative to the invocation folder
        # (`.tox/conformance/lib/python3.11/site-packages/...`); shown relative to the rootdir instead, the
        # terminal's ids are the same as junit.xml's and the report's. Done before the terminal reporter is
        # created; command-line paths were already resolved, and the output folders are absolute (pytest changes
        # to this folder before pytest_sessionfinish).
        config.invocation_params = dataclasses.replace(config.invocation_params, dir=config.rootpath)
    config.pluginmanager.register(_TestRecorder(config), "mesh-inbound-conformance-recorder")
    from conformance.backends.kind import options as kind_options

    kind_options.maybe_plan(config, config.stash[SETTINGS])
    if _collects_suite(config):
        config.stash[OUTPUTS] = _outputs(settings, junit_here)


def _collects_suite(config: pytest.Config) -> bool:
    return bool(config.option.pyargs) and any(str(a).startswith("conformance") for a in config.args)


def _pin_rootdir(config: pytest.Config) -> None:
    """The suite's test ids are relative to the folder its package is in, whatever pytest guessed.

    pytest picks the rootdir (and its ini file) from the command line before it loads entry-point plugins, so
    the values of this plugin's options look like test paths to it: `--report-dir /tmp/x/r --artifacts-dir
    /tmp/x/a`, once those folders exist, made /tmp/x the rootdir (pytest#8846, closed as a known limitation),
    and each id came out relative to it: `../../tmp/x/test_reachability.py::...` in the summary, a bare
    `test_reachability.py` in junit.xml. tox passes `--rootdir` (the installed package's site-packages); for
    `pytest` or `python -m pytest` without it, the rootdir is set here to where the collected package lives,
    before the session computes any id (a `--rootdir` elsewhere gave the same broken ids, and is overridden too).
    `_rootpath` is pytest's own attribute (no public setter): without it, pytest's rootdir stays.
    """
    if not _collects_suite(config) or not hasattr(config, "_rootpath"):
        return
    home = Path(__file__).resolve().parents[1]
    if config.rootpath != home:
        config._rootpath = home


def _outputs(settings: Settings, junit_here: bool) -> Outputs:
    """Check the output folders, then make them: a refusal or a folder that cannot be made is one line, exit 4.

    Done in pytest_configure, before the junitxml plugin exists: a folder found unusable later (a report folder
    under /sys) failed every test and then junit.xml's own write, with an INTERNALERROR traceback.
    """
    report = artifacts = None
    if settings.report_dir is not None:
        # junit.xml when the suite puts it there; one the user names with --junitxml is theirs to place.
        names = [JSON_NAME, MD_NAME, *(["junit.xml"] if junit_here else [])]
        report = report_folder(settings.report_dir, names, earlier_report_file)
    if settings.artifacts_dir is not None:
        artifacts = artifacts_folder(settings.artifacts_dir, [p.value for p in Profile], settings.backend)
    for folder in (report, artifacts):
        problem = folder.refusal() if folder is not None else None
        if problem is not None:
            _fail(problem)
    problem = make_output_dirs([(f.option, f.root) for f in (report, artifacts) if f is not None])
    if problem is not None:
        _fail(problem)
    if report is not None:
        # Written by this run from here on (the report at the session's start, junit.xml at its end).
        report.claim(report.root / name for name in report.places)
    return Outputs(report, artifacts)


# --- collection --------------------------------------------------------------------------------------------


@pytest.fixture
def case() -> ConformanceCase:
    """Parametrized by the plugin from the module's CASES."""
    raise pytest.UsageError("the `case` fixture is parametrized from a module's CASES; none found")


@pytest.fixture
def profile() -> Profile:
    """Parametrized by the plugin alongside `case`."""
    raise pytest.UsageError("the `profile` fixture is parametrized by the plugin")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize each suite test over its module's cases and the profiles each case has cells in."""
    cases = getattr(metafunc.module, "CASES", None)
    if cases is None or "case" not in metafunc.fixturenames:
        return
    settings = metafunc.config.stash[SETTINGS]
    params = []
    for item in cases:
        profiles = [
            p for p in item.profiles(settings.family) if p in settings.profiles or not settings.explicit_profiles
        ]
        if item.part == "switch":
            profiles = profiles[:1]
        # A profile the mesh lacks is still collected (unless --profile excludes it), so its skip and the
        # reason are reported.
        for prof in profiles:
            params.append(pytest.param(item, prof, id=f"{item.name}[{prof.value}]", marks=pytest.mark.conformance))
    metafunc.parametrize(("case", "profile"), params)


def _order(settings: Settings) -> list[Profile]:
    first = [Profile.BASELINE, settings.mesh.default_profile]
    return first + [p for p in Profile if p not in first]


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group tests by profile (fewest switches), check prerequisites once suite items are collected."""
    settings = config.stash[SETTINGS]
    order = _order(settings)
    suite = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and isinstance(callspec.params.get("case"), ConformanceCase):
            case_, prof = callspec.params["case"], callspec.params["profile"]
            item.stash[CASE_OF] = (case_, prof)
            suite.append(item)
    if not suite:
        return

    def key(item: pytest.Item) -> tuple[bool, int, int]:
        case_, prof = item.stash[CASE_OF]
        return (prof is Profile.AMBIENT, 1 if case_.part == "switch" else 0, order.index(prof))

    suite_ids = {id(i) for i in suite}
    others = [i for i in items if id(i) not in suite_ids]
    items[:] = others + sorted(suite, key=key)
    if settings.backend == "emulated":
        from conformance.backends.emulated.cluster import check_prerequisites

        try:
            check_prerequisites()
        except PrerequisiteError as err:
            raise pytest.UsageError(str(err)) from None
    # SIGTERM (CI cancelling a job) takes the same path as Ctrl-C; a second signal does not break the cleanup.
    report = settings.report_dir / "conformance-report.md" if settings.report_dir else ""
    config.stash[INTERRUPTS] = interrupts = Interrupts(str(report))
    interrupts.install()


# --- the session -------------------------------------------------------------------------------------------


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


@pytest.fixture(scope="session")
def conformance_session(request: pytest.FixtureRequest) -> Iterator[ConformanceSession]:
    """Create the cluster, deploy the world, tear everything down at the end (also on failure or Ctrl-C)."""
    settings = request.config.stash[SETTINGS]
    cluster = make_cluster(settings)
    session = ConformanceSession(settings, cluster)
    request.config.stash[RUN] = session
    planned = [i.stash[CASE_OF][1].value for i in request.session.items if CASE_OF in i.stash]
    session.report.planned = {p.value: planned.count(p.value) for p in Profile}
    outputs = request.config.stash.get(OUTPUTS, None)
    if outputs is not None and outputs.artifacts is not None:
        # Only what an earlier run recorded writing (checked before anything ran): a folder present means
        # this run failed there. The kind/kubeconfig commands log stays, appended to.
        outputs.artifacts.clear(outputs.artifacts.places)
    session.report.write()
    # What pytest and the suite have loaded lives as long as the run: frozen, it is out of the garbage
    # collector's full passes, which the probes' allocations trigger, and pytest's last one at exit (~0.2 s of
    # a run otherwise). It stays frozen: the process ends with the run.
    gc.freeze()
    start = time.perf_counter()
    try:
        problem = None
        try:
            cluster.up(session.world.manifests())
        except BackendError as err:
            problem = f"{cluster.backend} backend: {err}"
        if problem is not None:
            logs = diagnostics.save_setup(
                cluster,
                session.world.servers + tuple(session.world.clients.values()),
                settings.artifacts_dir,
                _claim(request.config),
            )
            _claim_backend_files(request.config)
            session.report.record_setup_error(problem, logs)
            session.report.write()
            pytest.fail(problem, pytrace=False)
        session.report.timings["setup"] = time.perf_counter() - start
        yield session
    finally:
        start = time.perf_counter()
        teardown_problem = None
        try:
            session.note_deaths()
            cluster.down()
        except BackendError as err:
            teardown_problem = f"{cluster.backend} backend, tearing down: {err}"
        session.report.timings["teardown"] = time.perf_counter() - start
        session.report.write()
    # Reached only when nothing else is on its way out (a failure or Ctrl-C keeps its own message).
    if teardown_problem is not None:
        pytest.fail(teardown_problem, pytrace=False)


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
            for port in SERVER_PORTS:
                kind = port.kind
                if precheck_finding(endpoint, kind, port.bind)[0]:
                    expected.add((server.app, port.number))
        # The probe pods' probed ports are declared in their Services: a loopback one is a finding too.
        probe_pods = [p for p, _ in probe_pods_of(NS_MESH)]
        for probe_server in probe_pods:
            for container in PROBED_CONTAINERS:
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


@pytest.fixture
def conformance(
    request: pytest.FixtureRequest, conformance_session: ConformanceSession, case: ConformanceCase, profile: Profile
) -> ConformanceRun:
    """The test's handle on the run; skips with the mesh's reason when a capability is missing."""
    settings = conformance_session.settings
    if profile not in settings.mesh.profiles() or profile not in settings.profiles:
        reason = settings.mesh.missing(case.needed(profile, settings.family)) or f"profile {profile.value} not selected"
        pytest.skip(reason)
    needed = case.needed(profile, settings.family)
    if case.part == "switch":
        needed |= case.needed(Profile.PASSTHROUGH, settings.family)
    missing = settings.mesh.missing(needed)
    if missing is not None:
        pytest.skip(missing)
    return ConformanceRun(conformance_session, case, profile, request.node)


# --- reporting and failure context ------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach what the backend knows about the pods a failed test involved (and copy it to artifacts)."""
    report = yield
    if report.when != "call" or not report.failed or CASE_OF not in item.stash:
        return report
    session = item.config.stash.get(RUN, None)
    pods = item.stash.get(INVOLVED, [])
    if session is None or not pods:
        return report
    case_, prof = item.stash[CASE_OF]
    sections = diagnostics.collect(session.cluster, pods)
    _claim_backend_files(item.config)
    artifacts = session.settings.artifacts_dir
    target = case_dir(artifacts, prof.value, case_.name) if artifacts else None
    if target is not None:
        diagnostics.save(sections, target, _claim(item.config))
    for title, text in diagnostics.to_show(sections, pods, session.shown_pods, target).items():
        report.sections.append((f"conformance: {title}", text))
    return report


def _claim(config: pytest.Config) -> diagnostics.Claim | None:
    """Records files in the artifacts folder's record (none when the folder was not prepared)."""
    outputs = config.stash.get(OUTPUTS, None)
    return outputs.artifacts.claim if outputs is not None and outputs.artifacts is not None else None


def _claim_backend_files(config: pytest.Config) -> None:
    """What the backend wrote itself where the suite writes (`kind export logs`), recorded once it is there."""
    outputs = config.stash.get(OUTPUTS, None)
    if outputs is not None and outputs.artifacts is not None:
        artifacts = outputs.artifacts
        artifacts.claim_present([p for p in artifacts.places if p not in (*(v.value for v in Profile), SETUP_FOLDER)])


class _TestRecorder:
    """Records each suite test's outcome as its reports arrive and rewrites the report files.

    Registered per config (the log-report hook sees node ids, not items or the config), so two pytest
    sessions in one process never share state.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.items: dict[str, tuple[ConformanceCase, Profile]] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Remember which node ids are suite tests."""
        self.items = {item.nodeid: item.stash[CASE_OF] for item in session.items if CASE_OF in item.stash}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """A skip in setup, a failure in any phase, or a pass of the call phase is the test's outcome."""
        session = self.config.stash.get(RUN, None)
        info = self.items.get(report.nodeid)
        if session is None or info is None:
            return
        case_, prof = info
        outcome = None
        reason = ""
        if report.when == "setup" and report.skipped:
            outcome = "skipped"
            longrepr = report.longrepr
            reason = str(longrepr[2]).removeprefix("Skipped: ") if isinstance(longrepr, tuple) else str(longrepr)
        elif report.failed:
            outcome = "failed"
        elif report.when == "call" and report.passed:
            outcome = "passed"
        if outcome is None:
            return
        session.report.record_test(TestRecord(report.nodeid, case_.name, prof.value, outcome, reason))
        session.report.write(progress=True)


@pytest.hookimpl(tryfirst=True)
def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """Before pytest's terminal reporter renders an interruption: only the signal handler's frame is kept."""
    trim_traceback(excinfo)


def _lost_interruption(config: pytest.Config) -> str | None:
    interrupts = config.stash.get(INTERRUPTS, None)
    return interrupts.lost() if interrupts is not None else None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before each test: a signal whose exception was swallowed stops the run here (see interrupt.py)."""
    lost = _lost_interruption(item.config)
    if lost is not None:
        raise Interrupted(lost)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """The signals go back as they were; after one came, later ones stay ignored until the process is gone."""
    interrupts = config.stash.get(INTERRUPTS, None)
    if interrupts is not None:
        interrupts.finish()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Final report; under CI the emulated run must not skip anything."""
    lost = _lost_interruption(session.config)
    if lost is not None and exitstatus != pytest.ExitCode.INTERRUPTED:
        # The signal's exception was swallowed during the last test: the run still ends as interrupted.
        session.exitstatus = exitstatus = pytest.ExitCode.INTERRUPTED
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_sep("!", lost)
    run = session.config.stash.get(RUN, None)
    if run is None:
        return
    import datetime

    run.report.finished = datetime.datetime.now(datetime.UTC)
    run.report.interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
    run.report.timings["total"] = time.perf_counter() - run.started
    run.report.write(final=True)
    settings = run.settings
    skipped = [t for t in run.report.tests.values() if t.outcome == "skipped"]
    if settings.in_ci and settings.backend == "emulated" and skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(f"CI=true: the emulated run skipped {len(skipped)} test(s); it must run every case", red=True)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """The backend, the IP family, each profile's result and where the report is (not when interrupted)."""
    run = config.stash.get(RUN, None)
    if run is None or run.report.directory is None:
        return
    results = {prof.value: run.report.profile_result(prof.value) for prof in Profile}
    where = f"report: {run.report.directory / 'conformance-report.md'}"
    title = f"mesh inbound conformance: {run.cluster.backend} backend, {run.settings.family.value}"
    if run.report.interrupted:
        return  # pytest's one line for the interruption names the report (conformance.run.interrupt)
    terminalreporter.write_sep("-", title)
    for line in death_lines(run.report.deaths)[1:]:
        terminalreporter.write_line(line, red=True)
    if run.report.setup_error is not None:
        terminalreporter.write_line(f"setup failed: {run.report.setup_error['message']}", red=True)
        terminalreporter.write_line(run.report.setup_error["logs"])
    for name, (result, stats) in results.items():
        terminalreporter.write_line(f"{name}: {result} ({stats['cells_passed']}/{stats['cells']} cells)")
    terminalreporter.write_line(where)
