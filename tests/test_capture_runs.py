"""The ports-left-out-of-capture cells catch a mesh whose capture rules lose the pod's settings (issue 22).

The suite runs with tests/plugins/capture_ignores_settings.py, which makes the emulated istio-iptables write for
`echo-excluded` and `echo-not-included` what it writes for every other server (all test ports captured): exactly the
cells whose expectation differs from the same cell of a fully captured server must fail, and nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, suite_command

from conformance.spec import all_cells, expect
from conformance.spec.dimensions import SINGLE_STACK, InboundCapture, IpFamily, Profile

PLUGINS = REPO / "tests" / "plugins"
SELECT = "ExcludedPortsSkipTheProxy or NoInboundCapture"


def cells_lost_capture_settings_break(family: IpFamily) -> set[str]:
    """The uncaptured cells whose expectation differs when the server's ports are captured after all."""
    broken = set()
    for cell in all_cells([Profile.LEGACY, Profile.PASSTHROUGH], [family]):
        if cell.capture is InboundCapture.ALL:
            continue
        want, captured = expect(cell), expect(dataclasses.replace(cell, capture=InboundCapture.ALL))
        if (want.reachable, want.source, want.failure) != (captured.reachable, captured.source, captured.failure):
            broken.add(cell.id)
    return broken


def test_the_spec_leaves_some_uncaptured_cells_unchanged_by_capture() -> None:
    """The check below is not "every cell fails": a meshed client's own sidecar resets a TCP connection either way."""
    for family in SINGLE_STACK:
        uncaptured = {c.id for c in all_cells(families=[family]) if c.capture is not InboundCapture.ALL}
        broken = cells_lost_capture_settings_break(family)
        assert broken < uncaptured
        assert f"passthrough+excluded/none/loopback/declared/tcp/pod_ip/meshed/{family.value}" in uncaptured - broken


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize("family", [IpFamily.IPV4], ids=lambda f: f.value)
def test_capture_rules_that_drop_the_exclusion_fail_exactly_the_cells_it_changes(
    tmp_path: Path, family: IpFamily
) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")]))}
    cmd = suite_command(
        "--report-dir",
        str(tmp_path / "reports"),
        "--artifacts-dir",
        str(tmp_path / "artifacts"),
        "--ip-family",
        family.value,
        "-p",
        "capture_ignores_settings",
        "-k",
        SELECT,
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env, check=False)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    doc = json.loads((tmp_path / "reports" / "conformance-report.json").read_text())
    judged = {c["id"] for c in doc["cells"]}
    assert judged == {c.id for c in all_cells(families=[family]) if c.capture is not InboundCapture.ALL}
    failed = {c["id"] for c in doc["cells"] if c["verdict"] == "fail"}
    expected = cells_lost_capture_settings_break(family)
    assert failed == expected
    assert len(expected) > 100  # most of the 240: loopback apps answer, the others see 127.0.0.6 or 127.0.0.1
    results = {p["name"]: p["result"] for p in doc["profiles"]}
    assert results["legacy"] == results["passthrough"] == "failure"
