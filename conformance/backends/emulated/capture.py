"""Istio's sidecar capture rules, as istio-iptables writes them, loaded into a pod's namespace.

The rule text follows tools/istio-iptables/pkg/cmd/run.go at Istio 1.10.0 for the injected arguments
`-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b <include> -d 15090,15021,15020[,excluded]` (reference
section 6): `-b` is the pod's `includeInboundPorts` annotation, `*` when absent; handleInboundPortsInclude writes
the PREROUTING jump only for a non-empty include list, and the exclusions only when it is `*`. On an IPv6 pod
the same rules go in for IPv6 with `::6/128` and `::1/128`, and `::6` is added to lo; on an IPv4 pod only the
IPv4 rules, as istio-iptables does (EnableInboundIPv6 from the pod IP).
What the rules do to a connection is then the kernel's business, not ours.
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


def nat_rules(ipv6: bool, excluded: Sequence[int], included: str = "*") -> str:
    """The nat table of a meshed pod, in iptables-restore format (`included`: istio-iptables' `-b`)."""
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
        *_inbound_rules(included, excluded),
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


def install(namespace: str, excluded: Sequence[int], ipv6: bool, included: str = "*") -> netns.Started:
    """Load the capture rules into a pod's namespace (istio-init's job), for the pod's IP family only.

    istio-iptables installs the IPv6 rules only when the pod IP is IPv6 (1.10 tools/istio-iptables/pkg/cmd/
    root.go `EnableInboundIPv6 = podIP.To4() == nil`); on an IPv4 pod ip6tables stays empty (reference §6).
    Returns once the loading has started: `wait()` on the result before the pod's containers start.
    """
    table = "ip6tables-restore" if ipv6 else "iptables-restore"
    return netns.start_all(namespace, [([table], nat_rules(ipv6, excluded, included).encode())])


def dump(namespace: str) -> str:
    """The pod's nat tables as iptables-save prints them, for failure reports."""
    v4 = netns.run(namespace, ["iptables-save", "-t", "nat"])
    v6 = netns.run(namespace, ["ip6tables-save", "-t", "nat"])
    return f"# IPv4\n{v4}\n# IPv6\n{v6}"
