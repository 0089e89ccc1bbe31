"""The pods' network: the node and its bridge, each pod's namespace, link, address, capture rules, and Services.

Split from the containers (containers.py) because it is the other half of a pod: what the CNI plugin, istio-init
and kube-proxy (its DNAT to a ClusterIP) make before a container starts, and what is left to read while they
run (which ports a pod listens on; an HTTP GET from the node, as the kubelet or a port-forward sends it). It
starts no process of its own beyond the short-lived iptables loaders, and it holds every namespace this run
created: `close()` removes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pyroute2 import IPRoute

from conformance.backends.base import BackendError
from conformance.backends.emulated import ambient_capture, capture, kube, listeners, netns
from conformance.backends.emulated.pod import EmulatedPod
from conformance.backends.precheck import Listener
from conformance.world.pods import PodRef

_T = TypeVar("_T")

IFA_F_NODAD = 0x02
ENROLLED_PORT_RANGE = "20000 32767"
"""The ephemeral ports of an enrolled pod's namespace (both families): below the clients' (32768-60999).

ztunnel dials an app from the client's address, on a port of the app's namespace. Drawn from the range the
clients' probes leave from, that port was now and then one a client went on to use towards the same app port:
conntrack took the client's SYN for ztunnel's finished connection (so it was not redirected to ztunnel), and
the app's TIME_WAIT socket of that connection dropped it (PAWS), a probe that took 1-2 s or timed out. Disjoint
ranges rule that out; no cell depends on a port number."""
ENROLLED_TCP_SETTINGS = {"net.ipv4.tcp_early_demux": "0"}
"""TCP settings of an enrolled pod's namespace (the IPv4 key governs IPv6 TCP too): no early demux.

