"""What a user sees, without a cluster: output folders, the report's wording, failure context, interrupts.

The whole-run counterparts (a real setup failure, a real Ctrl-C, a bad path on the command line) are in
test_suite_runs.py.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import types
from pathlib import Path

import pytest

from conformance.backends.emulated.cluster import EmulatedCluster, sidecar_command_problem
from conformance.backends.precheck import PrecheckRun
from conformance.engine.probe import Observation, ProbeOutcome, judge
from conformance.report.files import Report
from conformance.report.json_document import JSON_NAME, json_document
from conformance.report.markdown import MD_NAME, markdown
from conformance.run import diagnostics
from conformance.run.interrupt import Interrupted, Interrupts, trim_traceback
from conformance.run.outputs import (
    RECORD_NAME,
    artifacts_folder,
    case_dir,
    check_writable_dir,
    earlier_report_file,
    make_output_dirs,
    output_dir,
    report_folder,
)
from conformance.spec import all_cells, expect
from conformance.spec.capabilities import emulated_capabilities
from conformance.spec.dimensions import Failure, InboundCapture, IpFamily, Profile, Source
from conformance.world.pods import PodRef


def _report(tmp_path: Path, family: IpFamily = IpFamily.IPV4) -> Report:
    info = {"name": "emulated", "version": "custom sidecar", "build": "/opt/proxy --x"}
    return Report(tmp_path, emulated_capabilities(), info, "emulated", family, tuple(Profile))


def _outcome(outcome: str, peer: str | None = None) -> ProbeOutcome:
    return ProbeOutcome(outcome, None, peer, None, 1.0, "", "r1")


# --- output folders ------------------------------------------------------------------------------------


def test_output_folders_default_to_one_per_family_and_options_name_the_folder() -> None:
    assert output_dir(None, "reports", "ipv6") == Path("reports/ipv6")
    assert output_dir("out", "reports", "ipv6") == Path("out")
    assert output_dir("", "reports", "ipv4") is None


def test_case_folders_are_named_from_profile_and_case_never_hidden(tmp_path: Path) -> None:
    assert case_dir(tmp_path, "passthrough", "PodIPFromPlainClient") == tmp_path / "passthrough/PodIPFromPlainClient"
    assert not case_dir(tmp_path, "legacy", ".tox/x y").name.startswith(".")


def _artifacts(root: Path, backend: str = "emulated") -> object:
    return artifacts_folder(root, [p.value for p in Profile], backend)


def _write(path: Path, text: str = "x\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_only_what_an_earlier_run_recorded_is_removed(tmp_path: Path) -> None:
    folder = _artifacts(tmp_path)
    ours = [tmp_path / "legacy" / "Stale" / "pod_sidecar_log.txt", tmp_path / "setup" / "pod_app_log.txt"]
    folder.claim(ours)  # type: ignore[attr-defined]
    for path in ours:
        _write(path)
    _write(tmp_path / "kind-commands.log", "kept\n")
    _write(tmp_path / "notes.txt", "the user's, beside the suite's folders\n")
    assert folder.refusal() is None  # type: ignore[attr-defined]
    folder.clear(folder.places)  # type: ignore[attr-defined]
    # The suite's files are gone, with the folders that left empty; the rest stays.
    assert sorted(p.name for p in tmp_path.iterdir()) == [RECORD_NAME, "kind-commands.log", "notes.txt"]
    assert json.loads((tmp_path / RECORD_NAME).read_text())["files"] == []


def test_what_the_suite_did_not_write_where_it_writes_is_refused_and_kept(tmp_path: Path) -> None:
    """The issue's folder: a one-test passing run deleted all three."""
    mine = [
        _write(tmp_path / "setup" / "important.txt"),
        _write(tmp_path / "baseline" / "MyCase" / "notes.txt"),
        _write(tmp_path / "passthrough" / "data.db"),
    ]
    folder = _artifacts(tmp_path)
    assert folder.refusal() == (  # type: ignore[attr-defined]
        f"--artifacts-dir {tmp_path}: baseline/MyCase/notes.txt, passthrough/data.db and setup/important.txt are "
        "not from an earlier run of this suite, which writes <profile>/<Case>/ and setup/ there, removing what an "
        "earlier run of it wrote; move them or choose another folder"
    )
    folder.clear(folder.places)  # type: ignore[attr-defined]
    assert all(p.read_text() == "x\n" for p in mine)
    # A user's file inside a folder the suite wrote is theirs too.
    folder.claim([tmp_path / "legacy" / "Case" / "log.txt"])  # type: ignore[attr-defined]
    _write(tmp_path / "legacy" / "Case" / "log.txt")
    _write(tmp_path / "legacy" / "Case" / "my-notes.txt")
    assert "legacy/Case/my-notes.txt" in str(folder.refusal())  # type: ignore[attr-defined]
    assert "legacy/Case/log.txt" not in str(folder.refusal())  # type: ignore[attr-defined]


