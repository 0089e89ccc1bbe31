"""The Markdown report reads top-down (issue 24 item 5): the summary and the failures first, the long sections folded.

A record of every cell of the spec (IPv4), judged as the spec expects, is rendered as a real run's report would be;
then one cell, one probe cell or one precheck is made to fail. The whole-run counterpart (a wrong sidecar's real
report) is in test_suite_runs.py.
"""

from __future__ import annotations

import re

from conformance.backends.precheck import PrecheckRun
from conformance.engine.probe import Observation, ProbeOutcome, Verdict
from conformance.report.fold import fold
from conformance.report.markdown import markdown
from conformance.report.probes import record_probe
from conformance.report.record import RunRecord
from conformance.report.record import TestRecord as _TestRecord  # not a test class
from conformance.report.ztunnel import record_ztunnel
from conformance.spec import all_cells, expect
from conformance.spec.capabilities import emulated_capabilities
from conformance.spec.dimensions import CellKey, Interception, IpFamily, Profile
from conformance.spec.probes import expect_probe, probe_cells
from conformance.spec.ztunnel import expect_late, expect_tunnel, late_cells, tunnel_cells

V4 = IpFamily.IPV4
TOP_LINES = 20
"""Lines above the first fold of a passing report: measured 10 (title, build line, summary table of 4 profiles)."""
FINDING = "Error [IST0143] (Pod echo-none-0.mic-mesh) Port 8081 is exposed in a Service but listens on localhost."


def _observation(cell: CellKey) -> Observation:
    """What a correct mesh shows for the cell: reached with the expected source, or the expected failure."""
    want = expect(cell)
    if want.reachable:
        outcome = ProbeOutcome("ok", 200, "10.244.0.9", None, 1.0, "", "r1")
        return Observation(cell, outcome, True, [outcome], want.source.value if want.source else None)
    outcome = ProbeOutcome(want.failure[0].value, None, None, None, 1.0, "", "r1")
    return Observation(cell, outcome, True, [outcome], None)


def _record(failed_cell: CellKey | None = None, failed_probe: str = "", failed_precheck: str = "") -> RunRecord:
    """Every IPv4 cell, probe cell and node-proxy cell, as a correct mesh passes them, but those named."""
    record = RunRecord(emulated_capabilities(), {}, "emulated", V4, tuple(Profile))
    for profile in Profile:
        record.record_test(_TestRecord(f"t[{profile.value}]", "T", profile.value, "passed"))
    for cell in all_cells(families=[V4]):
        ok = cell != failed_cell
        verdict = Verdict(ok, True, True, "" if ok else "expected refused, got ok from 10.244.0.9 (client)")
        record.record_cell(f"PodIPFromPlainClient[{cell.profile.value}]", cell, expect(cell), _observation(cell),
                           verdict, "full")  # fmt: skip
    for probe in probe_cells(tuple(Profile), (V4,)):
        ok = probe.id != failed_probe
        observed: dict[str, object] = {"ready": True, "restarts": 0}
        record_probe(record, "P[x]", probe, expect_probe(probe), observed, "probe_ready", ok, "" if ok else "no")
    for tunnel in tunnel_cells((Profile.AMBIENT,), (V4,)):
        want = expect_tunnel(tunnel).to_json()
        record_ztunnel(record, "Z[ambient]", tunnel.id, tunnel.to_json(), want, {"outcome": "ok"}, True, "")
    for late in late_cells((Profile.AMBIENT,), (V4,)):
        want = expect_late(late).to_json()
        record_ztunnel(record, "L[ambient]", late.id, late.to_json(), want, {"outcome": "ok"}, True, "")
    for profile in (Profile.PASSTHROUGH, Profile.LEGACY):
        problems = ["echo-none:8081 was not reported"] if profile.value == failed_precheck else []
        run = PrecheckRun("suite-checker", 1, FINDING + "\n", "")
        record.record_precheck(f"LocalhostPrecheck[{profile.value}]", profile.value, run, ["echo-none:8081"], problems)
    return record


def _folds(text: str) -> list[tuple[str, str, list[str]]]:
    """Each `<details>` block: its opening tag, its summary's text and its body's lines."""
    found = re.findall(r"^(<details(?: open)?>)\n<summary>(.*)</summary>\n((?:.*\n)*?)</details>$", text, re.M)
    return [(tag, summary, body.splitlines()) for tag, summary, body in found]


