"""The node proxy's section of the conformance report: its tunnel asked directly, and the pod enrolled late.

Kept apart from the traffic cells like the probe cells (probes.py): `record_ztunnel` stores what a check saw in
`RunRecord.ztunnel_cells`, `ztunnel_document` is the JSON list, `ztunnel_tables` the Markdown. Reads the record only.
"""

from __future__ import annotations

from conformance.report.fold import cells_verdict, fold
from conformance.report.record import RunRecord


def record_ztunnel(
    record: RunRecord,
    test: str,
    cell_id: str,
    keys: dict[str, object],
    expected: dict[str, object],
    observed: dict[str, object],
    ok: bool,
    reason: str,
) -> None:
    """A check judged one tunnel or late-enrolment cell (spec: conformance.spec.ztunnel)."""
    entry: dict[str, object] = {"id": cell_id, **keys, "expected": expected, "observed": observed}
    entry["verdict"] = "pass" if ok else "fail"
    entry["checks"] = {test: ok}
    if reason:
        entry["reasons"] = {test: reason}
    record.ztunnel_cells[cell_id] = entry


def ztunnel_document(record: RunRecord) -> list[dict[str, object]]:
    """The node proxy's cells of the JSON report, sorted by id."""
    return [record.ztunnel_cells[k] for k in sorted(record.ztunnel_cells)]


def ztunnel_tables(record: RunRecord) -> list[str]:
    """One table: each cell, what the spec expects, what was seen, pass or fail."""
    if not record.ztunnel_cells:
        return []
    title = "The node proxy's own contract (ambient)"
    lines = [
        "",
        f"## {title}",
        "",
        "`tunnel/...`: a plain pod sends `CONNECT <pod IP>:<port>` to the enrolled server's 15008 (emulated mesh "
        "only). `late/...`: a pod whose namespace was enrolled while the run was under way.",
        "",
        "| cell | expected | observed | verdict |",
        "|---|---|---|---|",
    ]
    for cell_id in sorted(record.ztunnel_cells):
        cell = record.ztunnel_cells[cell_id]
        expected, observed = cell["expected"], cell["observed"]
        assert isinstance(expected, dict)
        assert isinstance(observed, dict)
        want = expected.get("status") or ("reachable" if expected.get("reachable") else "unreachable")
        source = expected.get("source")
        text = f"{want}{f' ({source})' if source else ''}"
        seen = str(observed.get("outcome", "?")) + (f" from {observed['peer']}" if observed.get("peer") else "")
        reasons = cell.get("reasons") or {}
        assert isinstance(reasons, dict)
        verdict = "✅" if cell["verdict"] == "pass" else "❌ " + "; ".join(map(str, reasons.values()))
        lines.append(f"| `{cell_id}` | {text} | {seen} | {verdict} |")
    failed = sum(cell["verdict"] != "pass" for cell in record.ztunnel_cells.values())
    return fold(cells_verdict(title, len(record.ztunnel_cells), failed), lines, failed > 0)
