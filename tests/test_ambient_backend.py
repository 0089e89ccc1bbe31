"""Ambient in the emulated backend: istio-cni's in-pod rules, the node ztunnel, enrolment, and real traffic.

Expected values are written out from the reference notes (probes-ambient.md §2; emulation.md "Ambient in-pod
redirection: a prototype on this machine", whose rules come from istio-cni testdata/default.golden and
default_ipv6.golden at 1.24.0), never derived from the code under test or from the spec.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance.backends.base import BackendError, ProbeRequest
from conformance.backends.emulated import ambient_capture, dialer, kube, netns, ztunnel
from conformance.backends.emulated.cluster import EmulatedCluster
from conformance.backends.emulated.network import ENROLLED_PORT_RANGE
from conformance.backends.emulated.ztunnel_config import ztunnel_config
from conformance.spec.dimensions import ONE_FAMILY_BINDS, Bind, IpFamily, PortKind, Protocol
from conformance.world.layout import World, service_manifest
from conformance.world.namespaces import NS_AMBIENT, NS_BASELINE, enrolled_namespace_manifest, namespace_manifest
from conformance.world.pods import PodRef
from conformance.world.ports import port_for

AMBIENT_RULES_V4 = """\
*mangle
-N ISTIO_PRERT
-N ISTIO_OUTPUT
-A PREROUTING -j ISTIO_PRERT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -m connmark --mark 0x111/0xfff -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff
-A ISTIO_PRERT -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff
COMMIT
*nat
-N ISTIO_PRERT
-N ISTIO_OUTPUT
-A PREROUTING -j ISTIO_PRERT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -d 169.254.7.127/32 -p tcp -m tcp -j ACCEPT
-A ISTIO_OUTPUT -p tcp -m mark --mark 0x111/0xfff -j ACCEPT
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -j ACCEPT
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001
-A ISTIO_PRERT -s 169.254.7.127/32 -p tcp -m tcp -j ACCEPT
-A ISTIO_PRERT ! -d 127.0.0.1/32 -p tcp -m tcp ! --dport 15008 -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15006
COMMIT
"""


def test_ambient_rules_are_istio_cni_1_24() -> None:
    assert ambient_capture.rules(False) == AMBIENT_RULES_V4
    v6 = AMBIENT_RULES_V4.replace("127.0.0.1/32", "::1/128").replace(
        "169.254.7.127/32", "fd16:9254:7127:1337:ffff:ffff:ffff:ffff/128"
    )
    assert ambient_capture.rules(True) == v6


def test_ambient_constants() -> None:
    # config.go InpodMark = 1337 = 0x539; the connmark 0x111 and table 100 of iptables_linux.go.
    assert (ambient_capture.ZTUNNEL_MARK, ambient_capture.CONNMARK, ambient_capture.ROUTE_TABLE) == (1337, 0x111, 100)
    assert (ambient_capture.INBOUND_PORT, ambient_capture.OUTBOUND_PORT, ambient_capture.TUNNEL_PORT) == (
        15006,
        15001,
        15008,
    )


def _deployment(name: str, namespace: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": name, **(labels or {})}},
                "spec": {"containers": [{"name": "c", "command": ["python3", "/app/echo.py"]}]},
            }
        },
    }


def test_enrolment_by_namespace_or_pod_label_and_never_with_a_sidecar() -> None:
    objects = kube.read(
        [
            {"kind": "Namespace", "metadata": {"name": "amb", "labels": {"istio.io/dataplane-mode": "ambient"}}},
            {"kind": "Namespace", "metadata": {"name": "plain"}},
            {
                "kind": "Namespace",
                "metadata": {
                    "name": "both",
                    "labels": {"istio.io/dataplane-mode": "ambient", "istio-injection": "enabled"},
                },
            },
            _deployment("a", "amb"),
            _deployment("out", "amb", {"istio.io/dataplane-mode": "none"}),
            _deployment("p", "plain"),
            _deployment("in", "plain", {"istio.io/dataplane-mode": "ambient"}),
            _deployment("s", "both"),
        ]
    )
    enrolled = {(p.namespace, p.app): (p.ambient, p.injected) for p in objects.pods}
    assert enrolled == {
        ("amb", "a"): (True, False),
        ("amb", "out"): (False, False),
        ("plain", "p"): (False, False),
        ("plain", "in"): (True, False),
        ("both", "s"): (False, True),
    }


def test_world_enrols_its_ambient_namespace() -> None:
    namespaces = {
        m["metadata"]["name"]: m["metadata"]["labels"]  # type: ignore[index]
        for m in World(IpFamily.IPV4, ambient=True).manifests()
        if m["kind"] == "Namespace"
    }
    assert namespaces[NS_AMBIENT]["istio.io/dataplane-mode"] == "ambient"
    assert namespaces[NS_AMBIENT]["istio-injection"] == "disabled"
    assert NS_AMBIENT not in {
        m["metadata"]["namespace"]  # type: ignore[index]
        for m in World(IpFamily.IPV4, ambient=False).manifests()
        if m["kind"] != "Namespace"
    }


def test_ztunnel_config_round_trip(tmp_path: Path) -> None:
    objects = kube.read(_small_world(IpFamily.IPV6))
    server = next(p for p in objects.pods if p.app == "echo-none")
    service = objects.services[0]
    doc = ztunnel_config("node", [(server, "fd00::a", "/run/netns/x")], [(service, "fd00:96::a", "fd00::a")])
    path = tmp_path / "z.json"
    path.write_text(json.dumps(doc))
    config = ztunnel.load_config(str(path))
    assert set(config.workloads) == {"fd00::a"}
    assert config.workloads["fd00::a"].netns == "/run/netns/x"
    port = port_for(Bind.WILDCARD, Protocol.HTTP, PortKind.DECLARED).number
    assert config.services[("fd00:96::a", port)] == ("fd00::a", port)
    assert (config.inbound_port, config.outbound_port, config.tunnel_port, config.mark) == (15006, 15001, 15008, 1337)


def test_ztunnel_rejects_a_foreign_config(tmp_path: Path) -> None:
    path = tmp_path / "z.json"
    path.write_text('{"format": "something-else", "version": 1}')
    with pytest.raises(ztunnel.ConfigError, match="expected format mesh-inbound-conformance/ztunnel-config"):
        ztunnel.load_config(str(path))
    assert ztunnel.main([str(path)]) == 2


# --- real namespaces, real sockets ------------------------------------------------------------------------

SERVER = PodRef(NS_AMBIENT, "echo-none")
AMBIENT_CLIENT = PodRef(NS_AMBIENT, "client")
PLAIN = PodRef(NS_BASELINE, "client")
_ids = itertools.count()


def _small_world(family: IpFamily) -> list[dict[str, object]]:
    world = World(family, ambient=True)
    return [
        namespace_manifest(NS_BASELINE, injected=False),
        enrolled_namespace_manifest(NS_AMBIENT),
        world.deployment(SERVER, world.server_ports),
        service_manifest(SERVER, world.server_ports),
        world.deployment(AMBIENT_CLIENT, ()),
        world.deployment(PLAIN, ()),
    ]


@pytest.fixture(scope="module", params=[IpFamily.IPV4, IpFamily.IPV6], ids=lambda f: f.value)
def cluster(request: pytest.FixtureRequest) -> Iterator[EmulatedCluster]:
    family: IpFamily = request.param
    c = EmulatedCluster(family.value)
    try:
        c.up(_small_world(family))
        yield c
    finally:
        c.down()


def probe(c: EmulatedCluster, source: PodRef, bind: Bind, protocol: Protocol, address: str | None = None) -> str:
    """Dial the server's declared port for `bind`; the peer the app saw, or the failure label."""
    port = port_for(bind, protocol, PortKind.DECLARED).number
    rid = f"amb-{next(_ids)}"
    result = c.probe([ProbeRequest(source, protocol.value, address or c.pod_ip(SERVER), port, rid)], 2.0)[0]
    if result["outcome"] == "ok":
        return str(result["peer"])
    if result["outcome"] == "http_status":
        return f"http_{result['status']}"
    return str(result["outcome"])