def test_a_record_never_reaches_outside_the_suite_s_folders(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "artifacts", tmp_path / "elsewhere"
    victim = _write(elsewhere / "victim.txt")
    _write(root / "outside.txt")
    # The setup folder replaced by a link to another folder: what is behind it is not the suite's.
    (root / "setup").symlink_to(elsewhere)
    record = {"format": "mesh-inbound-conformance/outputs", "version": 1}
    files = ["../elsewhere/victim.txt", "outside.txt", "/etc/hostname", "setup/victim.txt", "legacy/../outside.txt"]
    (root / RECORD_NAME).write_text(json.dumps({**record, "files": files}))
    folder = _artifacts(root)
    folder.clear(folder.places)  # type: ignore[attr-defined]
    assert victim.exists()
    assert (root / "outside.txt").exists()
    assert folder.refusal() == (  # type: ignore[attr-defined]
        f"--artifacts-dir {root}: setup is not from an earlier run of this suite, which writes <profile>/<Case>/ "
        "and setup/ there, removing what an earlier run of it wrote; move it or choose another folder"
    )


def test_on_kind_the_exported_logs_are_where_the_suite_writes_too(tmp_path: Path) -> None:
    _write(tmp_path / "kind-logs" / "docker-info.txt")
    assert _artifacts(tmp_path).refusal() is None  # type: ignore[attr-defined]
    assert "kind-logs/docker-info.txt is not" in str(_artifacts(tmp_path, "kind").refusal())  # type: ignore[attr-defined]


def test_report_files_are_overwritten_only_when_the_suite_wrote_them(tmp_path: Path) -> None:
    names = [JSON_NAME, MD_NAME, "junit.xml"]
    folder = report_folder(tmp_path, names, earlier_report_file)
    _write(tmp_path / "junit.xml", '<testsuites name="another tool"/>')
    _write(tmp_path / "coverage.xml")  # not a name the suite writes: none of its business
    assert folder.refusal() == (
        f"--report-dir {tmp_path}: junit.xml is not from an earlier run of this suite, which writes "
        f"{JSON_NAME}, {MD_NAME} and junit.xml there, over what an earlier run of it wrote; move it or choose "
        "another folder"
    )
    # Reports an earlier run wrote before the record existed: their content says whose they are.
    report = _report(tmp_path)
    report.write()
    _write(tmp_path / "junit.xml", '<testcase classname="conformance.suite.test_in_pod" name="x"/>')
    assert folder.refusal() is None
    _write(tmp_path / JSON_NAME, '{"format": "something else"}')
    assert f"{JSON_NAME} is not" in str(folder.refusal())
    folder.claim([tmp_path / JSON_NAME])  # once recorded, whatever it holds
    assert folder.refusal() is None


def test_output_folders_are_made_before_anything_runs_or_not_at_all(tmp_path: Path) -> None:
    """/sys and /proc pass a permission check as root, but take no folder: found at the first report, the run
    became 16 errors and an INTERNALERROR."""
    assert make_output_dirs([("--report-dir", tmp_path / "r" / "ipv4"), ("--artifacts-dir", tmp_path / "a")]) is None
    assert (tmp_path / "r" / "ipv4").is_dir()
    assert (tmp_path / "a").is_dir()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == []  # the write test leaves nothing
    problem = make_output_dirs([("--report-dir", tmp_path / "new" / "r"), ("--artifacts-dir", Path("/sys/x"))])
    assert str(problem).startswith("--artifacts-dir /sys/x: cannot be created, /sys takes no new folder (")
    assert str(problem).endswith("); expected a folder the run can write into")
    assert not (tmp_path / "new").exists()  # the first one, made, is removed again
    problem = make_output_dirs([("--report-dir", Path("/proc"))])
    assert str(problem).startswith("--report-dir /proc: folder not writable (")


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: p.write_text("x"), "is a file, expected a folder"),
        (lambda p: None, None),
    ],
)
def test_an_output_folder_that_is_a_file_is_one_line(tmp_path: Path, make: object, says: str | None) -> None:
    target = tmp_path / "reports"
    make(target)  # type: ignore[operator]
    problem = check_writable_dir("--report-dir", target)
    assert problem == (None if says is None else f"--report-dir {target}: {says} (or a path where one can be created)")
    assert not (target.exists() and target.is_dir())


