"""The rules of TPROXY interception (`sidecar.istio.io/interceptionMode: TPROXY`), the second interception mode.

`semantics.expect()` applies them to the cells whose `interception` is TPROXY (cells.py asks those under the
passthrough profile only). Everything before the sidecar's upstream dial is the REDIRECT model's (which endpoint
a port's inbound cluster dials: `semantics.inbound_target`); what TPROXY changes is how the connection reaches
the sidecar and the address the sidecar dials from. Facts: shared/reference/settings-dualstack.md §1.
Left out, with the reason (docs/spec.md "TPROXY"): the legacy profile and the Sidecar localhost
forms (Envoy dials 127.0.0.1 from a non-local address: route_localnet, UNCONFIRMED), the cross-family literals,
the empty and unlisted Sidecar forms (not traced), and IPv6 before 1.12.0 (capabilities.TPROXY_IPV6_SINCE).
"""

from __future__ import annotations

from conformance.spec.rules import Rule

TPROXY_CAPTURE = "tproxy-capture"
TPROXY_ORIGINAL_SRC = "tproxy-original-src"
TPROXY_IN_POD = "tproxy-in-pod-not-captured"
TPROXY_LOCALHOST_UNCONFIRMED = (
    "a TPROXY sidecar dialling localhost from the client's address reaches the app only with route_localnet=1 "
    "(settings-dualstack.md §1(c), UNCONFIRMED): such cells are not encoded"
)

TPROXY_RULES: tuple[Rule, ...] = (
    Rule(
        TPROXY_CAPTURE,
        "TPROXY: istio-iptables diverts inbound TCP in the mangle table instead of nat REDIRECT (ISTIO_INBOUND: "
        "`-j ISTIO_TPROXY`, `TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006`; established connections "
        "`-j ISTIO_DIVERT`, mark 1337; `ip rule fwmark 1337 lookup 133`, `local default dev lo table 133`), so the "
        "connection reaches the sidecar with its original destination as the socket's local address, and the "
        "sidecar's inbound cluster is the one REDIRECT picks. Outbound capture stays nat; the proxy runs as uid 0 "
        "/ gid 1337 with NET_ADMIN. IPv6 from 1.12.0.",
        "tools/istio-iptables/pkg/cmd/run.go (1.10.0) handleInboundPortsInclude L138-203 and L546-556 (connmark "
        "save/restore); capture/run.go (1.12.0) L141-165, L307-385 (IPv6, #34274, #35359); testdata/tproxy.golden; "
        "manifests/charts/istio-control/istio-discovery/files/injection-template.yaml (1.10.0) L335-356",
        "settings-dualstack.md §1(a)",
    ),
    Rule(
        TPROXY_ORIGINAL_SRC,
        "TPROXY: inbound listeners carry Envoy's original_src listener filter with mark 1337; its PREBIND socket "
        "option sets the upstream connection's local address to the downstream client's address (port 0, "
        "IP_TRANSPARENT, SO_MARK 1337), and Envoy takes that address before the cluster's bind 127.0.0.6 / ::6. So "
        "where the sidecar dials the pod IP (a declared or remapped port in passthrough, an undeclared port, a "
        "Sidecar 0.0.0.0:P / [::]:P) the app sees the client pod's IP; a loopback-only app is still unreachable.",
        "pilot/pkg/xds/filters/filters.go OriginalSrc (Mark 1337, 1.9.0, #28457); listener_builder.go L189-192 and "
        "listener.go L1379-1381 (1.10.0), listener_inbound.go L309-310, L543-544 (master); envoy "
        "source/extensions/filters/common/original_src/original_src_socket_option.cc setOption, "
        "socket_option_factory.cc; source/common/network/connection_impl.cc ClientConnectionImpl (PREBIND options "
        "before source_address); tests/integration/pilot/original_src_addr_test.go TestTproxy",
        "settings-dualstack.md §1(b), §1(c)",
    ),
    Rule(
        TPROXY_IN_POD,
        "TPROXY: a pod's own connections to loopback or to its own pod IP arrive on lo unmarked and are returned "
        "before the TPROXY rule (ISTIO_INBOUND `-i lo -m mark ! --mark 1338 -j RETURN`; only the proxy's own "
        "traffic on lo is marked 1338), so they reach the app as its bind allows, as under REDIRECT (1.11+; 1.10 "
        "diverted them, #31095).",
        "tools/istio-iptables/pkg/cmd/run.go (1.11.0) L569-600, #31165 (commit 3823c14599b, fixes #31095); "
        "capture/run.go L411-446 (master)",
        "settings-dualstack.md §1(a)",
    ),
)