@pytest.mark.netns
@pytest.mark.parametrize("protocol", list(Protocol))
@pytest.mark.parametrize("source", [PLAIN, AMBIENT_CLIENT], ids=["plain", "ambient"])
def test_other_pods_reach_the_pod_ip_and_the_app_sees_the_client(
    cluster: EmulatedCluster, protocol: Protocol, source: PodRef
) -> None:
    # emulation.md Results: pod-IP and 0.0.0.0 apps see the client IP; a 127.0.0.1 app is not reachable and
    # the client sees EOF or a reset, never "refused".
    client = cluster.pod_ip(source)
    assert [probe(cluster, source, bind, protocol) for bind in ONE_FAMILY_BINDS] == ["reset_or_eof", client, client]
    vip = cluster.service_ip(SERVER.namespace, SERVER.app)
    assert [probe(cluster, source, bind, protocol, vip) for bind in ONE_FAMILY_BINDS] == [
        "reset_or_eof",
        client,
        client,
    ]


@pytest.mark.netns
def test_ztunnel_dials_from_ports_no_client_probe_leaves_from(cluster: EmulatedCluster) -> None:
    """Enrolled namespaces draw ephemeral ports below the range the probes leave from (network.py)."""
    low, high = (int(p) for p in ENROLLED_PORT_RANGE.split())
    assert high < dialer.SOURCE_PORTS[0]
    assert high < 32768  # Linux's default ephemeral range, where a sidecar client's kernel picks its ports
    for ref, expected in ((SERVER, f"{low}\t{high}"), (PLAIN, "32768\t60999")):
        with netns.entered(cluster.pods[ref].netns):
            assert Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().strip() == expected
    # What the app saw of a probe through ztunnel came from the enrolled range (the request record has no port:
    # the ztunnel log names its transparent dials only by address, so the sockets are checked instead).
    probe(cluster, PLAIN, Bind.WILDCARD, Protocol.TCP)
    out = netns.run(cluster.pods[SERVER].netns, ["ss", "-Htn", "state", "time-wait"])
    client = cluster.pod_ip(PLAIN)
    spoofed = [
        int(local.rpartition(":")[2])
        for local, _ in (line.split()[-2:] for line in out.splitlines())
        if local.rpartition(":")[0].strip("[]") == client
    ]
    assert spoofed
    assert all(low <= port <= high for port in spoofed)


