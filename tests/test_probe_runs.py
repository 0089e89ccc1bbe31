"""Whole runs of the probe cases against wrong sidecars (tests/sidecars/): each must fail the suite.

The cells each wrong sidecar must fail are derived from the spec, so the tests say *why* a cell fails.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, suite_command

from conformance.spec.dimensions import SINGLE_STACK, IpFamily, Profile
from conformance.spec.probes import ProbeSource, expect_probe, probe_cells

SIDECARS = REPO / "tests" / "sidecars"


def run_probe_cases(tmp_path: Path, sidecar: str, family: IpFamily) -> tuple[int, dict[str, dict[str, object]]]:
    # -k "Probe ..." selects the readiness cases and the restart ones (ProbeRestarts, RestartProbeSource).
    cmd = suite_command(
        "--report-dir", str(tmp_path / "reports"), "--artifacts-dir", str(tmp_path / "artifacts"),
        "--ip-family", family.value, "-k", "Probe or ReadyMeansReachable",
        "--emulator-sidecar", f"/usr/bin/python3 {SIDECARS / sidecar}",
    )  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    doc = json.loads((tmp_path / "reports" / "conformance-report.json").read_text())
    return proc.returncode, {c["id"]: c for c in doc["probe_cells"]}


@pytest.mark.netns
@pytest.mark.parametrize("family", list(SINGLE_STACK), ids=lambda f: f.value)
def test_a_status_port_that_always_probes_localhost_fails_the_suite(tmp_path: Path, family: IpFamily) -> None:
    code, cells = run_probe_cases(tmp_path, "status_localhost_sidecar.py", family)
    assert code == 1
    # Under passthrough, a rewritten probe sent to localhost behaves like the legacy switch's: every cell where
    # that changes readiness must fail, and nothing else.
    broken = {
        c.id
        for c in probe_cells((Profile.PASSTHROUGH,), (family,))
        if c.rewrite and expect_probe(c).ready != expect_probe(dataclasses.replace(c, profile=Profile.LEGACY)).ready
    }
    # Readiness: loopback and pod_ip, http and tcp; liveness and startup (http): loopback and pod_ip.
    assert len(broken) == 8
    failed = {i for i, c in cells.items() if c["verdict"] == "fail"}
    assert failed == broken


@pytest.mark.netns
def test_a_kubelet_visible_liveness_failure_is_reported_with_its_restart_count(tmp_path: Path) -> None:
    """Issue 22's "done when": a status port that probes localhost under passthrough makes the rewritten liveness
    probe of a pod-IP-only app fail, and the kubelet restart it: the report says so, with the restart count."""
    code, cells = run_probe_cases(tmp_path, "status_localhost_sidecar.py", IpFamily.IPV4)
    assert code == 1
    for use in ("liveness", "startup"):
        cell = cells[f"probe/passthrough/pod_ip/http/{use}/rewrite/ipv4"]
        observed, reasons = cell["observed"], cell.get("reasons")
        assert isinstance(observed, dict)
        assert isinstance(reasons, dict)
        assert cell["verdict"] == "fail"
        restarts = observed["restarts"]
        assert isinstance(restarts, int)
        assert restarts >= 1
        assert (
            f"expected never restarted, saw restartCount {restarts}"
            in reasons["ProbeRestarts[passthrough]:probe_restarts"]
        )
        # And the loopback-only app, which the spec says is restarted again and again (istio/istio#36894), was not.
        loopback = cells[f"probe/passthrough/loopback/http/{use}/rewrite/ipv4"]
        assert loopback["verdict"] == "fail"
        assert loopback["observed"]["restarts"] == 0  # type: ignore[index]
    markdown = (tmp_path / "reports" / "conformance-report.md").read_text()
    assert "| liveness | http | on | ❌ ↻ restarted again and again (restartCount 0); " in markdown
    assert "expected restarted again and again, saw restartCount 0" in markdown
    assert "❌ ✓ never restarted (restartCount " in markdown


@pytest.mark.netns
def test_a_status_port_that_never_binds_127_0_0_6_fails_the_suite(tmp_path: Path) -> None:
    code, cells = run_probe_cases(tmp_path, "status_nobind_sidecar.py", IpFamily.IPV4)
    assert code == 1
    # Sent to localhost (legacy), the probes arrive from 127.0.0.1 instead of 127.0.0.6.
    from_passthrough = {
        c.id
        for c in probe_cells((Profile.LEGACY,), (IpFamily.IPV4,))
        if c.rewrite and expect_probe(c).source is ProbeSource.INBOUND_PASSTHROUGH
    }
    assert len(from_passthrough) == 8  # loopback and wildcard: readiness http and tcp, liveness and startup http
    for cell_id in from_passthrough:
        reasons = json.dumps(cells[cell_id].get("reasons"))
        assert cells[cell_id]["verdict"] == "fail", cell_id
        assert "saw 127.0.0.1" in reasons, reasons


@pytest.mark.netns
def test_a_correct_status_port_slow_to_answer_its_first_probes_passes(tmp_path: Path) -> None:
    """No false failures: each probe's first answer comes after the kubelet's timeout, the next ones in time. A
    readiness verdict taken at the first probe (failureThreshold 1) would be "not Ready"; the suite confirms a
    differing verdict a few seconds on, by which time the container is Ready, and no liveness or startup
    container is restarted (failureThreshold 2)."""
    code, cells = run_probe_cases(tmp_path, "slow_status_sidecar.py", IpFamily.IPV4)
    failed = {i: c.get("reasons") for i, c in cells.items() if c["verdict"] == "fail"}
    assert failed == {}
    assert code == 0
    assert len(cells) == len(probe_cells(tuple(Profile), (IpFamily.IPV4,)))


@pytest.mark.netns
def test_a_status_port_that_probes_the_ipv6_pod_ip_of_a_dual_pod_fails_the_suite(tmp_path: Path) -> None:
    """Rule dual-probe-primary-ipv4 is asked, not assumed: an agent that probes a dual-stack pod's IPv6 address
    (from ::6) leaves readiness as it is (every bind admits both families there) but the app sees ::6, so exactly
    the rewritten cells whose probe reaches the app fail, on who probed it; the probes of a correct agent come from
    127.0.0.6, the dual_wildcard app's too (an IPv4-mapped peer, reported dotted)."""
    code, cells = run_probe_cases(tmp_path, "ipv6_probe_dual_sidecar.py", IpFamily.DUAL)
    assert code == 1
    asked = probe_cells(tuple(Profile), (IpFamily.DUAL,))
    assert set(cells) == {c.id for c in asked}
    reached = {c.id for c in asked if c.rewrite and expect_probe(c).source is not None}
    # Passthrough: pod_ip, wildcard, dual_wildcard; legacy: loopback, wildcard, dual_wildcard; each in readiness
    # http and tcp, liveness and startup http.
    assert len(reached) == 2 * 3 * 4
    failed = {i for i, c in cells.items() if c["verdict"] == "fail"}
    assert failed == reached
    for cell_id in reached:
        checks, observed = cells[cell_id]["checks"], cells[cell_id]["observed"]
        assert isinstance(checks, dict)
        assert isinstance(observed, dict)
        assert [k for k, ok in checks.items() if not ok] == [k for k in checks if k.endswith(":probe_source")]
        assert observed["sources"] == ["ipv6_inbound_passthrough"], cell_id
        assert observed["peers"] == ["::6"]
