"""Pure pieces of the emulated backend and the test world, pinned against Istio's rules (no root, no network).

Expected values are written out from the reference notes (inbound-semantics.md sections 1, 3, 4, 6), from
istio-iptables / cluster.go at 1.10.0 and from Kubernetes' API rules; none is derived from the code under test.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from conformance.backends.emulated import capture, controlplane, kube
from conformance.backends.emulated.kube import ManifestError, Objects, PodTemplate
from conformance.spec.dimensions import IpFamily
from conformance.world.layout import World
from conformance.world.ports import server_ports
from conformance.world.probe_pods import PROBE_POD_LABEL

POD_IP = {"ipv4": "10.244.0.12", "ipv6": "fd00:10:244::c"}

# --- capture rules (reference section 6) --------------------------------------------------------------------

NAT_RULES_V4 = """\
*nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 22 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 19000 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
"""

NAT_RULES_V6 = """\
*nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 22 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 19000 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d ::1/128 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d ::1/128 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d ::1/128 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
"""


@pytest.mark.parametrize(("ipv6", "expected"), [(False, NAT_RULES_V4), (True, NAT_RULES_V6)])
def test_nat_rules_match_istio_1_10(ipv6: bool, expected: str) -> None:
    got = capture.nat_rules(ipv6=ipv6, excluded=(15090, 15021, 15020, 19000))
    assert got.splitlines() == expected.splitlines()
    assert got == expected


def test_nat_rules_without_extra_exclusions() -> None:
    lines = capture.nat_rules(ipv6=False, excluded=()).splitlines()
    returns = [line for line in lines if line.startswith("-A ISTIO_INBOUND") and line.endswith("-j RETURN")]
    assert returns == [
        "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
        "-A ISTIO_INBOUND -p tcp --dport 22 -j RETURN",
    ]


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (None, (15090, 15021, 15020)),
        ("", (15090, 15021, 15020)),
        ("19000", (15090, 15021, 15020, 19000)),
        ("1,2", (15090, 15021, 15020, 1, 2)),
        ("19000, 8443,", (15090, 15021, 15020, 19000, 8443)),
    ],
)
def test_excluded_inbound_ports(annotation: str | None, expected: tuple[int, ...]) -> None:
    assert capture.excluded_inbound_ports(annotation) == expected


def test_nat_rules_with_an_include_list_redirect_only_those_ports_and_ignore_exclusions() -> None:
    """run.go (1.10.0) handleInboundPortsInclude: a list other than `*` gets one REDIRECT per port, no RETURNs."""
    lines = capture.nat_rules(ipv6=False, excluded=(15090, 15021, 15020, 8081), included="8082, 9083").splitlines()
    inbound = [line for line in lines if "ISTIO_INBOUND" in line and not line.startswith("-N")]
    assert inbound == [
        "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
        "-A ISTIO_INBOUND -p tcp --dport 8082 -j ISTIO_IN_REDIRECT",
        "-A ISTIO_INBOUND -p tcp --dport 9083 -j ISTIO_IN_REDIRECT",
    ]


@pytest.mark.parametrize("ipv6", [False, True])
def test_nat_rules_with_an_empty_include_list_capture_no_inbound_port(ipv6: bool) -> None:
    """`if InboundPortsInclude != ""` guards the PREROUTING jump (settings-dualstack.md §3); the outbound side stays."""
    got = capture.nat_rules(ipv6=ipv6, excluded=(15090, 15021, 15020, 19000), included="")
    full = (NAT_RULES_V6 if ipv6 else NAT_RULES_V4).splitlines()
    dropped = [line for line in full if line.startswith("-A PREROUTING") or "--dport 22 " in line]
    dropped += [line for line in full if line.startswith("-A ISTIO_INBOUND") and "15008" not in line]
    assert got.splitlines() == [line for line in full if line not in dropped]
    assert "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN" in got  # written before handleInboundPortsInclude
    assert capture.nat_rules(ipv6=ipv6, excluded=(15090, 15021, 15020, 19000), included="*") == "\n".join(full) + "\n"


@pytest.mark.parametrize(("annotation", "expected"), [(None, "*"), ("*", "*"), ("", ""), (" 8081,8082 ", "8081,8082")])
def test_included_inbound_ports(annotation: str | None, expected: str) -> None:
    """template.go getAnnotation: the default `*` only for a missing annotation; an empty one stays empty."""
    assert capture.included_inbound_ports(annotation) == expected


def test_the_world_s_capture_servers_get_their_capture_settings() -> None:
    pods = {p.app: p for p in _objects(IpFamily.IPV4).pods if p.namespace == "mic-mesh"}
    excluded = pods["echo-excluded"].annotations
    assert capture.included_inbound_ports(excluded.get(kube.INCLUDE_INBOUND_ANNOTATION)) == "*"
    ports = set(capture.excluded_inbound_ports(excluded.get(kube.EXCLUDE_INBOUND_ANNOTATION)))
    assert {p.number for p in server_ports(IpFamily.IPV4) if p.role != "anchor"} | {15090, 15021, 15020, 19000} == ports
    not_included = pods["echo-not-included"].annotations
    assert capture.included_inbound_ports(not_included.get(kube.INCLUDE_INBOUND_ANNOTATION)) == ""
    assert capture.included_inbound_ports(pods["echo-none"].annotations.get(kube.INCLUDE_INBOUND_ANNOTATION)) == "*"


def test_destination_rules_only_turning_tls_off_are_read_and_others_refused() -> None:
    rule = {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "DestinationRule",
        "metadata": {"name": "x", "namespace": "mic-mesh"},
        "spec": {"host": "x.mic-mesh.svc.cluster.local", "trafficPolicy": {"tls": {"mode": "DISABLE"}}},
    }
    assert kube.read([rule]).pods == []
    for spec in (
        {"host": "x", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}},
        {"host": "x", "trafficPolicy": {"tls": {"mode": "DISABLE"}, "loadBalancer": {"simple": "RANDOM"}}},
        {"host": "x", "subsets": [], "trafficPolicy": {"tls": {"mode": "DISABLE"}}},
    ):
        with pytest.raises(kube.ManifestError, match=r"only runs DestinationRules with trafficPolicy\.tls"):
            kube.read([{**rule, "spec": spec}])


MANGLE_RULES_TPROXY_V4 = """\
*mangle
-N ISTIO_DIVERT
-N ISTIO_TPROXY
-N ISTIO_INBOUND
-A ISTIO_DIVERT -j MARK --set-mark 1337
-A ISTIO_DIVERT -j ACCEPT
-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp -m mark --mark 1337 -j RETURN
-A ISTIO_INBOUND -p tcp -s 127.0.0.6/32 -i lo -j RETURN
-A ISTIO_INBOUND -p tcp -i lo -m mark ! --mark 1338 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 22 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 19000 -j RETURN
-A ISTIO_INBOUND -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT
-A ISTIO_INBOUND -p tcp -j ISTIO_TPROXY
-A PREROUTING -p tcp -m mark --mark 1337 -j CONNMARK --save-mark
-A OUTPUT -p tcp -o lo -m mark --mark 1337 -j RETURN
-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --uid-owner 1337 -j MARK --set-mark 1338
-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --gid-owner 1337 -j MARK --set-mark 1338
-A OUTPUT -p tcp -m connmark --mark 1337 -j CONNMARK --restore-mark
COMMIT
"""
"""istio-iptables 1.11+ `-m TPROXY` (testdata/tproxy.golden's mangle table, with 1.10's port 22 and the `-d` list)."""


def test_tproxy_mangle_rules_match_istio_iptables() -> None:
    got = capture.mangle_rules(ipv6=False, excluded=(15090, 15021, 15020, 19000))
    assert got.splitlines() == MANGLE_RULES_TPROXY_V4.splitlines()
    # IPv6 (1.12+, #34274, #35359): the same rules with the family's loopback and passthrough addresses.
    v6 = capture.mangle_rules(ipv6=True, excluded=(15090, 15021, 15020, 19000))
    assert v6 == MANGLE_RULES_TPROXY_V4.replace("127.0.0.1/32", "::1/128").replace("127.0.0.6/32", "::6/128")


def test_tproxy_nat_rules_capture_outbound_only() -> None:
    """In TPROXY mode nat PREROUTING has no inbound jump: inbound is the mangle table's; outbound stays nat."""
    tproxy = capture.nat_rules(ipv6=False, excluded=(15090, 15021, 15020, 19000), tproxy=True).splitlines()
    assert "-A PREROUTING -p tcp -j ISTIO_INBOUND" not in tproxy
    assert not [line for line in tproxy if "ISTIO_IN_REDIRECT" in line and line.startswith("-A ISTIO_INBOUND")]
    redirect = NAT_RULES_V4.splitlines()
    assert [line for line in redirect if "ISTIO_OUTPUT" in line] == [line for line in tproxy if "ISTIO_OUTPUT" in line]


