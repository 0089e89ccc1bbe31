"""The Markdown report, `conformance-report.md`, for people: a run's record as tables (fits $GITHUB_STEP_SUMMARY).

It reads top-down. Unfolded at the top: a setup failure and the deaths of the build's processes (what to look at
first), each profile's result, the failed cells with the command that reruns each, skipped tests. Then the long
sections, each folded in a `<details>` block whose summary is its one-line verdict (fold.py), open when it holds a
failure: prechecks, the "Moving to ambient" note, per profile the expected / observed table of the traffic cells,
the health-probe tables and the node proxy's table.
"""

from __future__ import annotations

from collections.abc import Sequence

from conformance.backends.base import ProcessDeath
from conformance.report.ambient import moving_to_ambient
from conformance.report.fold import FAIL_MARK, PASS_MARK, cells_verdict, fold
from conformance.report.json_document import JSON_NAME
from conformance.report.probes import probe_tables
from conformance.report.record import INTERRUPTED, OUTCOME_TEXT, CellRecord, RunRecord, outcome_text
from conformance.report.ztunnel import ztunnel_tables
from conformance.spec.dimensions import (
    CellKey,
    Client,
    DefaultEndpoint,
    InboundCapture,
    Interception,
    IpFamily,
    PortKind,
    Profile,
    Protocol,
    Source,
    binds,
)
from conformance.spec.dimensions import Path as CellPath
from conformance.spec.render import describe_expectation, describe_source, endpoint_label

MD_NAME = "conformance-report.md"

FAILED_CELLS_SHOWN = 200
"""Failed cells listed by name (the JSON has every one)."""
DEATHS_WITH_LOG = 5
"""Deaths shown with their log's last lines (the JSON has every one's)."""

_ICONS = {"success": "✅", "partial": "🟡", "failure": "❌", "skipped": "⏭️", INTERRUPTED: "⏹️"}


def markdown(record: RunRecord) -> str:
    """The same report as the JSON, as tables a person reads."""
    mesh = record.mesh_info
    lines = [f"# Inbound conformance: {mesh.get('name', record.mesh.name)} {mesh.get('version', record.mesh.version)}"]
    if record.setup_error is not None:
        lines += [
            "",
            f"**Setup failed, no test ran:** {record.setup_error['message']}",
            "",
            f"Where the logs are: {record.setup_error['logs']}",
        ]
    lines += death_lines(record.deaths, "**", "**")
    lines += [
        "",
        f"Backend `{record.backend}`, {record.family.value}, build under test `{mesh.get('build', '') or '-'}`"
        + (f", hub `{mesh['hub']}` tag `{mesh['tag']}`" if mesh.get("hub") else "")
        + (" — **interrupted**" if record.interrupted else ""),
        "",
        "| profile | result | tests passed | failed | skipped | cells passed | cells failed |",
        "|---|---|---|---|---|---|---|",
    ]
    for profile in record.profiles:
        result, s = record.profile_result(profile.value)
        lines.append(
            f"| {profile.value} | {_ICONS.get(result, '–')} {result} | {s['tests_passed']} | {s['tests_failed']} | "
            f"{s['tests_skipped']} | {s['cells_passed']} | {s['cells_failed']} |"
        )
    lines += _failed_cells(record)
    if record.interrupted:
        stopped = [p.value for p in record.profiles if record.profile_result(p.value)[0] == INTERRUPTED]
        lines += ["", "The run was interrupted" + (f": {', '.join(stopped)} did not finish." if stopped else ".")]
    skipped = [t for t in record.tests.values() if t.outcome == "skipped"]
    if skipped:
        lines += ["", "## Skipped", ""]
        lines += [f"- `{t.case}` [{t.profile}]: {t.reason}" for t in sorted(skipped, key=lambda t: t.nodeid)]
    lines += _prechecks(record)
    lines += moving_to_ambient(record.cells.values())
    lines += _tables(record)
    lines += probe_tables(record)
    lines += ztunnel_tables(record)
    return "\n".join(lines) + "\n"


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


def rerun_command(test: str, family: IpFamily) -> str:
    """The command that reruns one test through tox: its case and profile as a `-k` expression."""
    case, _, profile = test.partition("[")
    expression = f"{case} and {profile.rstrip(']')}" if profile else case
    option = f" --ip-family {family.value}" if family is not IpFamily.IPV4 else ""
    return f'.venv/bin/tox -e conformance -- -k "{expression}"{option}'


def _failed_cells(record: RunRecord) -> list[str]:
    """Each failed cell, traffic, probe and node-proxy alike: why, which tests judged it, and their rerun commands."""
    failed: list[tuple[str, set[str], list[str]]] = []
    for r in record.cells.values():
        if not r.passed:
            failed.append((r.cell.id, set(r.reasons.values()), [k for k, ok in r.checks.items() if not ok]))
    for other in (*record.probe_cells.values(), *record.ztunnel_cells.values()):
        if other.get("verdict") == "fail":
            checks, reasons = other.get("checks") or {}, other.get("reasons") or {}
            assert isinstance(checks, dict)
            assert isinstance(reasons, dict)
            keys = [k for k, ok in checks.items() if not ok]
            failed.append((str(other["id"]), set(map(str, reasons.values())), keys))
    if not failed:
        return []
    lines = ["", f"## Failed cells ({len(failed)})", ""]
    for cell_id, reasons, keys in sorted(failed)[:FAILED_CELLS_SHOWN]:
        reason = "; ".join(sorted({_words(record, text) for text in reasons}))
        tests = sorted({key.rsplit(":", 1)[0] for key in keys})
        rerun = " ".join(f"`{rerun_command(t, record.family)}`" for t in tests)
        lines.append(f"- ❌ `{cell_id}`: {reason} — case {', '.join(tests)}; rerun: {rerun}")
    if len(failed) > FAILED_CELLS_SHOWN:
        lines.append(f"- ... and {len(failed) - FAILED_CELLS_SHOWN} more (see {JSON_NAME})")
    return lines


