"""Istio's sidecar capture rules, as istio-iptables writes them, loaded into a pod's namespace.

The rule text follows tools/istio-iptables/pkg/cmd/run.go at Istio 1.10.0 for the injected arguments
`-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b <include> -d 15090,15021,15020[,excluded]` (reference
section 6): `-b` is the pod's `includeInboundPorts` annotation, `*` when absent; handleInboundPortsInclude writes
the PREROUTING jump only for a non-empty include list, and the exclusions only when it is `*`. On an IPv6 pod
the same rules go in for IPv6 with `::6/128` and `::1/128`, and `::6` is added to lo; on an IPv4 pod only the
IPv4 rules, as istio-iptables does (EnableInboundIPv6 from the pod IP).
What the rules do to a connection is then the kernel's business, not ours.

A pod annotated `sidecar.istio.io/interceptionMode: TPROXY` gets istio-iptables' `-m TPROXY` rules instead for
inbound (mangle ISTIO_INBOUND / ISTIO_DIVERT / ISTIO_TPROXY, run.go 1.10.0 handleInboundPortsInclude, with the
1.11.0 additions of #31165 and the 1.12.0 IPv6 form of #34274/#35359, as testdata/tproxy.golden has them), the
policy route `fwmark 1337 lookup 133` / `local default dev lo table 133`, and the same nat rules for outbound
(settings-dualstack.md §1(a)). Its proxy runs as uid 0 / gid 1337 (the injection template's TPROXY branch).
"""

from __future__ import annotations

from collections.abc import Sequence

from conformance.backends.emulated import netns

PROXY_UID = 1337
PROXY_GID = 1337
INBOUND_CAPTURE_PORT = 15006
OUTBOUND_CAPTURE_PORT = 15001
DEFAULT_EXCLUDED_INBOUND = (15090, 15021, 15020)
"""The `-d` list of the 1.10 injection template: Prometheus, health and status ports."""
SSH_PORT = 22
"""Hard-coded inbound exclusion of istio-iptables until 1.13."""
TPROXY = "TPROXY"
"""The `-m` value (pod annotation `sidecar.istio.io/interceptionMode`) that selects the TPROXY rules."""
TPROXY_MARK = 1337
"""istio-iptables' default `--inbound-tproxy-mark` (root.go 1.10.0 L243): also Envoy's original_src mark."""
TPROXY_ROUTE_TABLE = 133
"""istio-iptables' default `--inbound-tproxy-route-table` (root.go 1.10.0 L248)."""
PROXY_LOOPBACK_MARK = 1338
"""The mark of the proxy's own traffic on lo that must still be diverted (1.11.0, #31165)."""
TPROXY_PROXY_UID = 0
"""A TPROXY pod's proxy runs as root with group 1337 (injection-template.yaml 1.10.0 L335-356)."""


def excluded_inbound_ports(annotation: str | None) -> tuple[int, ...]:
    """The injector's `-d` list: the defaults, then the pod's `excludeInboundPorts` annotation."""
    extra = tuple(int(p) for p in (annotation or "").split(",") if p.strip())
    return (*DEFAULT_EXCLUDED_INBOUND, *extra)


def included_inbound_ports(annotation: str | None) -> str:
    """The injector's `-b`: the pod's `includeInboundPorts` annotation as written, `*` only when it is absent.

    Istio's template.go getAnnotation falls back to the default only for a missing key, so an empty annotation
    reaches istio-iptables empty (settings-dualstack.md §3).
    """
    return "*" if annotation is None else annotation.strip()


def _inbound_rules(included: str, excluded: Sequence[int]) -> list[str]:
    # run.go (1.10.0) handleInboundPortsInclude: nothing at all for an empty include list; for `*` port 22 and the
    # exclusions RETURN, then everything else is redirected; for a list, only the listed ports are redirected.
    if not included:
        return []
    rules = ["-A PREROUTING -p tcp -j ISTIO_INBOUND"]
    if included == "*":
        rules.append(f"-A ISTIO_INBOUND -p tcp --dport {SSH_PORT} -j RETURN")
        rules += [f"-A ISTIO_INBOUND -p tcp --dport {port} -j RETURN" for port in excluded]
        return [*rules, "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT"]
    ports = [p.strip() for p in included.split(",") if p.strip()]
    return rules + [f"-A ISTIO_INBOUND -p tcp --dport {port} -j ISTIO_IN_REDIRECT" for port in ports]