@pytest.mark.parametrize(("ipv6", "default"), [(False, "0.0.0.0/0"), (True, "::/0")])
def test_tproxy_policy_route(ipv6: bool, default: str) -> None:
    assert capture.tproxy_routes(ipv6).splitlines() == [
        "rule add fwmark 1337 lookup 133",
        f"route add local {default} dev lo table 133",
    ]


def test_capture_constants() -> None:
    assert (capture.PROXY_UID, capture.PROXY_GID) == (1337, 1337)
    assert (capture.INBOUND_CAPTURE_PORT, capture.OUTBOUND_CAPTURE_PORT) == (15006, 15001)
    assert (capture.TPROXY_MARK, capture.TPROXY_ROUTE_TABLE, capture.PROXY_LOOPBACK_MARK) == (1337, 133, 1338)


# --- protocol selection -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "app_protocol", "expected"),
    [
        # appProtocol wins over the name.
        ("tcp-admin", "http", "http"),
        ("http-web", "tcp", "tcp"),
        ("web", "HTTP", "http"),
        ("web", "grpc", "http"),
        ("web", "tls", "tcp"),
        # Name prefixes.
        ("http-web", None, "http"),
        ("http", None, "http"),
        ("HTTP-web", None, "http"),
        ("http2-web", None, "http"),
        ("grpc-api", None, "http"),
        ("grpc-web-api", None, "http"),
        ("tcp-db", None, "tcp"),
        ("tls-db", None, "tcp"),
        ("mongo-db", None, "tcp"),
        ("mysql", None, "tcp"),
        ("redis-cache", None, "tcp"),
        # Unknown: sniffed.
        ("", None, "sniff"),
        ("web", None, "sniff"),
        ("httpweb", None, "sniff"),
        ("admin-http", None, "sniff"),
        ("", "", "sniff"),
    ],
)
def test_port_protocol(name: str, app_protocol: str | None, expected: str) -> None:
    assert controlplane.port_protocol(name, app_protocol) == expected


@pytest.mark.parametrize(
    ("name", "app_protocol", "expected"),
    [("http-web", "custom", "sniff"), ("tcp-admin", "http-alt", "http")],
)
def test_port_protocol_app_protocol_replaces_the_name(name: str, app_protocol: str, expected: str) -> None:
    assert controlplane.port_protocol(name, app_protocol) == expected


# --- the world's manifests, read like kubelet and istiod ----------------------------------------------------


def _objects(family: IpFamily) -> Objects:
    return kube.read(cast(Sequence[Mapping[str, Any]], _manifests(family)))


def _pod(objects: Objects, namespace: str, app: str) -> PodTemplate:
    matches = [p for p in objects.pods if (p.namespace, p.app) == (namespace, app)]
    assert len(matches) == 1, f"{namespace}/{app}: {len(matches)} pods"
    return matches[0]


SERVICE_PORTS = (
    (7070, "http"),
    (8081, "http"),
    (8082, "http"),
    (8083, "http"),
    (8281, "http"),
    (8282, "http"),
    (8283, "http"),
    (9081, "tcp"),
    (9082, "tcp"),
    (9083, "tcp"),
    (9281, "tcp"),
    (9282, "tcp"),
    (9283, "tcp"),
)
"""The targetPorts of every echo Service, sorted, with the protocol Istio gives them: inbound clusters are keyed
by targetPort (reference section 4), so the remapped ports (Service port 18281 -> 8281, ...) appear as 82xx."""
SIDECAR_PORTS = (
    (8081, "http"),
    (8082, "http"),
    (8083, "http"),
    (9081, "tcp"),
    (9082, "tcp"),
    (9083, "tcp"),
    (8281, "http"),
    (8282, "http"),
    (8283, "http"),
    (9281, "tcp"),
    (9282, "tcp"),
    (9283, "tcp"),
)
"""The ports the localhost / instance Sidecars list, in the order they list them."""
DUAL_WILDCARD_PORTS = ((8084, "http"), (9084, "tcp"), (8284, "http"), (9284, "tcp"))
"""The declared ports of the fourth bind, `dual_wildcard`, which IPv6 servers serve too."""
SERVICE_PORTS_OF = {"ipv4": SERVICE_PORTS, "ipv6": tuple(sorted((*SERVICE_PORTS, *DUAL_WILDCARD_PORTS)))}
SIDECAR_PORTS_OF = {
    "ipv4": SIDECAR_PORTS,
    "ipv6": tuple(
        item
        for port, proto in SIDECAR_PORTS
        for item in ((port, proto), *(((port + 1, proto),) if port % 10 == 3 else ()))
    ),
}
"""Per family: after each wildcard port (xx83), IPv6 lists its dual_wildcard port (xx84)."""


def _listener(
    port: int, protocol: str, source: str, address: str, upstream_port: int, bind: str | None
) -> dict[str, Any]:
    return {
        "port": port,
        "protocol": protocol,
        "cluster": f"inbound|{port}||",
        "source": source,
        "upstream": {"address": address, "port": upstream_port},
        "bind": bind,
    }


