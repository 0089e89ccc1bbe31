"""The in-pod capture rules of ambient mode, as istio-cni writes them into an enrolled pod since Istio 1.24.

istio-cni (cni/pkg/iptables/iptables.go; testdata/default.golden and default_ipv6.golden, the same at 1.24.0)
REDIRECTs a pod's inbound TCP to ztunnel's in-pod 15006 and its outbound TCP to 15001, leaves the HBONE port
15008 alone, and recognises ztunnel's own sockets by the mark 0x539 (config.go InpodMark = 1337). Replies of
connections ztunnel made transparently (from the client's address) are brought back to ztunnel by a connmark
(0x111) restored on OUTPUT and an ip rule that sends that fwmark to a local routing table (iptables_linux.go).
Before 1.24 the same pods used TPROXY (#52622); this module writes the REDIRECT form only. The golden's DNS
(15053) and UDP conntrack-zone rules are left out: nothing in the suite resolves names inside an enrolled pod.
What the rules do to a connection is then the kernel's business, not ours (reference: probes-ambient.md §2,
emulation.md "Ambient in-pod redirection").
"""

from __future__ import annotations

from conformance.backends.emulated import netns

INBOUND_PORT = 15006
"""ztunnel's in-pod plaintext inbound listener."""
OUTBOUND_PORT = 15001
"""ztunnel's in-pod outbound listener."""
TUNNEL_PORT = 15008
"""ztunnel's in-pod HBONE listener; never redirected."""
ZTUNNEL_MARK = 0x539
"""SO_MARK of every ztunnel socket (InpodMark = 1337)."""
CONNMARK = 0x111
"""The connmark given to connections ztunnel's sockets started; restored on the replies."""
MASK = 0xFFF
ROUTE_TABLE = 100
RULE_PRIORITY = 32764
KUBELET_PROBE_SOURCE = {False: "169.254.7.127/32", True: "fd16:9254:7127:1337:ffff:ffff:ffff:ffff/128"}
"""The address istio-cni SNATs kubelet probes to on the node (hostprobe.golden); those bypass ztunnel. The IPv6 one
came with #50747 in 1.23.0, the first release whose ambient mode runs on IPv6 (this node models the current one)."""


def rules(ipv6: bool) -> str:
    """The mangle and nat tables of an enrolled pod, in iptables-restore format."""
    localhost = "::1/128" if ipv6 else "127.0.0.1/32"
    probe = KUBELET_PROBE_SOURCE[ipv6]
    mark = f"0x{ZTUNNEL_MARK:x}/0x{MASK:x}"
    connmark = f"0x{CONNMARK:x}/0x{MASK:x}"
    lines = [
        "*mangle",
        "-N ISTIO_PRERT",
        "-N ISTIO_OUTPUT",
        "-A PREROUTING -j ISTIO_PRERT",
        "-A OUTPUT -j ISTIO_OUTPUT",
        # Replies to a connection ztunnel opened transparently carry the connmark back, so they are routed
        # to the local table (and so to ztunnel's socket) instead of out of eth0 towards the spoofed client.
        f"-A ISTIO_OUTPUT -m connmark --mark {connmark} "
        "-j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff",
        f"-A ISTIO_PRERT -m mark --mark {mark} -j CONNMARK --set-xmark {connmark}",
        "COMMIT",
        "*nat",
        "-N ISTIO_PRERT",
        "-N ISTIO_OUTPUT",
        "-A PREROUTING -j ISTIO_PRERT",
        "-A OUTPUT -j ISTIO_OUTPUT",
        f"-A ISTIO_OUTPUT -d {probe} -p tcp -m tcp -j ACCEPT",
        f"-A ISTIO_OUTPUT -p tcp -m mark --mark {connmark} -j ACCEPT",
        f"-A ISTIO_OUTPUT ! -d {localhost} -o lo -j ACCEPT",
        f"-A ISTIO_OUTPUT ! -d {localhost} -p tcp -m mark ! --mark {mark} -j REDIRECT --to-ports {OUTBOUND_PORT}",
        f"-A ISTIO_PRERT -s {probe} -p tcp -m tcp -j ACCEPT",
        f"-A ISTIO_PRERT ! -d {localhost} -p tcp -m tcp ! --dport {TUNNEL_PORT} -m mark ! --mark {mark} "
        f"-j REDIRECT --to-ports {INBOUND_PORT}",
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


HOST_PROBE_CHAIN = "ISTIO_POSTRT"


def host_probe_rule(pod_ip: str, ipv6: bool) -> str:
    """The node's nat rule that SNATs the node's own TCP connections to an enrolled pod to the probe address.

    istio-cni's host rules (hostprobe.golden: `-A ISTIO_POSTRT -m owner --socket-exists -p tcp -j SNAT
    --to-source 169.254.7.127`) match the enrolled pods by an ipset of their IPs in current releases; here one
    rule per enrolled pod plays the ipset. The pod's ISTIO_PRERT then lets that source past ztunnel.
    """
    source = KUBELET_PROBE_SOURCE[ipv6].split("/")[0]
    mask = "128" if ipv6 else "32"
    return f"-A {HOST_PROBE_CHAIN} -d {pod_ip}/{mask} -m owner --socket-exists -p tcp -j SNAT --to-source {source}"


def host_probe_rules(pod_ips: list[str], ipv6: bool) -> list[str]:
    """The chain and its rules, for the node's nat table in iptables-restore format (inside `*nat`)."""
    return [
        f":{HOST_PROBE_CHAIN} - [0:0]",
        f"-A POSTROUTING -j {HOST_PROBE_CHAIN}",
        *(host_probe_rule(ip, ipv6) for ip in pod_ips),
    ]


def add_host_probe_rule(node: str, pod_ip: str, ipv6: bool) -> None:
    """Add one enrolled pod to the node's probe SNAT (a pod created after the cluster)."""
    tool = "ip6tables" if ipv6 else "iptables"
    netns.run(node, [tool, "-t", "nat", *host_probe_rule(pod_ip, ipv6).split()])


def install(namespace: str) -> netns.Started:
    """Load both families' rules, the fwmark rule and the local route into a pod's namespace (lo must be up).

    Returns once the loading has started: `wait()` on the result before the pod's containers start.
    """
    fwmark = f"0x{CONNMARK:x}/0x{MASK:x}"
    table = str(ROUTE_TABLE)
    policy = (
        f"rule add fwmark {fwmark} pref {RULE_PRIORITY} lookup {table}\nroute add local {{}} dev lo table {table}\n"
    )
    return netns.start_all(
        namespace,
        [
            (["iptables-restore"], rules(False).encode()),
            (["ip6tables-restore"], rules(True).encode()),
            (["ip", "-4", "-batch", "-"], policy.format("0.0.0.0/0").encode()),
            (["ip", "-6", "-batch", "-"], policy.format("::/0").encode()),
        ],
    )


def dump(namespace: str) -> str:
    """The pod's ambient tables and policy routing, for failure reports."""
    v4 = netns.run(namespace, ["iptables-save"])
    v6 = netns.run(namespace, ["ip6tables-save"])
    rules_v4 = netns.run(namespace, ["ip", "-4", "rule"])
    return f"# IPv4\n{v4}\n# IPv6\n{v6}\n# ip rule\n{rules_v4}"
