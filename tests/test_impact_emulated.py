"""`impact` on the emulated backend: real network namespaces, real sockets, the world's own manifests.

The expected findings are derived from the world's port table (bind x declared), not from the code under test:
a declared port bound to loopback is loopback-only, a declared port bound to the pod IP is pod-IP-only, an
undeclared port is nobody's business (no Service targets it). A remapped port counts by its container port (the
Service's targetPort), and the probe pods' probed ports are declared in their Services too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance.backends.emulated.cluster import EmulatedCluster
from conformance.impact.analysis import AMBIENT, LOOPBACK_ONLY, POD_IP_ONLY, SIDECAR
from conformance.impact.emulated_source import EmulatedSource
from conformance.impact.sources import check
from conformance.spec.capabilities import emulated_capabilities
from conformance.spec.dimensions import Bind, IpFamily
from conformance.world.layout import World
from conformance.world.namespaces import NS_BASELINE, NS_MESH
from conformance.world.pods import PodRef
from conformance.world.ports import TEST_PORTS
from conformance.world.probe_pods import PROBED_CONTAINERS, probe_pods_of

pytestmark = pytest.mark.netns

NAMED = PodRef(NS_MESH, "echo-named")
NAMED_PORT = 8091
DOOMED = PodRef(NS_MESH, "echo-doomed")


def world_expected(world: World, bind: Bind, namespace: str | None = None) -> set[tuple[str, str, int]]:
    """(namespace, pod, port) of every declared port with this bind: the servers' test ports (declared and
    remapped, by container port) and the probe pods' probed ports (of one namespace, or all).

    Not the ports of probed containers the kubelet may restart (a liveness or startup probe): between two runs
    such a container listens nowhere, so a finding on its port comes and goes (`unsteady` names them).
    """
    servers = {
        (server.namespace, f"{server.app}-0", p.number)
        for server in world.servers
        for p in TEST_PORTS
        if p.declared and p.bind is bind
    }
    probes = {
        (pod.namespace, f"{pod.app}-0", c.port)
        for pod, _rewrite in probe_pods_of(ambient=world.ambient)
        for c in PROBED_CONTAINERS
        if c.bind is bind and not c.may_restart
    }
    return {f for f in servers | probes if namespace is None or f[0] == namespace}


def unsteady(world: World) -> set[tuple[str, str, int]]:
    """(namespace, pod, port) of the probed containers the kubelet may restart (see world_expected)."""
    return {
        (pod.namespace, f"{pod.app}-0", c.port)
        for pod, _rewrite in probe_pods_of(ambient=world.ambient)
        for c in PROBED_CONTAINERS
        if c.may_restart
    }


def test_the_worlds_truth_has_every_kind_of_declared_port() -> None:
    # Guards world_expected against going stale silently: remapped ports and probe pods are in it.
    truth = world_expected(World(IpFamily.IPV4), Bind.LOOPBACK)
    assert {(NS_BASELINE, "echo-0", 8081), (NS_BASELINE, "echo-0", 8281), (NS_MESH, "echo-none-0", 9281)} <= truth
    assert {(NS_BASELINE, "probe-0", 8381), (NS_MESH, "probe-rewrite-0", 9381)} <= truth
    assert not {port for _ns, _pod, port in truth} & {p.number for p in TEST_PORTS if not p.declared}


def extra_manifests(world: World) -> list[dict[str, Any]]:
    """A server whose Service targets a loopback port by its container port's name, and one to delete."""
    named = world.deployment(NAMED, ())
    container = named["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    container["args"].append(f"{NAMED_PORT}:loopback:http")
    container["ports"].append({"name": "web", "containerPort": NAMED_PORT, "protocol": "TCP"})
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAMED.app, "namespace": NAMED.namespace},
        "spec": {"selector": {"app": NAMED.app}, "ports": [{"name": "http-web", "port": 80, "targetPort": "web"}]},
    }
    doomed = world.deployment(DOOMED, ())
    doomed_container = doomed["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    doomed_container["args"].append("8081:loopback:http")
    doomed_service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": DOOMED.app, "namespace": DOOMED.namespace},
        "spec": {"selector": {"app": DOOMED.app}, "ports": [{"name": "http", "port": 8081, "targetPort": 8081}]},
    }
    return [named, service, doomed, doomed_service]


@pytest.fixture(scope="module", params=[IpFamily.IPV4, IpFamily.IPV6, IpFamily.DUAL], ids=lambda f: f.value)
def running(request: pytest.FixtureRequest) -> Iterator[tuple[World, EmulatedCluster, EmulatedSource]]:
    world = World.for_mesh(request.param, emulated_capabilities())
    manifests: list[dict[str, Any]] = [*(dict(m) for m in world.manifests()), *extra_manifests(world)]
    cluster = EmulatedCluster(world.family.value)
    try:
        cluster.up(manifests)
        yield world, cluster, EmulatedSource(cluster, manifests)
    finally:
        cluster.down()