# Per (family, server, mode): the inbound listeners, as reference sections 1, 3 and 4 give them.
# Service ports: passthrough -> ORIGINAL_DST from 127.0.0.6 / ::6; legacy -> localhost, no bind.
# Sidecar 127.0.0.1:P / [::1]:P -> localhost, no bind; 0.0.0.0:P / [::]:P -> pod IP from 127.0.0.6 / ::6;
# both whatever the mode. The unlisted Sidecar lists only the anchor 7070 (localhost form).
EXPECTED_LISTENERS: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
for _family, _lo, _bind in (("ipv4", "127.0.0.1", "127.0.0.6"), ("ipv6", "::1", "::6")):
    for _ns, _app in (("mic-baseline", "echo"), ("mic-mesh", "echo-none")):
        EXPECTED_LISTENERS[(_family, _app, "passthrough")] = [
            _listener(p, proto, "Service", "original_dst", p, _bind) for p, proto in SERVICE_PORTS_OF[_family]
        ]
        EXPECTED_LISTENERS[(_family, _app, "legacy")] = [
            _listener(p, proto, "Service", _lo, p, None) for p, proto in SERVICE_PORTS_OF[_family]
        ]
    for _mode in ("passthrough", "legacy"):
        EXPECTED_LISTENERS[(_family, "echo-localhost", _mode)] = [
            _listener(p, proto, "Sidecar mic-mesh/echo-localhost", _lo, p, None)
            for p, proto in SIDECAR_PORTS_OF[_family]
        ]
        EXPECTED_LISTENERS[(_family, "echo-instance", _mode)] = [
            _listener(p, proto, "Sidecar mic-mesh/echo-instance", POD_IP[_family], p, _bind)
            for p, proto in SIDECAR_PORTS_OF[_family]
        ]
        EXPECTED_LISTENERS[(_family, "echo-unlisted", _mode)] = [
            _listener(7070, "http", "Sidecar mic-mesh/echo-unlisted", _lo, 7070, None)
        ]
        EXPECTED_LISTENERS[(_family, "client", _mode)] = []

NAMESPACE_OF = {
    "echo": "mic-baseline",
    "echo-none": "mic-mesh",
    "echo-localhost": "mic-mesh",
    "echo-instance": "mic-mesh",
    "echo-unlisted": "mic-mesh",
    "client": "mic-mesh",
}


def test_expected_table_is_complete() -> None:
    assert len(EXPECTED_LISTENERS) == 2 * 6 * 2


@pytest.mark.parametrize(("family", "app", "mode"), sorted(EXPECTED_LISTENERS))
def test_sidecar_config_listeners(family: str, app: str, mode: str) -> None:
    objects = _objects(IpFamily(family))
    pod = _pod(objects, NAMESPACE_OF[app], app)
    config = controlplane.sidecar_config(pod, POD_IP[family], family, objects, mode)
    inbound = config["inbound"]
    assert isinstance(inbound, dict)
    assert inbound["listeners"] == EXPECTED_LISTENERS[(family, app, mode)]


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("app", ["echo-tproxy", "echo-tproxy-instance"])
def test_sidecar_config_of_a_tproxy_pod(family: str, app: str) -> None:
    """The annotation reaches the sidecar: original_src with mark 1337, uid 0 / gid 1337; the clusters as REDIRECT's."""
    objects = _objects(IpFamily(family))
    pod = _pod(objects, "mic-mesh", app)
    config = controlplane.sidecar_config(pod, POD_IP[family], family, objects, "passthrough")
    assert config["interception"] == {"mode": "TPROXY", "original_src_mark": 1337}
    assert (config["proxy_uid"], config["proxy_gid"]) == (0, 1337)
    twin = _pod(objects, "mic-mesh", "echo-none" if app == "echo-tproxy" else "echo-instance")
    same = controlplane.sidecar_config(twin, POD_IP[family], family, objects, "passthrough")
    inbound, twin_inbound = config["inbound"], same["inbound"]
    assert isinstance(inbound, dict)
    assert isinstance(twin_inbound, dict)
    strip = [{k: v for k, v in item.items() if k != "source"} for item in inbound["listeners"]]
    assert strip == [{k: v for k, v in item.items() if k != "source"} for item in twin_inbound["listeners"]]
    assert inbound["passthrough"] == twin_inbound["passthrough"]


@pytest.mark.parametrize(
    ("family", "bind", "cluster"),
    [("ipv4", "127.0.0.6", "InboundPassthroughClusterIpv4"), ("ipv6", "::6", "InboundPassthroughClusterIpv6")],
)
@pytest.mark.parametrize("mode", ["passthrough", "legacy"])
@pytest.mark.parametrize("app", ["echo-none", "echo-localhost", "echo-instance", "echo-unlisted"])
def test_sidecar_config_envelope(family: str, bind: str, cluster: str, mode: str, app: str) -> None:
    objects = _objects(IpFamily(family))
    pod = _pod(objects, "mic-mesh", app)
    config = controlplane.sidecar_config(pod, POD_IP[family], family, objects, mode)
    assert config["format"] == "mesh-inbound-conformance/sidecar-config"
    assert config["version"] == 1
    assert config["pod"] == {"name": f"{app}-0", "namespace": "mic-mesh", "ips": [POD_IP[family]]}
    assert config["mesh"] == {"inbound_mode": mode}
    assert (config["proxy_uid"], config["proxy_gid"]) == (1337, 1337)
    assert config["interception"] == {"mode": "REDIRECT", "original_src_mark": None}
    inbound = config["inbound"]
    assert isinstance(inbound, dict)
    assert inbound["port"] == 15006
    # The catch-all for ports without an inbound cluster: ORIGINAL_DST from 127.0.0.6 / ::6, sniffed, always.
    assert inbound["passthrough"] == {
        "cluster": cluster,
        "protocol": "sniff",
        "upstream": {"address": "original_dst", "port": None},
        "bind": bind,
        # meshConfig.protocolDetectionTimeout 0s: sniffing waits for the client (reference §1).
        "detection_timeout_s": None,
    }
    # Outbound: every HTTP Service `port` (not the targetPort: 8281-8283 are served as 18281-18283).
    dual = [8084, 18284] if family == "ipv6" else []
    http_ports = sorted([7070, 8081, 8082, 8083, 18281, 18282, 18283, *dual])
    assert config["outbound"] == {"port": 15001, "http_ports": http_ports}


def test_sidecar_config_rejects_unknown_mode() -> None:
    objects = _objects(IpFamily.IPV4)
    pod = _pod(objects, "mic-mesh", "echo-none")
    with pytest.raises(ValueError, match="inbound mode 'localhost': expected one of passthrough, legacy"):
        controlplane.sidecar_config(pod, POD_IP["ipv4"], "ipv4", objects, "localhost")


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        # The remapped ports count by their targetPort (82xx, 92xx), never by the Service port (18281...).
        ("echo-none", {7070, 8081, 8082, 8083, 9081, 9082, 9083, 8281, 8282, 8283, 9281, 9282, 9283}),
        ("echo-localhost", {8081, 8082, 8083, 9081, 9082, 9083, 8281, 8282, 8283, 9281, 9282, 9283}),
        ("echo-instance", {8081, 8082, 8083, 9081, 9082, 9083, 8281, 8282, 8283, 9281, 9282, 9283}),
        ("echo-unlisted", {7070}),
        ("client", set()),
    ],
)
@pytest.mark.parametrize("mode", ["passthrough", "legacy"])
def test_exposed_ports(app: str, expected: set[int], mode: str) -> None:
    objects = _objects(IpFamily.IPV4)
    pod = _pod(objects, "mic-mesh", app)
    config = controlplane.sidecar_config(pod, POD_IP["ipv4"], "ipv4", objects, mode)
    assert controlplane.exposed_ports(config) == expected


# --- defaultEndpoint parsing and Sidecar selection, on hand-written manifests ------------------------------


