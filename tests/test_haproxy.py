"""HAProxy (Debian's package) under the harness as the sidecar: the `--emulator-sidecar` contract is real.

tests/sidecars/haproxy_sidecar.py turns the sidecar configuration into an haproxy.cfg and execs HAProxy. A
reader can predict its verdicts from what HAProxy is, and these tests hold it to that prediction, so the
suite goes on proving that a proxy nobody here wrote can stand in for Envoy, and goes on catching the places
where it differs:

- IPv4: every REDIRECT traffic cell and every probe cell of the sidecar profiles passes. It differs from Envoy
  in two places: an upstream that accepts and closes before any response byte is HAProxy's `502 Bad Gateway`,
  where Envoy answers 503 ("reset before headers"): the ambient cells where a meshed (HAProxy) client dials, on
  an HTTP Service port, a loopback-only app behind ztunnel; and HAProxy cannot do Envoy's original_src in a
  TPROXY pod (no SO_MARK on its server-side connections, see the adapter), so the TPROXY cells whose app should
  see the client's pod IP see 127.0.0.6 (72).
- IPv6: HAProxy reads original destinations with SO_ORIGINAL_DST, IPv4 only; on IPv6 it sees REDIRECT's own
  port and the adapter refuses the connection. Every cell whose traffic crosses an HAProxy fails with a
  reset, every other cell passes; except in a TPROXY pod, where nothing is rewritten and HAProxy reads the
  destination from the socket: a server-side HAProxy there behaves as on IPv4 (only the client's address is
  missed).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import IN_CI, REPO, suite_command

from conformance.spec import all_cells, expect
from conformance.spec.dimensions import Client, Interception, IpFamily, PortKind, Profile, Protocol, Source
from conformance.spec.dimensions import Path as CellPath

HAPROXY_SIDECAR = f"/usr/bin/python3 {REPO / 'tests' / 'sidecars' / 'haproxy_sidecar.py'}"
SIDECAR_PROFILES = (Profile.LEGACY, Profile.PASSTHROUGH)

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_leftovers")]


def original_src_cells(family: IpFamily) -> set[str]:
    """The TPROXY cells whose app sees the client's pod IP through Envoy's original_src, which HAProxy cannot do."""
    return {
        c.id
        for c in all_cells([Profile.PASSTHROUGH], [family])
        if c.interception is Interception.TPROXY and expect(c).source is Source.CLIENT
    }


@pytest.fixture(autouse=True)
def _haproxy() -> None:
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        if IN_CI:
            pytest.fail("CI=true: HAProxy is missing (setup.sh installs it)")
        pytest.skip("HAProxy is not installed (./setup.sh installs it)")


def run_with_haproxy(tmp_path: Path, family: IpFamily) -> tuple[int, dict[str, object], str]:
    cmd = suite_command(
        "--report-dir",
        str(tmp_path / "reports"),
        "--artifacts-dir",
        str(tmp_path / "artifacts"),
        "--ip-family",
        family.value,
        "--emulator-sidecar",
        HAPROXY_SIDECAR,
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False)
    doc = json.loads((tmp_path / "reports" / "conformance-report.json").read_text())
    markdown = (tmp_path / "reports" / "conformance-report.md").read_text()
    assert "Setup failed" not in markdown, markdown[:2000]
    # The adapter execs HAProxy, so the harness's own leftover check (by command line) cannot see it: look here.
    deadline = time.monotonic() + 2
    while _haproxies() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _haproxies() == set(), "HAProxy processes left behind"
    return proc.returncode, doc, proc.stdout[-3000:] + proc.stderr[-2000:]


def _haproxies() -> set[int]:
    """HAProxy processes the adapter started (their configuration is a memfd)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.split(b"\0")[0].endswith(b"haproxy") and b"\0-db\0-f\0/proc/self/fd/" in cmdline:
                found.add(int(entry.name))
    return found


def _cells(doc: dict[str, object], key: str = "cells") -> list[dict[str, object]]:
    cells = doc[key]
    assert isinstance(cells, list)
    return cells


