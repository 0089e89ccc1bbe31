"""The fourth bind, `dual_wildcard`: `[::]` with IPV6_V6ONLY off, the socket most apps really open.

Go's `net.Listen("tcp", ":8080")` (and Java, and most servers) opens one AF_INET6 socket that also accepts IPv4,
IPv4-mapped. The suite's `wildcard` is IPv6-only in an IPv6 pod, so it never meets the case where the two differ:
an IPv4 connection into an IPv6 pod. In an IPv6 run the only such path is a Sidecar `0.0.0.0:P`, which 1.14.4+
resolves to 127.0.0.1 on a pod with no IPv4 address (rule `sidecar-instance-without-ipv4`): no bind of the other
three admits it, a dual socket does. Every other IPv6 path (the pod IP from ::6, ::1, the client's IPv6 address)
reaches both sockets alike. Facts: shared/reference/settings-dualstack.md §5.

Left for the dual-stack family (issue 23): the IPv4 clients, legacy mode and rewritten probes of a dual-stack pod.
"""

from __future__ import annotations

from conformance.spec.rules import Rule

DUAL_WILDCARD_ACCEPTS_IPV4 = "dual-wildcard-accepts-ipv4"

DUAL_WILDCARD_RULES: tuple[Rule, ...] = (
    Rule(
        DUAL_WILDCARD_ACCEPTS_IPV4,
        "An app bound to [::] with IPV6_V6ONLY off (bind dual_wildcard: Go's wildcard listen) also accepts IPv4 "
        "connections, IPv4-mapped: on an IPv6 pod the 127.0.0.1:P a Sidecar 0.0.0.0:P dials (1.14.4+) reaches it, "
        "and the app sees 127.0.0.1 (a Go app prints an IPv4-mapped peer in dotted form; the echo program reports "
        "it so too; getpeername shows ::ffff:127.0.0.1). An IPv6-only [::] socket refuses the same connection.",
        "golang/go src/net/ipsock_posix.go favoriteAddrFamily (ipv6only=false for wildcard listens), src/net/ip.go "
        "IP.String (IPv4-mapped in dotted form); Linux ipv6(7) IPV6_V6ONLY; Istio cluster.go "
        "buildInboundClustersFromSidecar (1.15.0, 1.14.4: 0.0.0.0:P without an IPv4 address dials 127.0.0.1)",
        "settings-dualstack.md §5 (IPv6-only pod)",
    ),
)