def _namespace(name: str, injected: bool = True) -> dict[str, Any]:
    labels = {"istio-injection": "enabled"} if injected else {}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _deployment(name: str, namespace: str = "ns", **overrides: Any) -> dict[str, Any]:
    template: dict[str, Any] = {
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "img", "args": ["serve"]}]},
    }
    manifest: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": template},
    }
    for key, value in overrides.items():
        if key == "replicas":
            manifest["spec"]["replicas"] = value
        elif key == "containers":
            template["spec"]["containers"] = value
        elif key == "labels":
            template["metadata"]["labels"].update(value)
        elif key == "annotations":
            template["metadata"]["annotations"] = value
        else:
            raise AssertionError(key)
    return manifest


def _service(name: str, ports: list[dict[str, Any]], namespace: str = "ns") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "ports": ports},
    }


def _sidecar(
    name: str, ingress: list[dict[str, Any]], selector: dict[str, str] | None, namespace: str = "ns"
) -> dict[str, Any]:
    spec: dict[str, Any] = {"ingress": ingress}
    if selector is not None:
        spec["workloadSelector"] = {"labels": selector}
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "Sidecar",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _ingress(port: int, endpoint: str, protocol: str = "HTTP", name: str = "http-x") -> dict[str, Any]:
    return {"port": {"number": port, "protocol": protocol, "name": name}, "defaultEndpoint": endpoint}


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("10.0.0.1:80", "defaultEndpoint '10.0.0.1:80': arbitrary IPs and unix sockets are not emulated"),
        (
            "unix:///x",
            "defaultEndpoint 'unix:///x': expected 127.0.0.1:PORT, 0.0.0.0:PORT, [::1]:PORT, [::]:PORT or :PORT",
        ),
        (
            "127.0.0.1:http",
            "defaultEndpoint '127.0.0.1:http': expected 127.0.0.1:PORT, 0.0.0.0:PORT, [::1]:PORT, [::]:PORT or :PORT",
        ),
        ("127.0.0.1:", "defaultEndpoint '127.0.0.1:': expected 127.0.0.1:PORT"),
        ("localhost:8080", "defaultEndpoint 'localhost:8080': arbitrary IPs and unix sockets are not emulated"),
        ("::1:8080", "defaultEndpoint '::1:8080': arbitrary IPs and unix sockets are not emulated"),
    ],
)
def test_bad_default_endpoint(endpoint: str, message: str) -> None:
    objects = kube.read([_namespace("ns"), _deployment("web"), _sidecar("web", [_ingress(8080, endpoint)], None)])
    with pytest.raises(ManifestError) as info:
        controlplane.sidecar_config(objects.pods[0], "10.244.0.12", "ipv4", objects, "passthrough")
    assert str(info.value).startswith(message)


def test_empty_default_endpoint_is_original_dst() -> None:
    objects = kube.read(
        [_namespace("ns"), _deployment("web"), _sidecar("web", [_ingress(8080, "", "TCP", "tcp-x")], None)]
    )
    config = controlplane.sidecar_config(objects.pods[0], "fd00::5", "ipv6", objects, "legacy")
    inbound = config["inbound"]
    assert isinstance(inbound, dict)
    assert inbound["listeners"] == [
        _listener(8080, "tcp", "Sidecar ns/web", "original_dst", 8080, "::6"),
    ]


def test_default_endpoint_target_port_may_differ() -> None:
    objects = kube.read(
        [
            _namespace("ns"),
            _deployment("web"),
            _sidecar("web", [_ingress(80, "127.0.0.1:8080"), _ingress(81, "0.0.0.0:8081")], {"app": "web"}),
        ]
    )
    config = controlplane.sidecar_config(objects.pods[0], "10.244.0.7", "ipv4", objects, "passthrough")
    inbound = config["inbound"]
    assert isinstance(inbound, dict)
    assert inbound["listeners"] == [
        _listener(80, "http", "Sidecar ns/web", "127.0.0.1", 8080, None),
        _listener(81, "http", "Sidecar ns/web", "10.244.0.7", 8081, "127.0.0.6"),
    ]


def test_sidecar_without_ingress_falls_back_to_services() -> None:
    objects = kube.read(
        [
            _namespace("ns"),
            _deployment("web"),
            _service("web", [{"name": "http-web", "port": 80, "targetPort": 8080}]),
            _sidecar("web", [], {"app": "web"}),
        ]
    )
    config = controlplane.sidecar_config(objects.pods[0], "10.244.0.7", "ipv4", objects, "passthrough")
    inbound = config["inbound"]
    assert isinstance(inbound, dict)
    # The cluster is keyed by the targetPort; the outbound HTTP port is the Service port.
    assert inbound["listeners"] == [_listener(8080, "http", "Service", "original_dst", 8080, "127.0.0.6")]
    assert config["outbound"] == {"port": 15001, "http_ports": [80]}


def test_namespace_wide_sidecar_applies_to_every_pod() -> None:
    objects = kube.read(
        [
            _namespace("ns"),
            _namespace("other"),
            _deployment("a"),
            _deployment("b"),
            _deployment("c", namespace="other"),
            _sidecar("default", [_ingress(8080, "127.0.0.1:8080")], None),
        ]
    )
    assert objects.sidecars[0].selector is None
    pods = {p.app: p for p in objects.pods}
    assert objects.sidecars[0].selects(pods["a"])
    assert objects.sidecars[0].selects(pods["b"])
    assert not objects.sidecars[0].selects(pods["c"])
    assert controlplane.selecting_sidecar(pods["a"], objects.sidecars) is objects.sidecars[0]
    assert controlplane.selecting_sidecar(pods["c"], objects.sidecars) is None


def test_selecting_sidecar_prefers_workload_selector() -> None:
    objects = kube.read(
        [
            _namespace("ns"),
            _deployment("a"),
            _deployment("b"),
            # Named so that the namespace-wide one sorts first: the selector must win, not the name.
            _sidecar("aaa-default", [_ingress(8080, "127.0.0.1:8080")], None),
            _sidecar("zzz-for-a", [_ingress(8080, "0.0.0.0:8080")], {"app": "a"}),
        ]
    )
    pods = {p.app: p for p in objects.pods}
    chosen_a = controlplane.selecting_sidecar(pods["a"], objects.sidecars)
    chosen_b = controlplane.selecting_sidecar(pods["b"], objects.sidecars)
    assert chosen_a is not None
    assert chosen_b is not None
    assert chosen_a.name == "zzz-for-a"
    assert chosen_b.name == "aaa-default"


def test_named_target_port_resolves_to_the_selected_pods_container_port() -> None:
    # The endpoints controller's rule: a named targetPort is the containerPort of that name on the pod.
    web = _deployment(
        "web", containers=[{"name": "app", "image": "i", "ports": [{"name": "http", "containerPort": 8081}]}]
    )
    objects = kube.read([_namespace("ns"), web, _service("web", [{"name": "web", "port": 80, "targetPort": "http"}])])
    assert [(p.port, p.target_port) for p in objects.services[0].ports] == [(80, 8081)]


def test_sidecar_selector_must_match_every_label() -> None:
    objects = kube.read(
        [
            _namespace("ns"),
            _deployment("a", labels={"tier": "web"}),
            _sidecar("s", [_ingress(8080, "")], {"app": "a", "tier": "db"}),
        ]
    )
    assert controlplane.selecting_sidecar(objects.pods[0], objects.sidecars) is None