def test_loopback_only_declared_ports_and_named_target_ports(
    running: tuple[World, EmulatedCluster, EmulatedSource],
) -> None:
    world, _cluster, source = running
    report = check(source, source.inventory(None, None), parallel=4)
    # A dual-stack pod is judged per family, and the echo program binds loopback and pod IP in both: each such
    # port is a finding of each family there, and a single-stack pod's finding has no family.
    families = {"ipv4", "ipv6"} if world.family is IpFamily.DUAL else {None}
    per_port: dict[tuple[str, str, int, str], set[str | None]] = {}
    for f in report.findings:
        per_port.setdefault((f.namespace, f.pod, f.port, f.kind), set()).add(f.family)
    assert {key: found for key, found in per_port.items() if found != families} == {}
    found = {(f.namespace, f.pod, f.port) for f in report.findings if f.kind == LOOPBACK_ONLY} - unsteady(world)
    extra = {(NS_MESH, "echo-named-0", NAMED_PORT), (NS_MESH, "echo-doomed-0", 8081)}
    assert found == world_expected(world, Bind.LOOPBACK) | extra
    pod_ip = {(f.namespace, f.pod, f.port) for f in report.findings if f.kind == POD_IP_ONLY} - unsteady(world)
    assert pod_ip == world_expected(world, Bind.POD_IP)
    # Undeclared ports listen too (81xx/91xx), on every bind, but no Service targets them.
    undeclared = {p.number for p in TEST_PORTS if not p.declared}
    assert not {f.port for f in report.findings} & undeclared
    named = [f for f in report.findings if f.pod == "echo-named-0"]
    assert {f.family for f in named} == families
    assert {(f.services, f.mode) for f in named} == {(("echo-named:http-web",), SIDECAR)}  # mic-mesh is injected
    assert {f.mode for f in report.findings if f.namespace == "mic-baseline"} == {"none"}
    assert report.unchecked == []
    assert report.exit_code == 1


def test_dual_stack_pods_tell_each_wildcard_apart(running: tuple[World, EmulatedCluster, EmulatedSource]) -> None:
    """The echo program's two wildcards on a dual-stack pod, as sock_diag reads them: `wildcard` is 0.0.0.0 and a
    V6ONLY [::]; `dual_wildcard` one [::] with V6ONLY off (Go's net.Listen). Neither is a finding."""
    world, cluster, source = running
    if world.family is not IpFamily.DUAL:
        pytest.skip("dual-stack pods only")
    (info,) = source.inventory([NS_MESH], "app=echo-none").pods
    assert info.dual_stack
    assert [":" in ip for ip in info.ips] == [False, True]  # IPv4 primary, as kind lists them
    found = cluster.listeners(PodRef(NS_MESH, "echo-none"))
    for port in TEST_PORTS:
        if not port.declared or port.bind not in (Bind.WILDCARD, Bind.DUAL_WILDCARD):
            continue
        wildcards = sorted((lst.ipv6, lst.v6only) for lst in found if lst.port == port.number and lst.address == "*")
        if port.bind is Bind.WILDCARD:
            assert wildcards == [(False, None), (True, True)], port
        else:
            assert wildcards == [(True, False)], port
    report = check(source, source.inventory([NS_MESH], "app=echo-none"))
    wildcard_ports = {p.number for p in TEST_PORTS if p.bind in (Bind.WILDCARD, Bind.DUAL_WILDCARD)}
    assert not {f.port for f in report.findings} & wildcard_ports


def test_label_selector_and_namespace(running: tuple[World, EmulatedCluster, EmulatedSource]) -> None:
    _world, _cluster, source = running
    report = check(source, source.inventory(["mic-mesh"], "app in (echo-none, echo-named)"))
    assert sorted(r.pod.name for r in report.results) == ["echo-named-0", "echo-none-0"]
    assert report.namespaces == ("mic-mesh",)


def test_a_pod_that_vanishes_mid_check_is_listed_with_the_reason(
    running: tuple[World, EmulatedCluster, EmulatedSource],
) -> None:
    # Runs last in the module: the pod is really deleted between listing and reading.
    _world, cluster, source = running
    inventory = source.inventory([NS_MESH], None)
    cluster.remove_pod(DOOMED)
    report = check(source, inventory)
    (gone,) = report.unchecked
    assert gone.pod.name == "echo-doomed-0"
    assert gone.unchecked == "pod not found: it was deleted after it was listed"
    assert report.exit_code == 3
    assert "echo-doomed-0" not in {f.pod for f in report.findings}


