"""Whole runs of the conformance suite, in a subprocess, as a user runs it.

They show that the suite fails a wrong proxy on exactly the cells that differ, that reports and diagnostics
are written, that option mistakes are one line, and that nothing is left behind after a pass, a failure,
Ctrl-C, SIGTERM or a SIGKILL followed by the next run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, left_behind, mic_namespaces, suite_command

import conformance
from conformance.backends.emulated import netns
from conformance.backends.emulated.cluster import EmulatedCluster
from conformance.run.outputs import RECORD_NAME, artifacts_folder
from conformance.spec import Bind, CellKey, DefaultEndpoint, Failure, Interception, Profile, Source, all_cells, expect
from conformance.spec.dimensions import (
    OVERRIDES_BY_FAMILY,
    SINGLE_STACK,
    Client,
    InboundCapture,
    IpFamily,
    source_addresses,
)
from conformance.spec.dualstack import DUAL_PASSTHROUGH
from conformance.spec.probes import probe_cells
from conformance.spec.ztunnel import expect_late, expect_tunnel, late_cells, tunnel_cells
from conformance.world.layout import World

WRONG_SIDECAR = f"/usr/bin/python3 {REPO / 'tests' / 'sidecars' / 'localhost_sidecar.py'}"
IPV4_ONLY_SIDECAR = f"/usr/bin/python3 {REPO / 'tests' / 'sidecars' / 'ipv4_only_sidecar.py'}"
# Where tox's --rootdir points: the installed package's site-packages (clean test ids and JUnit classnames).
SITE = Path(conformance.__file__).resolve().parents[1]
SNIFF_RESET_SIDECAR = f"/usr/bin/python3 {REPO / 'tests' / 'sidecars' / 'sniff_reset_sidecar.py'}"
TPROXY_IGNORED_SIDECAR = f"/usr/bin/python3 {REPO / 'tests' / 'sidecars' / 'tproxy_ignored_sidecar.py'}"
OWN_ADDRESS_ZTUNNEL = f"/usr/bin/python3 {REPO / 'tests' / 'sidecars' / 'own_address_ztunnel.py'}"
LOCALHOST_ZTUNNEL = f"/usr/bin/python3 {REPO / 'tests' / 'sidecars' / 'localhost_ztunnel.py'}"
TUNNEL_200_ZTUNNEL = f"/usr/bin/python3 {REPO / 'tests' / 'sidecars' / 'tunnel_200_ztunnel.py'}"
NO_RELOAD_ZTUNNEL = f"/usr/bin/python3 {REPO / 'tests' / 'sidecars' / 'no_reload_ztunnel.py'}"
SIGHUP_DIES_ZTUNNEL = f"/usr/bin/python3 {REPO / 'tests' / 'sidecars' / 'sighup_dies_ztunnel.py'}"
KERNEL_PORTS_SIDECAR = f"/usr/bin/python3 {REPO / 'tests' / 'sidecars' / 'kernel_ports_sidecar.py'}"
EXITING_SIDECAR = f"/usr/bin/python3 {REPO / 'tests' / 'sidecars' / 'exiting_sidecar.py'}"
ONE_BIND_DUAL_SIDECAR = f"/usr/bin/python3 {REPO / 'tests' / 'sidecars' / 'one_bind_dual_sidecar.py'}"


def run_suite(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    cmd = suite_command(
        "--report-dir", str(tmp_path / "reports"), "--artifacts-dir", str(tmp_path / "artifacts"), *args
    )
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp_path, check=False)


def report(tmp_path: Path) -> dict[str, object]:
    return json.loads((tmp_path / "reports" / "conformance-report.json").read_text())


def cells_a_localhost_sidecar_breaks(family: IpFamily) -> set[str]:
    """Cells whose outcome changes when every configured inbound listener dials localhost instead.

    Derived from the spec: such a sidecar behaves, for a port it has a listener for, like the Sidecar
    override 127.0.0.1:P. Listeners exist for declared (and remapped) ports without a Sidecar and for the ports
    a Sidecar lists; an unlisted or undeclared port stays on the catch-all passthrough. In a TPROXY pod such a
    sidecar dials localhost from the client's address (original_src). On IPv4 the emulated pods (route_localnet
    off, the kernel's default) never answer it: the app's SYN-ACK or RST from 127.0.0.1 cannot be routed to a
    non-local address, so every TPROXY cell of a listener's port times out. On IPv6 the reply's restored mark
    routes it back through table 133, so loopback and wildcard apps are reached and see the client's address,
    and a pod-IP app refuses (503 / reset). Istio's spec leaves such localhost dials out (UNCONFIRMED).
    """
    localhost_form = OVERRIDES_BY_FAMILY[family][0]
    broken = set()
    for cell in all_cells([Profile.LEGACY, Profile.PASSTHROUGH], [family]):
        if not cell.path.from_other_pod or not cell.port.declared:
            continue
        if cell.default_endpoint is DefaultEndpoint.UNLISTED or cell.capture is not InboundCapture.ALL:
            continue  # the catch-all passthrough, or ports the server's sidecar never sees
        if cell.interception is Interception.TPROXY:
            want, reached = expect(cell), cell.bind is not Bind.POD_IP
            if family is IpFamily.IPV4 or (want.reachable, want.source) != (
                reached,
                Source.CLIENT if reached else None,
            ):
                broken.add(cell.id)  # IPv4: a timeout, which no expectation is
            continue
        as_localhost = CellKey(
            cell.profile, localhost_form, cell.bind, cell.port, cell.protocol, cell.path, cell.client, family
        )
        want, got = expect(cell), expect(as_localhost)
        if (want.reachable, want.source) != (got.reachable, got.source):
            broken.add(cell.id)
    return broken


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize("family", list(SINGLE_STACK), ids=lambda f: f.value)
def test_a_proxy_forwarding_to_localhost_fails_exactly_the_cells_it_breaks(tmp_path: Path, family: IpFamily) -> None:
    # What an earlier run wrote (recorded as the suite records it), and a file of the user's beside it.
    stale = tmp_path / "artifacts" / "legacy" / "FromAnEarlierRun"
    stale.mkdir(parents=True)
    artifacts_folder(tmp_path / "artifacts", [p.value for p in Profile], "emulated").claim([stale / "log.txt"])
    (stale / "log.txt").write_text("an earlier run's\n")
    (tmp_path / "artifacts" / "notes.txt").write_text("the user's\n")
    proc = run_suite(
        tmp_path,
        "--ip-family",
        family.value,
        "--emulator-sidecar",
        WRONG_SIDECAR,
        "--junitxml",
        "junit.xml",
        "--rootdir",
        str(SITE),
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    doc = report(tmp_path)
    # The report holds every cell the spec lists for the family, each judged.
    assert {c["id"] for c in doc["cells"]} == {c.id for c in all_cells(families=[family])}  # type: ignore[index,union-attr]
    failed = {c["id"] for c in doc["cells"] if c["verdict"] == "fail"}  # type: ignore[index,union-attr]
    expected = cells_a_localhost_sidecar_breaks(family)
    # Measured from the spec: every Sidecar form is a cell in both families, for declared and remapped ports
    # alike; `0.0.0.0:P` on an IPv6 pod dials 127.0.0.1 and `[::]:P` on an IPv4 pod ::1, where no app listens, so
    # a localhost sidecar changes two binds there instead of three.
    # TPROXY adds cells of its declared and remapped ports from other pods: all 96 on IPv4 (they time out), the 64
    # of loopback and pod-IP apps on IPv6 (see above). IPv6 asks the dual_wildcard bind too: its 112 cells break
    # exactly where their wildcard twins do (::1 reaches both sockets alike).
    assert len(expected) == {IpFamily.IPV4: 304 + 96, IpFamily.IPV6: 304 + 64 + 112}[family]
    assert failed == expected
    results = {p["name"]: p["result"] for p in doc["profiles"]}  # type: ignore[index,union-attr]
    assert results == {"baseline": "success", "legacy": "failure", "passthrough": "failure", "ambient": "success"}
    assert WRONG_SIDECAR in doc["mesh"]["build"]  # type: ignore[index]
    markdown = (tmp_path / "reports" / "conformance-report.md").read_text()
    failed_lines = [line for line in markdown.splitlines() if line.startswith("- ❌ `")]
    listed = {line.split("`")[1] for line in failed_lines}
    # The Markdown lists the first 200 failed cells by id (the probe cells the sidecar breaks too), then says how
    # many more the JSON holds.
    others = {c["id"] for c in (*doc["probe_cells"], *doc["ztunnel_cells"]) if c["verdict"] == "fail"}  # type: ignore[index,union-attr,misc]
    assert listed == set(sorted(expected | others)[:200])
    assert f"- ... and {len(expected) + len(others) - 200} more" in markdown
    # Each failed cell names its case and the tox command that reruns just that case and profile.
    family_arg = "" if family is IpFamily.IPV4 else " --ip-family ipv6"
    assert all(
        f'; rerun: `.venv/bin/tox -e conformance -- -k "{line.split("case ")[1].split("[")[0]} and ' in line
        and f'"{family_arg}`' in line
        for line in failed_lines
    ), failed_lines[:3]
    assert "build under test `/usr/bin/python3" in markdown
    # The terminal summary names the backend and the family; test ids carry no site-packages path.
    assert f"mesh inbound conformance: emulated backend, {family.value}" in proc.stdout
    assert "FAILED conformance/suite/test_" in proc.stdout
    assert "site-packages" not in proc.stdout.split("short test summary info")[1]
    assert "| passthrough | ❌ failure |" in markdown
    # The report reads top-down: the failed cells above the folds; the failing profiles' tables open, the
    # passing ones (baseline, ambient) folded under a ✅ summary.
    assert markdown.index("## Failed cells (") < markdown.index("<details")
    for profile in ("legacy", "passthrough"):
        assert f"<details open>\n<summary>{profile}: " in markdown
    for profile in ("baseline", "ambient"):
        assert re.search(f"<details>\n<summary>{profile}: ([0-9]+)/\\1 cells as expected ✅</summary>", markdown)
    # Failure context: diagnostics in the test report and copied under --artifacts-dir.
    assert "conformance: echo-none.mic-mesh sidecar config" in proc.stdout
    # Each pod's logs appear once in the run's output, however many failed tests involved it.
    assert proc.stdout.count("conformance: echo-none.mic-mesh sidecar log") == 1
    assert "shown with an earlier failure of this run" in proc.stdout
    # Diagnostics go to artifacts/<profile>/<Case>/, plain names (ls and upload-artifact skip hidden ones);
    # the previous run's folders are gone.
    artifacts = tmp_path / "artifacts"
    assert not stale.exists()
    assert (artifacts / "notes.txt").read_text() == "the user's\n"
    # Only the record of what the suite wrote is hidden (uploads skip it, as they should).
    assert [p.name for p in artifacts.rglob(".*")] == [RECORD_NAME]
    written = {p.relative_to(artifacts).parts[0] for p in artifacts.iterdir()} - {"notes.txt", RECORD_NAME}
    assert written <= {"legacy", "passthrough"}
    assert (artifacts / "passthrough" / "PodIPFromPlainClient").is_dir()
    logs = list(artifacts.glob("*/*/*sidecar_log.txt"))
    assert logs
    assert any("connected" in a.read_text() for a in logs)
    junit = (tmp_path / "junit.xml").read_text()
    assert 'failures="' in junit
    assert "PodIPFromPlainClient[passthrough]" in junit
    assert 'classname="conformance.suite.test_reachability"' in junit
    assert "site-packages" not in junit


def cells_a_sniff_reset_sidecar_breaks(family: IpFamily) -> set[str]:
    """Cells where Istio answers 503 from its inbound catch-all and a sidecar that never sniffs HTTP resets.

    Derived from the spec: the unreachable HTTP cells of a sidecar'd server whose failure comes from the
    sniffing catch-all (undeclared or Sidecar-unlisted ports), for plain and meshed clients alike.
    """
    return {
        cell.id
        for cell in all_cells([Profile.LEGACY, Profile.PASSTHROUGH], [family])
        if "inbound-sniffing-503" in expect(cell).because
    }


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize("family", list(SINGLE_STACK), ids=lambda f: f.value)
def test_a_proxy_resetting_instead_of_503_on_sniffed_ports_fails_those_cells(tmp_path: Path, family: IpFamily) -> None:
    proc = run_suite(tmp_path, "--ip-family", family.value, "--emulator-sidecar", SNIFF_RESET_SIDECAR)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    doc = report(tmp_path)
    failed = {c["id"] for c in doc["cells"] if c["verdict"] == "fail"}  # type: ignore[index,union-attr]
    expected = cells_a_sniff_reset_sidecar_breaks(family)
    assert expected
    assert all(expect(c).failure == (Failure.HTTP_503,) for c in all_cells() if c.id in expected)
    assert failed == expected
    observed = {c["id"]: c["observed"]["outcome"] for c in doc["cells"] if c["id"] in expected}  # type: ignore[index,union-attr]
    assert set(observed.values()) == {"reset_or_eof"}, observed
    results = {p["name"]: p["result"] for p in doc["profiles"]}  # type: ignore[index,union-attr]
    # Ambient pods have no sidecar: a wrong sidecar leaves that profile as it is.
    assert results == {"baseline": "success", "legacy": "failure", "passthrough": "failure", "ambient": "success"}


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize("family", list(SINGLE_STACK), ids=lambda f: f.value)
def test_a_proxy_ignoring_tproxy_fails_exactly_the_cells_that_keep_the_client_address(
    tmp_path: Path, family: IpFamily
) -> None:
    """A sidecar that takes TPROXY'd connections but dials from 127.0.0.6 / ::6 as in REDIRECT mode.

    Every cell is still reached where the spec says (the capture rules let 127.0.0.6 through), so only the TPROXY
    cells whose app should see the client's pod IP (rule tproxy-original-src) fail, on the source address.
    """
    proc = run_suite(
        tmp_path,
        *("--ip-family", family.value, "--profile", "passthrough", "--emulator-sidecar", TPROXY_IGNORED_SIDECAR, "-rs"),
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    # A module none of whose profiles --profile selects says so (not pytest's "empty parameter set").
    assert "test_ambient: --profile selects none of its profiles (ambient)" in proc.stdout
    doc = report(tmp_path)
    failed = {c["id"] for c in doc["cells"] if c["verdict"] == "fail"}  # type: ignore[index,union-attr]
    expected = {
        c.id
        for c in all_cells([Profile.PASSTHROUGH], [family])
        if c.interception is Interception.TPROXY and expect(c).source is Source.CLIENT
    }
    assert len(expected) == {IpFamily.IPV4: 72, IpFamily.IPV6: 72 + 36}[family]  # IPv6: dual_wildcard's 36 too
    assert all("tproxy-original-src" in expect(c).because for c in all_cells() if c.id in expected)
    assert failed == expected
    passthrough = "::6" if family is IpFamily.IPV6 else "127.0.0.6"
    observed = {c["observed"]["peer"] for c in doc["cells"] if c["id"] in expected}  # type: ignore[index,union-attr]
    assert observed == {passthrough}, observed


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
def test_a_passing_run_reports_success_and_leaves_nothing(tmp_path: Path) -> None:
    # Without --report-dir: reports/ipv6/ (with junit.xml), so an IPv4 run's report stays where it is.
    (tmp_path / "reports" / "ipv4").mkdir(parents=True)
    (tmp_path / "reports" / "ipv4" / "conformance-report.json").write_text("{}")
    cmd = suite_command("-k", "LocalhostInPod or Precheck", "--ip-family", "ipv6")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "reports" / "ipv4" / "conformance-report.json").read_text() == "{}"
    assert (tmp_path / "reports" / "ipv6" / "junit.xml").is_file()
    doc = json.loads((tmp_path / "reports" / "ipv6" / "conformance-report.json").read_text())
    assert doc["interrupted"] is False
    assert doc["ip_family"] == "ipv6"
    assert {p["name"]: p["result"] for p in doc["profiles"]} == {  # type: ignore[index,union-attr]
        "baseline": "success",
        "legacy": "success",
        "passthrough": "success",
        "ambient": "success",
    }
    timings = doc["timings_s"]
    assert set(timings) >= {"setup", "probes", "teardown", "total"}  # type: ignore[arg-type]


def _kernel_narrows_ports() -> bool:
    """Whether this kernel has the IP_LOCAL_PORT_RANGE socket option (Linux >= 6.3)."""
    with socket.socket() as sock:
        try:
            sock.setsockopt(socket.IPPROTO_IP, 51, struct.pack("=I", 60003 << 16 | 60000))
        except OSError:
            return False
    return True


SYN_RETRANSMISSION_MS = 1000
"""A probe this slow waited for a dropped SYN to be sent again (Linux's first retransmission: 1 s)."""


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
def test_a_proxy_letting_the_kernel_pick_its_ports_passes_every_run(tmp_path: Path) -> None:
    """A correct sidecar whose outbound ports the kernel picks (as Envoy's) gets the same verdicts every run.

    The kernel picks per destination, so such a proxy now and then dials two ports of one enrolled pod from
    one port at once, which REDIRECT folds into one connection to ztunnel (network.ENROLLED_TCP_SETTINGS says
    how the harness keeps that from stalling). With the full range that happens on some boots in one run of
    three; `--port-range` narrows the kernel's pick to four ports, so it happens in every run. Before the fix
    every such run had connections that waited for a SYN retransmission (>= 1 s), and one in three failed
    cells (timeouts, or the first connection reset); the full-range run is the proxy as users run it.
    """
    if not _kernel_narrows_ports():
        pytest.skip("this kernel has no IP_LOCAL_PORT_RANGE (Linux >= 6.3): the narrowed runs cannot be made")
    runs = [
        ("ipv4", f"{KERNEL_PORTS_SIDECAR} --port-range 60000-60003"),
        ("ipv6", f"{KERNEL_PORTS_SIDECAR} --port-range 60000-60003"),
        ("ipv4", KERNEL_PORTS_SIDECAR),
    ]
    for number, (family, sidecar) in enumerate(runs):
        folder = tmp_path / f"run{number}"
        folder.mkdir()
        proc = run_suite(folder, "--profile", "ambient", "--ip-family", family, "--emulator-sidecar", sidecar)
        where = f"run {number} ({family}, {sidecar})"
        assert proc.returncode == 0, f"{where}:\n" + proc.stdout[-3000:] + proc.stderr[-2000:]
        doc = report(folder)
        results = {p["name"]: p["result"] for p in doc["profiles"]}  # type: ignore[index,union-attr]
        assert results["ambient"] == "success", results
        cells: list[dict[str, Any]] = doc["cells"]  # type: ignore[assignment]
        stalled = {
            c["id"]: c["observed"]["latency_ms"]
            for c in cells
            if c["client"] == "meshed" and c["observed"] and c["observed"]["latency_ms"] >= SYN_RETRANSMISSION_MS
        }
        assert not stalled, f"{where}: probes that waited for a SYN retransmission: {stalled}"


DUAL_RESULTS = {"baseline": "success", "legacy": "success", "passthrough": "success", "ambient": "not selected"}
"""A passing dual run: the three profiles a dual-stack pod is asked in (spec/dualstack.py DUAL_PROFILES)."""


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize("sidecar", [None, KERNEL_PORTS_SIDECAR], ids=["reference", "kernel-ports"])
def test_a_dual_run_passes_every_profile(tmp_path: Path, sidecar: str | None) -> None:
    """`--ip-family dual`: every dual cell, both client families, each profile `success` (issue 23 item 4)."""
    args = ("--ip-family", "dual", "-rs", *(("--emulator-sidecar", sidecar) if sidecar else ()))
    proc = run_suite(tmp_path, *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    # The modules with no dual cells and the profile nothing asks say why, not pytest's "empty parameter set".
    for module in ("test_ambient", "test_interception", "test_ztunnel"):
        assert f"{module}: no cells in a dual run (docs/spec.md says which cells each family asks)" in proc.stdout
    assert "empty parameter set" not in proc.stdout
    assert "ambient: not selected (0/0 cells): the emulated mesh: ambient on dual-stack pods is not traced" in (
        proc.stdout
    )
    doc = report(tmp_path)
    assert doc["ip_family"] == "dual"
    assert {c["id"] for c in doc["cells"]} == {c.id for c in all_cells(families=[IpFamily.DUAL])}  # type: ignore[index,union-attr]
    assert len(doc["cells"]) == 3712  # type: ignore[arg-type]
    assert {p["name"]: p["result"] for p in doc["profiles"]} == DUAL_RESULTS  # type: ignore[index,union-attr]
    # Health probes dial the primary, IPv4, pod IP (rule dual-probe-primary-ipv4): 80 cells, dual_wildcard's too.
    probes = {c["id"]: c["verdict"] for c in doc["probe_cells"]}  # type: ignore[index,union-attr]
    assert probes == {c.id: "pass" for c in probe_cells(tuple(Profile), (IpFamily.DUAL,))}
    assert len(probes) == 80
    assert doc["ztunnel_cells"] == []
    assert "mesh inbound conformance: emulated backend, dual" in proc.stdout
    markdown = (tmp_path / "reports" / "conformance-report.md").read_text()
    assert "| client | client family |" in markdown


def cells_a_one_bind_dual_sidecar_breaks() -> set[str]:
    """The IPv6-client cells whose app should see ::6 by the passthrough bind list (127.0.0.6 plus ::6).

    Derived from the spec: a proxy that binds 127.0.0.6 for upstreams of both families cannot dial an IPv6
    upstream, so every reachable IPv6-client cell of rule dual-passthrough-by-client-family (declared and remapped
    ports in passthrough, `:P`, unlisted and undeclared ports) fails. The `[::]:P` cells also see ::6, but that
    cluster's one source is ::6 (the control plane gives it no list), so they pass; cells that do not reach the
    app fail the same way with or without a bind; legacy and localhost forms have no bind.
    """
    broken = set()
    for cell in all_cells(families=[IpFamily.DUAL]):
        expected = expect(cell)
        if cell.client_family is IpFamily.IPV6 and expected.reachable and DUAL_PASSTHROUGH in expected.because:
            assert source_addresses(IpFamily.DUAL, cell.client_family)[expected.source] == "::6"  # type: ignore[index]
            broken.add(cell.id)
    return broken


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
def test_a_sidecar_binding_127_0_0_6_for_both_families_fails_exactly_the_ipv6_client_passthrough_cells(
    tmp_path: Path,
) -> None:
    proc = run_suite(tmp_path, "--ip-family", "dual", "--emulator-sidecar", ONE_BIND_DUAL_SIDECAR)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    doc = report(tmp_path)
    failed = {c["id"] for c in doc["cells"] if c["verdict"] == "fail"}  # type: ignore[index,union-attr]
    expected = cells_a_one_bind_dual_sidecar_breaks()
    assert expected
    assert failed == expected
    # Its probes dial the IPv4 primary pod IP (from 127.0.0.6, the first bind): no probe cell breaks.
    assert [c["id"] for c in doc["probe_cells"] if c["verdict"] == "fail"] == []  # type: ignore[index,union-attr]
    results = {p["name"]: p["result"] for p in doc["profiles"]}  # type: ignore[index,union-attr]
    assert results == {**DUAL_RESULTS, "passthrough": "failure", "legacy": "failure"}


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
def test_a_proxy_that_dies_is_named_as_the_cause(tmp_path: Path) -> None:
    """A sidecar that exits during the run: its death comes first, once, and the cells it voids name it.

    Before issue 20 item 18 such a run read as dozens of cells "expected reachable, got refused", the exit
    nowhere in the failure text or the report. tests/sidecars/exiting_sidecar.py exits with status 3 after 20
    connections, each time a profile switch starts it again.
    """
    proc = run_suite(tmp_path, "--emulator-sidecar", EXITING_SIDECAR)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    doc = report(tmp_path)
    deaths: list[dict[str, Any]] = doc["process_deaths"]  # type: ignore[assignment]
    assert deaths
    last_line = "exiting on purpose after 20 connections (status 3)"
    for death in deaths:
        assert death["process"].startswith("sidecar of "), death
        assert death["status"] == "exit status 3"
        assert death["pods"] == [death["process"].removeprefix("sidecar of ")]
        assert death["log_tail"][-1].endswith(last_line), death["log_tail"]
    # Every failed cell is void, and says which of the dead processes carried it (its client's or server's).
    world = World(IpFamily.IPV4)
    keys = {c.id: c for c in all_cells(families=[IpFamily.IPV4])}
    cells: list[dict[str, Any]] = doc["cells"]  # type: ignore[assignment]
    failed = [c for c in cells if c["verdict"] == "fail"]
    assert failed
    for cell in failed:
        key = keys[cell["id"]]
        pods = {str(world.server_for(key)), str(world.source_pod(key))}
        for reason in cell["reasons"].values():
            named = reason.removeprefix("void, sidecar of ").split(" died (exit status 3)")[0]
            assert reason.startswith("void, sidecar of "), (cell["id"], reason)
            assert named in pods, (cell["id"], reason)
    # The terminal summary names the deaths first, each once, with the log's last line.
    summary = proc.stdout.split("mesh inbound conformance: emulated backend, ipv4")[1]
    heading = summary.splitlines()[1]
    assert heading.startswith(f"{len(deaths)} processes of the build under test died during the run"), heading
    assert summary.index(heading) < summary.index("baseline: ")
    listed = [line for line in summary.splitlines() if line.startswith("- sidecar of ")]
    assert listed == [f"- {d['process']} died (exit status 3); pods: {d['pods'][0]}" for d in deaths]
    assert last_line in summary
    markdown = (tmp_path / "reports" / "conformance-report.md").read_text()
    assert markdown.index("processes of the build under test died") < markdown.index("| profile | result |")
    assert "void, sidecar of " in markdown


def _start_and_wait_for_cluster(tmp_path: Path, new_session: bool = False) -> subprocess.Popen[str]:
    before = mic_namespaces()
    # Twenty identical outcomes a cell (not three) stretch the run to ~30 s, so the signal lands mid-run. (Probe
    # rounds follow each other at once while outcomes hold, as Istio's retry does: a longer pause would not.)
    log = (tmp_path / "pytest.log").open("w")
    proc = subprocess.Popen(
        suite_command("--report-dir", str(tmp_path / "reports"), "--timeout-config", "consecutive=20"),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        start_new_session=new_session,
    )
    log.close()
    deadline = time.monotonic() + 60
    # Wait until the cluster is up (a node and seven pods) and at least one test finished.
    while time.monotonic() < deadline:
        up = len(mic_namespaces() - before) >= 8
        reported = (tmp_path / "reports" / "conformance-report.json").exists()
        if up and reported and report(tmp_path)["profiles"][0]["statistics"]["tests_passed"]:  # type: ignore[index]
            return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the suite did not start a cluster within 60 s")


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_cleans_up_and_still_reports(tmp_path: Path, signum: int) -> None:
    proc = _start_and_wait_for_cluster(tmp_path)
    proc.send_signal(signum)
    proc.wait(timeout=60)
    assert proc.returncode == 2, (tmp_path / "pytest.log").read_text()[-2000:]
    doc = report(tmp_path)
    assert doc["interrupted"] is True
    assert doc["finished"] is not None


@pytest.mark.netns
def test_leftovers_of_a_killed_run_are_reaped_by_the_next_one(tmp_path: Path) -> None:
    before = mic_namespaces()
    proc = _start_and_wait_for_cluster(tmp_path)
    proc.kill()
    proc.wait()
    # Only the killed run's (its lock died with it): other runs on the machine may be starting meanwhile.
    left = left_behind(mic_namespaces() - before)
    assert left, "a SIGKILLed run cannot clean up; its namespaces remain until the next run"
    # Its containers died with it (PR_SET_PDEATHSIG), the sidecars too (they drop to uid 1337, which clears
    # the death signal unless it is set again); only the namespaces remain.
    deadline = time.monotonic() + 5
    while any(netns.pids_in(name) for name in left) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = {name: netns.pids_in(name) for name in left if netns.pids_in(name)}
    assert not survivors, f"processes of the killed run outlived it: {survivors}"
    tags = {name.split("-")[1] for name in left}
    work_dirs = [p for tag in tags for p in Path(tempfile.gettempdir()).glob(f"mic-{tag}-*")]
    assert work_dirs, "a SIGKILLed run leaves its work folder (sidecar configs, logs) behind"
    cluster = EmulatedCluster("ipv4")
    try:
        cluster.up(World(IpFamily.IPV4).manifests()[:2])
        assert not (left & mic_namespaces())
        assert not [p for p in work_dirs if p.exists()], "the next run reaps the dead run's work folders"
    finally:
        cluster.down()
    assert not left_behind(mic_namespaces() - before)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--ip-family", "ipv5"), "--ip-family 'ipv5': expected ipv4, ipv6 or dual"),
        (
            ("--backend", "kind", "--istio-version", "1.16.7", "--ip-family", "dual"),
            "--ip-family dual: Istio 1.16.7 has no dual-stack support (experimental from 1.17.0, #41618)",
        ),
        (("--backend", "minikube"), "--backend 'minikube': expected one of emulated, kind, kubeconfig"),
        (("--profile", "mtls"), "--profile 'mtls': expected one of baseline, legacy, passthrough, ambient"),
        (("--timeout-config", "probe=fast"), "--timeout-config: probe='fast' is not a number of seconds"),
        (("--timeout-config", "probe=99"), "--timeout-config: probe=99 is outside (0, 30.0]"),
        (("--timeout-config", "prob=1"), "--timeout-config: 'prob=1' is not KEY=SECONDS"),
        (("--emulator-sidecar", ""), "--emulator-sidecar: expected a command"),
        (("--emulator-ztunnel", ""), "--emulator-ztunnel: expected a command"),
        (("--emulator-ztunnel", "x 'y"), '--emulator-ztunnel "x \'y": No closing quotation'),
        (("--emulator-sidecar", "x 'y"), '--emulator-sidecar "x \'y": No closing quotation'),
        (("--emulator-sidecar", "/no/such/proxy --flag"), "--emulator-sidecar: /no/such/proxy not found"),
        (("--istio-version", "1.10.6"), "--istio-version is an option of --backend kind/kubeconfig"),
        (("--mesh-capabilities", "teleport"), "--mesh-capabilities 'teleport': expected some of"),
        (("--backend", "kind"), "--backend kind needs --istio-version X"),
        (("--backend", "kubeconfig", "--istio-version", "1.10.6"), "--backend kubeconfig needs --kubeconfig PATH"),
        (("--backend", "kind", "--istio-version", "1.8.0"), "older than 1.9"),
        (("--plan",), "--plan is an option of --backend kind/kubeconfig, not of the emulated backend"),
    ],
)
def test_option_mistakes_are_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    proc = run_suite(tmp_path, *args)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("ERROR: ")
    assert message in errors[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "reports").exists()