def _dial_from(c: EmulatedCluster, source: PodRef, port: int, server_port: int) -> socket.socket:
    """A connection from `source` to the server's pod IP, from the given source port (SO_REUSEADDR: a port
    already used towards another destination, as the kernel itself may choose)."""
    address = c.pod_ip(SERVER)
    with netns.entered(c.pods[source].netns):
        sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.settimeout(2.0)
    sock.bind(("", port))
    sock.connect((address, server_port))
    return sock


def _exchange(sock: socket.socket) -> bytes:
    """Send one line; what came back up to its newline (b"" when ztunnel closed or reset the connection)."""
    chunks = b""
    try:
        sock.sendall(b"same-port\n")
        while not chunks.endswith(b"\n") and (chunk := sock.recv(4096)):
            chunks += chunk
    except ConnectionResetError:
        pass
    return chunks


@pytest.mark.netns
def test_two_connections_from_one_source_port_to_one_enrolled_pod(cluster: EmulatedCluster) -> None:
    """Two ports of one enrolled pod dialled at once from the same source port both answer at once.

    The kernel picks a client's port per destination, so a proxy that lets it choose (Envoy) now and then
    holds such a pair. REDIRECT makes both <pod>:15006 <- client:port; conntrack gives the second a new source
    port, which the pod's socket lookup must see (network.ENROLLED_TCP_SETTINGS): with early demux the SYN met
    the first connection's transparent socket and waited until that connection ended (issue 20 item 15).
    """
    source_port = 45000 + os.getpid() % 1000 * 2
    tcp = {bind: port_for(bind, Protocol.TCP, PortKind.DECLARED).number for bind in ONE_FAMILY_BINDS}
    first = _dial_from(cluster, PLAIN, source_port, tcp[Bind.POD_IP])
    try:
        for bind, expected in ((Bind.WILDCARD, b'"port": '), (Bind.LOOPBACK, b"")):
            start = time.monotonic()
            second = _dial_from(cluster, PLAIN, source_port, tcp[bind])
            with second:
                answer = _exchange(second)
            elapsed = time.monotonic() - start
            # A SYN retransmission takes 1 s; an answer or EOF comes in milliseconds.
            assert elapsed < 0.5, f"{bind.value}: {elapsed:.2f} s"
            assert (expected in answer) if expected else answer == b"", answer
        assert b'"port": ' in _exchange(first)  # the first connection is unharmed
    finally:
        first.close()
    with netns.entered(cluster.pods[SERVER].netns):
        assert Path("/proc/sys/net/ipv4/tcp_early_demux").read_text().strip() == "0"


