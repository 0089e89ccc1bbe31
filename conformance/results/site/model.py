"""What the site shows, as plain data: runs grouped into rows, the matrix, each row's history, the cell tables.

A row is one mesh build (name, version, build, hub, tag, backend), whatever the family: the matrix has a column
per family x profile, filled from the row's latest run of that family; older runs of the same row and family are
its history. Cells are read as the JSON has them (dicts with an `id`): a table's rows are whatever keys a cell
has beside its bind, family and profile, so keys a newer report adds show up without a change here.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from packaging.version import InvalidVersion, Version

from conformance.results.documents import SavedReport
from conformance.spec.dimensions import (
    Bind,
    Client,
    DefaultEndpoint,
    IpFamily,
    Path,
    PortKind,
    Profile,
    Protocol,
    Source,
)
from conformance.spec.render import describe_source

NOT_ROW_KEYS = frozenset({"id", "profile", "bind", "ip_family", "expected", "observed", "verdict", "checks", "reasons"})
"""A cell's keys that are not a row coordinate of its table: the columns (bind), the page's sections, the verdict."""

ORDER: dict[str, list[Any]] = {
    "profile": [p.value for p in Profile],
    "ip_family": [f.value for f in IpFamily],
    "default_endpoint": [d.value for d in DefaultEndpoint],
    "bind": [b.value for b in Bind],
    "port": [p.value for p in PortKind],
    "protocol": [p.value for p in Protocol],
    "path": [p.value for p in Path],
    "client": [c.value for c in Client] + [None],
    "probe": ["http", "tcp"],
    "rewrite": [None, True, False],
}
"""The spec's order of the values it knows today, for rows and columns; a value it does not know sorts after them."""

VALUE_TEXT: dict[tuple[str, Any], str] = {
    ("client", None): "in the pod",
    ("rewrite", None): "no sidecar",
    ("rewrite", True): "on",
    ("rewrite", False): "off",
}
FAILURE_TEXT = {"http_503": "503", "refused": "refused", "reset_or_eof": "reset/EOF", "timeout": "timeout"}

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


def value_text(key: str, value: Any) -> str:
    """A coordinate as a reader reads it: `in the pod` for no client, `on`/`off` for a probe rewrite."""
    if (key, value) in VALUE_TEXT:
        return VALUE_TEXT[(key, value)]
    return "–" if value is None else str(value)


def _order(key: str, value: Any) -> tuple[int, str]:
    known = ORDER.get(key, [])
    return (known.index(value), "") if value in known else (len(known), str(value))


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


# --- one cell of a table -----------------------------------------------------------------------------------------


def _source_text(source: str | None, address: str | None, family: str) -> str:
    if address:
        return str(address)
    try:
        return describe_source(Source(str(source)), IpFamily(family))
    except ValueError:
        return str(source)


def expected_text(expected: dict[str, Any], family: str) -> str:
    """What the spec expects of a cell: `✓ 127.0.0.6`, `✗ 503 or reset/EOF`, `✓ Ready (kubelet)`."""
    if "ready" in expected:
        text = "✓ Ready" if expected.get("ready") else "✗ not Ready"
        text += f" ({expected['source']})" if expected.get("source") else ""
        return text + (" ⚠ false Ready" if expected.get("false_ready") else "")
    if expected.get("reachable") and expected.get("source") is not None:
        return "✓ " + _source_text(expected.get("source"), expected.get("source_address"), family)
    failures = expected.get("failure") or []
    return "✗ " + (" or ".join(FAILURE_TEXT.get(str(f), str(f)) for f in failures) or "unreachable")


def observed_text(cell: dict[str, Any], family: str) -> str:
    """What a run saw, in the same words: `✓ 127.0.0.1 (localhost)`, `✗ reset/EOF (unstable)`, `Ready`."""
    observed = cell.get("observed") or {}
    if "ready" in observed:
        text = "Ready" if observed.get("ready") else "not Ready"
        peers = observed.get("peers") or []
        return text + (f", probed from {', '.join(map(str, peers))}" if peers else "")
    outcome = str(observed.get("outcome") or "?")
    if outcome == "ok" and observed.get("source"):
        shown = _source_text(observed.get("source"), None, family)
        address = observed.get("source_address") or observed.get("peer")
        text = "✓ " + (f"{address} ({shown})" if address and address != shown else shown)
    else:
        text = "✗ " + str(observed.get("outcome_text") or FAILURE_TEXT.get(outcome, outcome))
    if observed.get("converged") is False:
        text += " (unstable)"
    return text


