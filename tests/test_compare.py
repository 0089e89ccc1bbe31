"""`compare` on small reports (tests/data/compare/): each group, the formats, the exit status, bad input.

The two fixtures are cells of real emulated runs (the reference sidecar and tests/sidecars/localhost_sidecar.py),
edited where a case needs it: BASE passes LEGACY_MESHED and fails LEGACY_PLAIN, CANDIDATE the other way round;
a baseline cell's 503 becomes a reset with the same verdict; a failing cell's source becomes 127.0.0.6; an
ambient cell is seen from another client pod IP (not a change); one cell is only in each; one has no verdict in
CANDIDATE; one is expected differently; a probe cell regresses; CANDIDATE was interrupted.
The end-to-end check on two whole runs is tests/test_suite_runs.py (a wrong sidecar's regressions).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conformance.cli import main
from conformance.results.compare import COMPARE_FORMAT, COMPARE_VERSION, compare
from conformance.results.compare_render import FOLD, LIMIT, markdown
from conformance.results.documents import load_report

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "compare"
BASE, CANDIDATE = DATA / "base.json", DATA / "candidate.json"

LEGACY_MESHED = "legacy/0.0.0.0/loopback/declared/http/pod_ip/meshed/ipv4"
LEGACY_PLAIN = "legacy/0.0.0.0/loopback/declared/http/pod_ip/plain/ipv4"
BASELINE_503 = "baseline/none/loopback/declared/http/pod_ip/meshed/ipv4"
SOURCE_CHANGED = "legacy/0.0.0.0/loopback/declared/http/service/meshed/ipv4"
OTHER_PEER = "ambient/0.0.0.0/pod_ip/declared/http/pod_ip/ambient/ipv4"
ONLY_BASE = "ambient/0.0.0.0/pod_ip/declared/http/pod_ip/meshed/ipv4"
ONLY_CANDIDATE = "ambient/0.0.0.0/pod_ip/declared/http/pod_ip/plain/ipv4"
NO_VERDICT = "ambient/0.0.0.0/pod_ip/declared/http/service/ambient/ipv4"
EXPECTED_CHANGED = "ambient/0.0.0.0/pod_ip/declared/http/service/meshed/ipv4"
PROBE_REGRESSED = "probe/passthrough/loopback/http/no_rewrite/ipv4"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["compare", *args])
    out, err = capsys.readouterr()
    return status, out, err


def document(capsys: pytest.CaptureFixture[str], base: Path = BASE, candidate: Path = CANDIDATE) -> dict[str, Any]:
    status, out, _ = run_cli(capsys, str(base), str(candidate), "--format", "json")
    doc: dict[str, Any] = json.loads(out)
    assert status == (1 if doc["summary"]["regressions"] or doc["summary"]["profile_regressions"] else 0)
    return doc


def ids(entries: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in entries]


def test_the_groups(capsys: pytest.CaptureFixture[str]) -> None:
    doc = document(capsys)
    assert (doc["format"], doc["version"]) == (COMPARE_FORMAT, COMPARE_VERSION)
    assert (COMPARE_FORMAT, COMPARE_VERSION) == ("mesh-inbound-conformance/compare", 1)
    # Passed in BASE, not in CANDIDATE: a failed verdict or none at all; traffic and probe cells alike.
    assert ids(doc["regressions"]) == [NO_VERDICT, LEGACY_MESHED, PROBE_REGRESSED]
    assert [e["kind"] for e in doc["regressions"]] == ["traffic", "traffic", "probe"]
    assert ids(doc["fixes"]) == [LEGACY_PLAIN]
    # The same verdict; what differs is named, from -> to. Another client pod IP (OTHER_PEER) is no change.
    changed = {e["id"]: e["changes"] for e in doc["changed"]}
    assert set(changed) == {BASELINE_503, SOURCE_CHANGED, EXPECTED_CHANGED}
    assert changed[BASELINE_503] == [{"key": "observed.outcome", "base": "http_503", "candidate": "reset_or_eof"}]
    assert changed[SOURCE_CHANGED] == [
        {"key": "observed.source", "base": "localhost", "candidate": "inbound_passthrough"}
    ]
    assert [c["key"] for c in changed[EXPECTED_CHANGED]] == ["expected"]
    assert ids(doc["only_in_base"]) == [ONLY_BASE]
    assert ids(doc["only_in_candidate"]) == [ONLY_CANDIDATE]
    assert "candidate" not in doc["only_in_base"][0]
    assert doc["summary"] == {
        "compared": 9,
        "regressions": 3,
        "fixes": 1,
        "changed": 3,
        "only_in_base": 1,
        "only_in_candidate": 1,
        "profiles_changed": 3,
        "profile_regressions": 3,
    }
    # A cell's keys are the JSON's own (whatever a newer report adds), not today's enums.
    regression = doc["regressions"][1]
    assert regression["keys"]["bind"] == "loopback"
    assert set(regression["keys"]) == set(load_report(CANDIDATE).cells[LEGACY_MESHED]) - {
        "id", "expected", "observed", "verdict", "checks", "reasons"
    }  # fmt: skip
    assert regression["base"]["verdict"] == "pass"
    assert regression["candidate"]["reasons"] == {
        "SidecarInstanceEndpoint[legacy]:full": "expected http_503, got ok from 127.0.0.1 (localhost)"
    }


def test_profiles_that_changed(capsys: pytest.CaptureFixture[str]) -> None:
    profiles = {p["name"]: p for p in document(capsys)["profiles"]}
    assert set(profiles) == {"legacy", "passthrough", "ambient"}  # baseline held, unchanged: not listed
    assert profiles["legacy"] == {
        "name": "legacy",
        "base": "success",
        "candidate": "failure",
        "regression": True,
        "newly_failed_tests": ["SidecarInstanceEndpoint"],
        "no_longer_failed_tests": [],
    }
    # Failing in both, yet a test fails that did not: a regression, named.
    assert profiles["passthrough"]["regression"] is True
    assert profiles["passthrough"]["newly_failed_tests"] == ["ServiceFromPlainClient"]
    assert profiles["passthrough"]["no_longer_failed_tests"] == ["PodIPFromPlainClient"]
    # A run that stopped must not read as "no regression".
    assert (profiles["ambient"]["candidate"], profiles["ambient"]["regression"]) == ("interrupted", True)


def test_the_notes_say_what_was_not_compared(capsys: pytest.CaptureFixture[str]) -> None:
    notes = document(capsys)["notes"]
    assert any("1 compared cell is expected differently" in n for n in notes)
    assert any(n.startswith("CANDIDATE was interrupted") for n in notes)
    assert not any("families" in n or "mesh versions" in n for n in notes)


def test_a_report_against_itself_is_no_change(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, str(BASE), str(BASE))
    assert status == 0
    assert out.splitlines()[0] == (
        "0 regressions, 0 fixes, 0 changed observations, 0 profile regressions, 0 profiles changed, "
        "0 cells in one run only (10 cells compared)"
    )


def test_swapped_the_fix_is_a_regression(capsys: pytest.CaptureFixture[str]) -> None:
    doc = document(capsys, CANDIDATE, BASE)
    assert ids(doc["regressions"]) == [LEGACY_PLAIN]
    assert ids(doc["fixes"]) == [NO_VERDICT, LEGACY_MESHED, PROBE_REGRESSED]


def _edited(tmp_path: Path, name: str, edit: dict[str, Any]) -> Path:
    doc = json.loads(BASE.read_text())
    for key, value in edit.items():
        if key == "mesh.version":
            doc["mesh"] = {**doc["mesh"], "version": value}
        else:
            doc[key] = value
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def test_another_family_is_said_plainly_and_not_compared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(BASE.read_text())
    doc["ip_family"] = "ipv6"
    for cell in doc["cells"] + doc["probe_cells"]:
        cell["id"] = cell["id"].replace("/ipv4", "/ipv6")
    other = tmp_path / "ipv6.json"
    other.write_text(json.dumps(doc))
    result = document(capsys, BASE, other)
    assert result["summary"]["compared"] == 0
    assert result["summary"]["regressions"] == 0
    assert len(result["only_in_base"]) == len(result["only_in_candidate"]) == 10
    assert any("BASE is an ipv4 run and CANDIDATE an ipv6 run" in n for n in result["notes"])


def test_another_mesh_version_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = _edited(tmp_path, "other.json", {"mesh.version": "1.21.6"})
    notes = document(capsys, BASE, other)["notes"]
    assert any("different mesh versions (reference and 1.21.6)" in n for n in notes)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot read it"),
        ("{not json", "not JSON"),
        ('{"format": "mesh-inbound-conformance/spec", "version": 5}', "not a conformance report"),
        ('{"format": "mesh-inbound-conformance/report", "version": 99, "cells": [], "profiles": []}', "version 99"),
        ('{"format": "mesh-inbound-conformance/report", "version": 4}', "truncated"),
        (
            '{"format": "mesh-inbound-conformance/report", "version": 4, "cells": [{}], "profiles": []}',
            "cells[0] has no",
        ),
        ('{"format": "mesh-inbound-conformance/report", "version": 4, "cells": [], "profiles": [1]}', "profiles[0]"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, says: str
) -> None:
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content)
    for args in ((str(path), str(BASE)), (str(BASE), str(path))):
        status, out, err = run_cli(capsys, *args)
        assert status == 2
        assert out == ""
        assert err.count("\n") == 1
        assert err.startswith(f"mesh-inbound-conformance compare: {path}: ")
        assert says in err


def test_argument_mistakes_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["compare", str(BASE), str(CANDIDATE), "--format", "html"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_markdown_opens_with_the_headline_and_folds_long_lists(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, str(BASE), str(CANDIDATE), "--format", "markdown")
    assert status == 1
    lines = out.splitlines()
    assert lines[0].startswith("❌ **3 regressions, 1 fix, 3 changed observations, 3 profile regressions")
    assert "| ambient (**regression**) | ✅ success | ⏹️ interrupted |  |" in lines
    # Short lists stay open; every regression is a row with both sides and the reason.
    assert "**Regressions (3): passed in BASE, not in CANDIDATE**" in lines
    assert "<details>" not in out
    row = next(line for line in lines if line.startswith(f"| `{LEGACY_MESHED}` |"))
    assert row == (
        f"| `{LEGACY_MESHED}` | pass: 503 | fail: ok from 127.0.0.1 (localhost) | "
        "expected http_503, got ok from 127.0.0.1 (localhost) |"
    )
    assert f"| `{BASELINE_503}` | pass | observed.outcome: http_503 → reset_or_eof |" in lines
    assert "> **Note:** CANDIDATE was interrupted" in out


def test_markdown_folds_and_limits_long_lists(tmp_path: Path) -> None:
    """More than FOLD entries go in <details>; more than LIMIT are cut with a pointer to the JSON."""
    base = json.loads(BASE.read_text())
    template = base["cells"][0]
    base["cells"] = [{**template, "id": f"{template['id']}/{n}"} for n in range(LIMIT + 5)]
    candidate = json.loads(json.dumps(base))
    for cell in candidate["cells"][: FOLD + 1]:
        cell["verdict"] = "fail"
    candidate["cells"] = candidate["cells"][: LIMIT + 3]
    (tmp_path / "b.json").write_text(json.dumps(base))
    (tmp_path / "c.json").write_text(json.dumps(candidate))
    out = markdown(compare(load_report(tmp_path / "b.json"), load_report(tmp_path / "c.json")))
    assert f"<summary>Regressions ({FOLD + 1}): passed in BASE, not in CANDIDATE</summary>" in out
    assert out.count("| fail: ") == FOLD + 1
    assert "**In BASE only (2): not compared**" in out
    many = markdown(compare(load_report(tmp_path / "c.json"), load_report(tmp_path / "b.json")))
    assert f"<summary>Fixes ({FOLD + 1}): not passed in BASE, passed in CANDIDATE</summary>" in many
    assert "more: `--format json` lists them all" not in many
    base["cells"] = base["cells"] + [{**template, "id": f"extra/{n}"} for n in range(LIMIT)]
    (tmp_path / "b.json").write_text(json.dumps(base))
    cut = markdown(compare(load_report(tmp_path / "b.json"), load_report(tmp_path / "c.json")))
    assert f"<summary>In BASE only ({LIMIT + 2}): not compared</summary>" in cut
    assert "... and 2 more: `--format json` lists them all." in cut


def test_python_m_conformance_compare_exits_with_the_status() -> None:
    """The command as a user types it (also `mesh-inbound-conformance compare` and `tox -e cli -- compare`)."""
    proc = subprocess.run(
        [sys.executable, "-m", "conformance", "compare", str(BASE), str(CANDIDATE), "--format", "text"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("3 regressions, 1 fix,")
    assert f"  {LEGACY_MESHED}: was pass: 503; now fail: ok from 127.0.0.1 (localhost)" in proc.stdout
    assert f"  {BASELINE_503}: observed.outcome: http_503 → reset_or_eof" in proc.stdout
