"""`compare` on two whole runs of the emulated suite: the reference sidecar, then a wrong one.

Issue 24's done-when: the regressions `compare` lists are exactly the cells the wrong sidecar breaks (each cell,
traffic or probe, whose verdict is `fail` in the wrong run, all of which pass with the reference sidecar, and which
tests/test_suite_runs.py derives from the spec), and it exits 1. Two real runs (~5 s of 2 cores each), IPv4 only:
the other family's runs are tests/test_suite_runs.py's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from test_suite_runs import WRONG_SIDECAR, cells_a_localhost_sidecar_breaks, run_suite

from conformance.spec.dimensions import IpFamily


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
def test_compare_lists_exactly_the_cells_a_wrong_sidecar_breaks(tmp_path: Path) -> None:
    reference, wrong = tmp_path / "reference", tmp_path / "wrong"
    for folder, extra in ((reference, ()), (wrong, ("--emulator-sidecar", WRONG_SIDECAR))):
        folder.mkdir()
        proc = run_suite(folder, "--ip-family", "ipv4", *extra)
        assert proc.returncode == (1 if extra else 0), proc.stdout[-3000:] + proc.stderr[-2000:]
    base, candidate = (f / "reports" / "conformance-report.json" for f in (reference, wrong))
    wrong_doc = json.loads(candidate.read_text())
    failed = {c["id"] for c in wrong_doc["cells"] + wrong_doc["probe_cells"] if c["verdict"] == "fail"}
    assert cells_a_localhost_sidecar_breaks(IpFamily.IPV4) <= failed

    proc = subprocess.run(
        [sys.executable, "-m", "conformance", "compare", str(base), str(candidate), "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert {c["id"] for c in doc["regressions"]} == failed
    assert len(doc["regressions"]) == len(failed)
    assert doc["fixes"] == []
    assert doc["only_in_base"] == doc["only_in_candidate"] == []
    assert doc["summary"]["compared"] == len(wrong_doc["cells"]) + len(wrong_doc["probe_cells"])
    assert {p["name"]: (p["base"], p["candidate"]) for p in doc["profiles"]} == {
        "legacy": ("success", "failure"),
        "passthrough": ("success", "failure"),
    }

    # Swapped, the same cells are fixes and nothing regresses: exit 0.
    swapped = subprocess.run(
        [sys.executable, "-m", "conformance", "compare", str(candidate), str(base), "--format", "markdown"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert swapped.returncode == 0, swapped.stderr
    assert swapped.stdout.startswith(f"✅ **0 regressions, {len(failed)} fixes, ")