def nat_rules(ipv6: bool, excluded: Sequence[int], included: str = "*", tproxy: bool = False) -> str:
    """The nat table of a meshed pod, in iptables-restore format (`included`: istio-iptables' `-b`).

    In TPROXY mode the inbound capture is in the mangle table (`mangle_rules`), so the nat table has none.
    """
    passthrough = "::6/128" if ipv6 else "127.0.0.6/32"
    localhost = "::1/128" if ipv6 else "127.0.0.1/32"
    uid, gid = PROXY_UID, PROXY_GID
    lines = [
        "*nat",
        "-N ISTIO_INBOUND",
        "-N ISTIO_REDIRECT",
        "-N ISTIO_IN_REDIRECT",
        "-N ISTIO_OUTPUT",
        "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
        f"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_CAPTURE_PORT}",
        f"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {INBOUND_CAPTURE_PORT}",
        *(() if tproxy else _inbound_rules(included, excluded)),
        "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
        # The proxy's own connection to the pod IP, from 127.0.0.6, must not loop back into 15006.
        f"-A ISTIO_OUTPUT -o lo -s {passthrough} -j RETURN",
        f"-A ISTIO_OUTPUT -o lo ! -d {localhost} -m owner --uid-owner {uid} -j ISTIO_IN_REDIRECT",
        f"-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner {uid} -j RETURN",
        f"-A ISTIO_OUTPUT -m owner --uid-owner {uid} -j RETURN",
        f"-A ISTIO_OUTPUT -o lo ! -d {localhost} -m owner --gid-owner {gid} -j ISTIO_IN_REDIRECT",
        f"-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner {gid} -j RETURN",
        f"-A ISTIO_OUTPUT -m owner --gid-owner {gid} -j RETURN",
        f"-A ISTIO_OUTPUT -d {localhost} -j RETURN",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


def mangle_rules(ipv6: bool, excluded: Sequence[int]) -> str:
    """The mangle table of a TPROXY pod, in iptables-restore format (testdata/tproxy.golden, 1.11+).

    The suite asks TPROXY of fully captured servers only, so `includeInboundPorts` is not modelled here.
    """
    passthrough = "::6/128" if ipv6 else "127.0.0.6/32"
    localhost = "::1/128" if ipv6 else "127.0.0.1/32"
    uid, gid, mark = PROXY_UID, PROXY_GID, TPROXY_MARK
    lines = [
        "*mangle",
        "-N ISTIO_DIVERT",
        "-N ISTIO_TPROXY",
        "-N ISTIO_INBOUND",
        f"-A ISTIO_DIVERT -j MARK --set-mark {mark}",
        "-A ISTIO_DIVERT -j ACCEPT",
        f"-A ISTIO_TPROXY ! -d {localhost} -p tcp -j TPROXY --tproxy-mark {mark}/0xffffffff "
        f"--on-port {INBOUND_CAPTURE_PORT}",
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
        # 1.11.0 (#31165) inserts these three first: the proxy's original_src dials (mark 1337), its dials from
        # 127.0.0.6 (pilot-agent's probes, "envoy/pilot-agent ==> app by 127.0.0.6 --> podip") and anything
        # else on lo that the OUTPUT rules below did not mark 1338 (the pod's own traffic) are not diverted.
        f"-A ISTIO_INBOUND -p tcp -m mark --mark {mark} -j RETURN",
        f"-A ISTIO_INBOUND -p tcp -s {passthrough} -i lo -j RETURN",
        f"-A ISTIO_INBOUND -p tcp -i lo -m mark ! --mark {PROXY_LOOPBACK_MARK} -j RETURN",
        f"-A ISTIO_INBOUND -p tcp --dport {SSH_PORT} -j RETURN",
        *(f"-A ISTIO_INBOUND -p tcp --dport {port} -j RETURN" for port in excluded),
        "-A ISTIO_INBOUND -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT",
        "-A ISTIO_INBOUND -p tcp -j ISTIO_TPROXY",
        # The proxy's transparent connections: their mark is kept on the connection, and restored on the app's
        # replies, so that those are routed to table 133 (lo) and reach the proxy instead of leaving by eth0.
        f"-A PREROUTING -p tcp -m mark --mark {mark} -j CONNMARK --save-mark",
        f"-A OUTPUT -p tcp -o lo -m mark --mark {mark} -j RETURN",
        f"-A OUTPUT ! -d {localhost} -p tcp -o lo -m owner --uid-owner {uid} -j MARK --set-mark {PROXY_LOOPBACK_MARK}",
        f"-A OUTPUT ! -d {localhost} -p tcp -o lo -m owner --gid-owner {gid} -j MARK --set-mark {PROXY_LOOPBACK_MARK}",
        f"-A OUTPUT -p tcp -m connmark --mark {mark} -j CONNMARK --restore-mark",
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


def tproxy_routes(ipv6: bool) -> str:
    """The policy route of TPROXY mode, for `ip -batch`: marked packets are delivered locally (lo)."""
    default = "::/0" if ipv6 else "0.0.0.0/0"
    return (
        f"rule add fwmark {TPROXY_MARK} lookup {TPROXY_ROUTE_TABLE}\n"
        f"route add local {default} dev lo table {TPROXY_ROUTE_TABLE}\n"
    )


def loads(
    families: Sequence[str], excluded: Sequence[int], included: str = "*", tproxy: bool = False
) -> list[tuple[list[str], bytes]]:
    """The commands and their input that load a pod's capture rules, for each of the pod's families (`ipv4`, `ipv6`).

    istio-iptables installs the IPv6 rules only when the pod IP is IPv6 (1.10 tools/istio-iptables/pkg/cmd/
    root.go `EnableInboundIPv6 = podIP.To4() == nil`); on an IPv4 pod ip6tables stays empty (reference §6). On a
    dual-stack pod with ISTIO_DUAL_STACK on it writes the same rules in both (settings-dualstack.md §2, "Flag on":
    v4 and v6 tables alike, REDIRECT to 15006 / 15001), so `families` is both there.
    With `tproxy`, the TPROXY form (mangle rules and policy route; IPv6 as 1.12+ writes it).
    """
    out: list[tuple[list[str], bytes]] = []
    for family in families:
        ipv6 = family == "ipv6"
        table = "ip6tables-restore" if ipv6 else "iptables-restore"
        tables = nat_rules(ipv6, excluded, included, tproxy) + (mangle_rules(ipv6, excluded) if tproxy else "")
        out.append(([table], tables.encode()))
        if tproxy:
            out.append((["ip", "-6" if ipv6 else "-4", "-batch", "-"], tproxy_routes(ipv6).encode()))
    return out


def install(
    namespace: str, families: Sequence[str], excluded: Sequence[int], included: str = "*", tproxy: bool = False
) -> netns.Started:
    """Load the capture rules into a pod's namespace (istio-init's job), for the pod's families (`loads`).

    Returns once the loading has started: `wait()` on the result before the pod's containers start.
    """
    return netns.start_all(namespace, loads(families, excluded, included, tproxy))


def dump(namespace: str) -> str:
    """The pod's nat and mangle tables as iptables-save prints them, and its policy rules, for failure reports."""
    v4 = netns.run(namespace, ["iptables-save", "-t", "nat"]) + netns.run(namespace, ["iptables-save", "-t", "mangle"])
    v6 = netns.run(namespace, ["ip6tables-save", "-t", "nat"]) + netns.run(
        namespace, ["ip6tables-save", "-t", "mangle"]
    )
    rules = netns.run(namespace, ["ip", "-4", "rule"]) + netns.run(namespace, ["ip", "-6", "rule"])
    return f"# IPv4\n{v4}\n# IPv6\n{v6}\n# ip rule\n{rules}"
