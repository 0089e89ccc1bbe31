"""The probe section of the conformance report: per profile, a bind x probe x rewrite table beside the traffic one.

A second table per profile has the liveness and startup cells, with the restart counts the run saw.

Kept apart from the traffic cells so the probe cells add to the report without reshaping it: `record_probe` stores
what a probe check saw in `RunRecord.probe_cells`, `probe_document` is the JSON list, `probe_tables` the Markdown.
Reads the record only: json_document.py and markdown.py call it, never the other way round.
"""

from __future__ import annotations

from conformance.report.fold import cells_verdict, fold
from conformance.report.record import RunRecord
from conformance.spec.dimensions import Profile
from conformance.spec.dualstack import probe_binds
from conformance.spec.probes import (
    PROBE_KINDS_OF_USE,
    ProbeCellKey,
    ProbeExpectation,
    ProbeKind,
    ProbeUse,
    restart_text,
    rewrite_settings,
)

KNOWN_1_21_INCONSISTENCY = (
    "⚠️ **Istio 1.21 and health probes.** 1.21 removed `PILOT_ENABLE_INBOUND_PASSTHROUGH` from istiod (#48718), "
    "but its injection templates still read it: with the flag left at `false`, traffic passes through to the pod "
    "IP while rewritten probes go to localhost, so a loopback-only app is **Ready but unreachable**. If this "
    "cluster has the flag set, `ReadyMeansReachable` fails on the loopback cells: that is Istio's known "
    "inconsistency (probes reference section 1), not a bug of your build."
)


def record_probe(
    record: RunRecord,
    test: str,
    cell: ProbeCellKey,
    expected: ProbeExpectation,
    observed: dict[str, object],
    part: str,
    ok: bool,
    reason: str,
) -> None:
    """A probe check judged one part of a cell (`probe_ready`, `probe_source`, `ready_reachable`)."""
    cell_record = record.probe_cells.setdefault(
        cell.id, {"id": cell.id, **cell.to_json(), "expected": expected.to_json(), "observed": {}, "checks": {}}
    )
    observed_all = cell_record["observed"]
    checks = cell_record["checks"]
    assert isinstance(observed_all, dict)
    assert isinstance(checks, dict)
    observed_all.update(observed)
    checks[f"{test}:{part}"] = ok
    if reason:
        cell_record.setdefault("reasons", {})[f"{test}:{part}"] = reason  # type: ignore[index]
    cell_record["verdict"] = "pass" if all(checks.values()) else "fail"


def probe_document(record: RunRecord) -> list[dict[str, object]]:
    """The probe cells of the JSON report, sorted by id."""
    return [record.probe_cells[k] for k in sorted(record.probe_cells)]


def _text(cell: dict[str, object]) -> str:
    expected = cell["expected"]
    observed = cell["observed"]
    assert isinstance(expected, dict)
    assert isinstance(observed, dict)
    text = ("✓ Ready" if expected["ready"] else "✗ not Ready") + (
        f" ({expected['source']})" if expected.get("source") else ""
    )
    if expected.get("false_ready"):
        text += " ⚠️ false Ready: unreachable from other pods"
    if cell.get("verdict") == "fail":
        reasons = cell.get("reasons", {})
        assert isinstance(reasons, dict)
        text = f"❌ {text}; " + "; ".join(sorted(set(map(str, reasons.values()))))
    return text


def _restart_cell_text(cell: dict[str, object]) -> str:
    expected = cell["expected"]
    observed = cell["observed"]
    assert isinstance(expected, dict)
    assert isinstance(observed, dict)
    text = restart_text(ProbeUse(str(cell["use"])), bool(expected.get("restarts")))
    if "restarts" in observed:
        text += f" (restartCount {observed['restarts']})"
    if cell.get("verdict") == "fail":
        reasons = cell.get("reasons", {})
        assert isinstance(reasons, dict)
        text = f"❌ {text}; " + "; ".join(sorted(set(map(str, reasons.values()))))
    return text


def _restart_table(record: RunRecord, profile: Profile, records: dict[str, dict[str, object]]) -> list[str]:
    """Rows (use, probe, rewrite), columns binds: restarted or not, with the restart count the run saw."""
    rows = []
    columns = probe_binds(record.family)
    for use in (ProbeUse.LIVENESS, ProbeUse.STARTUP):
        for rewrite in rewrite_settings(profile):
            for probe in PROBE_KINDS_OF_USE[use]:
                keys = [ProbeCellKey(profile, b, probe, rewrite, record.family, use).id for b in columns]
                if not any(k in records for k in keys):
                    continue
                label = {None: "no sidecar", True: "on", False: "off"}[rewrite]
                cells = "".join(f" {_restart_cell_text(records[k])} |" if k in records else " – |" for k in keys)
                rows.append(f"| {use.value} | {probe.value} | {label} |{cells}")
    if not rows:
        return []
    return [
        "",
        "Liveness and startup probes: restarted or not, and the restart count (`restartCount`) the run saw.",
        "",
        "| use | probe | rewrite | " + " | ".join(b.value for b in columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
        *rows,
    ]


def probe_tables(record: RunRecord) -> list[str]:
    """Per profile, rows (probe, rewrite) and columns binds: Ready or not, and who the app saw probing it."""
    lines: list[str] = []
    columns = probe_binds(record.family)  # a dual-stack run's have `dual_wildcard` too
    if record.probe_cells and record.mesh.version.startswith("1.21"):
        lines += ["", KNOWN_1_21_INCONSISTENCY]
    for profile in record.profiles:
        records = {k: v for k, v in record.probe_cells.items() if v.get("profile") == profile.value}
        if not records:
            continue
        section = [
            "",
            f"## {profile.value}: health probes",
            "",
            "Each cell: expected readiness and who the app sees probing it; ❌ where the run differed.",
            "",
            "| probe | rewrite | " + " | ".join(b.value for b in columns) + " |",
            "|---|---|" + "---|" * len(columns),
        ]
        for rewrite in rewrite_settings(Profile(profile.value)):
            for probe in ProbeKind:
                label = {None: "no sidecar", True: "on", False: "off"}[rewrite]
                row = f"| {probe.value} | {label} |"
                for bind in columns:
                    key = ProbeCellKey(Profile(profile.value), bind, probe, rewrite, record.family).id
                    row += f" {_text(records[key])} |" if key in records else " – |"
                section.append(row)
        section += _restart_table(record, Profile(profile.value), records)
        false_ready = [
            k for k, v in records.items() if isinstance(v["expected"], dict) and v["expected"]["false_ready"]
        ]
        if false_ready:
            section += ["", "⚠️ False Ready (Ready, yet no other pod reaches the port; users should know):", ""]
            section += [f"- `{k}`" for k in sorted(false_ready)]
        failed = sum(v.get("verdict") == "fail" for v in records.values())
        summary = cells_verdict(f"{profile.value}, health probes", len(records), failed)
        if false_ready:
            summary += f" ({len(false_ready)} false Ready ⚠️)"
        lines += fold(summary, section, failed > 0)
    return lines
