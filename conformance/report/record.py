"""The record of a run: what it observed and judged, cell by cell and test by test, and each profile's result.

The one model both report files are rendered from (json_document.py, markdown.py); files.py writes them as
results arrive. Profile results follow Gateway API: `success` (every test passed), `partial` (some skipped for
missing capabilities, none failed), `failure` (any failed), `skipped` (nothing ran). Two results say why a
profile has no verdict: `interrupted` (the run stopped before its tests finished) and `not selected` (no test of
it was selected: `--profile`, `-k`). A setup failure (the cluster never came up) is recorded first of all.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field

from conformance.backends.base import ProcessDeath
from conformance.backends.precheck import PrecheckRun
from conformance.engine.probe import Observation, Verdict
from conformance.spec.capabilities import MeshCapabilities
from conformance.spec.dimensions import CellKey, IpFamily, Profile
from conformance.spec.outcome import Expectation

NOT_SELECTED = "not selected"
INTERRUPTED = "interrupted"

OUTCOME_TEXT = {"reset_or_eof": "reset/EOF", "http_503": "503", "refused": "refused", "timeout": "timeout"}
"""One vocabulary for both files: the spec's words for how a cell fails (`reset/EOF`, `503`, `refused`)."""


def outcome_text(label: str) -> str:
    """An observed outcome in the spec's words: `reset/EOF`, not `reset_or_eof`."""
    return OUTCOME_TEXT.get(label, label.removeprefix("http_"))


@dataclass
class CellRecord:
    """One cell: expected, what was observed, and every test that judged it."""

    cell: CellKey
    expected: Expectation
    observed: Observation
    checks: dict[str, bool] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    json_head: dict[str, object] | None = field(default=None, repr=False, compare=False)
    """The cell's JSON up to `observed` (json_document.py): fixed once the cell is recorded, so it is built once,
    where its checks grow with each test that judges it (a run rewrites its report a dozen times)."""

    @property
    def passed(self) -> bool:
        """Every check on the cell passed."""
        return all(self.checks.values())


@dataclass
class TestRecord:
    """One test (a case under a profile)."""

    nodeid: str
    case: str
    profile: str
    outcome: str  # passed | failed | skipped
    reason: str = ""


