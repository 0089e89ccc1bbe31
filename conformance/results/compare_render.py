"""`compare`'s output for people: plain text for a terminal, Markdown for a PR comment or `$GITHUB_STEP_SUMMARY`.

Both open with the one-line headline (regressions first), then say what could not be compared, then the profiles,
then the cells group by group. The Markdown folds each list of more than FOLD entries in a `<details>` block and
lists at most LIMIT cells a group (a step summary holds 1 MiB): `--format json` has every cell.
"""

from __future__ import annotations

import json
from typing import Any

from conformance.results.compare import CellChange, Comparison, ProfileChange, run_identity

FORMATS = ("text", "markdown", "json")
FOLD = 10
LIMIT = 200
RESULT_MARK = {"success": "✅", "partial": "☑️", "failure": "❌", "interrupted": "⏹️", "skipped": "⏭️"}


def render(result: Comparison, fmt: str) -> str:
    """The comparison in one of `compare`'s formats."""
    if fmt == "json":
        return json.dumps(result.to_json(), indent=2) + "\n"
    if fmt == "markdown":
        return markdown(result)
    return text(result)


def seen(cell: CellChange, side: dict[str, Any] | None) -> str:
    """What a run saw of a cell, in the report's words (`ok from 127.0.0.6 (inbound_passthrough)`)."""
    if side is None:
        return "not in this run"
    observed = side.get("observed") or {}
    verdict = side.get("verdict") or "no verdict"
    if cell.kind == "probe":
        ready = {True: "Ready", False: "not Ready"}.get(bool(observed["ready"]), "?") if "ready" in observed else "?"
        sources = ", ".join(str(s) for s in observed.get("sources") or [])
        probed = f"probed from {sources}" if sources else "no probe reached the app"
        reached = observed.get("outcome")
        reached_text = f", other pods: {reached}" if reached else ""
        return f"{verdict}: {ready}, {probed}{reached_text}"
    outcome = observed.get("outcome_text") or observed.get("outcome") or "nothing observed"
    if observed.get("source"):
        address = observed.get("source_address") or observed.get("peer")
        outcome += f" from {address} ({observed['source']})" if address else f" from {observed['source']}"
    elif observed.get("peer"):
        outcome += f" from {observed['peer']}"
    if observed.get("voided_by"):
        outcome += ", void (a process of the build died)"
    return f"{verdict}: {outcome}"


def change_text(change: dict[str, Any]) -> str:
    """`observed.outcome: http_503 → reset_or_eof`."""
    if change["key"] == "expected":
        return "expected: the two reports expect it differently"
    return f"{change['key']}: {_value(change['base'])} → {_value(change['candidate'])}"


def _value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _run_line(report: Any) -> str:
    run = run_identity(report)
    facts = [run["ip_family"] or "family?", f"backend {run['backend']}", f"started {run['started']}"]
    if run["interrupted"]:
        facts.append("interrupted")
    if run["setup_error"]:
        facts.append("setup failed")
    return f"{run['label']} ({', '.join(facts)}), {run['path']}"


def _profile_text(profile: ProfileChange) -> str:
    line = f"{profile.name}: {profile.base or 'not in BASE'} → {profile.candidate or 'not in CANDIDATE'}"
    if profile.regression:
        line += " (regression)"
    if profile.newly_failed:
        line += f"; now failing: {', '.join(profile.newly_failed)}"
    if profile.no_longer_failed:
        line += f"; no longer failing: {', '.join(profile.no_longer_failed)}"
    return line


# --- text -------------------------------------------------------------------------------------------------------


def text(result: Comparison) -> str:
    """For a terminal: every regression, fix and change; cells in one run only up to LIMIT a side."""
    lines = [result.headline(), f"BASE:      {_run_line(result.base)}", f"CANDIDATE: {_run_line(result.candidate)}"]
    lines += [f"note: {note}" for note in result.notes]
    if result.profiles:
        lines += ["", "Profiles that changed:", *(f"  {_profile_text(p)}" for p in result.profiles)]
    groups = (
        ("Regressions (passed in BASE, not in CANDIDATE)", result.regressions),
        ("Fixes (not passed in BASE, passed in CANDIDATE)", result.fixes),
    )
    for title, cells in groups:
        if cells:
            lines += ["", f"{title}: {len(cells)}"]
            for cell in cells:
                lines.append(f"  {cell.id}: was {seen(cell, cell.base)}; now {seen(cell, cell.candidate)}")
                if cell.reason:
                    lines.append(f"    {cell.reason}")
    if result.changed:
        lines += ["", f"Changed, same verdict: {len(result.changed)}"]
        lines += [f"  {c.id}: {'; '.join(change_text(x) for x in c.changes)}" for c in result.changed]
    for title, cells in (("In BASE only", result.only_in_base), ("In CANDIDATE only", result.only_in_candidate)):
        if cells:
            lines += ["", f"{title} (not compared): {len(cells)}"]
            lines += [f"  {c.id}" for c in cells[:LIMIT]]
            if len(cells) > LIMIT:
                lines.append(f"  ... and {len(cells) - LIMIT} more (--format json lists them all)")
    return "\n".join(lines) + "\n"


