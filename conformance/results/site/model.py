"""What the site shows, as plain data: runs grouped into rows, the matrix, each row's history.

A row is one mesh build (name, version, build, hub, tag, backend), whatever the family: the matrix has a column
per family x profile, filled from the row's latest run of that family; older runs of the same row and family are
its history. The cell tables of each page are tables.py's.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from packaging.version import InvalidVersion, Version

from conformance.results.documents import SavedReport
from conformance.results.site.tables import order

RESULT_SYMBOL = {
    "success": "✔",
    "partial": "◑",
    "failure": "✘",
    "skipped": "↷",
    "interrupted": "■",
    "not selected": "–",
}
"""Each profile result's symbol: the matrix shows it beside the word, so colour is never the only signal."""
PASSING = frozenset({"success", "partial"})


def when(stamp: str | None) -> str:
    """An ISO time as `2026-12-05 18:18 UTC` (the text as it is when it is not one)."""
    if not stamp:
        return "–"
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M") + (" UTC" if moment.tzinfo is not None else "")


@dataclass(frozen=True)
class Outcome:
    """One profile's result in one run, as a matrix or history cell shows it."""

    profile: str
    result: str
    passed: int
    failed: int
    tests_failed: int
    regressed_since: str | None = None
    """The date of the row's previous run of this family when the profile passed there and fails now."""

    @property
    def symbol(self) -> str:
        """The result's symbol (✔ ✘ ◑ ↷ ■ –)."""
        return RESULT_SYMBOL.get(self.result, "?")

    @property
    def css(self) -> str:
        """The result's class name (its colour)."""
        return "res-" + re.sub(r"[^a-z]+", "-", self.result.lower()).strip("-")


@dataclass
class Run:
    """One report: one mesh build, one family, one start time, and its page."""

    report: SavedReport
    slug: str = ""
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    @property
    def family(self) -> str:
        """The run's IP family."""
        return self.report.family

    @property
    def started(self) -> str:
        """When it started (ISO), as the report says."""
        return str(self.report.document.get("started") or "")

    @property
    def when(self) -> str:
        """When it started, for a reader."""
        return when(self.started)

    @property
    def page(self) -> str:
        """The run's page, relative to the site's root."""
        return f"{self.slug}.html"

    @property
    def failing(self) -> bool:
        """A profile failed, or the run could not be set up."""
        return bool(self.report.document.get("setup_error")) or any(
            o.result == "failure" for o in self.outcomes.values()
        )


RowKey = tuple[str, str, str, str, str, str]


def row_key(report: SavedReport) -> RowKey:
    """What makes two runs the same row: the mesh build and the backend it ran on, not the family or the night."""
    mesh = report.mesh
    return (
        str(mesh.get("name", "")),
        str(mesh.get("version", "")),
        str(mesh.get("build", "") or ""),
        str(mesh.get("hub", "") or ""),
        str(mesh.get("tag", "") or ""),
        str(report.document.get("backend", "")),
    )


@dataclass
class Row:
    """One mesh build: its runs per family, oldest first."""

    key: RowKey
    label: str
    runs: dict[str, list[Run]] = field(default_factory=dict)

    @property
    def image(self) -> str:
        """`hub/proxyv2:tag` where the report names them."""
        _, _, _, hub, tag, _ = self.key
        return f"{hub}:{tag}" if hub and tag else ""

    @property
    def backend(self) -> str:
        """The backend the row's runs used."""
        return self.key[5]

    def latest(self, family: str) -> Run | None:
        """The newest run of this family."""
        runs = self.runs.get(family)
        return runs[-1] if runs else None

    @property
    def last_started(self) -> str:
        """The newest run's date, any family."""
        return when(max((r[-1].started for r in self.runs.values() if r), default=""))

    @property
    def has_history(self) -> bool:
        """More than one run of a family: the history page compares them."""
        return any(len(r) > 1 for r in self.runs.values())

    @property
    def regressed(self) -> bool:
        """A profile passed in the run before the latest and fails in the latest (any family)."""
        return any(o.regressed_since for runs in self.runs.values() if runs for o in runs[-1].outcomes.values())


