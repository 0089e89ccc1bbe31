"""The probe part of the report (conformance/report/probes.py): the restart counts of liveness and startup cells."""

from __future__ import annotations

from conformance.report.json_document import REPORT_VERSION, json_document
from conformance.report.markdown import markdown
from conformance.report.probes import probe_tables, record_probe
from conformance.report.record import RunRecord
from conformance.spec.capabilities import emulated_capabilities
from conformance.spec.dimensions import Bind, IpFamily, Profile
from conformance.spec.probes import ProbeCellKey, ProbeKind, ProbeUse, expect_probe

V4 = IpFamily.IPV4


def _record() -> RunRecord:
    record = RunRecord(emulated_capabilities(), {}, "emulated", V4, (Profile.PASSTHROUGH,))
    for bind, restarts, ok in ((Bind.LOOPBACK, 7, True), (Bind.POD_IP, 2, False), (Bind.WILDCARD, 0, True)):
        cell = ProbeCellKey(Profile.PASSTHROUGH, bind, ProbeKind.HTTP, True, V4, ProbeUse.LIVENESS)
        reason = "" if ok else "expected never restarted, saw restartCount 2 (last probe: liveness probe: refused)"
        observed: dict[str, object] = {"restarts": restarts, "ready": True, "detail": "ok"}
        record_probe(
            record, "ProbeRestarts[passthrough]", cell, expect_probe(cell), observed, "probe_restarts", ok, reason
        )
    readiness = ProbeCellKey(Profile.PASSTHROUGH, Bind.POD_IP, ProbeKind.HTTP, True, V4)
    observed = {"restarts": 0, "detail": "ok"}
    record_probe(
        record, "ProbeRestarts[passthrough]", readiness, expect_probe(readiness), observed, "probe_restarts", True, ""
    )
    return record


def test_the_json_report_carries_restart_counts_within_version_4() -> None:
    cells = {c["id"]: c for c in json_document(_record())["probe_cells"]}  # type: ignore[union-attr]
    assert REPORT_VERSION == 4  # fields added, none renamed: the version stays
    loopback = cells["probe/passthrough/loopback/http/liveness/rewrite/ipv4"]
    assert (loopback["use"], loopback["observed"]["restarts"], loopback["expected"]["restarts"]) == (
        "liveness",
        7,
        True,
    )
    assert cells["probe/passthrough/pod_ip/http/liveness/rewrite/ipv4"]["verdict"] == "fail"
    readiness = cells["probe/passthrough/pod_ip/http/rewrite/ipv4"]
    assert (readiness["use"], readiness["observed"]["restarts"], readiness["expected"]["restarts"]) == (
        "readiness",
        0,
        False,
    )


def test_the_markdown_shows_restart_counts_beside_the_expected_behaviour() -> None:
    lines = probe_tables(_record())
    row = next(line for line in lines if line.startswith("| liveness | http | on |"))
    assert row == (
        "| liveness | http | on | ↻ restarted again and again (restartCount 7) | ❌ ✓ never restarted "
        "(restartCount 2); expected never restarted, saw restartCount 2 (last probe: liveness probe: refused) "
        "| ✓ never restarted (restartCount 0) |"
    )
    assert not any(line.startswith("| startup |") for line in lines)  # no startup cell was recorded
    assert "restartCount 7" in markdown(_record())
