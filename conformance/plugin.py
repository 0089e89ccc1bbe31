"""The pytest plugin: the suite's options, parametrization, the fixtures that hand over to the run, failure context.

Registered through the `pytest11` entry point, so `pytest --pyargs conformance.suite` finds it. Every option
lives in the `mesh-inbound-conformance` group; malformed or incompatible options stop the run in
`pytest_configure` with one line, before anything is created. What the hooks hand over to lives below: the settings,
the session and the recorded outcomes in `conformance.run`, the checks a test makes of its cells in
`conformance.suite.checks`.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance.backends.base import PrerequisiteError
from conformance.backends.timeouts import describe
from conformance.report.markdown import death_lines
from conformance.run import diagnostics
from conformance.run.interrupt import Interrupted, Interrupts, trim_traceback
from conformance.run.outputs import case_dir
from conformance.run.recorder import OutcomeRecorder
from conformance.run.session import RUN, ConformanceSession, make_cluster
from conformance.run.settings import Outputs, Settings, prepare_outputs, settings_from
from conformance.spec.capabilities import Capability
from conformance.spec.dimensions import Profile
from conformance.suite.cases import ConformanceCase
from conformance.suite.checks import INVOLVED, ConformanceRun

SUITE_MARKER = "conformance"

SETTINGS = pytest.StashKey[Settings]()
OUTPUTS = pytest.StashKey[Outputs]()
INTERRUPTS = pytest.StashKey[Interrupts]()
CASE_OF = pytest.StashKey[tuple[ConformanceCase, Profile]]()


# --- options ---------------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """The suite's options, in one group."""
    group = parser.getgroup("mesh-inbound-conformance", "mesh inbound conformance")
    group.addoption("--backend", default="emulated", help="emulated (default), kind or kubeconfig")
    group.addoption(
        "--ip-family",
        default="ipv4",
        help="ipv4 (default), ipv6 or dual: the family of the whole run (dual: emulated backend only)",
    )
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
        help='emulated backend: run "CMD ARGS" as every sidecar instead of the reference one (as uid 1337; '
        "uid 0 / gid 1337 in TPROXY pods; config path appended; must listen on 15006 and 15001)",
    )
    group.addoption(
        "--emulator-ztunnel",
        default=None,
        help='emulated backend: run "CMD ARGS" as the node\'s ztunnel instead of the reference one (as root in the '
        "node namespace, config path appended; must listen on 15006, 15001 and 15008 inside each enrolled pod)",
    )
    from conformance.backends.kind import options as kind_options

    kind_options.add_options(group)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Validate every option before anything starts; JUnit XML defaults to the family's report folder."""
    config.addinivalue_line("markers", f"{SUITE_MARKER}: a mesh inbound conformance test (the suite's own items)")
    # Our own interruption, swallowed where Python ignores exceptions, is said in one line (see interrupt.py):
    # not again as an "Exception ignored" warning, in a test or when pytest reports the rest at exit.
    # Named from the class, so a move of its module cannot silently stop the filter from matching.
    swallowed = r"(?s)Exception ignored in.*" + re.escape(f"{Interrupted.__module__}.{Interrupted.__qualname__}")
    config.addinivalue_line("filterwarnings", f"ignore:{swallowed}:pytest.PytestUnraisableExceptionWarning")
    warnings.filterwarnings("ignore", swallowed, pytest.PytestUnraisableExceptionWarning)
    config.stash[SETTINGS] = settings = settings_from(config.option)
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
    config.pluginmanager.register(OutcomeRecorder(config, _suite_test), "mesh-inbound-conformance-recorder")
    from conformance.backends.kind import options as kind_options

    kind_options.maybe_plan(config, config.stash[SETTINGS])
    if _collects_suite(config):
        config.stash[OUTPUTS] = prepare_outputs(settings, junit_here)


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
    if not params:
        # Say why instead of pytest's "got empty parameter set": the family asks no cell of these cases (a
        # dual-stack run asks no ambient, TPROXY or node proxy cells), or --profile selects none of theirs.
        asked = sorted({p.value for item in cases for p in item.profiles(settings.family)})
        name = metafunc.module.__name__.rsplit(".", 1)[-1]
        reason = (
            f"{name}: --profile selects none of its profiles ({', '.join(asked)})"
            if asked
            else f"{name}: no cells in a {settings.family.value} run (docs/spec.md says which cells each family asks)"
        )
        params = [pytest.param(None, None, id="no-cells", marks=pytest.mark.skip(reason=reason))]
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

    def key(item: pytest.Item) -> tuple[bool, int, int, bool]:
        case_, prof = item.stash[CASE_OF]
        # The legacy round trip, and the enrolment of a namespace while the run is on (it changes the world), last.
        late = 1 if case_.part in ("switch", "late") else 0
        # Within a profile, the restart checks (after_traffic) come after the traffic ones: the kubelet restarts
        # containers meanwhile. Baseline's few cells leave no time for that, and no mode touches its servers
        # (ConformanceSession.switch): its restart checks come after the default profile's traffic.
        group = order.index(prof)
        if case_.after_traffic and prof is Profile.BASELINE:
            group = order.index(settings.mesh.default_profile)
        return (prof is Profile.AMBIENT, late, group, case_.after_traffic)

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


@pytest.fixture(scope="session")
def conformance_session(request: pytest.FixtureRequest) -> Iterator[ConformanceSession]:
    """Create the cluster, deploy the world, tear everything down at the end (also on failure or Ctrl-C)."""
    settings = request.config.stash[SETTINGS]
    session = ConformanceSession(settings, make_cluster(settings))
    request.config.stash[RUN] = session
    planned = [i.stash[CASE_OF][1] for i in request.session.items if CASE_OF in i.stash]
    yield from session.live(planned, request.config.stash.get(OUTPUTS, None))


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
    outputs = item.config.stash.get(OUTPUTS, None)
    if outputs is not None:
        outputs.claim_backend_files()
    artifacts = session.settings.artifacts_dir
    target = case_dir(artifacts, prof.value, case_.name) if artifacts else None
    if target is not None:
        diagnostics.save(sections, target, outputs.claim() if outputs is not None else None)
    for title, text in diagnostics.to_show(sections, pods, session.shown_pods, target).items():
        report.sections.append((f"conformance: {title}", text))
    return report


def _suite_test(item: pytest.Item) -> tuple[str, str] | None:
    """What the report names a suite test by (its case and profile), for the recorder; None for other tests."""
    if CASE_OF not in item.stash:
        return None
    case_, prof = item.stash[CASE_OF]
    return case_.name, prof.value


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
    run.finish(interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)
    problem = run.ci_skip_problem() if exitstatus == 0 else None
    if problem is not None:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(problem, red=True)


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
    lacks = {c.value: why for c, why in run.settings.mesh.reasons.items()}
    for name, (result, stats) in results.items():
        # A profile nothing asked because the mesh lacks it in this family (ambient on dual-stack pods): say why.
        why = lacks.get(f"profile-{name}") if stats["cells"] == 0 and result == "not selected" else None
        line = f"{name}: {result} ({stats['cells_passed']}/{stats['cells']} cells)"
        terminalreporter.write_line(line + (f": {why}" if why else ""))
    terminalreporter.write_line(where)