def failed_tests(cell: dict[str, Any]) -> list[str]:
    """The tests (`Case[profile]`) whose check of the cell failed."""
    checks = cell.get("checks") or {}
    return sorted({str(key).rsplit(":", 1)[0] for key, ok in checks.items() if not ok})


def rerun_command(test: str, family: str) -> str:
    """The command that reruns one test, as the Markdown report writes it: its case and profile as `-k`."""
    case, _, profile = test.partition("[")
    expression = f"{case} and {profile.rstrip(']')}" if profile else case
    option = f" --ip-family {family}" if family and family != IpFamily.IPV4.value else ""
    return f'.venv/bin/tox -e conformance -- -k "{expression}"{option}'


@dataclass(frozen=True)
class CellView:
    """One table cell: the expectation, and where the run differed what it saw."""

    id: str
    expected: str
    observed: str | None
    verdict: str | None
    because: tuple[str, ...]

    @property
    def failed(self) -> bool:
        """The run judged it and it failed."""
        return self.verdict not in (None, "pass")


@dataclass(frozen=True)
class Table:
    """One profile's cells: rows of coordinates (`row_keys`), a column per bind."""

    profile: str
    family: str
    row_keys: tuple[str, ...]
    binds: tuple[str, ...]
    rows: tuple[tuple[tuple[str, ...], tuple[CellView | None, ...]], ...]


def cell_view(cell: dict[str, Any], family: str) -> CellView:
    """A cell as a table shows it."""
    expected = cell.get("expected") or {}
    verdict = cell.get("verdict")
    failed = verdict is not None and verdict != "pass"
    return CellView(
        id=str(cell["id"]),
        expected=expected_text(expected, family),
        observed=observed_text(cell, family) if failed and "observed" in cell else None,
        verdict=None if verdict is None else str(verdict),
        because=tuple(str(b) for b in expected.get("because") or ()),
    )


def tables(cells: Iterable[dict[str, Any]], family: str) -> list[Table]:
    """Per profile, a bind x coordinates table of `cells` (one family's), in the spec's order."""
    by_profile: dict[str, list[dict[str, Any]]] = {}
    for cell in cells:
        by_profile.setdefault(str(cell.get("profile")), []).append(cell)
    result = []
    for profile in sorted(by_profile, key=lambda p: _order("profile", p)):
        members = by_profile[profile]
        row_keys = tuple(dict.fromkeys(k for c in members for k in c if k not in NOT_ROW_KEYS))
        binds = tuple(sorted({str(c.get("bind")) for c in members}, key=lambda b: _order("bind", b)))
        grid: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
        for c in members:
            grid.setdefault(tuple(c.get(k) for k in row_keys), {})[str(c.get("bind"))] = c
        ordered = sorted(grid, key=lambda row: [_order(k, v) for k, v in zip(row_keys, row, strict=True)])
        rows = tuple(
            (
                tuple(value_text(k, v) for k, v in zip(row_keys, row, strict=True)),
                tuple(cell_view(grid[row][b], family) if b in grid[row] else None for b in binds),
            )
            for row in ordered
        )
        result.append(Table(profile, family, row_keys, binds, rows))
    return result


# --- runs, rows, the matrix, history ---------------------------------------------------------------------------


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
    families = sorted({f for row in rows.values() for f in row.runs}, key=lambda f: _order("ip_family", f))
    profiles = sorted(
        {p for row in rows.values() for runs in row.runs.values() for run in runs for p in run.outcomes},
        key=lambda p: _order("profile", p),
    )
    return Site(sorted_rows(rows.values()), [(f, p) for f in families for p in profiles])