def test_haproxy_passes_every_ipv4_sidecar_cell_and_differs_from_envoy_where_predicted(tmp_path: Path) -> None:
    code, doc, output = run_with_haproxy(tmp_path, IpFamily.IPV4)
    assert code == 1, output
    cells = _cells(doc)
    failed = {str(c["id"]) for c in cells if c["verdict"] == "fail"}
    # HAProxy's 502 for a reset before headers: the client-side HAProxy speaks HTTP to the ports a Service
    # declares as HTTP (outbound.http_ports); ztunnel accepts, cannot reach the loopback-only app, and closes.
    predicted = {
        cell.id
        for cell in all_cells([Profile.AMBIENT], [IpFamily.IPV4])
        if cell.client is Client.MESHED
        and cell.path.from_other_pod
        and cell.protocol is Protocol.HTTP
        and (cell.port is PortKind.DECLARED or cell.path is CellPath.SERVICE)
        and not expect(cell).reachable
    }
    assert len(predicted) == 21
    no_original_src = original_src_cells(IpFamily.IPV4)
    assert len(no_original_src) == 72
    assert failed == predicted | no_original_src
    assert {c["observed"]["outcome"] for c in cells if c["id"] in predicted} == {"http_502"}  # type: ignore[index]
    # Reached, from HAProxy's bind instead of the client's address.
    assert {c["observed"]["peer"] for c in cells if c["id"] in no_original_src} == {"127.0.0.6"}  # type: ignore[index]
    # Every other cell of the sidecar profiles (HAProxy as the server's and the client's sidecar) passes.
    sidecar_profiles = {p.value for p in SIDECAR_PROFILES}
    assert all(c["verdict"] == "pass" for c in cells if c["profile"] in sidecar_profiles and c["id"] not in failed)
    # Probes: the status port probes the app on each request, as pilot-agent does: every probe cell passes.
    assert [c["id"] for c in _cells(doc, "probe_cells") if c["verdict"] == "fail"] == []
    results = {p["name"]: p["result"] for p in doc["profiles"]}  # type: ignore[index,union-attr]
    assert results == {"baseline": "success", "legacy": "success", "passthrough": "failure", "ambient": "failure"}
    assert HAPROXY_SIDECAR in doc["mesh"]["build"]  # type: ignore[index]


def _crosses_haproxy(cell: dict[str, object]) -> bool:
    """The cell's connection passes a sidecar: the client's (outbound), or a meshed server's (inbound)."""
    if cell["client"] == Client.MESHED.value:
        return True
    other_pod = cell["path"] in (CellPath.POD_IP.value, CellPath.SERVICE.value)
    # Ports left out of capture (issue 22) never meet the server's sidecar.
    return bool(other_pod and cell["profile"] in {p.value for p in SIDECAR_PROFILES} and cell["capture"] == "all")


def test_haproxy_on_ipv6_fails_exactly_the_cells_it_carries(tmp_path: Path) -> None:
    code, doc, output = run_with_haproxy(tmp_path, IpFamily.IPV6)
    assert code == 1, output
    cells = _cells(doc)
    no_original_src = original_src_cells(IpFamily.IPV6)
    for cell in cells:
        expected = cell["expected"]
        assert isinstance(expected, dict)
        # A cell whose expectation already admits a reset passes whatever HAProxy does; any other it carries fails.
        should_fail = _crosses_haproxy(cell) and (expected["reachable"] or "reset_or_eof" not in expected["failure"])
        if cell["interception"] == Interception.TPROXY.value and cell["client"] != Client.MESHED.value:
            # Only the server's HAProxy, which reads a TPROXY'd destination: it misses only the client's address.
            should_fail = cell["id"] in no_original_src
            assert (cell["verdict"] == "fail") == should_fail, (cell["id"], cell["observed"])
            if should_fail:
                assert cell["observed"]["peer"] == "::6", cell["id"]  # type: ignore[index]
            continue
        assert (cell["verdict"] == "fail") == should_fail, (cell["id"], cell["observed"])
        if should_fail:
            assert cell["observed"]["outcome"] == "reset_or_eof", cell["id"]  # type: ignore[index]
    assert sum(c["verdict"] == "fail" for c in cells) > 600
