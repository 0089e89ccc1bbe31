"""`mesh-inbound-conformance compare BASE.json CANDIDATE.json`: what changed between two runs' reports.

A builder of a custom distribution asks how their build differs from the release it claims to be; a maintainer
asks what last night broke. Both are a diff of two reports, cell by cell (matched by `id`, traffic and probe cells
alike), grouped by what a reader acts on:

- regressions: passed in BASE, not in CANDIDATE (failed, or no verdict);
- fixes: not passed in BASE, passed in CANDIDATE;
- changed: the same verdict, yet a fact that matters differs (see OBSERVED_FACTS / PROBE_FACTS), or the
  expectation itself (the two reports were written by suites whose specs disagree on that cell);
- cells in one run only: never compared, never guessed at (another family, another release's cells, a run that
  stopped early); the notes say why when the reports themselves tell (families, versions, backends differ);
- profiles whose result or failed tests changed; one that held in BASE (`success`, `partial`) and failed or was
  interrupted in CANDIDATE is a regression too (a failing test without cells, or a run that stopped, must not
  read as "no regression").

The JSON document is format `mesh-inbound-conformance/compare`, version 1 (docs/running.md, "Comparing two runs").
The command line is conformance.results.compare_command; the text and Markdown, compare_render.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conformance.results.documents import ReportError, SavedReport

COMPARE_FORMAT = "mesh-inbound-conformance/compare"
COMPARE_VERSION = 1

OBSERVED_FACTS = ("outcome", "source", "converged", "voided_by")
"""A traffic cell's observed facts that matter: the outcome (503 became reset), the source by meaning (client,
127.0.0.6, localhost, the pod itself: "a different source address"), whether it converged, the deaths that voided
it. Not compared: `peer` (the literal address; a pod's IP differs between any two clusters, so it is compared only
where neither run could name the source), `detail`, `attempts`, `latency_ms` (they differ on every run), and
`outcome_text`/`source_address` (the words and the address of `outcome`/`source`)."""
PROBE_FACTS = ("ready", "sources", "reachable", "outcome")
"""A probe cell's facts that matter: the kubelet's verdict, who the app saw probing (by meaning), whether another
pod reached the port and how. Not compared: `peers` (literal addresses), `detail`, `warning` (derived from these)."""
NOT_KEYS = frozenset({"id", "expected", "observed", "verdict", "checks", "reasons"})
"""A cell's entries that are not its keys: everything else (profile, bind, path, probe...) is shown as the JSON
has it, so cells of a newer report with keys this build does not know still read right."""
HELD = frozenset({"success", "partial"})
BROKEN = frozenset({"failure", "interrupted"})


@dataclass(frozen=True)
class CellChange:
    """One matched (or unmatched) cell: its keys and each side's verdict and observation."""

    id: str
    kind: str
    keys: dict[str, Any]
    base: dict[str, Any] | None
    candidate: dict[str, Any] | None
    changes: tuple[dict[str, Any], ...] = ()

    @property
    def reason(self) -> str:
        """CANDIDATE's reasons for a verdict that is not a pass (BASE's, for a fix)."""
        side = self.candidate if self.candidate and self.candidate.get("verdict") != "pass" else self.base
        reasons = (side or {}).get("reasons") or {}
        return "; ".join(str(r) for r in reasons.values()) if isinstance(reasons, dict) else str(reasons)

    def to_json(self) -> dict[str, Any]:
        """The cell as the JSON document lists it."""
        doc: dict[str, Any] = {"id": self.id, "kind": self.kind, "keys": self.keys}
        for name, side in (("base", self.base), ("candidate", self.candidate)):
            if side is not None:
                doc[name] = {
                    "verdict": side.get("verdict"),
                    "observed": side.get("observed"),
                    "reasons": side.get("reasons") or {},
                }
        if self.changes:
            doc["changes"] = list(self.changes)
        return doc


@dataclass(frozen=True)
class ProfileChange:
    """A profile whose result or failed tests differ, or that only one run has."""

    name: str
    base: str | None
    candidate: str | None
    newly_failed: tuple[str, ...] = ()
    no_longer_failed: tuple[str, ...] = ()

    @property
    def regression(self) -> bool:
        """Held in BASE, failed or interrupted in CANDIDATE; or a test fails that did not."""
        return (self.base in HELD and self.candidate in BROKEN) or (self.base is not None and bool(self.newly_failed))

    def to_json(self) -> dict[str, Any]:
        """The profile as the JSON document lists it."""
        return {
            "name": self.name,
            "base": self.base,
            "candidate": self.candidate,
            "regression": self.regression,
            "newly_failed_tests": list(self.newly_failed),
            "no_longer_failed_tests": list(self.no_longer_failed),
        }