def test_an_output_folder_under_a_file_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    problem = check_writable_dir("--artifacts-dir", tmp_path / "file" / "a" / "b")
    assert (
        problem == f"--artifacts-dir {tmp_path / 'file' / 'a' / 'b'}: cannot be created, {tmp_path / 'file'} is a file"
    )


# --- the emulator sidecar option ---------------------------------------------------------------------------


def test_a_missing_or_non_executable_sidecar_is_one_line(tmp_path: Path) -> None:
    script = tmp_path / "proxy.sh"
    assert sidecar_command_problem([str(script)]) == (
        f"--emulator-sidecar: {script} not found (expected a program, with a path or on PATH)"
    )
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    assert "is not executable" in str(sidecar_command_problem([str(script), "--flag"]))
    assert "not found" in str(sidecar_command_problem(["no-such-proxy-program"]))
    script.chmod(0o755)
    assert sidecar_command_problem([str(script)]) is None
    assert sidecar_command_problem(["python3", "x.py"]) is None


def test_a_custom_sidecar_is_the_build_under_test_not_the_reference() -> None:
    assert EmulatedCluster("ipv4", sidecar_command=["/opt/proxy"]).mesh_info()["version"] == "custom sidecar"
    assert EmulatedCluster("ipv4").mesh_info()["version"] == "reference"


# --- the report ------------------------------------------------------------------------------------------


def test_a_setup_failure_is_the_first_thing_both_reports_say(tmp_path: Path) -> None:
    report = _report(tmp_path)
    report.record_setup_error("emulated backend: echo-none.mic-mesh: exited sidecar (exit 126)", "logs: a/setup/")
    report.write()
    first = (tmp_path / MD_NAME).read_text().splitlines()[:5]
    assert "**Setup failed, no test ran:** emulated backend: echo-none.mic-mesh: exited sidecar (exit 126)" in first
    assert "Where the logs are: logs: a/setup/" in first
    doc = json.loads((tmp_path / JSON_NAME).read_text())
    assert list(doc)[:3] == ["format", "version", "setup_error"]
    assert doc["setup_error"] == {
        "message": "emulated backend: echo-none.mic-mesh: exited sidecar (exit 126)",
        "logs": "logs: a/setup/",
    }