# --- the command, as a user runs it -------------------------------------------------------------------


def impact(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conformance", "impact", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("family", [IpFamily.IPV4, IpFamily.IPV6], ids=lambda f: f.value)
@pytest.mark.usefixtures("no_leftovers")
def test_impact_backend_emulated_finds_exactly_the_worlds_loopback_only_declared_ports(family: IpFamily) -> None:
    proc = impact("--backend", "emulated", "--ip-family", family.value, "--format", "json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["format"], doc["version"]) == ("mesh-inbound-conformance/impact", 1)
    found = {(f["namespace"], f["pod"], f["port"]) for f in doc["findings"] if f["kind"] == "loopback-only"}
    world = World.for_mesh(family, emulated_capabilities())
    assert world.ambient
    assert found - unsteady(world) == world_expected(world, Bind.LOOPBACK)
    # The enrolled pods are found, with their mesh mode detected: ambient, where no override brings them back.
    modes = {f["mode"] for f in doc["findings"] if f["namespace"] == "mic-ambient"}
    assert modes == {AMBIENT}
    assert "emulated world removed" in proc.stderr  # progress goes to stderr


@pytest.mark.usefixtures("no_leftovers")
def test_impact_backend_emulated_dual_reports_each_family() -> None:
    # As a user runs it: a dual-stack world, every loopback-only declared port found in both families.
    proc = impact("--backend", "emulated", "--ip-family", "dual", "-n", NS_BASELINE, "--format", "json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["source"] == "emulated dual"
    world = World.for_mesh(IpFamily.DUAL, emulated_capabilities())
    found = {(f["namespace"], f["pod"], f["port"], f["family"]) for f in doc["findings"] if f["kind"] == LOOPBACK_ONLY}
    expected = world_expected(world, Bind.LOOPBACK, NS_BASELINE)
    assert {(ns, pod, port) for ns, pod, port, _ in found} - unsteady(world) == expected
    assert {(*key, family) for key in expected for family in ("ipv4", "ipv6")} <= found
    table = impact("--backend", "emulated", "--ip-family", "dual", "-n", NS_BASELINE)
    assert table.stdout.splitlines()[0].split()[:5] == ["NAMESPACE", "POD", "MODE", "PORT", "FAMILY"]


@pytest.mark.usefixtures("no_leftovers")
def test_console_script_prints_ist0143_lines() -> None:
    script = Path(sys.executable).with_name("mesh-inbound-conformance")
    proc = subprocess.run(
        [str(script), "impact", "--backend", "emulated", "-n", "mic-baseline", "--format", "istioctl"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    # istioctl >= 1.12's line, one per loopback-only declared port of the namespace, sorted as text.
    lines = sorted(
        f"Error [IST0143] (Pod {ns}/{pod}) Port {port} is exposed in a Service but listens on localhost. "
        "It will not be exposed to other pods.\n"
        for ns, pod, port in world_expected(World(IpFamily.IPV4), Bind.LOOPBACK, NS_BASELINE)
    )
    assert "Error [IST0143] (Pod mic-baseline/echo-0) Port 8081 " in lines[0]
    restartable = {f"(Pod {ns}/{pod}) Port {port} " for ns, pod, port in unsteady(World(IpFamily.IPV4))}
    printed = proc.stdout.splitlines(keepends=True)
    assert [line for line in printed if not any(r in line for r in restartable)] == lines


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("-n", "nope"),
            "namespace 'nope' not found (the emulated cluster has mic-ambient, mic-baseline, mic-late, mic-mesh)",
        ),
        (("-l", "app in echo"), "label selector 'app in echo': cannot read 'app in echo'"),
    ],
)
@pytest.mark.usefixtures("no_leftovers")
def test_bad_input_on_the_emulated_backend_is_one_line_exit_2(args: tuple[str, ...], message: str) -> None:
    proc = impact("--backend", "emulated", *args)
    assert proc.returncode == 2
    (line,) = [x for x in proc.stderr.splitlines() if not x.startswith("impact: ")]
    assert line.startswith(f"mesh-inbound-conformance impact: {message}")
    assert proc.stdout == ""


def test_bad_kubeconfig_is_one_line_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "kubeconfig"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    for args in (("--kubeconfig", str(tmp_path / "missing")), ("--kubeconfig", str(broken))):
        proc = impact(*args)
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.splitlines()
        assert line.startswith("mesh-inbound-conformance impact: kubeconfig ")