@pytest.mark.netns
def test_missing_iptables_is_one_line_not_a_skip(tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {**os.environ, "PATH": str(bare)}
    proc = subprocess.run(
        suite_command("--report-dir", str(tmp_path / "r")),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 4
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert errors == [
        "ERROR: the emulated backend needs iptables-restore, ip6tables-restore, iptables-save: "
        "apt-get install -y iptables (or run ./setup.sh)"
    ]


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
def test_cases_a_mesh_cannot_run_are_skipped_with_the_reason(tmp_path: Path) -> None:
    """A build claiming no legacy mode and no precheck: those cases skip, with the reason, and are not failed."""
    env = {**os.environ, "CI": ""}
    cmd = suite_command(
        "--report-dir",
        str(tmp_path / "reports"),
        "--mesh-capabilities",
        "profile-passthrough,sidecar-endpoint-ipv4,sidecar-endpoint-ipv6",
        "-k",
        "PodIPFromPlainClient or Precheck or LegacySwitch",
        "-rs",
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    doc = report(tmp_path)
    profiles = {p["name"]: p for p in doc["profiles"]}  # type: ignore[union-attr,index]
    # The legacy profile is not claimed: its tests are reported as skipped, with the reason.
    assert profiles["legacy"]["result"] == "skipped"
    assert {s["reason"] for s in profiles["legacy"]["skipped_tests"]} == {
        "the build under test does not claim profile-legacy"
    }
    assert profiles["baseline"]["result"] == "success"
    assert profiles["passthrough"]["result"] == "partial"
    skipped = profiles["passthrough"]["skipped_tests"]
    # `impact` is compared with the precheck only where one exists: both skip, with the reason.
    assert skipped == [
        {"test": "ImpactCoversPrecheck", "reason": "the build under test does not claim precheck-localhost"},
        {"test": "LocalhostPrecheck", "reason": "the build under test does not claim precheck-localhost"},
    ]
    assert "does not claim precheck-localhost" in proc.stdout


@pytest.mark.netns
def test_under_ci_an_emulated_run_that_skips_fails(tmp_path: Path) -> None:
    env = {**os.environ, "CI": "true"}
    cmd = suite_command(
        "--report-dir",
        str(tmp_path / "reports"),
        "--mesh-capabilities",
        "profile-passthrough",
        "-k",
        "LocalhostPrecheck",
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300, check=False)
    assert proc.returncode == 1
    assert "CI=true: the emulated run skipped 2 test(s); it must run every case" in proc.stdout


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
def test_a_sidecar_that_dies_is_one_line_per_test_and_leaves_nothing(tmp_path: Path) -> None:
    proc = run_suite(tmp_path, "-k", "LocalhostInPod", "--emulator-sidecar", "/bin/false")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "during handling" not in proc.stdout
    lines = [line for line in proc.stdout.splitlines() if line.startswith("emulated backend: ")]
    assert len(lines) == 4  # LocalhostInPod under baseline, legacy, passthrough and ambient
    # The same line each time, naming the first meshed pod found not ready (the ones the kubelet may restart start,
    # and are looked at, first).
    assert len(set(lines)) == 1
    assert re.fullmatch(r"emulated backend: [a-z-]+\.mic-mesh: exited sidecar \(exit 1\); log: \(empty\)", lines[0])


@pytest.mark.parametrize(
    ("option", "path", "message"),
    [
        ("--report-dir", "afile", "--report-dir afile: is a file, expected a folder"),
        ("--artifacts-dir", "afile", "--artifacts-dir afile: is a file, expected a folder"),
        ("--artifacts-dir", "afile/sub", "--artifacts-dir afile/sub: cannot be created, "),
        ("--report-dir", "afile/sub/deeper", "--report-dir afile/sub/deeper: cannot be created, "),
        ("--emulator-sidecar", "./afile", "--emulator-sidecar: ./afile is not executable"),
    ],
)
def test_an_output_folder_that_cannot_be_made_stops_the_run_before_anything_runs(
    tmp_path: Path, option: str, path: str, message: str
) -> None:
    (tmp_path / "afile").write_text("not a folder, not a program\n")
    (tmp_path / "afile").chmod(0o644)
    cmd = suite_command(option, path)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("ERROR: " + message)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "INTERNALERROR" not in proc.stdout + proc.stderr
    # Stopped in pytest_configure: nothing collected, no cluster, no folder (other runs on the machine may
    # come and go meanwhile, so namespaces are not compared).
    assert "collected" not in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize(
    ("option", "path", "message"),
    [
        ("--report-dir", "/sys/x", "--report-dir /sys/x: cannot be created, /sys "),
        ("--report-dir", "/proc/x", "--report-dir /proc/x: cannot be created, /proc "),
        ("--artifacts-dir", "/sys/x", "--artifacts-dir /sys/x: cannot be created, /sys "),
        ("--report-dir", "/proc", "--report-dir /proc: folder not writable"),
    ],
)
def test_a_folder_on_a_pseudo_file_system_stops_the_run_before_anything_runs(
    tmp_path: Path, option: str, path: str, message: str
) -> None:
    """Root passes every permission check there: the run became 16 errors and an INTERNALERROR traceback."""
    cmd = suite_command(option, path)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("ERROR: " + message), errors
    assert "INTERNALERROR" not in proc.stdout + proc.stderr
    assert "collected" not in proc.stdout
    assert list(tmp_path.iterdir()) == []  # nor the other, default folder


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
def test_a_run_never_deletes_what_it_did_not_write(tmp_path: Path) -> None:
    """The issue's folder: a one-test passing run into it deleted all three of the user's files."""
    folder = tmp_path / "mine"
    users = {"setup/important.txt": "1\n", "baseline/MyCase/notes.txt": "2\n", "passthrough/data.db": "3\n"}
    for name, text in users.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    one_test = ("-k", "LocalhostInPod and baseline")
    cmd = suite_command("--artifacts-dir", str(folder), *one_test)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    assert proc.returncode == 4, proc.stdout[-3000:] + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert errors == [
        f"ERROR: --artifacts-dir {folder}: baseline/MyCase/notes.txt, passthrough/data.db and setup/important.txt "
        "are not from an earlier run of this suite, which writes <profile>/<Case>/ and setup/ there, removing what "
        "an earlier run of it wrote; move them or choose another folder"
    ]
    assert {n: (folder / n).read_text() for n in users} == users
    assert "collected" not in proc.stdout
    # Beside the suite's folders, a user's file is none of its business: a failing run writes its diagnostics,
    # the next (passing) one removes them, and only them.
    for name in users:
        (folder / name).unlink()
    (folder / "notes.txt").write_text("kept\n")
    fail = ("-k", "PodIPFromPlainClient and passthrough", "--emulator-sidecar", WRONG_SIDECAR)
    proc = run_suite(tmp_path, "--artifacts-dir", str(folder), *fail)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert (folder / "passthrough" / "PodIPFromPlainClient").is_dir()
    proc = run_suite(tmp_path, "--artifacts-dir", str(folder), "-k", "PodIPFromPlainClient and passthrough")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert sorted(p.name for p in folder.iterdir()) == [RECORD_NAME, "baseline", "notes.txt", "setup"]
    assert (folder / "notes.txt").read_text() == "kept\n"
    assert [p for p in folder.rglob("*") if p.is_file()] == [folder / RECORD_NAME, folder / "notes.txt"]


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize("family", list(SINGLE_STACK), ids=lambda f: f.value)
def test_test_ids_do_not_depend_on_where_the_output_folders_are(
    request: pytest.FixtureRequest, tmp_path: Path, family: IpFamily
) -> None:
    """Sidecar, report and artifacts folders under one folder, which exists: the summary said
    `FAILED ../../<that folder>/test_reachability.py::...` (pytest took the options' values for test paths and
    that folder for the rootdir, before the suite's options were known)."""
    # Under /tmp itself, as a user's `mktemp -d` is: uid 1337 runs the sidecar, and pytest's tmp_path is root's.
    shared, work = Path(tempfile.mkdtemp(prefix="conformance-ids-")), tmp_path / "work"
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    shared.chmod(0o755)
    for folder in (shared / "reports", shared / "artifacts", work):
        folder.mkdir(parents=True)
    sidecar = shared / "sidecar"
    sidecar.write_text(f'#!/bin/sh\nexec {WRONG_SIDECAR} "$@"\n')
    sidecar.chmod(0o755)
    cmd = suite_command(
        "--ip-family",
        family.value,
        "--emulator-sidecar",
        str(sidecar),
        "--report-dir",
        str(shared / "reports"),
        "--artifacts-dir",
        str(shared / "artifacts"),
        "-k",
        "PodIPFromPlainClient and passthrough",
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=work, check=False)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    summary = proc.stdout.split("short test summary info")[1]
    assert "FAILED conformance/suite/test_reachability.py::test_reachability[PodIPFromPlainClient[passthrough]]" in (
        summary
    )
    assert "../" not in summary
    junit = (shared / "reports" / "junit.xml").read_text()
    assert 'classname="conformance.suite.test_reachability"' in junit


def tox_conformance_command(**values: str) -> list[str]:
    """`tox -e conformance`'s command, as tox.ini writes it, run by this interpreter's pytest."""
    import configparser
    import shlex

    ini = configparser.ConfigParser(interpolation=None)
    ini.read(REPO / "tox.ini")
    line = ini["testenv:conformance"]["commands"].replace("\\\n", " ").strip()
    for key, value in values.items():
        line = line.replace("{" + key + "}", value)
    words = shlex.split(line)
    assert words[0] == "pytest"
    return [sys.executable, "-m", "pytest", *words[1:]]


@pytest.mark.netns
def test_tox_s_command_reads_this_project_s_configuration_wherever_the_output_folders_are(tmp_path: Path) -> None:
    """pytest looks for its configuration from the command line's paths before it knows the suite's options:
    a pytest.ini beside existing output folders configured the run (here, with an option it does not know)."""
    shared = tmp_path / "x"
    (shared / "reports").mkdir(parents=True)
    (shared / "pytest.ini").write_text("[pytest]\naddopts = --no-such-option\n")
    cmd = tox_conformance_command(toxinidir=str(REPO), envsitepackagesdir=str(SITE), posargs="")
    outputs = ["--report-dir", str(shared / "reports"), "--artifacts-dir", str(shared / "artifacts")]
    cmd += [*outputs, "--collect-only", "-q", "-k", "LocalhostInPod"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert "conformance/suite/test_in_pod.py::test_in_pod[LocalhostInPod[baseline]]" in proc.stdout.splitlines()


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
def test_a_sidecar_uid_1337_cannot_execute_is_the_first_thing_the_reports_say(tmp_path: Path) -> None:
    # Executable by root, so the option check passes; tmp_path (0700, root's) keeps uid 1337 out.
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    proxy = private / "proxy.sh"
    proxy.write_text("#!/bin/sh\nexec sleep 600\n")
    proxy.chmod(0o755)
    proc = run_suite(tmp_path, "-k", "LocalhostInPod", "--emulator-sidecar", str(proxy))
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    reason = f"--emulator-sidecar: uid 1337 cannot execute {proxy}"
    first = (tmp_path / "reports" / "conformance-report.md").read_text().splitlines()[:5]
    assert any(
        line.startswith("**Setup failed, no test ran:** emulated backend: ") and reason in line for line in first
    )
    assert any(line.startswith("Where the logs are: ") for line in first), first
    doc = report(tmp_path)
    assert list(doc)[:3] == ["format", "version", "setup_error"]
    assert reason in doc["setup_error"]["message"]  # type: ignore[index]
    assert "setup failed: emulated backend: " in proc.stdout


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
def test_a_sidecar_listening_on_ipv4_only_is_not_ready_in_an_ipv6_run(tmp_path: Path) -> None:
    proc = run_suite(
        tmp_path,
        "-k",
        "LocalhostInPod",
        "--ip-family",
        "ipv6",
        "--emulator-sidecar",
        IPV4_ONLY_SIDECAR,
        "--timeout-config",
        "pod_ready=5",
    )
    assert proc.returncode == 1, proc.stdout[-3000:]
    doc = report(tmp_path)
    message = doc["setup_error"]["message"]  # type: ignore[index]
    assert "not ready after 5s: sidecar not listening on [15001, 15006] for ipv6" in message


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
def test_ctrl_c_twice_to_the_process_group_is_a_few_lines_and_an_interrupted_report(tmp_path: Path) -> None:
    """What tox does on Ctrl-C: the terminal's SIGINT reaches the whole group, then tox sends another."""
    proc = _start_and_wait_for_cluster(tmp_path, new_session=True)
    log = tmp_path / "pytest.log"
    seen = len(log.read_text())
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=60)
    after = log.read_text()[seen:]
    assert proc.returncode == 2, after
    assert len(after.splitlines()) < 20, after
    assert "Traceback" not in after
    assert "Event loop is closed" not in after
    assert "conformance.run.interrupt.Interrupted: SIGINT: run stopped, cleaning up, report: " in after
    doc = report(tmp_path)
    assert doc["interrupted"] is True
    results = {p["name"]: p["result"] for p in doc["profiles"]}  # type: ignore[index,union-attr]
    assert results["baseline"] in ("success", "interrupted")
    assert "skipped" not in results.values()
    assert "interrupted" in results.values()


SWALLOWING_PLUGIN = """
import os
import re
import signal

_fired = []


class _Collected:
    def __del__(self):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs here, inside __del__, where Python ignores its exception
                pass
        except BaseException:
            open("raised-in-del", "w").close()
            raise


def pytest_runtest_logfinish(nodeid, location):
    if not _fired:
        _fired.append(nodeid)
        _Collected()
"""


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
def test_a_signal_whose_exception_python_swallowed_still_stops_the_run(tmp_path: Path) -> None:
    """CI saw SIGTERM land in a weakref callback ("Exception ignored in ...") and the run finish with exit 0."""
    (tmp_path / "swallow_signal.py").write_text(SWALLOWING_PLUGIN)
    cmd = suite_command(
        "-p", "swallow_signal", "--report-dir", str(tmp_path / "reports"), "-k", "LocalhostInPod or SourceAddress"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env, check=False)
    assert (tmp_path / "raised-in-del").exists(), proc.stdout[-3000:]  # so Python swallowed it
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert "SIGTERM: run stopped, cleaning up" in proc.stdout
    assert "Exception ignored" not in proc.stdout + proc.stderr  # said once, in the line above
    doc = report(tmp_path)
    assert doc["interrupted"] is True
    passed = [p["statistics"]["tests_passed"] for p in doc["profiles"]]  # type: ignore[index,union-attr]
    assert sum(passed) == 1, passed  # the signal came after the first test: no other one started


def _ambient_from_other_pods(family: IpFamily, reachable_only: bool) -> set[str]:
    """The ambient cells from another pod a wrong ztunnel must fail.

    Dialling from its own address (`reachable_only`): every cell where the app is reached, from plain, sidecar
    and ambient clients alike, since the app must see the client's pod IP from each. Forwarding to localhost:
    every cell, a wildcard app included (it is reached, but sees 127.0.0.1 / ::1). None goes unnoticed.
    """
    return {
        c.id
        for c in all_cells([Profile.AMBIENT], [family])
        if c.path.from_other_pod and (expect(c).reachable or not reachable_only)
    }


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize(
    ("ztunnel", "family", "reachable_only"),
    [(OWN_ADDRESS_ZTUNNEL, IpFamily.IPV4, True), (LOCALHOST_ZTUNNEL, IpFamily.IPV6, False)],
    ids=["dials-from-its-own-address", "forwards-to-localhost"],
)
def test_a_wrong_ztunnel_fails_the_ambient_profile(
    tmp_path: Path, ztunnel: str, family: IpFamily, reachable_only: bool
) -> None:
    """A ztunnel that dials from its own address (the app sees the pod IP, not the client) fails every cell
    where another pod reaches the app, from a sidecar client too; one that forwards to localhost fails every cell
    from another pod."""
    proc = run_suite(tmp_path, "--ip-family", family.value, "--profile", "ambient", "--emulator-ztunnel", ztunnel)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    doc = report(tmp_path)
    failed = {c["id"] for c in doc["cells"] if c["verdict"] == "fail"}  # type: ignore[index,union-attr]
    expected = _ambient_from_other_pods(family, reachable_only)
    assert {c.split("/")[6] for c in expected} == {"plain", "meshed", "ambient"}
    assert failed == expected
    # The node proxy's own cells (issue 22 item 5) see the same faults: where the app is reached, or all.
    node_proxy = {c["id"] for c in doc["ztunnel_cells"] if c["verdict"] == "fail"}  # type: ignore[index,union-attr]
    tunnel = tunnel_cells((Profile.AMBIENT,), (family,))
    late = late_cells((Profile.AMBIENT,), (family,))
    assert node_proxy == {c.id for c in tunnel if expect_tunnel(c).status == 200 or not reachable_only} | {
        c.id for c in late if expect_late(c).reachable or not reachable_only
    }
    # `--profile ambient`: the other profiles are listed as `not selected`, never as passed or skipped.
    assert {p["name"]: p["result"] for p in doc["profiles"]} == {  # type: ignore[index,union-attr]
        "baseline": "not selected",
        "legacy": "not selected",
        "passthrough": "not selected",
        "ambient": "failure",
    }
    # No precheck looks at ambient pods: neither LocalhostPrecheck nor ImpactCoversPrecheck runs under ambient.
    assert doc["prechecks"] == []
    assert f"ztunnel {ztunnel}" in doc["mesh"]["build"]  # type: ignore[index]
    assert "ztunnel log" in proc.stdout


def _node_proxy_cells_failed_by(fault: str, family: IpFamily) -> set[str]:
    """The node proxy's cells (spec.ztunnel) a ztunnel with this fault must fail, derived from the spec.

    `tunnel-200`: the tunnel cells whose app cannot be reached (the spec's 503). `no-reload`: every late cell a plain
    client asks, and the ambient client's where the app is reached; where it is not, the ambient client sees its own
    ztunnel close the connection (reset/EOF, an allowed failure) whether or not the server's ztunnel listens.
    `sighup-dies`: every late cell.
    """
    if fault == "tunnel-200":
        return {c.id for c in tunnel_cells((Profile.AMBIENT,), (family,)) if expect_tunnel(c).status == 503}
    late = late_cells((Profile.AMBIENT,), (family,))
    if fault == "no-reload":
        return {c.id for c in late if c.client is Client.PLAIN or expect_late(c).reachable}
    return {c.id for c in late}


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize(
    ("ztunnel", "fault", "family", "case"),
    [
        (TUNNEL_200_ZTUNNEL, "tunnel-200", IpFamily.IPV4, "TunnelAnswer"),
        (NO_RELOAD_ZTUNNEL, "no-reload", IpFamily.IPV6, "EnrolledWhileRunning"),
        (SIGHUP_DIES_ZTUNNEL, "sighup-dies", IpFamily.IPV4, "EnrolledWhileRunning"),
    ],
    ids=["tunnel-answers-200-before-dialling", "ignores-sighup", "dies-on-sighup"],
)
def test_a_ztunnel_that_breaks_its_own_contract_fails_exactly_the_node_proxy_cells(
    tmp_path: Path, ztunnel: str, fault: str, family: IpFamily, case: str
) -> None:
    """Faults no traffic cell sees (issue 22 item 5): a tunnel that says 200 before it knows, a ztunnel that never
    re-reads its configuration, one that SIGHUP kills. Each fails exactly its node-proxy cells and one test."""
    # pod_ready: how long the enrolment waits for ztunnel to listen in the new pod (the no-reload one never does).
    args = ("--ip-family", family.value, "--profile", "ambient", "--timeout-config", "pod_ready=10")
    proc = run_suite(tmp_path, *args, "--emulator-ztunnel", ztunnel)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    doc = report(tmp_path)
    assert [c["id"] for c in doc["cells"] if c["verdict"] == "fail"] == []  # type: ignore[index,union-attr]
    failed = {c["id"] for c in doc["ztunnel_cells"] if c["verdict"] == "fail"}  # type: ignore[index,union-attr]
    assert failed == _node_proxy_cells_failed_by(fault, family)
    (ambient,) = [p for p in doc["profiles"] if p["name"] == "ambient"]  # type: ignore[index,union-attr]
    assert ambient["result"] == "failure"
    assert ambient["failed_tests"] == [case]
    deaths = [d["process"] for d in doc["process_deaths"]]  # type: ignore[index,union-attr]
    assert deaths == (["ztunnel (node)"] if fault == "sighup-dies" else [])
    if fault == "no-reload":
        assert "enrolling mic-late: " in proc.stdout
        assert "ztunnel not listening in the pod" in proc.stdout


def test_restart_checks_come_after_the_traffic_they_can_wait_behind(tmp_path: Path) -> None:
    """The kubelet restarts containers while traffic is probed: a restart check asked first waited that out alone.

    So each profile's restart checks (cases with `after_traffic`) come after its traffic cases, and baseline's,
    whose own traffic is over in a moment, after the default profile's; the profiles stay grouped (no extra switch).
    """
    proc = run_suite(tmp_path, "--collect-only", "-q", timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    # Without the cases that run last of all (the legacy round trip, a pod enrolled while the run is on).
    late = ("test_legacy_switch", "EnrolledWhileRunning")
    ids = [line for line in proc.stdout.splitlines() if "::" in line and not any(n in line for n in late)]
    restarts = [i for i, test in enumerate(ids) if "test_restarts[" in test]
    assert len(restarts) == 8  # two cases, four profiles

    def at(profile: str, restart: bool) -> list[int]:
        return [i for i, test in enumerate(ids) if test.endswith(f"[{profile}]]") and (i in restarts) == restart]

    for profile in ("passthrough", "legacy", "ambient"):
        assert min(at(profile, True)) > max(at(profile, False)), profile
    assert min(at("baseline", True)) > max(at("passthrough", False))  # the default profile's traffic
    assert max(at("baseline", True)) < min(at("legacy", False))  # and before the next profile's
    meshed = [re.sub(r".*\[(\w+)\]\]$", r"\1", test) for test in ids if not test.endswith("[baseline]]")]
    assert [p for k, p in enumerate(meshed) if k == 0 or meshed[k - 1] != p] == ["passthrough", "legacy", "ambient"]