def sort_key_version(version: str) -> Version | None:
    """A release's version, compared as a version (1.10 after 1.9); None for `reference`, `custom sidecar`..."""
    try:
        return Version(version)
    except InvalidVersion:
        return None


def sorted_rows(rows: Iterable[Row]) -> list[Row]:
    """Newest release first; a custom build right after the release of the version it claims; then the rest.

    The rest (the emulated reference mesh, builds whose version is not a version) follow by name: they verify
    the suite or a proxy, not a release.
    """
    rows = list(rows)
    versioned = [r for r in rows if sort_key_version(r.key[1]) is not None]
    others = [r for r in rows if sort_key_version(r.key[1]) is None]
    versioned.sort(key=lambda r: (r.key[0], r.key[2] != "release", r.label, r.image))
    versioned.sort(key=lambda r: sort_key_version(r.key[1]) or Version("0"), reverse=True)
    others.sort(key=lambda r: (r.key[0], r.key[2], r.label, r.image))
    return versioned + others


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "run"


def outcomes(report: SavedReport) -> dict[str, Outcome]:
    """Each profile's result and counts, from the report's profile statistics (cells and probe cells)."""
    found = {}
    for name, profile in report.profiles.items():
        stats = profile.get("statistics") or {}
        probe_failed = int(stats.get("probe_cells_failed", 0))
        failed = int(stats.get("cells_failed", 0)) + probe_failed
        passed = int(stats.get("cells_passed", 0)) + int(stats.get("probe_cells", 0)) - probe_failed
        found[name] = Outcome(name, str(profile.get("result", "?")), passed, failed, int(stats.get("tests_failed", 0)))
    return found


@dataclass
class Site:
    """Every row, in the matrix's order, with the matrix's columns."""

    rows: list[Row]
    columns: list[tuple[str, str]]
    """(family, profile) pairs, families in order, profiles in the spec's order."""

    @property
    def runs(self) -> list[Run]:
        """Every run, row by row."""
        return [run for row in self.rows for runs in row.runs.values() for run in runs]

    @property
    def families(self) -> list[str]:
        """The families some run has."""
        return list(dict.fromkeys(f for f, _ in self.columns))

    def profiles_of(self, family: str) -> list[str]:
        """The matrix's profile columns under one family."""
        return [p for f, p in self.columns if f == family]


def build(reports: Sequence[SavedReport]) -> Site:
    """Group reports into rows, order them, name each run's page, and mark what regressed since the run before."""
    rows: dict[RowKey, Row] = {}
    seen: set[tuple[RowKey, str, str]] = set()
    slugs: set[str] = set()
    for report in reports:
        key = row_key(report)
        run = Run(report)
        identity = (key, run.family, run.started)
        if identity in seen:  # the same report given twice (an artifact downloaded again)
            continue
        seen.add(identity)
        tag = key[4] if key[4] and key[4] != key[1] else ""
        stamp = re.sub(r"[^0-9]", "", run.started[:16])
        base = _slug(f"{key[0]}-{key[1]}-{key[2]}-{tag}-{run.family}-{stamp}")
        run.slug = base
        number = 2
        while run.slug in slugs:
            run.slug = f"{base}-{number}"
            number += 1
        slugs.add(run.slug)
        run.outcomes = outcomes(report)
        rows.setdefault(key, Row(key, report.label)).runs.setdefault(run.family, []).append(run)
    for row in rows.values():
        for family, runs in row.runs.items():
            runs.sort(key=lambda r: r.started)
            for before, after in itertools.pairwise(runs):
                for name, outcome in after.outcomes.items():
                    earlier = before.outcomes.get(name)
                    if earlier and earlier.result in PASSING and outcome.result == "failure":
                        after.outcomes[name] = Outcome(
                            outcome.profile,
                            outcome.result,
                            outcome.passed,
                            outcome.failed,
                            outcome.tests_failed,
                            regressed_since=before.when,
                        )
            row.runs[family] = runs
    families = sorted({f for row in rows.values() for f in row.runs}, key=lambda f: order("ip_family", f))
    profiles = sorted(
        {p for row in rows.values() for runs in row.runs.values() for run in runs for p in run.outcomes},
        key=lambda p: order("profile", p),
    )
    return Site(sorted_rows(rows.values()), [(f, p) for f in families for p in profiles])