@dataclass
class Comparison:
    """Two reports compared: the groups, the notes on what could not be compared, and each run's identity."""

    base: SavedReport
    candidate: SavedReport
    matched: int = 0
    regressions: list[CellChange] = field(default_factory=list)
    fixes: list[CellChange] = field(default_factory=list)
    changed: list[CellChange] = field(default_factory=list)
    only_in_base: list[CellChange] = field(default_factory=list)
    only_in_candidate: list[CellChange] = field(default_factory=list)
    profiles: list[ProfileChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def profile_regressions(self) -> list[ProfileChange]:
        """The profiles that got worse."""
        return [p for p in self.profiles if p.regression]

    @property
    def exit_status(self) -> int:
        """1 when anything regressed, else 0."""
        return 1 if self.regressions or self.profile_regressions else 0

    def headline(self) -> str:
        """One line: the counts a reader decides on, regressions first."""
        parts = [
            _count(len(self.regressions), "regression"),
            _count(len(self.fixes), "fix", "fixes"),
            _count(len(self.changed), "changed observation"),
            _count(len(self.profile_regressions), "profile regression"),
            _count(len(self.profiles), "profile changed", "profiles changed"),
            _count(
                len(self.only_in_base) + len(self.only_in_candidate), "cell in one run only", "cells in one run only"
            ),
        ]
        return ", ".join(parts) + f" ({self.matched} cells compared)"

    def to_json(self) -> dict[str, Any]:
        """The versioned document (`--format json`)."""
        return {
            "format": COMPARE_FORMAT,
            "version": COMPARE_VERSION,
            "headline": self.headline(),
            "base": run_identity(self.base),
            "candidate": run_identity(self.candidate),
            "notes": list(self.notes),
            "summary": {
                "compared": self.matched,
                "regressions": len(self.regressions),
                "fixes": len(self.fixes),
                "changed": len(self.changed),
                "only_in_base": len(self.only_in_base),
                "only_in_candidate": len(self.only_in_candidate),
                "profiles_changed": len(self.profiles),
                "profile_regressions": len(self.profile_regressions),
            },
            "regressions": [c.to_json() for c in self.regressions],
            "fixes": [c.to_json() for c in self.fixes],
            "changed": [c.to_json() for c in self.changed],
            "only_in_base": [c.to_json() for c in self.only_in_base],
            "only_in_candidate": [c.to_json() for c in self.only_in_candidate],
            "profiles": [p.to_json() for p in self.profiles],
        }


def _count(number: int, singular: str, plural: str | None = None) -> str:
    return f"{number} {singular if number == 1 else (plural or singular + 's')}"


def run_identity(report: SavedReport) -> dict[str, Any]:
    """What names a run: the file, the mesh, the family, the backend, when, and whether it finished."""
    doc = report.document
    mesh = report.mesh
    return {
        "path": str(report.path),
        "label": report.label,
        "mesh": {key: mesh.get(key) for key in ("name", "version", "build", "hub", "tag")},
        "backend": doc.get("backend"),
        "ip_family": report.family,
        "report_version": doc.get("version"),
        "started": doc.get("started"),
        "interrupted": bool(doc.get("interrupted")),
        "setup_error": _setup_error(doc.get("setup_error")),
    }


def _setup_error(value: Any) -> str | None:
    """The one line of a setup error (`{message, logs}` in version 4), or None."""
    if not value:
        return None
    return str(value.get("message", value)) if isinstance(value, dict) else str(value)


def check_entries(report: SavedReport) -> SavedReport:
    """The report's cells and profiles are what compare reads (objects with an id, a name), or ReportError.

    load_report checks the document's format and version; a hand-edited or truncated file can still hold a cell
    without an id, which must be one line, not a traceback.
    """
    for key, name in (("cells", "id"), ("probe_cells", "id"), ("profiles", "name")):
        entries = report.document.get(key) or []
        if not isinstance(entries, list):
            raise ReportError(f"{report.path}: {key!r} is not a list")
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get(name), str):
                raise ReportError(f"{report.path}: {key}[{index}] has no {name!r}; is the report hand-edited?")
    return report


def _keys(cell: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in cell.items() if key not in NOT_KEYS}


def _facts(kind: str, cell: dict[str, Any]) -> dict[str, Any]:
    """The observed facts compared for a cell of this kind (lists as sets: order is not a fact)."""
    observed = cell.get("observed") or {}
    names = PROBE_FACTS if kind == "probe" else OBSERVED_FACTS
    facts = {}
    for name in names:
        value = observed.get(name)
        facts[name] = sorted(value, key=str) if isinstance(value, list) else value
    if kind == "traffic" and observed.get("source") is None:
        facts["peer"] = observed.get("peer")
    return facts