@pytest.mark.netns
def test_ambient_to_ambient_goes_through_the_tunnel(cluster: EmulatedCluster) -> None:
    probe(cluster, AMBIENT_CLIENT, Bind.WILDCARD, Protocol.TCP)
    log = (cluster.work_dir / "ztunnel.log").read_text()
    assert "tunnel connected" in log  # the client side's CONNECT to the server pod's 15008
    assert f"tunnel echo-none-0.{NS_AMBIENT} src={cluster.pod_ip(AMBIENT_CLIENT)}" in log


@pytest.mark.netns
def test_inside_the_pod_nothing_is_captured(cluster: EmulatedCluster) -> None:
    local = "127.0.0.1" if cluster.family == "ipv4" else "::1"
    own = cluster.pod_ip(SERVER)
    assert [probe(cluster, SERVER, b, Protocol.TCP, local) for b in ONE_FAMILY_BINDS] == [local, "refused", local]
    assert [probe(cluster, SERVER, b, Protocol.TCP, own) for b in ONE_FAMILY_BINDS] == ["refused", own, own]


@pytest.mark.netns
def test_one_ztunnel_in_the_node_listening_inside_each_enrolled_pod(cluster: EmulatedCluster) -> None:
    ztunnel = cluster.containers.ztunnel
    assert ztunnel is not None
    assert ztunnel.pid in netns.pids_in(cluster.network.node)
    for ref in (SERVER, AMBIENT_CLIENT):
        app = cluster.pods[ref].app
        assert app is not None
        ports = {lst.port for lst in cluster.listeners(ref)}
        assert {15001, 15006, 15008} <= ports
        assert netns.pids_in(cluster.pods[ref].netns) == [app.pid]  # no proxy process in the pod
    assert not {15001, 15006, 15008} & {lst.port for lst in cluster.listeners(PLAIN)}
    rules = netns.run(cluster.pods[SERVER].netns, ["ip", "rule"])
    assert "fwmark 0x111/0xfff lookup 100" in rules


LATE = PodRef("mic-late", "echo")


def _late_probe(c: EmulatedCluster, bind: Bind) -> str:
    port = port_for(bind, Protocol.TCP, PortKind.DECLARED).number
    result = c.probe([ProbeRequest(PLAIN, "tcp", c.pod_ip(LATE), port, f"late-{next(_ids)}")], 2.0)[0]
    return str(result["peer"]) if result["outcome"] == "ok" else str(result["outcome"])


@pytest.mark.netns
def test_a_namespace_enrolled_while_its_pod_runs_is_captured_and_ztunnel_learns_it(cluster: EmulatedCluster) -> None:
    """Cluster.enrol (issue 22 item 5): istio-cni's rules into the running pod, ztunnel told by its file and SIGHUP."""
    world = World(IpFamily(cluster.family), ambient=True)
    late = world.deployment(LATE, world.server_ports)
    (template,) = kube.read([namespace_manifest("mic-late", injected=False), late]).pods
    pod = cluster.add_pod(template)
    ztunnel_pid = cluster.containers.ztunnel.pid if cluster.containers.ztunnel else None
    try:
        client = cluster.pod_ip(PLAIN)
        assert [_late_probe(cluster, b) for b in ONE_FAMILY_BINDS] == [
            "refused",
            client,
            client,
        ]  # a plain pod, no mesh
        cluster.enrol("mic-late")
        assert pod.template.ambient
        config = json.loads((cluster.work_dir / "ztunnel.json").read_text())
        assert pod.ip in {w["ip"] for w in config["workloads"]}
        assert {15001, 15006, 15008} <= {lst.port for lst in cluster.listeners(LATE)}
        # Now behind ztunnel: a loopback-only app is lost (never "refused"), the others see the client.
        assert [_late_probe(cluster, b) for b in ONE_FAMILY_BINDS] == ["reset_or_eof", client, client]
        assert "fwmark 0x111/0xfff lookup 100" in netns.run(pod.netns, ["ip", "rule"])
        assert "enrolled echo-0.mic-late" in (cluster.work_dir / "ztunnel.log").read_text()
        cluster.enrol("mic-late")  # again: nothing left to enrol, nothing sent
        with pytest.raises(BackendError, match=r"^enrol mic-nope: not a namespace of this run$"):
            cluster.enrol("mic-nope")
    finally:
        cluster.remove_pod(LATE)
    ztunnel_now = cluster.containers.ztunnel
    assert ztunnel_now is not None
    assert ztunnel_now.pid == ztunnel_pid  # the same process re-read its configuration: not restarted
    assert cluster.deaths() == []