A client may dial two ports of one enrolled pod from the same source port at once (the kernel picks a
connection's port per destination, so Envoy and most proxies do now and then). istio-cni's REDIRECT sends both
to ztunnel's 15006, where they would be one connection; conntrack sees the clash and gives the second a new
source port at LOCAL_IN. But early demux has matched the SYN to the first connection's socket before that
rewrite, and the kernel's check that drops such a stale match (nf_nat_ipv4_local_in / nf_nat_ipv6_local_in,
"undo erroneous tcp edemux lookup after port clash") skips transparent sockets, which ztunnel's are (its
listeners carry IP_TRANSPARENT). The SYN then met the established connection (a challenge ACK, no SYN-ACK), and
the client retransmitted until the first connection ended: a 1 s stall, a timeout or a reset cell now and
then (issue 20: a sidecar client's cells towards an enrolled pod, in one run of three on some boots). Without
early demux the socket is looked up after the rewrite, so the second connection reaches the listener at once,
as it does in a sidecar pod (whose proxy listener is not transparent). Only when the socket lookup happens
changes: nothing a cell observes."""


@dataclass(frozen=True)
class Addressing:
    """Pod, Service and bridge addresses of one IP family (kind's defaults, so reports read alike)."""

    family: str
    gateway: str
    prefix: int
    pod_base: str
    service_base: str

    def pod_address(self, index: int) -> str:
        """The index-th pod IP."""
        return str(ipaddress.ip_address(self.pod_base) + index)

    def service_address(self, index: int) -> str:
        """The index-th ClusterIP."""
        return str(ipaddress.ip_address(self.service_base) + index)


ADDRESSING = {
    "ipv4": Addressing("ipv4", "10.244.0.1", 24, "10.244.0.10", "10.96.0.10"),
    "ipv6": Addressing("ipv6", "fd00:10:244::1", 64, "fd00:10:244::a", "fd00:10:96::a"),
}
FAMILIES = {"ipv4": ("ipv4",), "ipv6": ("ipv6",), "dual": ("ipv4", "ipv6")}
"""The address families of a run's pods, the primary (status.podIP) first: IPv4 first on dual-stack pods, as kind
lists them (world/layout.py primary_family)."""


def _add_address(ipr: IPRoute, index: int, address: str, prefix: int) -> None:
    # IPv6 addresses skip duplicate address detection, or binds fail with EADDRNOTAVAIL for ~2 s.
    flags = IFA_F_NODAD if ":" in address else 0
    ipr.addr("add", index=index, address=address, prefixlen=prefix, flags=flags)


def _ipr_in(name: str) -> IPRoute:
    with netns.entered(name):
        return IPRoute()


class Network:
    """The node (bridge, forwarding, kube-proxy's rules) and the pods' namespaces, by the names tests use."""

    def __init__(self, family: str, tag: str) -> None:
        if family not in FAMILIES:
            raise ValueError(f"ip family {family!r}: expected ipv4, ipv6 or dual")
        self.family = family
        self.families = FAMILIES[family]
        """The pods' address families, primary first (both on dual-stack pods)."""
        self.addressing = ADDRESSING[self.families[0]]
        """The primary family's addressing."""
        self.tag = tag
        self.node = f"{netns.PREFIX}{tag}-node"
        self.pods: dict[PodRef, EmulatedPod] = {}
        self.services: dict[tuple[str, str], dict[str, str]] = {}
        """Each Service's ClusterIP, by family (one of each on dual-stack: ipFamilyPolicy RequireDualStack)."""
        self.endpoints: list[tuple[kube.Service, str, str]] = []
        """Each Service with its ClusterIP and the address of the one pod it selects (as ztunnel is told)."""
        self.node_fd = -1
        self.home_fd = -1
        """The harness's own namespace, to step back into after stepping into a pod or the node."""
        self._node_ipr: IPRoute | None = None
        self._created: list[str] = []
        self._next_index = 0
        self._diag: dict[PodRef, socket.socket] = {}
        """Each pod's sock_diag socket (_diag_read); closed before its namespace goes, which it holds."""
        self._diag_lock = threading.Lock()

    def open(self) -> int:
        """Hold the harness's own namespace (`home_fd`), to step back into; its handle."""
        self.home_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        return self.home_fd

    # --- building ----------------------------------------------------------------------------------

    def _new_namespace(self, name: str) -> None:
        netns.create(name)
        self._created.append(name)

    def create_node(self) -> None:
        """The node namespace: a bridge with the pods' gateway address, forwarding as kube-proxy needs it."""
        self._new_namespace(self.node)
        self.node_fd = os.open(netns.ns_path(self.node), os.O_RDONLY)
        ipr = self._node_ipr = _ipr_in(self.node)
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        # No duplicate address detection on the node's links: while br0's link-local address is tentative
        # (1-2 s), the kernel sends no neighbour solicitation for a packet whose source is not the node's own
        # (ndisc_send_ns), so SYNs to new IPv6 pods were lost for that long (setup took 2.5 s instead of 1 s).
        netns.write_sysctl(self.node, "net.ipv6.conf.default.accept_dad", "0")
        netns.write_sysctl(self.node, "net.ipv6.conf.all.accept_dad", "0")
        ipr.link("add", ifname="br0", kind="bridge")
        bridge = ipr.link_lookup(ifname="br0")[0]
        for family in self.families:
            _add_address(ipr, bridge, ADDRESSING[family].gateway, ADDRESSING[family].prefix)
        ipr.link("set", index=bridge, state="up")
        # kube-proxy's needs: forwarding, and bridged replies through conntrack so DNAT is undone.
        netns.write_sysctl(self.node, "net.ipv4.ip_forward", "1")
        netns.write_sysctl(self.node, "net.ipv6.conf.all.forwarding", "1")
        netns.write_sysctl(self.node, "net.bridge.bridge-nf-call-iptables", "1")
        netns.write_sysctl(self.node, "net.bridge.bridge-nf-call-ip6tables", "1")

    def create_pods(self, templates: Sequence[kube.PodTemplate]) -> None:
        """Every pod's namespace and link; their capture rules load side by side, all in place on return."""
        loading: list[netns.Started] = []
        problems: list[netns.NamespaceError] = []
        try:
            for template in templates:
                loading += self._create_pod(template)[1]
        finally:
            # Waited for even when a later pod failed: no loader is left running into the teardown.
            for started in loading:
                try:
                    started.wait()
                except netns.NamespaceError as err:
                    problems.append(err)
        if problems:
            raise problems[0]

    def add_pod(self, template: kube.PodTemplate) -> EmulatedPod:
        """One more pod on a running node, its capture rules (and, if enrolled, the node's probe rule) in place."""
        pod, loading = self._create_pod(template)
        for started in loading:
            started.wait()
        if template.ambient:
            ambient_capture.add_host_probe_rule(self.node, pod.ip, self.family == "ipv6")
        return pod

    def enrol(self, namespace: str) -> list[EmulatedPod]:
        """Enrol the namespace's running pods, as istio-cni does when the label comes; returns those newly enrolled.

        A pod with a sidecar, one that opts out (`istio.io/dataplane-mode=none`) or one already enrolled is left as
        it is. Each gets the in-pod rules, the enrolled sysctls and the node's probe SNAT; its template says it is
        enrolled from now on (what ztunnel's configuration and the death watch read).
        """
        fresh = [
            p
            for p in self.pods.values()
            if p.template.namespace == namespace
            and not (p.template.injected or p.template.ambient)
            and p.template.labels.get(kube.DATAPLANE_MODE_LABEL) != "none"
        ]
        for pod in fresh:
            ambient_capture.install(pod.netns).wait()
            self._enrolled_settings(pod.netns)
            ambient_capture.add_host_probe_rule(self.node, pod.ip, self.family == "ipv6")
            pod.template = dataclasses.replace(pod.template, ambient=True)
        return fresh

    def _enrolled_settings(self, name: str) -> None:
        netns.write_sysctl(name, "net.ipv4.ip_local_port_range", ENROLLED_PORT_RANGE)
        for key, value in ENROLLED_TCP_SETTINGS.items():
            netns.write_sysctl(name, key, value)

    def _create_pod(self, template: kube.PodTemplate) -> tuple[EmulatedPod, list[netns.Started]]:
        """The pod's namespace and network; its capture rules started loading (the caller waits for them)."""
        index = self._next_index
        self._next_index += 1
        short_ns = template.namespace.removeprefix("mic-")
        name = f"{netns.PREFIX}{self.tag}-{short_ns}-{template.app}"
        ips = tuple(ADDRESSING[family].pod_address(index) for family in self.families)
        pod = EmulatedPod(template, name, ips[0], f"veth{index}", ips=ips)
        self._new_namespace(name)
        pod.fd = os.open(netns.ns_path(name), os.O_RDONLY)
        self.pods[pod.ref] = pod
        assert self._node_ipr is not None
        node = self._node_ipr
        node.link("add", ifname=pod.veth, kind="veth", peer={"ifname": "eth0", "net_ns_fd": pod.fd})
        veth = node.link_lookup(ifname=pod.veth)[0]
        node.link("set", index=veth, master=node.link_lookup(ifname="br0")[0], state="up")
        node.link("set", index=veth, hairpin=1)
        with _ipr_in(name) as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            ipr.link("set", index=lo, state="up")
            for family, ip in zip(self.families, ips, strict=True):
                _add_address(ipr, eth0, ip, ADDRESSING[family].prefix)
            ipr.link("set", index=eth0, state="up")
            for family in self.families:
                af = socket.AF_INET6 if family == "ipv6" else socket.AF_INET
                ipr.route("add", dst="default", gateway=ADDRESSING[family].gateway, family=af)
            if template.injected and "ipv6" in self.families:
                # istio-init on an IPv6 or dual-stack pod: ::6 on lo for the IPv6 inbound passthrough bind
                # (reference §6; on dual-stack the extra source address ::6, settings-dualstack.md §2).
                _add_address(ipr, lo, "::6", 128)
        loading = []
        if template.injected:
            excluded = capture.excluded_inbound_ports(template.annotations.get(kube.EXCLUDE_INBOUND_ANNOTATION))
            included = capture.included_inbound_ports(template.annotations.get(kube.INCLUDE_INBOUND_ANNOTATION))
            tproxy = template.interception == capture.TPROXY
            # A dual-stack pod with ISTIO_DUAL_STACK on gets the same rules in iptables and ip6tables
            # (settings-dualstack.md §2, "Flag on"); a single-stack pod only its family's.
            loading.append(capture.install(name, self.families, excluded, included, tproxy))
        if template.ambient:
            loading.append(ambient_capture.install(name))
            self._enrolled_settings(name)
        return pod, loading

    def create_services(self, services: Sequence[kube.Service]) -> None:
        """A ClusterIP per Service and family, DNAT to the one pod it selects; istio-cni's host rules for probes.

        On dual-stack each Service has a ClusterIP of each family (RequireDualStack), kube-proxy's rules in
        iptables and ip6tables, each to the pod's address of that family.
        """
        backends: list[tuple[kube.Service, EmulatedPod]] = []
        for service in services:
            selected = [p for p in self.pods.values() if service.selects(p.template)]
            if len(selected) != 1:
                raise BackendError(f"Service {service.namespace}/{service.name} selects {len(selected)} pods, not 1")
            backends.append((service, selected[0]))
            # ztunnel is told each Service by its primary ClusterIP and the pod's primary address.
            self.endpoints.append((service, self.addressing.service_address(len(backends) - 1), selected[0].ip))
        for position, family in enumerate(self.families):
            v6 = family == "ipv6"
            rules = ["*nat", ":KUBE-SERVICES - [0:0]", "-A PREROUTING -j KUBE-SERVICES", "-A OUTPUT -j KUBE-SERVICES"]
            for index, (service, backend) in enumerate(backends):
                address = ADDRESSING[family].service_address(index)
                self.services.setdefault((service.namespace, service.name), {})[family] = address
                ip = backend.ips[position]
                mask = "128" if v6 else "32"
                for port in service.ports:
                    to = f"[{ip}]:{port.target_port}" if v6 else f"{ip}:{port.target_port}"
                    rules.append(
                        f"-A KUBE-SERVICES -d {address}/{mask} -p tcp --dport {port.port} -j DNAT --to-destination {to}"
                    )
            if position == 0:
                # istio-cni's host rules: the kubelet's probes to enrolled pods leave the node from 169.254.7.127.
                rules += ambient_capture.host_probe_rules([p.ip for p in self.pods.values() if p.template.ambient], v6)
            rules.append("COMMIT")
            tool = "ip6tables-restore" if v6 else "iptables-restore"
            netns.run(self.node, [tool], input=("\n".join(rules) + "\n").encode())

    # --- reading -----------------------------------------------------------------------------------

    def pod(self, ref: PodRef) -> EmulatedPod:
        """The pod, or BackendError naming it."""
        try:
            return self.pods[ref]
        except KeyError:
            raise BackendError(f"no pod {ref} in the emulated cluster") from None

    def service_ip(self, namespace: str, name: str, family: str | None = None) -> str:
        """The Service's ClusterIP of `family` (None: the primary family's)."""
        try:
            return self.services[(namespace, name)][family or self.families[0]]
        except KeyError:
            raise BackendError(
                f"no Service {namespace}/{name} of {family or self.family} in the emulated cluster"
            ) from None

    def _diag_read(self, pod: EmulatedPod, read: Callable[[socket.socket], _T]) -> _T:
        """`read` on the pod's own sock_diag socket (made at its first read).

        The readiness checks and the death watch read ~1,600 times a run. A lock keeps reads one at a time,
        whichever thread asks. A read that did not finish (an error, or Ctrl-C / SIGTERM raised in the
        middle of it) leaves its dump unread on the socket, and the kernel would answer the next dump on it with
        EBUSY (in the cleanup that follows an interrupt): that socket is dropped, the next read makes a new one.
        """
        with self._diag_lock:
            sock = self._diag.get(pod.ref)
            if sock is None:
                sock = self._diag[pod.ref] = listeners.open_socket(pod.fd, self.home_fd)
            try:
                return read(sock)
            except BaseException:
                del self._diag[pod.ref]
                sock.close()
                raise

    def listeners(self, pod: EmulatedPod) -> list[Listener]:
        """The pod's listening sockets, both families (what `ss -ltn` in any of its containers shows)."""
        return self._diag_read(pod, listeners.read_all)

    def listening(self, pod: EmulatedPod) -> set[int]:
        """The ports listened on in the pod's namespace for this run's family (both, on dual-stack pods).

        An IPv4 socket serves only IPv4; an IPv6 one serves IPv6, and IPv4 too when it is the wildcard `::`
        (counted for both, IPV6_V6ONLY or not). A sidecar listening on one family only is therefore not ready
        in a run of the other.
        """
        v4, v6 = self._diag_read(pod, listeners.served_ports)
        # A dual-stack pod's port is listened on when it is in both families.
        served = {"ipv4": v4, "ipv6": v6}
        return set.intersection(*(served[family] for family in self.families))

    def node_http(self, address: str, port: int, path: str, timeout: float) -> bytes | None:
        """GET from the node namespace; the body on 200, None otherwise."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        netns.setns(self.node_fd)
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        finally:
            netns.setns(self.home_fd)
        with sock:
            sock.settimeout(timeout)
            sock.connect((address, port))
            host = f"[{address}]" if ":" in address else address
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        raw = b"".join(chunks)
        head, _, body = raw.partition(b"\r\n\r\n")
        return body if head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200") else None

    # --- tearing down ------------------------------------------------------------------------------

    def remove_pod(self, pod: EmulatedPod) -> None:
        """Delete the pod's namespace (its containers stopped first: what is left in it is killed)."""
        del self.pods[pod.ref]
        self._release(pod)
        netns.kill_all(netns.pids_in(pod.netns), grace=0.5)
        netns.remove(pod.netns)
        self._created.remove(pod.netns)

    def _release(self, pod: EmulatedPod) -> None:
        """Close what the harness holds of the pod's namespace (its handle, its sock_diag socket), before it goes.

        The veth goes with the namespace, asynchronously in the kernel; deleting it first costs ~20 ms of
        RCU synchronisation. emulation.md pitfall 1 (a recreated name clashing with one still being torn
        down) cannot happen: veth names are never reused within a node namespace, and each run has its own.
        """
        with self._diag_lock:
            sock = self._diag.pop(pod.ref, None)
        if sock is not None:
            sock.close()
        if pod.fd >= 0:
            os.close(pod.fd)
            pod.fd = -1

    def close(self) -> None:
        """Kill what is left in this run's namespaces and remove them all (the pods' containers stopped first)."""
        for pod in list(self.pods.values()):
            self._release(pod)
        self.pods.clear()
        for name in self._created:
            netns.kill_all(netns.pids_in(name), grace=0.5)
        if self._node_ipr is not None:
            self._node_ipr.close()
            self._node_ipr = None
        for name in reversed(self._created):
            with contextlib.suppress(OSError):
                netns.remove(name)
        self._created.clear()
        for fd in (self.node_fd, self.home_fd):
            if fd >= 0:
                os.close(fd)
        self.node_fd = self.home_fd = -1