def test_unfinished_profiles_of_an_interrupted_run_are_interrupted_not_skipped(tmp_path: Path) -> None:
    from conformance.report.record import TestRecord

    report = _report(tmp_path)
    # The plugin plans every profile (a count of 0 is `not selected`).
    report.planned = {"baseline": 1, "legacy": 2, "passthrough": 0, "ambient": 0}
    report.record_test(TestRecord("a", "X", "baseline", "passed"))
    report.record_test(TestRecord("b", "Y", "legacy", "passed"))
    report.interrupted = True
    results = {p.value: report.profile_result(p.value)[0] for p in Profile}
    assert results == {
        "baseline": "success",
        "legacy": "interrupted",
        "passthrough": "not selected",
        "ambient": "not selected",
    }
    text = markdown(report)
    assert "| legacy | ⏹️ interrupted |" in text
    assert "The run was interrupted: legacy did not finish." in text
    report.interrupted = False
    assert report.profile_result("legacy")[0] == "success"  # planned counts only matter when interrupted


def _cell(family: IpFamily, want: object) -> object:
    return next(c for c in all_cells([Profile.PASSTHROUGH], [family]) if want(expect(c)))  # type: ignore[operator]


def test_both_reports_use_one_vocabulary_and_a_failed_cell_says_how_to_rerun_it(tmp_path: Path) -> None:
    report = _report(tmp_path, IpFamily.IPV6)
    cell = _cell(IpFamily.IPV6, lambda e: not e.reachable and e.failure == (Failure.RESET_OR_EOF,))
    observation = Observation(cell, _outcome("ok", "::6"), True, [_outcome("ok", "::6")], "inbound_passthrough")  # type: ignore[arg-type]
    expected = expect(cell)  # type: ignore[arg-type]
    report.record_cell(
        "PodIPFromPlainClient[passthrough]", cell, expected, observation, judge(expected, observation), "reachability"
    )  # type: ignore[arg-type]
    text = markdown(report)
    line = next(line for line in text.splitlines() if line.startswith("- ❌"))
    assert "expected reset/EOF, got ok from ::6 (inbound_passthrough)" in line
    assert "case PodIPFromPlainClient[passthrough]" in line
    assert '`.venv/bin/tox -e conformance -- -k "PodIPFromPlainClient and passthrough" --ip-family ipv6`' in line
    assert "reset_or_eof" not in text
    assert "saw ✓ ::6 (inbound_passthrough)" in text
    observed = json_document(report)["cells"][0]["observed"]  # type: ignore[index]
    assert observed["source"] == "inbound_passthrough"
    assert observed["source_address"] == "::6"
    assert json_document(report)["cells"][0]["expected"]["failure"] == ["reset_or_eof"]  # type: ignore[index]


def test_a_timeout_points_to_the_sidecar_log(tmp_path: Path) -> None:
    report = _report(tmp_path)
    report.timeout_hint = "under artifacts/ipv4/<profile>/<Case>/"
    cell = _cell(IpFamily.IPV4, lambda e: e.reachable and e.source is Source.INBOUND_PASSTHROUGH)
    observation = Observation(cell, _outcome("timeout"), True, [_outcome("timeout")], None)  # type: ignore[arg-type]
    expected = expect(cell)  # type: ignore[arg-type]
    report.record_cell("T[passthrough]", cell, expected, observation, judge(expected, observation), "reachability")  # type: ignore[arg-type]
    assert "(a timeout: see the sidecar log, under artifacts/ipv4/<profile>/<Case>/)" in markdown(report)


def test_the_precheck_section_says_when_the_findings_are_the_expected_ones(tmp_path: Path) -> None:
    report = _report(tmp_path)
    line = "Error [IST0143] (Pod echo-none-0.mic-mesh) Port 8081 is exposed in a Service but listens on localhost."
    run = PrecheckRun("suite-checker", 1, line + "\n", "")
    report.record_precheck("LocalhostPrecheck[passthrough]", "passthrough", run, ["echo-none:8081"], [])
    assert "These 1 findings are the expected ones: the spec gives IST0143 for echo-none:8081." in markdown(report)
    clean = _report(tmp_path)
    clean.record_precheck("LocalhostPrecheck[legacy]", "legacy", PrecheckRun("suite-checker", 0, "", ""), [], [])
    assert "No findings, as the spec expects for this profile." in markdown(clean)