class RunRecord:
    """Accumulates the results of one run, as they arrive."""

    def __init__(
        self,
        mesh: MeshCapabilities,
        mesh_info: dict[str, str],
        backend: str,
        family: IpFamily,
        profiles: Sequence[Profile],
    ) -> None:
        self.mesh = mesh
        self.mesh_info = dict(mesh_info)
        self.backend = backend
        self.family = family
        self.profiles = list(profiles)
        self.cells: dict[CellKey, CellRecord] = {}
        self.tests: dict[str, TestRecord] = {}
        self.prechecks: list[dict[str, object]] = []
        self.started = datetime.datetime.now(datetime.UTC)
        self.finished: datetime.datetime | None = None
        self.interrupted = False
        self.timings: dict[str, float] = {}
        self.planned: dict[str, int] = {}
        """Selected tests per profile (after `-k` and `--profile`); unset means every profile was selected."""
        self.setup_error: dict[str, str] | None = None
        self.timeout_hint = ""
        """Where a timed-out cell's sidecar log is (the backend's logs), said beside each timeout."""
        self.probe_cells: dict[str, dict[str, object]] = {}
        """Probe cells by id (recorded by probes.record_probe)."""
        self.ztunnel_cells: dict[str, dict[str, object]] = {}
        """The node proxy's tunnel and late-enrolment cells by id (recorded by ztunnel.record_ztunnel)."""
        self.deaths: list[ProcessDeath] = []
        """Processes of the build under test that died during the run, in the order they were noticed."""

    # --- recording -------------------------------------------------------------------------------------

    def record_cell(
        self, test: str, cell: CellKey, expected: Expectation, observation: Observation, verdict: Verdict, part: str
    ) -> None:
        """A test judged (a part of) a cell: `part` is `reachability`, `source` or `arrival`."""
        record = self.cells.get(cell)
        if record is None:
            record = self.cells[cell] = CellRecord(cell, expected, observation)
        key = f"{test}:{part}"
        ok = verdict.holds(part)
        record.checks[key] = ok
        if not ok:
            record.reasons[key] = verdict.reason

    def record_arrival(self, test: str, cell: CellKey, ok: bool, reason: str) -> None:
        """The request record confirmed (or contradicted) where a cell's requests arrived."""
        record = self.cells.get(cell)
        if record is None:
            return
        record.checks[f"{test}:arrival"] = ok
        if not ok:
            record.reasons[f"{test}:arrival"] = reason

    def record_setup_error(self, message: str, logs: str) -> None:
        """The cluster could not be set up: the backend's one line and where its logs are."""
        self.setup_error = {"message": message, "logs": logs}

    def record_death(self, death: ProcessDeath) -> bool:
        """A process of the build died; False when this death was already recorded."""
        if any(d.key == death.key for d in self.deaths):
            return False
        self.deaths.append(death)
        return True

    def record_test(self, record: TestRecord) -> None:
        """A test finished (or was skipped)."""
        previous = self.tests.get(record.nodeid)
        if previous is not None and previous.outcome == "failed":
            return  # a teardown error after a failure keeps the failure
        self.tests[record.nodeid] = record

    def record_precheck(
        self, test: str, profile: str, run: PrecheckRun, expected: list[str], problems: list[str]
    ) -> None:
        """A precheck run with the findings expected of it."""
        self.prechecks.append(
            {
                "test": test,
                "profile": profile,
                "tool": run.tool,
                "exit_code": run.exit_code,
                "findings": [line for line in run.stdout.splitlines() if "IST0143" in line],
                "expected": expected,
                "warnings": run.warnings,
                "notes": run.notes,
                "problems": problems,
                "verdict": "pass" if not problems else "fail",
            }
        )

    # --- summary -------------------------------------------------------------------------------------

    def profile_result(self, profile: str) -> tuple[str, dict[str, int]]:
        """Gateway API-style result and statistics of one profile."""
        tests = [t for t in self.tests.values() if t.profile == profile]
        cells = [c for c in self.cells.values() if c.cell.profile == profile]  # a StrEnum equals its value
        probes = [p for p in self.probe_cells.values() if p.get("profile") == profile]
        node_proxy = [z for z in self.ztunnel_cells.values() if z.get("profile") == profile]
        stats = {
            "tests_passed": sum(t.outcome == "passed" for t in tests),
            "tests_failed": sum(t.outcome == "failed" for t in tests),
            "tests_skipped": sum(t.outcome == "skipped" for t in tests),
            "cells": len(cells),
            "cells_passed": sum(c.passed for c in cells),
            "cells_failed": sum(not c.passed for c in cells),
            "probe_cells": len(probes),
            "probe_cells_failed": sum(p.get("verdict") == "fail" for p in probes),
            "ztunnel_cells": len(node_proxy),
            "ztunnel_cells_failed": sum(z.get("verdict") == "fail" for z in node_proxy),
        }
        planned = self.planned.get(profile)
        finished = stats["tests_passed"] + stats["tests_failed"] + stats["tests_skipped"]
        if planned == 0:
            result = NOT_SELECTED
        elif (
            stats["tests_failed"]
            or stats["cells_failed"]
            or stats["probe_cells_failed"]
            or stats["ztunnel_cells_failed"]
        ):
            result = "failure"
        elif self.interrupted and (planned is None or finished < planned):
            result = INTERRUPTED
        elif stats["tests_passed"] == 0:
            result = "skipped"
        elif stats["tests_skipped"]:
            result = "partial"
        else:
            result = "success"
        return result, stats