# --- Markdown ---------------------------------------------------------------------------------------------------


def _cell(value: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(value.split()).replace("|", "\\|")


def _folded(summary: str, body: list[str], count: int) -> list[str]:
    if count <= FOLD:
        return ["", f"**{summary}**", "", *body]
    return ["", "<details>", f"<summary>{summary}</summary>", "", *body, "", "</details>"]


def _limited(rows: list[str], total: int) -> list[str]:
    if total > LIMIT:
        rows = [*rows, "", f"... and {total - LIMIT} more: `--format json` lists them all."]
    return rows


def markdown(result: Comparison) -> str:
    """For a PR comment or `$GITHUB_STEP_SUMMARY`: the headline first, long lists folded."""
    mark = "❌" if result.exit_status else "✅"
    lines = [f"{mark} **{result.headline()}**", ""]
    base, candidate = run_identity(result.base), run_identity(result.candidate)
    lines += [
        f"### Compared: {_cell(candidate['label'])} (CANDIDATE) against {_cell(base['label'])} (BASE)",
        "",
        "| | run | family | backend | started | file |",
        "|---|---|---|---|---|---|",
    ]
    for name, run in (("BASE", base), ("CANDIDATE", candidate)):
        started = str(run["started"]) + (" (interrupted)" if run["interrupted"] else "")
        row = [name, run["label"], run["ip_family"], str(run["backend"]), started, f"`{run['path']}`"]
        lines.append("| " + " | ".join(_cell(str(v)) for v in row) + " |")
    if result.notes:
        lines += ["", *(f"> **Note:** {_cell(note)}" + "  " for note in result.notes)]
    if result.profiles:
        lines += [
            "",
            "#### Profile results that changed",
            "",
            "| profile | BASE | CANDIDATE | tests |",
            "|---|---|---|---|",
        ]
        for profile in result.profiles:
            tests = []
            if profile.newly_failed:
                tests.append("now failing: " + ", ".join(f"`{t}`" for t in profile.newly_failed))
            if profile.no_longer_failed:
                tests.append("no longer failing: " + ", ".join(f"`{t}`" for t in profile.no_longer_failed))
            name = profile.name + (" (**regression**)" if profile.regression else "")
            row = [name, _result(profile.base), _result(profile.candidate), "; ".join(tests)]
            lines.append("| " + " | ".join(row) + " |")
    groups = (
        ("Regressions", "passed in BASE, not in CANDIDATE", result.regressions),
        ("Fixes", "not passed in BASE, passed in CANDIDATE", result.fixes),
    )
    for title, meaning, cells in groups:
        if not cells:
            continue
        rows = ["| cell | BASE | CANDIDATE | why it failed |", "|---|---|---|---|"]
        rows += [
            f"| `{c.id}` | {_cell(seen(c, c.base))} | {_cell(seen(c, c.candidate))} | {_cell(c.reason)} |"
            for c in cells[:LIMIT]
        ]
        lines += _folded(f"{title} ({len(cells)}): {meaning}", _limited(rows, len(cells)), len(cells))
    if result.changed:
        rows = ["| cell | verdict | what changed |", "|---|---|---|"]
        for c in result.changed[:LIMIT]:
            what = _cell("; ".join(change_text(x) for x in c.changes))
            rows.append(f"| `{c.id}` | {(c.candidate or {}).get('verdict')} | {what} |")
        count = len(result.changed)
        lines += _folded(f"Changed observations ({count}): the same verdict", _limited(rows, count), count)
    for side, cells in (("BASE", result.only_in_base), ("CANDIDATE", result.only_in_candidate)):
        if cells:
            rows = [f"- `{c.id}`" for c in cells[:LIMIT]]
            summary = f"In {side} only ({len(cells)}): not compared"
            lines += _folded(summary, _limited(rows, len(cells)), len(cells))
    return "\n".join(lines) + "\n"


def _result(value: str | None) -> str:
    if value is None:
        return "not in this run"
    return f"{RESULT_MARK.get(value, '')} {value}".strip()
