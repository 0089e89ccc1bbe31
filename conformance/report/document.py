"""The conformance report: `conformance-report.json` for machines, `conformance-report.md` for people.

Written as results arrive (after every test), so a run that fails, crashes or is interrupted still leaves a
report of what it saw. Profile results follow Gateway API: `success` (every test passed), `partial` (some
skipped for missing capabilities, none failed), `failure` (any failed), `skipped` (nothing ran). Two results say
why a profile has no verdict: `interrupted` (the run stopped before its tests finished) and `not selected` (no
test of it was selected: `--profile`, `-k`). A setup failure (the cluster never came up) is the first thing both
files say, with where the logs are.

JSON format `mesh-inbound-conformance/report`, version 4 (documented in the README, "The report").
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from conformance.backends.base import ProcessDeath
from conformance.backends.precheck import PrecheckRun
from conformance.engine.probe import Observation, Verdict
from conformance.report.ambient import moving_to_ambient
from conformance.report.probes import probe_document, probe_tables
from conformance.spec.capabilities import MeshCapabilities
from conformance.spec.dimensions import (
    ADDRESSES,
    Bind,
    CellKey,
    Client,
    DefaultEndpoint,
    IpFamily,
    PortKind,
    Profile,
    Protocol,
    Source,
)
from conformance.spec.dimensions import Path as CellPath
from conformance.spec.render import describe_expectation, describe_source
from conformance.spec.semantics import Expectation

REPORT_FORMAT = "mesh-inbound-conformance/report"
REPORT_VERSION = 4
JSON_NAME = "conformance-report.json"
NOT_SELECTED = "not selected"
INTERRUPTED = "interrupted"

# One vocabulary for both files: the spec's words for how a cell fails (`reset/EOF`, `503`, `refused`).
_OUTCOME_TEXT = {"reset_or_eof": "reset/EOF", "http_503": "503", "refused": "refused", "timeout": "timeout"}

PROGRESS_INTERVAL = 1.0
"""Seconds between two progress writes of the report (see Report.write)."""


def outcome_text(label: str) -> str:
    """An observed outcome in the spec's words: `reset/EOF`, not `reset_or_eof`."""
    return _OUTCOME_TEXT.get(label, label.removeprefix("http_"))


MD_NAME = "conformance-report.md"


@dataclass
class CellRecord:
    """One cell: expected, what was observed, and every test that judged it."""

    cell: CellKey
    expected: Expectation
    observed: Observation
    checks: dict[str, bool] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

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


