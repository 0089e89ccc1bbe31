"""The JSON report, `conformance-report.json`, for machines: a run's record as one versioned document.

JSON format `mesh-inbound-conformance/report`, version 4 (documented in docs/running.md, "The report"). A change to
its shape is a new version: tools that read the file check `format` and `version` first.
"""

from __future__ import annotations

from conformance.report.probes import probe_document
from conformance.report.record import CellRecord, RunRecord, outcome_text
from conformance.report.ztunnel import ztunnel_document
from conformance.spec.dimensions import IpFamily, Source, source_addresses

REPORT_FORMAT = "mesh-inbound-conformance/report"
REPORT_VERSION = 4
JSON_NAME = "conformance-report.json"


def json_document(record: RunRecord) -> dict[str, object]:
    """The JSON report."""
    profiles = []
    for profile in record.profiles:
        result, stats = record.profile_result(profile.value)
        tests = [t for t in record.tests.values() if t.profile == profile.value]
        profiles.append(
            {
                "name": profile.value,
                "result": result,
                "statistics": stats,
                "failed_tests": sorted(t.case for t in tests if t.outcome == "failed"),
                "skipped_tests": [{"test": t.case, "reason": t.reason} for t in tests if t.outcome == "skipped"],
            }
        )
    family = record.family
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "setup_error": record.setup_error,
        "process_deaths": [
            {
                "process": d.process,
                "status": d.status,
                "pods": [str(p) for p in d.pods],
                "log_tail": list(d.log_tail),
            }
            for d in record.deaths
        ],
        "started": record.started.isoformat(timespec="seconds"),
        "finished": record.finished.isoformat(timespec="seconds") if record.finished else None,
        "interrupted": record.interrupted,
        "mesh": {**record.mesh.to_json(), **record.mesh_info},
        "backend": record.backend,
        "ip_family": family.value,
        "profiles": profiles,
        "prechecks": record.prechecks,
        "timings_s": {k: round(v, 3) for k, v in record.timings.items()},
        "cells": [_cell(r, family) for r in sorted(record.cells.values(), key=lambda r: r.cell.id)],
        "probe_cells": probe_document(record),
        "ztunnel_cells": ztunnel_document(record),
    }


def _cell(r: CellRecord, family: IpFamily) -> dict[str, object]:
    """One cell's JSON; its head (keys, expected, observed) built once per record (CellRecord.json_head)."""
    if r.json_head is None:
        r.json_head = {
            "id": r.cell.id,
            **r.cell.to_json(),
            "expected": {
                **r.expected.to_json(),
                "source_address": _address(family, r.expected.source, r.cell.client_family),
            },
            "observed": {
                **r.observed.to_json(),
                "outcome_text": outcome_text(r.observed.last.label),
                "source_address": _address(family, r.observed.source, r.cell.client_family),
            },
        }
    return {**r.json_head, "verdict": "pass" if r.passed else "fail", "checks": r.checks, "reasons": r.reasons}


def _address(family: IpFamily, source: object, client_family: IpFamily | None = None) -> str | None:
    """The literal address of a source where it has one (127.0.0.6 for inbound_passthrough)."""
    try:
        return source_addresses(family, client_family).get(Source(str(source))) if source else None
    except ValueError:
        return None