def test_the_build_under_test_is_named_as_such(tmp_path: Path) -> None:
    assert "build under test `/opt/proxy --x`" in markdown(_report(tmp_path))


# --- failure context and interrupts --------------------------------------------------------------------


def test_each_pods_diagnostics_are_shown_once_per_run(tmp_path: Path) -> None:
    a, b = PodRef("mic-mesh", "echo-none"), PodRef("mic-mesh", "echo-localhost")
    shown: set[str] = set()
    first = {f"{a} sidecar log": "A" * 10, f"{a} app log": "a"}
    assert diagnostics.to_show(first, [a], shown, tmp_path / "X") == first
    second = {f"{a} sidecar log": "A" * 10, f"{b} sidecar log": "B"}
    out = diagnostics.to_show(second, [a, b], shown, tmp_path / "Y")
    assert f"{a} sidecar log" not in out
    assert out[f"{b} sidecar log"] == "B"
    assert out["diagnostics of pods shown above"] == (
        f"echo-none.mic-mesh: shown with an earlier failure of this run; this test's copy: {tmp_path / 'Y'}"
    )


def test_the_first_signal_interrupts_and_later_ones_let_the_cleanup_finish() -> None:
    interrupts = Interrupts("reports/ipv4/conformance-report.md")
    with pytest.raises(Interrupted, match=r"SIGINT: run stopped, cleaning up, report: reports/ipv4/"):
        interrupts.handle(signal.SIGINT, None)
    assert isinstance(Interrupted("x"), KeyboardInterrupt)  # pytest stops as on Ctrl-C
    interrupts.handle(signal.SIGINT, None)
    interrupts.handle(signal.SIGTERM, None)
    assert interrupts.received == [signal.SIGINT, signal.SIGINT, signal.SIGTERM]


def test_after_a_signal_the_run_ends_ignoring_later_ones_else_gives_them_back() -> None:
    """Python's finalization resets a Python handler to the default: a late second Ctrl-C then killed the run."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        quiet = Interrupts()
        quiet.install()
        assert signal.getsignal(signal.SIGINT) == quiet.handle
        quiet.finish()
        assert {sig: signal.getsignal(sig) for sig in before} == before
        stopped = Interrupts()
        stopped.install()
        with pytest.raises(Interrupted):
            stopped.handle(signal.SIGTERM, None)
        stopped.finish()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_an_interruption_landing_where_python_has_no_line_number_is_still_one_line() -> None:
    """CI saw exit 1, not 2: SIGTERM landed in a frame whose `tb_lineno` is None and pytest's rendering crashed."""
    with pytest.raises(Interrupted) as raised:
        Interrupts().handle(signal.SIGTERM, None)
    # The frame the signal landed in, at an offset past its code: Python gives it no line number.
    landed = types.TracebackType(raised.tb, sys._getframe(), 1 << 20, -1)
    assert landed.tb_lineno is None

    def excinfo() -> pytest.ExceptionInfo[BaseException]:
        return pytest.ExceptionInfo[BaseException].from_exc_info((Interrupted, raised.value, landed))

    with pytest.raises(TypeError):
        excinfo().getrepr(funcargs=True)  # what pytest's terminal reporter does, untrimmed
    trimmed = excinfo()
    trim_traceback(trimmed)
    crash = trimmed.getrepr(funcargs=True).reprcrash
    assert crash is not None
    assert "SIGTERM: run stopped, cleaning up" in crash.message