# --- kube.read: what the emulation refuses, and what it reads ----------------------------------------------


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "ns"}},
            "ConfigMap ns/cfg: the emulated cluster does not run kind ConfigMap",
        ),
        (
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "ns"}},
            "StatefulSet ns/db: the emulated cluster does not run kind StatefulSet",
        ),
        (_deployment("web", replicas=2), "Deployment ns/web: the emulated cluster runs exactly one replica"),
        (_deployment("web", replicas=0), "Deployment ns/web: the emulated cluster runs exactly one replica"),
        (
            _deployment(
                "web", containers=[{"name": "a", "image": "i", "readinessProbe": {"exec": {"command": ["t"]}}}]
            ),
            "Deployment ns/web container a: only httpGet and tcpSocket readiness probes are emulated",
        ),
        (
            _deployment("web", containers=[]),
            "Deployment ns/web: the emulated cluster runs pods of at least one container",
        ),
        (
            _service("web", [{"name": "http", "port": 80, "targetPort": "http"}]),
            "Service ns/web: targetPort 'http' does not name one container port of the pods it selects",
        ),
        (
            _service("dns", [{"name": "dns", "port": 53, "protocol": "UDP"}]),
            "Service ns/dns: only TCP Service ports are emulated",
        ),
        (
            _deployment(
                "web",
                containers=[
                    {
                        "name": "app",
                        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                    }
                ],
            ),
            "Deployment ns/web: env TOKEN: only literal values and fieldRef are supported",
        ),
    ],
)
def test_read_rejects(manifest: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError) as info:
        kube.read([_namespace("ns"), manifest])
    assert str(info.value) == message


def test_read_injection_label_and_opt_out() -> None:
    objects = kube.read(
        [
            _namespace("mesh"),
            _namespace("plain", injected=False),
            _deployment("meshed", namespace="mesh"),
            _deployment("opt-out-label", namespace="mesh", labels={"sidecar.istio.io/inject": "false"}),
            _deployment("opt-out-annotation", namespace="mesh", annotations={"sidecar.istio.io/inject": "false"}),
            _deployment("opt-in-true", namespace="mesh", labels={"sidecar.istio.io/inject": "true"}),
            _deployment("unmeshed", namespace="plain"),
            _deployment("undeclared-namespace", namespace="nowhere"),
        ]
    )
    assert objects.namespaces == {"mesh", "plain"}
    assert objects.injected_namespaces == {"mesh"}
    assert {p.app: p.injected for p in objects.pods} == {
        "meshed": True,
        "opt-out-label": False,
        "opt-out-annotation": False,
        "opt-in-true": True,
        "unmeshed": False,
        "undeclared-namespace": False,
    }


def test_read_namespace_label_other_than_enabled_is_not_injection() -> None:
    ns = _namespace("ns", injected=False)
    ns["metadata"]["labels"] = {"istio-injection": "disabled"}
    objects = kube.read([ns, _deployment("web")])
    assert objects.injected_namespaces == set()
    assert objects.pods[0].injected is False


def test_read_deployment_before_its_namespace() -> None:
    # kubectl applies in any order; the namespace's label still decides injection.
    objects = kube.read([_deployment("web"), _namespace("ns")])
    assert objects.pods[0].injected is True


def test_read_pod_fields() -> None:
    container = {
        "name": "app",
        "image": "img",
        "command": ["python3", "/app/echo.py"],
        "args": ["serve", 8080],
        "env": [
            {"name": "MODE", "value": "x"},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 19000}},
    }
    objects = kube.read(
        [
            _namespace("ns"),
            _deployment(
                "web",
                containers=[container],
                annotations={"traffic.sidecar.istio.io/excludeInboundPorts": "19000"},
            ),
        ]
    )
    pod = objects.pods[0]
    assert pod.name == "web-0"
    assert pod.namespace == "ns"
    assert dict(pod.labels) == {"app": "web"}
    assert dict(pod.annotations) == {"traffic.sidecar.istio.io/excludeInboundPorts": "19000"}
    assert pod.command == ("python3", "/app/echo.py")
    assert pod.args == ("serve", "8080")
    assert pod.env == (kube.EnvVar("MODE", "x", None), kube.EnvVar("POD_IP", None, "status.podIP"))
    assert pod.readiness_port == 19000


def test_read_service_fields() -> None:
    objects = kube.read(
        [
            _service(
                "web",
                [
                    {"name": "http-web", "port": 80, "targetPort": 8080, "appProtocol": "http"},
                    {"name": "tcp-db", "port": 5432},
                ],
            )
        ]
    )
    service = objects.services[0]
    assert (service.namespace, service.name, dict(service.selector)) == ("ns", "web", {"app": "web"})
    assert service.ports == (
        kube.ServicePort("http-web", 80, 8080, "http"),
        kube.ServicePort("tcp-db", 5432, 5432, None),
    )


def test_service_selection() -> None:
    objects = kube.read(
        [
            _namespace("ns"),
            _namespace("other"),
            _deployment("web"),
            _deployment("web", namespace="other"),
            _service("web", [{"name": "http", "port": 80}]),
        ]
    )
    service = objects.services[0]
    selected = [(p.namespace, p.app) for p in objects.pods if service.selects(p)]
    assert selected == [("ns", "web")]


def test_empty_service_selector_selects_nothing() -> None:
    manifest = _service("web", [{"name": "http", "port": 80}])
    manifest["spec"]["selector"] = {}
    objects = kube.read([_namespace("ns"), _deployment("web"), manifest])
    assert not objects.services[0].selects(objects.pods[0])


def test_read_sidecar_fields() -> None:
    objects = kube.read(
        [
            _sidecar(
                "web",
                [
                    _ingress(8080, "127.0.0.1:8080", "HTTP", "http-web"),
                    {"port": {"number": 9090}},
                ],
                {"app": "web"},
            )
        ]
    )
    sidecar = objects.sidecars[0]
    assert (sidecar.namespace, sidecar.name, sidecar.selector) == ("ns", "web", {"app": "web"})
    assert sidecar.ingress == (
        kube.IngressListener(8080, "HTTP", "http-web", "127.0.0.1:8080"),
        kube.IngressListener(9090, "TCP", "", ""),
    )


# --- conformance/world/ -------------------------------------------------------------------------------------

FAMILIES = [IpFamily.IPV4, IpFamily.IPV6]


def _manifests(family: IpFamily) -> list[dict[str, Any]]:
    """The traffic world; the probe pods and their Services are tested in test_probe_spec.py."""
    manifests = cast(list[dict[str, Any]], World(family, tproxy=True).manifests())
    return [m for m in manifests if PROBE_POD_LABEL not in m["metadata"].get("labels", {})]