@pytest.mark.netns
def test_ztunnel_down_refuses_everything(cluster: EmulatedCluster) -> None:
    """Capture rules without ztunnel: the redirected connection is refused (last: it stops ztunnel)."""
    ztunnel = cluster.containers.ztunnel
    assert ztunnel is not None
    ztunnel.kill()
    ztunnel.wait(5)
    assert [probe(cluster, PLAIN, b, Protocol.TCP) for b in ONE_FAMILY_BINDS] == ["refused"] * 3
    assert os.path.exists(netns.ns_path(cluster.pods[SERVER].netns))
    # It died on its own, as far as the harness knows: named, with every enrolled pod it served (item 18).
    [death] = cluster.deaths()
    assert death.summary == "ztunnel (node) died (signal 9 (SIGKILL))"
    assert set(death.pods) == {SERVER, AMBIENT_CLIENT}
    log = (cluster.work_dir / "ztunnel.log").read_text().strip().splitlines()
    assert death.log_tail == tuple(log[-len(death.log_tail) :])
    assert len(death.log_tail) == 5


def test_world_deploys_ambient_only_where_the_mesh_has_it() -> None:
    from conformance.spec.capabilities import emulated_capabilities, istio_capabilities

    assert World.for_mesh(IpFamily.IPV4, emulated_capabilities()).ambient
    assert World.for_mesh(IpFamily.IPV6, istio_capabilities("1.24.0")).ambient
    assert not World.for_mesh(IpFamily.IPV4, istio_capabilities("1.21.6")).ambient


def test_moving_to_ambient_note_names_loopback_apps_lost_in_ambient() -> None:
    from types import SimpleNamespace

    from conformance.report.ambient import moving_to_ambient
    from conformance.spec.dimensions import CellKey, Client, DefaultEndpoint, Path, Profile

    def record(profile: Profile, client: Client, label: str, bind: Bind = Bind.LOOPBACK) -> SimpleNamespace:
        cell = CellKey(
            profile, DefaultEndpoint.NONE, bind, PortKind.DECLARED, Protocol.TCP, Path.POD_IP, client, IpFamily.IPV4
        )
        return SimpleNamespace(cell=cell, observed=SimpleNamespace(last=SimpleNamespace(label=label)))

    lost = [record(Profile.LEGACY, Client.PLAIN, "ok"), record(Profile.AMBIENT, Client.PLAIN, "reset_or_eof")]
    lines = moving_to_ambient(lost)  # type: ignore[arg-type]
    assert "## Moving to ambient" in lines
    assert "- `legacy/none/loopback/declared/tcp/pod_ip/plain/ipv4` (legacy) reached; ambient not" in lines
    # Nothing to say when ambient reaches it too (a wrong ztunnel), or legacy never did, or the app is not loopback.
    assert moving_to_ambient([lost[0], record(Profile.AMBIENT, Client.PLAIN, "ok")]) == []  # type: ignore[list-item]
    assert moving_to_ambient([record(Profile.LEGACY, Client.PLAIN, "http_503"), lost[1]]) == []  # type: ignore[list-item]
    wildcard = [
        record(Profile.LEGACY, Client.PLAIN, "ok", Bind.WILDCARD),
        record(Profile.AMBIENT, Client.PLAIN, "reset_or_eof", Bind.WILDCARD),
    ]
    assert moving_to_ambient(wildcard) == []  # type: ignore[arg-type]