def test_progress_writes_of_the_report_are_spaced_and_the_final_one_always_lands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rendering every cell after each test cost seconds per run; a killed run still has a recent report."""
    import conformance.report.files as report_module

    clock = [100.0]
    monkeypatch.setattr(report_module.time, "monotonic", lambda: clock[0])
    report = _report(tmp_path)
    report.write(progress=True)
    first = (tmp_path / JSON_NAME).stat().st_mtime_ns
    report.timings["setup"] = 1.0
    clock[0] += report_module.PROGRESS_INTERVAL / 2
    report.write(progress=True)
    assert "setup" not in json.loads((tmp_path / JSON_NAME).read_text())["timings_s"]
    assert (tmp_path / JSON_NAME).stat().st_mtime_ns == first
    clock[0] += report_module.PROGRESS_INTERVAL
    report.write(progress=True)
    assert json.loads((tmp_path / JSON_NAME).read_text())["timings_s"]["setup"] == 1.0
    report.timings["teardown"] = 2.0
    report.write(final=True)  # no matter how recent the last write
    assert json.loads((tmp_path / JSON_NAME).read_text())["timings_s"]["teardown"] == 2.0


def test_the_final_json_is_the_same_document_with_one_line_per_cell(tmp_path: Path) -> None:
    """The final layout is for reading and grep: indented sections, each cell of a cell list on a line of its own."""
    from conformance.report.files import final_json

    report = _report(tmp_path)
    for name, pick in (
        ("PodIPFromPlainClient[passthrough]", lambda e: e.reachable and e.source is Source.INBOUND_PASSTHROUGH),
        ("SourceAddressFromOtherPods[passthrough]", lambda e: not e.reachable),
    ):
        cell = _cell(IpFamily.IPV4, pick)
        observation = Observation(cell, _outcome("ok", "127.0.0.6"), True, [_outcome("ok", "127.0.0.6")], None)  # type: ignore[arg-type]
        expected = expect(cell)  # type: ignore[arg-type]
        report.record_cell(name, cell, expected, observation, judge(expected, observation), "reachability")  # type: ignore[arg-type]
    report.write(final=True)
    text = (tmp_path / JSON_NAME).read_text()
    document = json_document(report)
    assert json.loads(text) == json.loads(json.dumps(document))
    lines = text.splitlines()
    for cell in document["cells"]:  # type: ignore[attr-defined]
        assert f"    {json.dumps(cell)}," in lines or f"    {json.dumps(cell)}" in lines
    assert '  "mesh": {' in lines  # the rest stays indented
    assert final_json({}) == "{}"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_signal_whose_exception_is_swallowed_is_not_lost() -> None:
    """CI saw SIGTERM land in a weakref callback run by the garbage collector: "Exception ignored", exit 0."""
    interrupts = Interrupts("reports/ipv4/conformance-report.md")
    assert interrupts.lost() is None

    class Collected:
        def __del__(self) -> None:
            interrupts.handle(signal.SIGTERM, None)  # raises where Python ignores exceptions

    Collected()
    assert interrupts.lost() == "SIGTERM: run stopped, cleaning up, report: reports/ipv4/conformance-report.md"


def test_uncaptured_cells_get_rows_of_their_own_beside_the_captured_ones(tmp_path: Path) -> None:
    """Issue 22: a server's capture setting is a row of the profile's table, and the cell id names it."""
    report = _report(tmp_path)
    captured = next(
        c
        for c in all_cells([Profile.PASSTHROUGH], [IpFamily.IPV4])
        if c.capture is InboundCapture.ALL and c.path.from_other_pod and expect(c).source is Source.INBOUND_PASSTHROUGH
    )
    excluded = dataclasses.replace(captured, capture=InboundCapture.EXCLUDED)
    for cell, peer, source in ((captured, "127.0.0.6", "inbound_passthrough"), (excluded, "10.244.0.9", "client")):
        observation = Observation(cell, _outcome("ok", peer), True, [_outcome("ok", peer)], source)
        expected = expect(cell)
        report.record_cell("T[passthrough]", cell, expected, observation, judge(expected, observation), "full")
    rows = [line for line in markdown(report).splitlines() if line.startswith("| none")]
    assert [row.split(" | ")[0] for row in rows] == ["| none", "| none, capture excluded"]
    assert "✓ 127.0.0.6" in rows[0]
    assert "✓ client IP" in rows[1]
    assert excluded.id.startswith("passthrough+excluded/none/")
    assert {c["capture"] for c in json_document(report)["cells"]} == {"all", "excluded"}  # type: ignore[index,union-attr]
