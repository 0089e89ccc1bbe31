"""Whole runs of the conformance suite, in a subprocess, as a user runs it.

They show that the suite fails a wrong proxy on exactly the cells that differ, that reports and diagnostics
are written, that option mistakes are one line, and that nothing is left behind after a pass, a failure,
Ctrl-C, SIGTERM or a SIGKILL followed by the next run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, harness_processes, mic_namespaces, suite_command

from conformance.backends.emulated.cluster import EmulatedCluster
from conformance.spec import CellKey, DefaultEndpoint, PortKind, Profile, all_cells, expect
from conformance.spec.dimensions import OVERRIDES_BY_FAMILY, IpFamily
from conformance.world import World

WRONG_SIDECAR = f"/usr/bin/python3 {REPO / 'tests' / 'sidecars' / 'localhost_sidecar.py'}"


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
    override 127.0.0.1:P. Listeners exist for declared ports without a Sidecar and for the ports a Sidecar
    lists; an unlisted or undeclared port stays on the catch-all passthrough.
    """
    localhost_form = OVERRIDES_BY_FAMILY[family][0]
    broken = set()
    for cell in all_cells([Profile.LEGACY, Profile.PASSTHROUGH], [family]):
        if not cell.path.from_other_pod or cell.port is not PortKind.DECLARED:
            continue
        if cell.default_endpoint is DefaultEndpoint.UNLISTED:
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
@pytest.mark.parametrize("family", list(IpFamily), ids=lambda f: f.value)
def test_a_proxy_forwarding_to_localhost_fails_exactly_the_cells_it_breaks(tmp_path: Path, family: IpFamily) -> None:
    proc = run_suite(
        tmp_path, "--ip-family", family.value, "--emulator-sidecar", WRONG_SIDECAR, "--junitxml", "junit.xml"
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    doc = report(tmp_path)
    # The report holds every cell the spec lists for the family, each judged.
    assert {c["id"] for c in doc["cells"]} == {c.id for c in all_cells(families=[family])}  # type: ignore[index,union-attr]
    failed = {c["id"] for c in doc["cells"] if c["verdict"] == "fail"}  # type: ignore[index,union-attr]
    expected = cells_a_localhost_sidecar_breaks(family)
    assert len(expected) == 72
    assert failed == expected
    results = {p["name"]: p["result"] for p in doc["profiles"]}  # type: ignore[index,union-attr]
    assert results == {"baseline": "success", "legacy": "failure", "passthrough": "failure"}
    assert WRONG_SIDECAR in doc["mesh"]["build"]  # type: ignore[index]
    markdown = (tmp_path / "reports" / "conformance-report.md").read_text()
    listed = {line.split("`")[1] for line in markdown.splitlines() if line.startswith("- ❌ `")}
    assert listed == expected
    assert "| passthrough | ❌ failure |" in markdown
    # Failure context: diagnostics in the test report and copied under --artifacts-dir.
    assert "conformance: echo-none.mic-mesh sidecar config" in proc.stdout
    artifacts = list((tmp_path / "artifacts").rglob("*sidecar_log.txt"))
    assert artifacts
    assert any("connected" in a.read_text() for a in artifacts)
    junit = (tmp_path / "junit.xml").read_text()
    assert 'failures="' in junit
    assert "PodIPFromPlainClient[passthrough]" in junit


@pytest.mark.netns
@pytest.mark.usefixtures("no_leftovers")
def test_a_passing_run_reports_success_and_leaves_nothing(tmp_path: Path) -> None:
    proc = run_suite(tmp_path, "-k", "LocalhostInPod or Precheck", "--ip-family", "ipv6")
    assert proc.returncode == 0, proc.stdout[-3000:]
    doc = report(tmp_path)
    assert doc["interrupted"] is False
    assert doc["ip_family"] == "ipv6"
    assert {p["name"]: p["result"] for p in doc["profiles"]} == {  # type: ignore[index,union-attr]
        "baseline": "success",
        "legacy": "success",
        "passthrough": "success",
    }
    timings = doc["timings_s"]
    assert set(timings) >= {"setup", "probes", "teardown", "total"}  # type: ignore[arg-type]


def _start_and_wait_for_cluster(tmp_path: Path) -> subprocess.Popen[str]:
    before = mic_namespaces()
    # A 1 s pause between probe rounds stretches the run to minutes, so the signal lands mid-run.
    log = (tmp_path / "pytest.log").open("w")
    proc = subprocess.Popen(
        suite_command("--report-dir", str(tmp_path / "reports"), "--timeout-config", "poll_interval=1"),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
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
    left = mic_namespaces() - before
    assert left, "a SIGKILLed run cannot clean up; its namespaces remain until the next run"
    # Its containers died with it (PR_SET_PDEATHSIG); only the namespaces remain.
    deadline = time.monotonic() + 5
    while harness_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    cluster = EmulatedCluster("ipv4")
    try:
        cluster.up(World(IpFamily.IPV4).manifests()[:2])
        assert not (left & mic_namespaces())
    finally:
        cluster.down()
    assert not (mic_namespaces() - before)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--ip-family", "ipv5"), "--ip-family 'ipv5': expected ipv4 or ipv6"),
        (("--backend", "minikube"), "--backend 'minikube': expected one of emulated, kind, kubeconfig"),
        (("--profile", "ambient"), "--profile 'ambient': expected one of baseline, legacy, passthrough"),
        (("--timeout-config", "probe=fast"), "--timeout-config: probe='fast' is not a number of seconds"),
        (("--timeout-config", "probe=99"), "--timeout-config: probe=99 is outside (0, 30.0]"),
        (("--timeout-config", "prob=1"), "--timeout-config: 'prob=1' is not KEY=SECONDS"),
        (("--emulator-sidecar", ""), "--emulator-sidecar: expected a command"),
        (("--emulator-sidecar", "x 'y"), '--emulator-sidecar "x \'y": No closing quotation'),
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
    assert len(lines) == 3
    assert set(lines) == {"emulated backend: echo-none.mic-mesh: exited sidecar (exit 1); log: (empty)"}