class Report:
    """Accumulates results and rewrites both files after each one."""

    def __init__(
        self,
        directory: Path | None,
        mesh: MeshCapabilities,
        mesh_info: dict[str, str],
        backend: str,
        family: IpFamily,
        profiles: Sequence[Profile],
    ) -> None:
        self.directory = directory
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
        """Probe cells by id (see report_probes.py)."""
        self.deaths: list[ProcessDeath] = []
        """Processes of the build under test that died during the run, in the order they were noticed."""
        self._written_at: float | None = None
        """When the files were last written (time.monotonic()); progress writes are spaced by PROGRESS_INTERVAL."""

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
        cells = [c for c in self.cells.values() if c.cell.profile.value == profile]
        probes = [p for p in self.probe_cells.values() if p.get("profile") == profile]
        stats = {
            "tests_passed": sum(t.outcome == "passed" for t in tests),
            "tests_failed": sum(t.outcome == "failed" for t in tests),
            "tests_skipped": sum(t.outcome == "skipped" for t in tests),
            "cells": len(cells),
            "cells_passed": sum(c.passed for c in cells),
            "cells_failed": sum(not c.passed for c in cells),
            "probe_cells": len(probes),
            "probe_cells_failed": sum(p.get("verdict") == "fail" for p in probes),
        }
        planned = self.planned.get(profile)
        finished = stats["tests_passed"] + stats["tests_failed"] + stats["tests_skipped"]
        if planned == 0:
            result = NOT_SELECTED
        elif stats["tests_failed"] or stats["cells_failed"] or stats["probe_cells_failed"]:
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

    def document(self) -> dict[str, object]:
        """The JSON report."""
        profiles = []
        for profile in self.profiles:
            result, stats = self.profile_result(profile.value)
            tests = [t for t in self.tests.values() if t.profile == profile.value]
            profiles.append(
                {
                    "name": profile.value,
                    "result": result,
                    "statistics": stats,
                    "failed_tests": sorted(t.case for t in tests if t.outcome == "failed"),
                    "skipped_tests": [{"test": t.case, "reason": t.reason} for t in tests if t.outcome == "skipped"],
                }
            )
        return {
            "format": REPORT_FORMAT,
            "version": REPORT_VERSION,
            "setup_error": self.setup_error,
            "process_deaths": [
                {
                    "process": d.process,
                    "status": d.status,
                    "pods": [str(p) for p in d.pods],
                    "log_tail": list(d.log_tail),
                }
                for d in self.deaths
            ],
            "started": self.started.isoformat(timespec="seconds"),
            "finished": self.finished.isoformat(timespec="seconds") if self.finished else None,
            "interrupted": self.interrupted,
            "mesh": {**self.mesh.to_json(), **self.mesh_info},
            "backend": self.backend,
            "ip_family": self.family.value,
            "profiles": profiles,
            "prechecks": self.prechecks,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "cells": [
                {
                    "id": r.cell.id,
                    **r.cell.to_json(),
                    "expected": {**r.expected.to_json(), "source_address": self._address(r.expected.source)},
                    "observed": {
                        **r.observed.to_json(),
                        "outcome_text": outcome_text(r.observed.last.label),
                        "source_address": self._address(r.observed.source),
                    },
                    "verdict": "pass" if r.passed else "fail",
                    "checks": r.checks,
                    "reasons": r.reasons,
                }
                for r in sorted(self.cells.values(), key=lambda r: r.cell.id)
            ],
            "probe_cells": probe_document(self),
        }

    def _address(self, source: object) -> str | None:
        """The literal address of a source where it has one (127.0.0.6 for inbound_passthrough)."""
        try:
            return ADDRESSES[self.family].get(Source(str(source))) if source else None
        except ValueError:
            return None

    # --- markdown ------------------------------------------------------------------------------------

    def _observed_text(self, record: CellRecord) -> str:
        obs = record.observed
        if obs.last.label == "ok" and obs.source:
            try:
                shown = describe_source(Source(obs.source), self.family)
                if shown != obs.source:
                    shown += f" ({obs.source})"
            except ValueError:
                shown = obs.last.peer or "?"
            text = f"✓ {shown}"
        else:
            text = "✗ " + outcome_text(obs.last.label)
        if not obs.converged:
            text += " (unstable)"
        return text

    def markdown(self) -> str:
        """The same report as tables a person reads (fits $GITHUB_STEP_SUMMARY)."""
        mesh = self.mesh_info
        lines = [f"# Inbound conformance: {mesh.get('name', self.mesh.name)} {mesh.get('version', self.mesh.version)}"]
        if self.setup_error is not None:
            lines += [
                "",
                f"**Setup failed, no test ran:** {self.setup_error['message']}",
                "",
                f"Where the logs are: {self.setup_error['logs']}",
            ]
        lines += death_lines(self.deaths, "**", "**")
        lines += [
            "",
            f"Backend `{self.backend}`, {self.family.value}, build under test `{mesh.get('build', '') or '-'}`"
            + (f", hub `{mesh['hub']}` tag `{mesh['tag']}`" if mesh.get("hub") else "")
            + (" — **interrupted**" if self.interrupted else ""),
            "",
            "| profile | result | tests passed | failed | skipped | cells passed | cells failed |",
            "|---|---|---|---|---|---|---|",
        ]
        for profile in self.profiles:
            result, s = self.profile_result(profile.value)
            icon = {"success": "✅", "partial": "🟡", "failure": "❌", "skipped": "⏭️", INTERRUPTED: "⏹️"}.get(
                result, "–"
            )
            lines.append(
                f"| {profile.value} | {icon} {result} | {s['tests_passed']} | {s['tests_failed']} | "
                f"{s['tests_skipped']} | {s['cells_passed']} | {s['cells_failed']} |"
            )
        failed = [r for r in self.cells.values() if not r.passed]
        if failed:
            lines += ["", f"## Failed cells ({len(failed)})", ""]
            for r in sorted(failed, key=lambda r: r.cell.id)[:200]:
                reason = "; ".join(sorted({self._words(text) for text in r.reasons.values()}))
                tests = sorted({key.rsplit(":", 1)[0] for key, ok in r.checks.items() if not ok})
                rerun = " ".join(f"`{self.rerun_command(t)}`" for t in tests)
                lines.append(f"- ❌ `{r.cell.id}`: {reason} — case {', '.join(tests)}; rerun: {rerun}")
            if len(failed) > 200:
                lines.append(f"- ... and {len(failed) - 200} more (see {JSON_NAME})")
        if self.interrupted:
            stopped = [p.value for p in self.profiles if self.profile_result(p.value)[0] == INTERRUPTED]
            lines += ["", "The run was interrupted" + (f": {', '.join(stopped)} did not finish." if stopped else ".")]
        skipped = [t for t in self.tests.values() if t.outcome == "skipped"]
        if skipped:
            lines += ["", "## Skipped", ""]
            lines += [f"- `{t.case}` [{t.profile}]: {t.reason}" for t in sorted(skipped, key=lambda t: t.nodeid)]
        for run in self.prechecks:
            mark = "✅" if run["verdict"] == "pass" else "❌"
            lines += ["", f"## Precheck [{run['profile']}] {mark} ({run['tool']}, exit {run['exit_code']})", ""]
            findings, expected = run["findings"], run["expected"]
            assert isinstance(findings, list)
            assert isinstance(expected, list)
            if run["verdict"] == "pass":
                lines += (
                    [
                        f"These {len(findings)} findings are the expected ones: the spec gives IST0143 for "
                        + ", ".join(expected)
                        + ".",
                        "",
                    ]
                    if findings
                    else ["No findings, as the spec expects for this profile.", ""]
                )
            lines += [f"    {line}" for line in findings] or ["    (no findings)"]
            problems = run["problems"]
            assert isinstance(problems, list)
            lines += [f"- ❌ {p}" for p in problems]
            notes = run.get("notes") or []
            assert isinstance(notes, list)
            lines += [f"- ℹ️ {n}" for n in notes]
        lines += moving_to_ambient(self.cells.values())
        lines += self._tables()
        lines += probe_tables(self)
        return "\n".join(lines) + "\n"

    def _words(self, reason: str) -> str:
        """A verdict's reason in the report's vocabulary, a timeout pointing to the sidecar log."""
        for label, text in _OUTCOME_TEXT.items():
            reason = reason.replace(label, text)
        if "timeout" in reason and self.timeout_hint:
            reason += f" (a timeout: see the sidecar log, {self.timeout_hint})"
        return reason

    def rerun_command(self, test: str) -> str:
        """The command that reruns one test through tox: its case and profile as a `-k` expression."""
        case, _, profile = test.partition("[")
        expression = f"{case} and {profile.rstrip(']')}" if profile else case
        family = f" --ip-family {self.family.value}" if self.family is not IpFamily.IPV4 else ""
        return f'.venv/bin/tox -e conformance -- -k "{expression}"{family}'

    def _tables(self) -> list[str]:
        lines: list[str] = []
        for profile in self.profiles:
            records = [r for r in self.cells.values() if r.cell.profile is profile]
            if not records:
                continue
            lines += [
                "",
                f"## {profile.value}: expected / observed",
                "",
                "Each cell: expected, then ❌ and what was observed where they differ.",
                "",
                "| defaultEndpoint | port | protocol | path | client | " + " | ".join(b.value for b in Bind) + " |",
                "|---|---|---|---|---|" + "---|" * len(Bind),
            ]
            by_key = {r.cell: r for r in records}
            rows: dict[tuple[DefaultEndpoint, PortKind, Protocol, CellPath, Client | None], None] = {}
            for r in sorted(records, key=lambda r: _row_order(r.cell)):
                c = r.cell
                rows[(c.default_endpoint, c.port, c.protocol, c.path, c.client)] = None
            for endpoint, port, protocol, path, client in rows:
                who = f"{client.value} client" if client else "in the pod"
                row = f"| {endpoint.value} | {port.value} | {protocol.value} | {path.value} | {who} |"
                for bind in Bind:
                    key = CellKey(profile, endpoint, bind, port, protocol, path, client, self.family)
                    record = by_key.get(key)
                    if record is None:
                        row += " – |"
                    elif record.passed:
                        row += f" {describe_expectation(record.expected, self.family)} |"
                    else:
                        expected = describe_expectation(record.expected, self.family)
                        row += f" ❌ {expected}, saw {self._observed_text(record)} |"
                lines.append(row)
        return lines

    # --- files ---------------------------------------------------------------------------------------

    def write(self, final: bool = False, progress: bool = False) -> None:
        """Rewrite both files atomically (a reader never sees half a report).

        The JSON is indented only in the final write: json's indenting encoder is pure Python, and rewriting
        an indented document of every cell after each test cost seconds per run (the C encoder is ~10x faster).
        A `progress` write (after a test) is skipped when the files were written less than PROGRESS_INTERVAL
        ago: a run killed outright still leaves a report at most that old, and the ~0.1 s that a report of
        every cell takes to render is paid a few times per run instead of after each of its tests (seconds).
        """
        if self.directory is None:
            return
        now = time.monotonic()
        if progress and self._written_at is not None and now - self._written_at < PROGRESS_INTERVAL:
            return
        self._written_at = now
        self.directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.document(), indent=2) if final else json.dumps(self.document())
        _atomic_write(self.directory / JSON_NAME, text + "\n")
        _atomic_write(self.directory / MD_NAME, self.markdown())


