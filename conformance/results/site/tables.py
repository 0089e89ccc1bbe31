"""The cell tables of the site's pages: a run's cells, or the spec's, as a bind x coordinates table per profile.

Cells are read as the JSON has them (dicts with an `id`): a table's rows are whatever keys a cell has beside its
bind, family and profile, so keys a newer report adds show up without a change here. The texts are the Markdown
report's and the spec's: `✓ 127.0.0.6`, `✗ 503 or reset/EOF`, `✓ Ready (kubelet)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from conformance.spec.dimensions import (
    IpFamily,
    Source,
)
from conformance.spec.probes import ProbeKind
from conformance.spec.render import describe_source, spec_document

NOT_ROW_KEYS = frozenset({"id", "profile", "bind", "ip_family", "expected", "observed", "verdict", "checks", "reasons"})
"""A cell's keys that are not a row coordinate of its table: the columns (bind), the page's sections, the verdict."""

ORDER: dict[str, list[Any]] = {
    **spec_document([])["dimensions"],  # type: ignore[dict-item]
    "probe": [k.value for k in ProbeKind],
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


def value_text(key: str, value: Any) -> str:
    """A coordinate as a reader reads it: `in the pod` for no client, `on`/`off` for a probe rewrite."""
    if (key, value) in VALUE_TEXT:
        return VALUE_TEXT[(key, value)]
    return "–" if value is None else str(value)


def order(key: str, value: Any) -> tuple[int, str]:
    """Where a value sorts among its dimension's: the spec's order first, then the values it does not know."""
    known = ORDER.get(key, [])
    return (known.index(value), "") if value in known else (len(known), str(value))


def _source_text(source: str | None, address: str | None, family: str, client_family: str | None = None) -> str:
    if address:
        return str(address)
    try:
        by = IpFamily(client_family) if client_family else None  # a dual cell's names are relative to it
        return describe_source(Source(str(source)), IpFamily(family), by)
    except ValueError:
        return str(source)


def expected_text(expected: dict[str, Any], family: str, client_family: str | None = None) -> str:
    """What the spec expects of a cell: `✓ 127.0.0.6`, `✗ 503 or reset/EOF`, `✓ Ready (kubelet)`."""
    if "ready" in expected:
        text = "✓ Ready" if expected.get("ready") else "✗ not Ready"
        text += f" ({expected['source']})" if expected.get("source") else ""
        return text + (" ⚠ false Ready" if expected.get("false_ready") else "")
    if expected.get("reachable") and expected.get("source") is not None:
        return "✓ " + _source_text(expected.get("source"), expected.get("source_address"), family, client_family)
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
        shown = _source_text(observed.get("source"), None, family, cell.get("client_family"))
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
        expected=expected_text(expected, family, cell.get("client_family")),
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
    for profile in sorted(by_profile, key=lambda p: order("profile", p)):
        members = by_profile[profile]
        every_key = tuple(dict.fromkeys(k for c in members for k in c if k not in NOT_ROW_KEYS))
        # A coordinate with one value across the profile (a legacy table's `interception: redirect`) says nothing
        # a column would; the cell ids still carry it.
        row_keys = tuple(k for k in every_key if len({repr(c.get(k)) for c in members}) > 1) or every_key[:1]
        binds = tuple(sorted({str(c.get("bind")) for c in members}, key=lambda b: order("bind", b)))
        grid: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
        for c in members:
            grid.setdefault(tuple(c.get(k) for k in row_keys), {})[str(c.get("bind"))] = c
        ordered = sorted(grid, key=lambda row: [order(k, v) for k, v in zip(row_keys, row, strict=True)])
        rows = tuple(
            (
                tuple(value_text(k, v) for k, v in zip(row_keys, row, strict=True)),
                tuple(cell_view(grid[row][b], family) if b in grid[row] else None for b in binds),
            )
            for row in ordered
        )
        result.append(Table(profile, family, row_keys, binds, rows))
    return result