@pytest.mark.parametrize("family", FAMILIES)
def test_world_objects(family: IpFamily) -> None:
    keys = [(m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"]) for m in _manifests(family)]
    assert len(keys) == len(set(keys))
    assert sorted(keys, key=str) == sorted(
        [
            ("Namespace", None, "mic-baseline"),
            ("Namespace", None, "mic-mesh"),
            ("Deployment", "mic-baseline", "echo"),
            ("Service", "mic-baseline", "echo"),
            ("Deployment", "mic-baseline", "client"),
            ("Deployment", "mic-mesh", "echo-none"),
            ("Service", "mic-mesh", "echo-none"),
            ("Deployment", "mic-mesh", "echo-localhost"),
            ("Service", "mic-mesh", "echo-localhost"),
            ("Sidecar", "mic-mesh", "echo-localhost"),
            ("Deployment", "mic-mesh", "echo-instance"),
            ("Service", "mic-mesh", "echo-instance"),
            ("Sidecar", "mic-mesh", "echo-instance"),
            ("Deployment", "mic-mesh", "echo-localhost-cross"),
            ("Service", "mic-mesh", "echo-localhost-cross"),
            ("Sidecar", "mic-mesh", "echo-localhost-cross"),
            ("Deployment", "mic-mesh", "echo-instance-cross"),
            ("Service", "mic-mesh", "echo-instance-cross"),
            ("Sidecar", "mic-mesh", "echo-instance-cross"),
            ("Deployment", "mic-mesh", "echo-empty"),
            ("Service", "mic-mesh", "echo-empty"),
            ("Sidecar", "mic-mesh", "echo-empty"),
            ("Deployment", "mic-mesh", "echo-unlisted"),
            ("Service", "mic-mesh", "echo-unlisted"),
            ("Sidecar", "mic-mesh", "echo-unlisted"),
            ("Deployment", "mic-mesh", "echo-excluded"),
            ("Service", "mic-mesh", "echo-excluded"),
            ("DestinationRule", "mic-mesh", "echo-excluded"),
            ("Deployment", "mic-mesh", "echo-not-included"),
            ("Service", "mic-mesh", "echo-not-included"),
            ("DestinationRule", "mic-mesh", "echo-not-included"),
            ("Deployment", "mic-mesh", "echo-tproxy"),
            ("Service", "mic-mesh", "echo-tproxy"),
            ("Deployment", "mic-mesh", "echo-tproxy-instance"),
            ("Service", "mic-mesh", "echo-tproxy-instance"),
            ("Sidecar", "mic-mesh", "echo-tproxy-instance"),
            ("Deployment", "mic-mesh", "client"),
        ],
        key=str,
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_world_namespaces_come_first(family: IpFamily) -> None:
    kinds = [m["kind"] for m in _manifests(family)]
    assert kinds[:2] == ["Namespace", "Namespace"]
    assert "Namespace" not in kinds[2:]


@pytest.mark.parametrize("family", FAMILIES)
def test_world_every_service_selects_exactly_one_deployment(family: IpFamily) -> None:
    manifests = _manifests(family)
    deployments = [m for m in manifests if m["kind"] == "Deployment"]
    for service in (m for m in manifests if m["kind"] == "Service"):
        selector = service["spec"]["selector"]
        assert selector, service["metadata"]
        selected = [
            d["metadata"]["name"]
            for d in deployments
            if d["metadata"]["namespace"] == service["metadata"]["namespace"]
            and all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items())
        ]
        assert selected == [service["metadata"]["name"]], service["metadata"]


@pytest.mark.parametrize("family", FAMILIES)
def test_world_deployment_selector_matches_its_template(family: IpFamily) -> None:
    for d in (m for m in _manifests(family) if m["kind"] == "Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"] == {"app": d["metadata"]["name"]}
        assert labels["app"] == d["metadata"]["name"]


@pytest.mark.parametrize(
    ("family", "localhost", "instance", "other_localhost", "other_instance"),
    [
        (IpFamily.IPV4, "127.0.0.1", "0.0.0.0", "[::1]", "[::]"),
        (IpFamily.IPV6, "[::1]", "[::]", "127.0.0.1", "0.0.0.0"),
    ],
)
def test_world_sidecar_literal_forms(
    family: IpFamily, localhost: str, instance: str, other_localhost: str, other_instance: str
) -> None:
    sidecars = {m["metadata"]["name"]: m for m in _manifests(family) if m["kind"] == "Sidecar"}
    assert set(sidecars) == {
        "echo-localhost",
        "echo-instance",
        "echo-localhost-cross",
        "echo-instance-cross",
        "echo-empty",
        "echo-unlisted",
        "echo-tproxy-instance",
    }

    def endpoints(name: str) -> list[tuple[int, str, str]]:
        spec = sidecars[name]["spec"]
        assert spec["workloadSelector"] == {"labels": {"app": name}}
        listed = [(i["port"]["number"], i["port"]["protocol"], i["defaultEndpoint"]) for i in spec["ingress"]]
        # An IPv6 server lists its dual_wildcard ports (xx84) too, after the wildcard ones: checked here, then
        # left out so that both families compare with the same list.
        dual = [item for item in listed if item[0] % 10 == 4]
        assert [n for n, _, _ in dual] == ([8084, 9084, 8284, 9284] if family is IpFamily.IPV6 and dual else [])
        return [item for item in listed if item not in dual]

    assert endpoints("echo-localhost") == [
        (8081, "HTTP", f"{localhost}:8081"),
        (8082, "HTTP", f"{localhost}:8082"),
        (8083, "HTTP", f"{localhost}:8083"),
        (9081, "TCP", f"{localhost}:9081"),
        (9082, "TCP", f"{localhost}:9082"),
        (9083, "TCP", f"{localhost}:9083"),
        # Service port 18281 -> targetPort 8281: listed by the container port (#42482, #42532).
        (8281, "HTTP", f"{localhost}:8281"),
        (8282, "HTTP", f"{localhost}:8282"),
        (8283, "HTTP", f"{localhost}:8283"),
        (9281, "TCP", f"{localhost}:9281"),
        (9282, "TCP", f"{localhost}:9282"),
        (9283, "TCP", f"{localhost}:9283"),
    ]
    assert endpoints("echo-instance") == [
        (8081, "HTTP", f"{instance}:8081"),
        (8082, "HTTP", f"{instance}:8082"),
        (8083, "HTTP", f"{instance}:8083"),
        (9081, "TCP", f"{instance}:9081"),
        (9082, "TCP", f"{instance}:9082"),
        (9083, "TCP", f"{instance}:9083"),
        # Service port 18281 -> targetPort 8281: listed by the container port (#42482, #42532).
        (8281, "HTTP", f"{instance}:8281"),
        (8282, "HTTP", f"{instance}:8282"),
        (8283, "HTTP", f"{instance}:8283"),
        (9281, "TCP", f"{instance}:9281"),
        (9282, "TCP", f"{instance}:9282"),
        (9283, "TCP", f"{instance}:9283"),
    ]
    assert endpoints("echo-unlisted") == [(7070, "HTTP", f"{localhost}:7070")]
    # The TPROXY server's Sidecar is the family's instance form, as echo-instance's.
    assert endpoints("echo-tproxy-instance") == endpoints("echo-instance")
    # Every form Istio accepts, in both families (reference section 4): the other family's literals and `:P`.
    assert next(e for _, _, e in endpoints("echo-localhost-cross")) == f"{other_localhost}:8081"
    assert next(e for _, _, e in endpoints("echo-instance-cross")) == f"{other_instance}:8081"
    assert [e for _, _, e in endpoints("echo-empty")] == [
        ":8081",
        ":8082",
        ":8083",
        ":9081",
        ":9082",
        ":9083",
        ":8281",
        ":8282",
        ":8283",
        ":9281",
        ":9282",
        ":9283",
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_world_control_port_is_excluded_from_capture(family: IpFamily) -> None:
    deployments = [m for m in _manifests(family) if m["kind"] == "Deployment"]
    assert len(deployments) == 14  # ten before issue 22, two capture servers, two TPROXY servers
    for d in deployments:
        annotations = d["spec"]["template"]["metadata"]["annotations"]
        excluded = annotations["traffic.sidecar.istio.io/excludeInboundPorts"].split(",")
        # echo-excluded lists every test port too (issue 22), and keeps the control port.
        assert excluded[-1] == "19000", d["metadata"]
        ports = 18 + len(DUAL_PORTS[family])
        assert len(excluded) == (1 + ports if d["metadata"]["name"] == "echo-excluded" else 1), d["metadata"]
        container = d["spec"]["template"]["spec"]["containers"][0]
        assert container["args"][:3] == ["serve", "--control-port", "19000"]
        assert container["readinessProbe"]["httpGet"]["port"] == 19000
    for pod in _objects(family).pods:
        annotation = pod.annotations.get(kube.EXCLUDE_INBOUND_ANNOTATION)
        assert 19000 in capture.excluded_inbound_ports(annotation), pod.name


@pytest.mark.parametrize("family", FAMILIES)
def test_world_injection(family: IpFamily) -> None:
    objects = _objects(family)
    assert {(p.namespace, p.app): p.injected for p in objects.pods} == {
        ("mic-baseline", "echo"): False,
        ("mic-baseline", "client"): False,
        ("mic-mesh", "echo-none"): True,
        ("mic-mesh", "echo-localhost"): True,
        ("mic-mesh", "echo-instance"): True,
        ("mic-mesh", "echo-localhost-cross"): True,
        ("mic-mesh", "echo-instance-cross"): True,
        ("mic-mesh", "echo-empty"): True,
        ("mic-mesh", "echo-unlisted"): True,
        ("mic-mesh", "echo-excluded"): True,
        ("mic-mesh", "echo-not-included"): True,
        ("mic-mesh", "echo-tproxy"): True,
        ("mic-mesh", "echo-tproxy-instance"): True,
        ("mic-mesh", "client"): True,
    }
    # Only the TPROXY servers ask for TPROXY interception; every other pod keeps Istio's default.
    modes = {p.app: p.interception for p in objects.pods}
    assert {app for app, mode in modes.items() if mode != "REDIRECT"} == {"echo-tproxy", "echo-tproxy-instance"}
    assert {modes["echo-tproxy"], modes["echo-tproxy-instance"]} == {"TPROXY"}


DUAL_PORTS = {IpFamily.IPV4: [], IpFamily.IPV6: [8084, 8184, 8284, 9084, 9184, 9284]}
"""The `dual_wildcard` ports a server of each family serves (IPv6 only)."""


def test_world_port_numbers() -> None:
    numbers = [p.number for p in server_ports(IpFamily.IPV4)]
    assert sorted(numbers) == [
        7070,
        8081,
        8082,
        8083,
        8181,
        8182,
        8183,
        8281,
        8282,
        8283,
        9081,
        9082,
        9083,
        9181,
        9182,
        9183,
        9281,
        9282,
        9283,
    ]
    assert len(numbers) == len(set(numbers))
    ipv6 = [p.number for p in server_ports(IpFamily.IPV6)]
    assert sorted(set(ipv6) - set(numbers)) == DUAL_PORTS[IpFamily.IPV6]
    # None collides with the control port or a port istio-iptables / Envoy reserve.
    reserved = {19000, 22, 15000, 15001, 15004, 15006, 15008, 15020, 15021, 15053, 15090}
    assert not set(numbers) & reserved


@pytest.mark.parametrize("family", FAMILIES)
def test_world_server_args_carry_every_port(family: IpFamily) -> None:
    for d in (m for m in _manifests(family) if m["kind"] == "Deployment"):
        args = d["spec"]["template"]["spec"]["containers"][0]["args"]
        if d["metadata"]["name"] == "client":
            assert args == ["serve", "--control-port", "19000"]
        else:
            assert sorted(args[3:]) == sorted(
                [
                    "8081:loopback:http",
                    "8082:pod_ip:http",
                    "8083:wildcard:http",
                    "9081:loopback:tcp",
                    "9082:pod_ip:tcp",
                    "9083:wildcard:tcp",
                    "8181:loopback:http",
                    "8182:pod_ip:http",
                    "8183:wildcard:http",
                    "9181:loopback:tcp",
                    "9182:pod_ip:tcp",
                    "9183:wildcard:tcp",
                    "8281:loopback:http",
                    "8282:pod_ip:http",
                    "8283:wildcard:http",
                    "9281:loopback:tcp",
                    "9282:pod_ip:tcp",
                    "9283:wildcard:tcp",
                    "7070:wildcard:http",
                    # IPv6 asks a fourth bind: [::] with IPV6_V6ONLY off.
                    *(f"{n}:dual_wildcard:{'http' if n < 9000 else 'tcp'}" for n in DUAL_PORTS[family]),
                ]
            )


@pytest.mark.parametrize("family", FAMILIES)
def test_world_service_port_numbers_unique(family: IpFamily) -> None:
    for service in (m for m in _manifests(family) if m["kind"] == "Service"):
        numbers = [p["port"] for p in service["spec"]["ports"]]
        dual = [8084, 9084, 18284, 19284] if family is IpFamily.IPV6 else []
        expected = [7070, 8081, 8082, 8083, 9081, 9082, 9083, 18281, 18282, 18283, 19281, 19282, 19283, *dual]
        assert sorted(numbers) == sorted(expected)
        # Service port != targetPort for the remapped ports only (#42482, #42532: Sidecar keyed by container port).
        for p in service["spec"]["ports"]:
            remapped = p["port"] > 10000
            assert p["targetPort"] == (p["port"] - 10000 if remapped else p["port"])
            assert p["name"].endswith("-remapped") is remapped


@pytest.mark.parametrize("family", FAMILIES)
def test_world_service_port_names_unique(family: IpFamily) -> None:
    for service in (m for m in _manifests(family) if m["kind"] == "Service"):
        names = [p["name"] for p in service["spec"]["ports"]]
        assert len(names) == len(set(names)), f"{service['metadata']['name']}: {names}"


@pytest.mark.parametrize(
    ("value", "pod_ip", "family", "upstream", "bind"),
    [
        # Resolved by the proxy's IP family (reference section 4, "How the host is resolved").
        ("127.0.0.1:8081", "fd00::5", "ipv6", "::1", None),
        ("[::1]:8081", "10.244.0.5", "ipv4", "127.0.0.1", None),
        # [::]:P on a pod with no IPv6 address: [::1], no bind (cluster.go 1.14.4, 1.15.0, master), the mirror of
        # 0.0.0.0:P on a pod with no IPv4 address.
        ("[::]:8081", "10.244.0.5", "ipv4", "::1", None),
        ("[::]:8081", "fd00::5", "ipv6", "fd00::5", "::6"),
        ("0.0.0.0:8081", "fd00::5", "ipv6", "127.0.0.1", None),
        ("0.0.0.0:8081", "10.244.0.5", "ipv4", "10.244.0.5", "127.0.0.6"),
        (":8081", "10.244.0.5", "ipv4", "original_dst", "127.0.0.6"),
        (":8081", "fd00::5", "ipv6", "original_dst", "::6"),
    ],
)
def test_default_endpoint_resolution_by_family(
    value: str, pod_ip: str, family: str, upstream: str, bind: str | None
) -> None:
    got = controlplane._endpoint(value, (pod_ip,), controlplane.ADDRESSES[family], 8081)
    assert got == {"upstream": {"address": upstream, "port": 8081}, "bind": bind}


# --- the build's processes that die (issue 20 item 18) ------------------------------------------------------


def test_a_process_end_is_said_in_words() -> None:
    from conformance.backends.emulated.processes import describe_exit

    assert describe_exit(124) == "exit status 124"  # `timeout` ended the program it ran
    assert describe_exit(0) == "exit status 0"
    assert describe_exit(-9) == "signal 9 (SIGKILL)"
    assert describe_exit(-200) == "signal 200"


def test_a_death_voids_the_cells_it_carried_and_says_so_first() -> None:
    from conformance.backends.base import ProcessDeath
    from conformance.engine.probe import Observation, ProbeOutcome, judge
    from conformance.report.markdown import death_lines
    from conformance.spec import all_cells, expect
    from conformance.world.pods import PodRef

    death = ProcessDeath("sidecar of client.mic-mesh", "exit status 3", (PodRef("mic-mesh", "client"),), ("bye",), "k")
    reachable = next(c for c in all_cells() if expect(c).reachable)
    refused = ProbeOutcome("refused", None, None, None, 1.0, "", "r1")
    plain = judge(expect(reachable), Observation(reachable, refused, True, [refused]))
    void = judge(expect(reachable), Observation(reachable, refused, True, [refused], voided_by=(death.summary,)))
    assert void.reason == f"void, sidecar of client.mic-mesh died (exit status 3): {plain.reason}"
    # A cell that holds is not void: the verdict stands whatever else died.
    refusing = next(c for c in all_cells() if not expect(c).reachable and "refused" in expect(c).failure)
    holds = judge(expect(refusing), Observation(refusing, refused, True, [refused], voided_by=(death.summary,)))
    assert holds.passed
    assert holds.reason == ""
    assert death_lines([]) == []
    lines = death_lines([death])
    assert lines[1].startswith("a process of the build under test died during the run: the cells it carried")
    assert "- sidecar of client.mic-mesh died (exit status 3); pods: client.mic-mesh" in lines
    assert "      bye" in lines


# --- dual-stack pods (issue 23): the control plane's configs and the capture rules -----------------------------

DUAL_IPS = ("10.244.0.12", "fd00:10:244::c")
BOTH_BINDS = ["127.0.0.6", "::6"]


def _dual_inbound(app: str, mode: str) -> dict[str, Any]:
    objects = _objects(IpFamily.DUAL)
    config = controlplane.sidecar_config(_pod(objects, "mic-mesh", app), DUAL_IPS, "dual", objects, mode)
    assert config["pod"] == {"name": f"{app}-0", "namespace": "mic-mesh", "ips": list(DUAL_IPS)}
    inbound = config["inbound"]
    assert isinstance(inbound, dict)
    return inbound


@pytest.mark.parametrize(
    ("app", "mode", "address", "bind"),
    [
        # Passthrough: ORIGINAL_DST from 127.0.0.6 plus the extra source ::6 (cluster_builder.go).
        ("echo-none", "passthrough", "original_dst", BOTH_BINDS),
        # Legacy: actualLocalHosts[0], 127.0.0.1, no bind, for every client (cluster.go).
        ("echo-none", "legacy", "127.0.0.1", None),
        ("echo-empty", "passthrough", "original_dst", BOTH_BINDS),
        ("echo-empty", "legacy", "original_dst", BOTH_BINDS),
        # Sidecar forms, whatever the mode: 0.0.0.0:P the IPv4 pod IP from 127.0.0.6, [::]:P the IPv6 one from
        # ::6, 127.0.0.1:P 127.0.0.1 and [::1]:P ::1 (#47440), no bind.
        ("echo-instance", "legacy", DUAL_IPS[0], "127.0.0.6"),
        ("echo-instance-v6", "passthrough", DUAL_IPS[1], "::6"),
        ("echo-localhost", "passthrough", "127.0.0.1", None),
        ("echo-localhost-v6", "legacy", "::1", None),
    ],
)
def test_sidecar_config_of_a_dual_stack_pod(app: str, mode: str, address: str, bind: object) -> None:
    inbound = _dual_inbound(app, mode)
    listeners = inbound["listeners"]
    assert listeners
    assert {(item["upstream"]["address"], json_key(item["bind"])) for item in listeners} == {(address, json_key(bind))}


def json_key(value: object) -> object:
    """A hashable form of a bind (a list on dual-stack pods)."""
    return tuple(value) if isinstance(value, list) else value


@pytest.mark.parametrize("mode", ["passthrough", "legacy"])
def test_a_dual_stack_pod_s_catch_all_passthrough_has_both_sources(mode: str) -> None:
    # One InboundPassthroughCluster with both sources (1.23+, #51503); unlisted ports go there.
    passthrough = _dual_inbound("echo-unlisted", mode)["passthrough"]
    assert passthrough["cluster"] == "InboundPassthroughCluster"
    assert passthrough["bind"] == BOTH_BINDS
    assert passthrough["upstream"] == {"address": "original_dst", "port": None}


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_single_stack_configs_keep_a_string_bind(family: str) -> None:
    objects = _objects(IpFamily(family))
    for app in ("echo-none", "echo-instance", "echo-empty"):
        config = controlplane.sidecar_config(
            _pod(objects, "mic-mesh", app), POD_IP[family], family, objects, "passthrough"
        )
        inbound = config["inbound"]
        assert isinstance(inbound, dict)
        binds = {item["bind"] for item in inbound["listeners"]} | {inbound["passthrough"]["bind"]}
        assert binds == {"127.0.0.6" if family == "ipv4" else "::6"}
        # The same configuration whether the address comes as a string or as the one-address list.
        same = controlplane.sidecar_config(
            _pod(objects, "mic-mesh", app), [POD_IP[family]], family, objects, "passthrough"
        )
        assert same == config


@pytest.mark.parametrize("tproxy", [False, True])
def test_a_dual_stack_pod_gets_its_capture_rules_in_both_families(tproxy: bool) -> None:
    excluded = (15090, 15021, 15020, 19000)
    loads = capture.loads(("ipv4", "ipv6"), excluded, tproxy=tproxy)
    assert loads == capture.loads(("ipv4",), excluded, tproxy=tproxy) + capture.loads(
        ("ipv6",), excluded, tproxy=tproxy
    )
    tables = {command[0]: data.decode() for command, data in loads if command[0].endswith("-restore")}
    assert set(tables) == {"iptables-restore", "ip6tables-restore"}
    assert tables["iptables-restore"].startswith(capture.nat_rules(False, excluded, tproxy=tproxy))
    assert tables["ip6tables-restore"].startswith(capture.nat_rules(True, excluded, tproxy=tproxy))
    if not tproxy:
        for rules in tables.values():
            assert "-j REDIRECT --to-ports 15006" in rules
            assert "-j REDIRECT --to-ports 15001" in rules


def _reference_sidecar() -> Any:
    spec = importlib.util.spec_from_file_location("unit_sidecar", Path(capture.__file__).with_name("sidecar.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("bind", "upstream", "picked"),
    [
        (("127.0.0.6", "::6"), "10.244.0.12", "127.0.0.6"),
        (("127.0.0.6", "::6"), "fd00:10:244::c", "::6"),
        (("127.0.0.6", "::6"), "127.0.0.1", "127.0.0.6"),
        (("127.0.0.6",), "fd00:10:244::c", None),
        ("::6", "fd00:10:244::c", "::6"),
        (None, "::1", None),
    ],
)
def test_the_reference_sidecar_picks_the_bind_of_the_upstream_s_family(
    bind: object, upstream: str, picked: str | None
) -> None:
    assert _reference_sidecar().pick_bind(bind, upstream) == picked