def _above_folds(text: str) -> list[str]:
    return text[: text.index("\n<details")].splitlines()


def test_a_passing_report_is_its_summary_then_one_closed_fold_per_long_section() -> None:
    text = markdown(_record())
    top = _above_folds(text)
    assert len(top) < TOP_LINES, top
    assert any(line.startswith("| passthrough | ✅ success |") for line in top)
    folds = _folds(text)
    assert folds
    assert all(tag == "<details>" for tag, _, _ in folds)
    assert all(summary.endswith(("✅", "ℹ️")) or "false Ready ⚠️" in summary for _, summary, _ in folds)
    summaries = [summary for _, summary, _ in folds]
    passthrough = sum(c.profile is Profile.PASSTHROUGH and c.interception is Interception.REDIRECT
                      for c in all_cells(families=[V4]))  # fmt: skip
    assert f"passthrough: {passthrough}/{passthrough} cells as expected ✅" in summaries
    assert "Precheck [passthrough] (suite-checker): findings as expected ✅" in summaries
    assert "The node proxy's own contract (ambient): 18/18 cells as expected ✅" in summaries
    assert any(s.startswith("passthrough, TPROXY: ") for s in summaries)
    assert any(s.startswith("Moving to ambient: ") and s.endswith("ℹ️") for s in summaries)
    assert any(s.startswith("legacy, health probes: ") and "(1 false Ready ⚠️)" in s for s in summaries)
    # Every section heading below the summary is inside a fold; GitHub renders a table in one only between
    # blank lines.
    assert not [line for line in text.splitlines()[len(top) :] if line.startswith("## ") and line not in
                {body_line for _, _, body in folds for body_line in body}]  # fmt: skip
    assert all(body[0] == "" and body[-1] == "" for _, _, body in folds)
    assert text.count("<details") == len(folds) == text.count("</details>")


def test_a_failed_cell_is_listed_above_the_folds_and_opens_its_profiles_section() -> None:
    cell = next(c for c in all_cells([Profile.PASSTHROUGH], [V4]) if c.interception is Interception.REDIRECT)
    text = markdown(_record(failed_cell=cell))
    top = _above_folds(text)
    assert any(line.startswith("| passthrough | ❌ failure |") for line in top)
    assert any(line.startswith(f"- ❌ `{cell.id}`: expected refused") and "rerun: `" in line for line in top)
    folds = {summary: tag for tag, summary, _ in _folds(text)}
    total = sum(c.profile is Profile.PASSTHROUGH and c.interception is Interception.REDIRECT
                for c in all_cells(families=[V4]))  # fmt: skip
    assert folds[f"passthrough: 1 of {total} cells differ ❌"] == "<details open>"
    # Only the section with the failure is open.
    assert [summary for summary, tag in folds.items() if tag == "<details open>"] == [
        f"passthrough: 1 of {total} cells differ ❌"
    ]


def test_a_failed_probe_cell_or_precheck_opens_its_own_section_only() -> None:
    probe = next(p for p in probe_cells((Profile.LEGACY,), (V4,)))
    text = markdown(_record(failed_probe=probe.id, failed_precheck="legacy"))
    opened = [summary for tag, summary, _ in _folds(text) if tag == "<details open>"]
    assert len(opened) == 2, opened
    assert opened[0] == "Precheck [legacy] (suite-checker): 1 problem ❌"
    assert opened[1].startswith("legacy, health probes: 1 of ")
    assert " cells differ ❌" in opened[1]
    # The failed probe cell is listed above the folds, with the case that judged it and its rerun command.
    top = _above_folds(text)
    assert "## Failed cells (1)" in top
    assert any(line.startswith(f"- ❌ `{probe.id}`: ") and "rerun: `" in line for line in top), top


def test_a_summary_is_html_escaped_and_followed_by_a_blank_line() -> None:
    lines = fold("a <b> & 'c'", ["| x |", "|---|"], True)
    assert lines == [
        "",
        "<details open>",
        "<summary>a &lt;b&gt; &amp; 'c'</summary>",
        "",
        "| x |",
        "|---|",
        "",
        "</details>",
    ]
