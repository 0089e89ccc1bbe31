"""The fourth bind, `dual_wildcard` ([::] with IPV6_V6ONLY off): where it differs from `wildcard`, and nowhere else.

settings-dualstack.md §5: in an IPv6 pod the only IPv4 path is a Sidecar `0.0.0.0:P` on 1.14.4+ (127.0.0.1, no
bind); a dual socket accepts it and the app sees 127.0.0.1, an IPv6-only wildcard refuses it. Every other IPv6 path
reaches both sockets alike.
"""

from __future__ import annotations

import dataclasses

import pytest

from conformance.engine.probe import classify_source
from conformance.spec import Bind, CellKey, DefaultEndpoint, IpFamily, Path, Profile, Source, all_cells, expect
from conformance.spec.dimensions import ONE_FAMILY_BINDS, Interception, binds
from conformance.spec.outcome import Expectation
from conformance.spec.semantics import traffic_behaviour
from conformance.world.layout import World
from conformance.world.ports import server_ports


def _outcome(e: Expectation) -> tuple[bool, Source | None, tuple[object, ...]]:
    return e.reachable, e.source, e.failure


def _twin(cell: CellKey) -> CellKey:
    return dataclasses.replace(cell, bind=Bind.WILDCARD)


def test_only_ipv6_runs_ask_the_fourth_bind() -> None:
    assert binds(IpFamily.IPV4) == ONE_FAMILY_BINDS
    assert binds(IpFamily.IPV6) == (*ONE_FAMILY_BINDS, Bind.DUAL_WILDCARD)
    assert not [c for c in all_cells(families=[IpFamily.IPV4]) if c.bind is Bind.DUAL_WILDCARD]
    v6 = all_cells(families=[IpFamily.IPV6])
    # Every IPv6 wildcard cell has its dual twin, and nothing else is new.
    wildcard = {c for c in v6 if c.bind is Bind.WILDCARD}
    dual = {_twin(c) for c in v6 if c.bind is Bind.DUAL_WILDCARD}
    assert dual == wildcard
    assert len(v6) == len(all_cells(families=[IpFamily.IPV4])) * 4 // 3


def test_servers_serve_the_dual_ports_in_ipv6_only() -> None:
    assert not [p for p in server_ports(IpFamily.IPV4) if p.bind is Bind.DUAL_WILDCARD]
    dual = [p for p in server_ports(IpFamily.IPV6) if p.bind is Bind.DUAL_WILDCARD]
    assert sorted(p.spec for p in dual) == [
        "8084:dual_wildcard:http",
        "8184:dual_wildcard:http",
        "8284:dual_wildcard:http",
        "9084:dual_wildcard:tcp",
        "9184:dual_wildcard:tcp",
        "9284:dual_wildcard:tcp",
    ]
    args = [
        m["spec"]["template"]["spec"]["containers"][0]["args"]  # type: ignore[index]
        for m in World(IpFamily.IPV6).manifests()
        if m["kind"] == "Deployment" and m["metadata"]["name"] == "echo-instance-cross"  # type: ignore[index]
    ]
    assert args
    assert "8084:dual_wildcard:http" in args[0]


def test_a_sidecar_0000_endpoint_on_an_ipv6_pod_reaches_a_dual_socket_as_127001() -> None:
    """The hidden case: Sidecar `0.0.0.0:P` on an IPv6 pod dials 127.0.0.1:P (1.14.4+); only a dual socket takes it."""
    v6 = all_cells(families=[IpFamily.IPV6])
    differ = [c for c in v6 if c.bind is Bind.DUAL_WILDCARD and _outcome(expect(c)) != _outcome(expect(_twin(c)))]
    # legacy and passthrough (the Sidecar resolves alike in both), declared and remapped ports, 2 protocols,
    # pod IP and Service paths, plain and meshed clients; REDIRECT only (TPROXY asks the family's own form).
    assert len(differ) == 2 * 2 * 2 * 2 * 2
    for cell in differ:
        assert cell.default_endpoint is DefaultEndpoint.INSTANCE_V4
        assert cell.profile in (Profile.LEGACY, Profile.PASSTHROUGH)
        assert cell.path.from_other_pod
        assert cell.interception is Interception.REDIRECT
        now = expect(cell)
        assert (now.reachable, now.source) == (True, Source.IPV4_LOCALHOST)
        assert now.because[-3:] == ("sidecar-instance-without-ipv4", "bind-admits", "dual-wildcard-accepts-ipv4")
        assert not expect(_twin(cell)).reachable  # the IPv6-only wildcard refuses 127.0.0.1


@pytest.mark.parametrize("version", ["1.12.9", "1.14.3"])
def test_before_1144_the_0000_endpoint_dials_the_ipv6_pod_ip_and_both_wildcards_agree(version: str) -> None:
    old = traffic_behaviour(version)
    for cell in all_cells([Profile.PASSTHROUGH, Profile.LEGACY], [IpFamily.IPV6]):
        if cell.bind is Bind.DUAL_WILDCARD and cell.default_endpoint is DefaultEndpoint.INSTANCE_V4:
            assert _outcome(expect(cell, old)) == _outcome(expect(_twin(cell), old)), cell.id
            if cell.path.from_other_pod:
                assert expect(cell, old).source is Source.INBOUND_PASSTHROUGH


def test_in_pod_and_every_other_path_are_the_wildcards() -> None:
    v6 = all_cells(families=[IpFamily.IPV6])
    for cell in v6:
        if cell.bind is Bind.DUAL_WILDCARD and cell.default_endpoint is not DefaultEndpoint.INSTANCE_V4:
            assert _outcome(expect(cell)) == _outcome(expect(_twin(cell))), cell.id
    assert [c for c in v6 if c.bind is Bind.DUAL_WILDCARD and c.path is Path.LOCALHOST]


def test_the_app_seeing_127001_in_an_ipv6_run_is_named_ipv4_localhost() -> None:
    # The echo program reports an IPv4-mapped peer in dotted form (as Go prints it).
    assert classify_source("127.0.0.1", IpFamily.IPV6, "fd00::5", "fd00::9") == Source.IPV4_LOCALHOST.value
    assert classify_source("::1", IpFamily.IPV6, "fd00::5", "fd00::9") == Source.LOCALHOST.value
    assert classify_source("127.0.0.1", IpFamily.IPV4, "10.0.0.5", "10.0.0.9") == Source.LOCALHOST.value