def _words(record: RunRecord, reason: str) -> str:
    """A verdict's reason in the report's vocabulary, a timeout pointing to the sidecar log."""
    for label, text in OUTCOME_TEXT.items():
        reason = reason.replace(label, text)
    if "timeout" in reason and record.timeout_hint:
        reason += f" (a timeout: see the sidecar log, {record.timeout_hint})"
    return reason


def _prechecks(record: RunRecord) -> list[str]:
    """Each precheck run: its findings, whether they are the ones the spec expects, its problems and notes."""
    lines: list[str] = []
    for run in record.prechecks:
        passed = run["verdict"] == "pass"
        mark = PASS_MARK if passed else FAIL_MARK
        section = ["", f"## Precheck [{run['profile']}] {mark} ({run['tool']}, exit {run['exit_code']})", ""]
        findings, expected, problems = run["findings"], run["expected"], run["problems"]
        assert isinstance(findings, list)
        assert isinstance(expected, list)
        assert isinstance(problems, list)
        if passed:
            section += (
                [
                    f"These {len(findings)} findings are the expected ones: the spec gives IST0143 for "
                    + ", ".join(expected)
                    + ".",
                    "",
                ]
                if findings
                else ["No findings, as the spec expects for this profile.", ""]
            )
        section += [f"    {line}" for line in findings] or ["    (no findings)"]
        section += [f"- ❌ {p}" for p in problems]
        notes = run.get("notes") or []
        assert isinstance(notes, list)
        section += [f"- ℹ️ {n}" for n in notes]
        plural = "s" if len(problems) != 1 else ""
        verdict = "findings as expected" if passed else f"{len(problems)} problem{plural}"
        lines += fold(f"Precheck [{run['profile']}] ({run['tool']}): {verdict} {mark}", section, not passed)
    return lines


def _tables(record: RunRecord) -> list[str]:
    """Per profile, the traffic cells: rows (endpoint, port, protocol, path, client) and columns binds.

    TPROXY cells get a table of their own after their profile's (`passthrough, TPROXY`).
    """
    lines: list[str] = []
    family = record.family
    for profile in record.profiles:
        for mode in Interception:
            records = [r for r in record.cells.values() if r.cell.profile is profile and r.cell.interception is mode]
            if records:
                lines += _table(profile, mode, records, family)
    return lines


def _table(profile: Profile, mode: Interception, records: list[CellRecord], family: IpFamily) -> list[str]:
    title = profile.value if mode is Interception.REDIRECT else f"{profile.value}, {mode.value.upper()}"
    failed = sum(not r.passed for r in records)
    dual = family is IpFamily.DUAL  # a dual family's rows also carry the client family (spec/dualstack.py)
    lines = [
        "",
        f"## {title}: expected / observed",
        "",
        "Each cell: expected, then ❌ and what was observed where they differ.",
        "",
        "| defaultEndpoint | port | protocol | path | client | "
        + ("client family | " if dual else "")
        + " | ".join(b.value for b in binds(family))
        + " |",
        "|---|---|---|---|---|" + "---|" * (len(binds(family)) + dual),
    ]
    by_key = {r.cell: r for r in records}
    Row = tuple[DefaultEndpoint, PortKind, Protocol, CellPath, Client | None, InboundCapture, IpFamily | None]
    rows: dict[Row, None] = {}
    for r in sorted(records, key=lambda r: _row_order(r.cell)):
        c = r.cell
        rows[(c.default_endpoint, c.port, c.protocol, c.path, c.client, c.capture, c.client_family)] = None
    for endpoint, port, protocol, path, client, capture, cf in rows:
        who = f"{client.value} client" if client else "in the pod"
        label = endpoint_label(endpoint, capture)
        row = f"| {label} | {port.value} | {protocol.value} | {path.value} | {who} |"
        row += f" {cf.value} |" if cf is not None else ""
        for bind in binds(family):
            key = CellKey(profile, endpoint, bind, port, protocol, path, client, family, mode, capture, cf)
            cell = by_key.get(key)
            if cell is None:
                row += " – |"
            elif cell.passed:
                row += f" {describe_expectation(cell.expected, family, cf)} |"
            else:
                expected = describe_expectation(cell.expected, family, cf)
                row += f" ❌ {expected}, saw {_observed_text(cell, family)} |"
        lines.append(row)
    return fold(cells_verdict(title, len(records), failed), lines, failed > 0)


def _observed_text(record: CellRecord, family: IpFamily) -> str:
    obs = record.observed
    if obs.last.label == "ok" and obs.source:
        try:
            shown = describe_source(Source(obs.source), family, record.cell.client_family)
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


def _index(members: Sequence[object]) -> dict[object, int]:
    return {member: i for i, member in enumerate(members)}


_ORDER = (
    _index(list(InboundCapture)),
    _index(list(DefaultEndpoint)),
    _index(list(PortKind)),
    _index(list(Protocol)),
    _index(list(CellPath)),
    _index(list(Client)),
    _index(list(IpFamily)),
)
"""Each coordinate's members by declaration order, looked up once: a report rewrite sorts every cell."""


def _row_order(cell: CellKey) -> tuple[int, ...]:
    capture, endpoint, port, protocol, path, client, family = _ORDER
    return (
        capture[cell.capture],
        endpoint[cell.default_endpoint],
        port[cell.port],
        protocol[cell.protocol],
        path[cell.path],
        client[cell.client] if cell.client else 9,
        family[cell.client_family] if cell.client_family else 9,
    )