def _differences(kind: str, base: dict[str, Any], candidate: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """Each fact (and the expectation, and the verdict) that differs, as {key, base, candidate}."""
    old, new = _facts(kind, base), _facts(kind, candidate)
    changes = [
        {"key": f"observed.{name}", "base": old.get(name), "candidate": new.get(name)}
        for name in dict.fromkeys([*old, *new])
        if old.get(name) != new.get(name)
    ]
    if base.get("verdict") != candidate.get("verdict"):
        changes.insert(0, {"key": "verdict", "base": base.get("verdict"), "candidate": candidate.get("verdict")})
    if base.get("expected") != candidate.get("expected"):
        changes.append({"key": "expected", "base": base.get("expected"), "candidate": candidate.get("expected")})
    return tuple(changes)


def _compare_cells(result: Comparison, kind: str, base: dict[str, Any], candidate: dict[str, Any]) -> int:
    """Sort one kind of cell into the groups; the number of cells whose expectation differs."""
    expected_differs = 0
    for cell_id in sorted(base.keys() | candidate.keys()):
        old, new = base.get(cell_id), candidate.get(cell_id)
        if old is None or new is None:
            side = old if old is not None else new
            assert side is not None
            entry = CellChange(cell_id, kind, _keys(side), old, new)
            (result.only_in_base if new is None else result.only_in_candidate).append(entry)
            continue
        result.matched += 1
        changes = _differences(kind, old, new)
        entry = CellChange(cell_id, kind, _keys(new), old, new, changes)
        expected_differs += any(c["key"] == "expected" for c in changes)
        was, now = old.get("verdict") == "pass", new.get("verdict") == "pass"
        if was and not now:
            result.regressions.append(entry)
        elif now and not was:
            result.fixes.append(entry)
        elif changes:
            result.changed.append(entry)
    return expected_differs


def _compare_profiles(result: Comparison) -> None:
    base, candidate = result.base.profiles, result.candidate.profiles
    for name in [*base, *(n for n in candidate if n not in base)]:
        old, new = base.get(name), candidate.get(name)
        old_failed = set(old.get("failed_tests") or []) if old else set()
        new_failed = set(new.get("failed_tests") or []) if new else set()
        change = ProfileChange(
            name,
            str(old.get("result")) if old else None,
            str(new.get("result")) if new else None,
            tuple(sorted(new_failed - old_failed)) if old and new else (),
            tuple(sorted(old_failed - new_failed)) if old and new else (),
        )
        if change.base != change.candidate or change.newly_failed or change.no_longer_failed:
            result.profiles.append(change)


def _notes(result: Comparison, expected_differs: int) -> None:
    """Say plainly what the two reports do not have in common, so cells in one run only are not misread."""
    base, candidate = run_identity(result.base), run_identity(result.candidate)
    if base["ip_family"] != candidate["ip_family"]:
        result.notes.append(
            f"BASE is an {base['ip_family']} run and CANDIDATE an {candidate['ip_family']} run: a cell's id names its "
            "family, so no cell of one is compared with a cell of the other (they are listed as in one run only)."
        )
    if base["mesh"].get("version") != candidate["mesh"].get("version"):
        result.notes.append(
            f"The runs verify different mesh versions ({base['mesh'].get('version')} and "
            f"{candidate['mesh'].get('version')}): a cell or profile that one has and the other lacks is listed "
            "as in one run only, not compared; a verdict is judged against each run's own version."
        )
    if base["backend"] != candidate["backend"]:
        result.notes.append(f"The runs used different backends ({base['backend']} and {candidate['backend']}).")
    if base["report_version"] != candidate["report_version"]:
        result.notes.append(
            f"The reports have different versions ({base['report_version']} and {candidate['report_version']})."
        )
    if expected_differs:
        result.notes.append(
            f"{_count(expected_differs, 'compared cell is', 'compared cells are')} expected differently by the two "
            "reports (written by suites whose specs differ): their verdicts were judged against different "
            "expectations (key `expected` in their changes)."
        )
    for name, side in (("BASE", base), ("CANDIDATE", candidate)):
        if side["setup_error"]:
            result.notes.append(f"{name}'s cluster could not be set up: {side['setup_error']}")
        if side["interrupted"]:
            result.notes.append(
                f"{name} was interrupted: the cells it did not reach are listed as in one run only, not judged."
            )


def compare(base: SavedReport, candidate: SavedReport) -> Comparison:
    """Compare two saved reports."""
    result = Comparison(base, candidate)
    expected_differs = _compare_cells(result, "traffic", base.cells, candidate.cells)
    expected_differs += _compare_cells(result, "probe", base.probe_cells, candidate.probe_cells)
    _compare_profiles(result)
    _notes(result, expected_differs)
    return result