DEATHS_WITH_LOG = 5
"""Deaths shown with their log's last lines (the JSON has every one's)."""


def death_lines(deaths: Sequence[ProcessDeath], strong: str = "", end: str = "") -> list[str]:
    """The deaths of the build's processes, for the terminal and the Markdown report, before anything else.

    Each once: what died and how, the pods it served, its log's last lines (for the first few).
    """
    if not deaths:
        return []
    if len(deaths) == 1:
        count, carried = "a process", "the cells it carried are void while it is dead"
    else:
        count, carried = f"{len(deaths)} processes", "the cells each carried are void while it is dead"
    lines = [
        "",
        f"{strong}{count} of the build under test died during the run{end}: {carried} (their failure says "
        "so). Look at the log, not at the cells.",
        "",
    ]
    for number, death in enumerate(deaths):
        lines.append(f"- {death.summary}; pods: {', '.join(str(p) for p in death.pods) or '-'}")
        if number < DEATHS_WITH_LOG:
            lines += [f"      {line}" for line in death.log_tail] or ["      (its log is empty)"]
    if len(deaths) > DEATHS_WITH_LOG:
        lines.append(f"  (log lines of the first {DEATHS_WITH_LOG} only; every one's are in {JSON_NAME})")
    return lines


def _row_order(cell: CellKey) -> tuple[int, ...]:
    return (
        list(DefaultEndpoint).index(cell.default_endpoint),
        list(PortKind).index(cell.port),
        list(Protocol).index(cell.protocol),
        list(CellPath).index(cell.path),
        list(Client).index(cell.client) if cell.client else 9,
    )


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
