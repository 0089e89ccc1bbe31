"""The emulated cluster: namespaces for a node and its pods, kube-proxy's DNAT, capture rules, sidecars.

A node namespace holds a bridge; each pod is a namespace with Istio's capture rules (if meshed), the echo
program as the app container and a sidecar process.

Lifecycle: `up()` reaps what dead runs left, builds the node, the pods and the Services, starts the
containers and waits until every readiness check passes; `down()` stops every process and removes every
namespace it made. Nothing touches the host's namespace: the bridge, the routes and every iptables rule
live in namespaces this run created and named `mic-<tag>-...`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import IPRoute

from conformance.backends.base import (
    BackendError,
    Cluster,
    ContainerReadiness,
    Manifest,
    PrerequisiteError,
    ProbeRequest,
    ProcessDeath,
)
from conformance.backends.emulated import ambient_capture, capture, controlplane, injector, kube, listeners, netns
from conformance.backends.emulated.dialer import Dialer
from conformance.backends.emulated.kubelet import Kubelet
from conformance.backends.emulated.processes import ForkServer, ForkServerError, Process, describe_exit
from conformance.backends.emulated.ztunnel_config import ztunnel_config
from conformance.backends.precheck import Listener, PrecheckRun, check_pod, render_run
from conformance.world.pods import PodRef
from conformance.world.resources import echo_program

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
DEATH_LOG_LINES = 5
"""Lines of a dead process's log kept with the news of its death."""
DEATH_GRACE = 2.0
"""Seconds a watched process that stopped listening has to exit before it is reported as stopped anyway."""
REFERENCE_SIDECAR = Path(__file__).with_name("sidecar.py")
REFERENCE_ZTUNNEL = Path(__file__).with_name("ztunnel.py")
ZTUNNEL_PORTS = {ambient_capture.INBOUND_PORT, ambient_capture.OUTBOUND_PORT, ambient_capture.TUNNEL_PORT}
ECHO_IMAGE_PATH = "/app/echo.py"


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


@dataclass
class EmulatedPod:
    """One pod: its namespace, address, processes and (if meshed) sidecar configuration."""

    template: kube.PodTemplate
    netns: str
    ip: str
    veth: str
    fd: int = -1
    app: Process | None = None
    sidecar: Process | None = None
    sidecar_config: dict[str, object] = field(default_factory=dict)
    containers: dict[str, Process] = field(default_factory=dict)
    """The pod's other containers (each an echo program in the pod's namespace), by name."""

    def processes(self) -> list[Process]:
        """Every process of the pod: sidecar, app and the other containers."""
        return [p for p in (self.sidecar, self.app, *self.containers.values()) if p is not None]

    @property
    def ref(self) -> PodRef:
        """How tests name this pod."""
        return PodRef(self.template.namespace, self.template.app)


def _stop(procs: Sequence[Process], grace: float = 2.0) -> None:
    """SIGTERM all (SIGKILL when `grace` is 0), then wait for each (SIGKILL after `grace` seconds)."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            if grace > 0:
                proc.terminate()
            else:
                proc.kill()
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.01, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_prerequisites() -> None:
    """Root and iptables, or one line saying what is missing and how to get it."""
    if os.geteuid() != 0:
        raise PrerequisiteError(
            "the emulated backend needs root (network namespaces, iptables): run as root, e.g. sudo tox -e conformance"
        )
    missing = [tool for tool in ("iptables-restore", "ip6tables-restore", "iptables-save") if not shutil.which(tool)]
    if missing:
        raise PrerequisiteError(
            f"the emulated backend needs {', '.join(missing)}: apt-get install -y iptables (or run ./setup.sh)"
        )
    if not Path("/proc/thread-self/ns/net").exists():
        raise PrerequisiteError("the emulated backend needs Linux network namespaces (/proc/thread-self/ns/net)")


def sidecar_command_problem(argv: Sequence[str], option: str = "--emulator-sidecar") -> str | None:
    """Why an `--emulator-sidecar` or `--emulator-ztunnel` command cannot start at all, as one line.

    Checked before anything is created, and only what holds for every pod: the program exists and is
    executable. Whether uid 1337 may execute it, and whether it listens, shows when the pods start (a setup
    failure the report names).
    """
    program = argv[0]
    found = shutil.which(program) if "/" not in program else program
    if found is None or not Path(found).exists():
        return f"{option}: {program} not found (expected a program, with a path or on PATH)"
    if Path(found).is_dir() or not os.access(found, os.X_OK):
        return f"{option}: {program} is not executable (chmod +x, or give its interpreter first)"
    return None


class EmulatedCluster(Cluster):
    """The emulated backend (see module docstring)."""

    backend = "emulated"

    def __init__(
        self,
        family: str,
        *,
        sidecar_command: Sequence[str] | None = None,
        inbound_mode: str = "passthrough",
        work_dir: Path | None = None,
        ready_timeout: float = 30.0,
        rewrite_probes: bool = True,
        ztunnel_command: Sequence[str] | None = None,
    ) -> None:
        if family not in ADDRESSING:
            raise ValueError(f"ip family {family!r}: expected ipv4 or ipv6")
        self.family = family
        self.addressing = ADDRESSING[family]
        self.sidecar_command = list(sidecar_command) if sidecar_command else None
        self._inbound_mode = inbound_mode
        self.ztunnel_command = list(ztunnel_command) if ztunnel_command else None
        self.ztunnel: Process | None = None
        self._forkserver: ForkServer | None = None
        self._endpoints: dict[tuple[str, str], str] = {}
        self.ready_timeout = ready_timeout
        self.tag = secrets.token_hex(3)
        self.node = f"{netns.PREFIX}{self.tag}-node"
        self.pods: dict[PodRef, EmulatedPod] = {}
        self.services: dict[tuple[str, str], str] = {}
        self.objects = kube.Objects()
        self._lock = netns.RunLock(self.tag)
        self._base_work_dir = work_dir
        self.work_dir = Path()
        self._node_ipr: IPRoute | None = None
        self._node_fd = -1
        self._home_fd = -1
        self._dialer: Dialer | None = None
        self._created: list[str] = []
        self._started = False
        self._next_index = 0
        self.timings: dict[str, float] = {}
        self.rewrite_probes = rewrite_probes
        """The mesh-wide probe rewrite (Istio's values.sidecarInjectorWebhook.rewriteAppHTTPProbe)."""
        self.kubelet: Kubelet | None = None
        self._deaths: list[tuple[Process, ProcessDeath]] = []
        self._up = False
        """Every pod was ready once: from then on a process of the build that stops is news (before, a setup
        failure, which says so itself)."""
        """The build's processes seen dead, with the news of each (see deaths())."""

    # --- lifecycle -----------------------------------------------------------------------------------

    def up(self, manifests: Sequence[Manifest]) -> None:
        """Build the node, the pods and the Services, start every container and wait until ready."""
        check_prerequisites()
        start = time.perf_counter()
        self._started = True
        self._lock.acquire()
        netns.reap_leftovers()
        netns.reap_work_dirs(self._base_work_dir or Path(tempfile.gettempdir()))
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"mic-{self.tag}-", dir=self._base_work_dir))
        self.work_dir.chmod(0o755)  # the proxy user (1337) reads its configuration here
        self._home_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self._dialer = Dialer(self._home_fd)
        # Started first: it imports Python's asyncio while the namespaces are made (see forkserver.py).
        self._forkserver = ForkServer(
            [echo_program(), REFERENCE_SIDECAR], self.work_dir / "forkserver.log", netns.dies_with_harness
        )
        try:
            self.objects = kube.read([dict(m) for m in manifests])
            self._create_node()
            # Every pod's capture rules load side by side (netns.start_all), and all are in place before any
            # container starts, as istio-init and istio-cni finish before a pod's containers do.
            self._create_pods(self.objects.pods)
            self._create_services()
            self.timings["network"] = time.perf_counter() - start
            for pod in self.pods.values():
                self._start_app(pod)
            for pod in self.pods.values():
                if pod.template.injected:
                    self._start_sidecar(pod)
            self._sync_ztunnel()
            self._wait_ready(self.pods.values())
            self._up = True
            self._start_kubelet()
        except kube.ManifestError as err:
            raise BackendError(str(err)) from None
        except (netns.NamespaceError, ForkServerError) as err:
            raise BackendError(f"emulated cluster: {err}") from None
        self.timings["up"] = time.perf_counter() - start

    def down(self) -> None:
        """Stop every process, remove every namespace and the work directory; idempotent."""
        if not self._started:
            return
        self._note_deaths()
        self._started = self._up = False
        if self.kubelet is not None:
            self.kubelet.stop()
            self.kubelet = None
        _stop([p for pod in self.pods.values() for p in pod.processes()])
        if self.ztunnel is not None:
            _stop([self.ztunnel])
            self.ztunnel = None
        if self._forkserver is not None:
            self._forkserver.close()
            self._forkserver = None
        for pod in list(self.pods.values()):
            self._remove_network(pod)
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
        for fd in (self._node_fd, self._home_fd):
            if fd >= 0:
                os.close(fd)
        self._node_fd = self._home_fd = -1
        if self._dialer is not None:
            self._dialer.close()
            self._dialer = None
        if self.work_dir != Path() and self.work_dir.exists():
            shutil.rmtree(self.work_dir, ignore_errors=True)
        self._lock.release()

    def add_pod(self, template: kube.PodTemplate) -> EmulatedPod:
        """Create one more pod on a running cluster, start its containers and wait until it is ready."""
        pod, loading = self._create_pod(template)
        for started in loading:
            started.wait()
        self._start_app(pod)
        if template.injected:
            self._start_sidecar(pod)
        if template.ambient:
            ambient_capture.add_host_probe_rule(self.node, pod.ip, self.family == "ipv6")
            self._sync_ztunnel()
        self._wait_ready([pod])
        self._watch_probes(pod)
        return pod

    def remove_pod(self, ref: PodRef) -> None:
        """Kill a pod's containers (grace period 0) and delete its network namespace."""
        self._note_deaths()
        pod = self.pods.pop(ref)
        if self.kubelet is not None:
            self.kubelet.forget(str(ref))
        _stop(pod.processes(), grace=0)
        self._remove_network(pod)
        netns.kill_all(netns.pids_in(pod.netns), grace=0.5)
        netns.remove(pod.netns)
        self._created.remove(pod.netns)
        if pod.template.ambient:
            self._sync_ztunnel()

    def _remove_network(self, pod: EmulatedPod) -> None:
        # The veth goes with the namespace, asynchronously in the kernel; deleting it first costs ~20 ms of
        # RCU synchronisation. emulation.md pitfall 1 (a recreated name clashing with one still being torn
        # down) cannot happen: veth names are never reused within a node namespace, and each run has its own.
        if pod.fd >= 0:
            os.close(pod.fd)
            pod.fd = -1

    # --- network -------------------------------------------------------------------------------------

    def _new_namespace(self, name: str) -> None:
        netns.create(name)
        self._created.append(name)

    def _ipr_in(self, name: str) -> IPRoute:
        with netns.entered(name):
            return IPRoute()

    def _create_node(self) -> None:
        self._new_namespace(self.node)
        self._node_fd = os.open(netns.ns_path(self.node), os.O_RDONLY)
        ipr = self._node_ipr = self._ipr_in(self.node)
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        # No duplicate address detection on the node's links: while br0's link-local address is tentative
        # (1-2 s), the kernel sends no neighbour solicitation for a packet whose source is not the node's own
        # (ndisc_send_ns), so SYNs to new IPv6 pods were lost for that long (setup took 2.5 s instead of 1 s).
        netns.write_sysctl(self.node, "net.ipv6.conf.default.accept_dad", "0")
        netns.write_sysctl(self.node, "net.ipv6.conf.all.accept_dad", "0")
        ipr.link("add", ifname="br0", kind="bridge")
        bridge = ipr.link_lookup(ifname="br0")[0]
        self._add_address(ipr, bridge, self.addressing.gateway, self.addressing.prefix)
        ipr.link("set", index=bridge, state="up")
        # kube-proxy's needs: forwarding, and bridged replies through conntrack so DNAT is undone.
        netns.write_sysctl(self.node, "net.ipv4.ip_forward", "1")
        netns.write_sysctl(self.node, "net.ipv6.conf.all.forwarding", "1")
        netns.write_sysctl(self.node, "net.bridge.bridge-nf-call-iptables", "1")
        netns.write_sysctl(self.node, "net.bridge.bridge-nf-call-ip6tables", "1")

    def _add_address(self, ipr: IPRoute, index: int, address: str, prefix: int) -> None:
        # IPv6 addresses skip duplicate address detection, or binds fail with EADDRNOTAVAIL for ~2 s.
        flags = IFA_F_NODAD if ":" in address else 0
        ipr.addr("add", index=index, address=address, prefixlen=prefix, flags=flags)

    def _create_pods(self, templates: Sequence[kube.PodTemplate]) -> None:
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

    def _create_pod(self, template: kube.PodTemplate) -> tuple[EmulatedPod, list[netns.Started]]:
        """The pod's namespace and network; its capture rules started loading (wait for them, see up())."""
        index = self._next_index
        self._next_index += 1
        short_ns = template.namespace.removeprefix("mic-")
        name = f"{netns.PREFIX}{self.tag}-{short_ns}-{template.app}"
        pod = EmulatedPod(template, name, self.addressing.pod_address(index), f"veth{index}")
        self._new_namespace(name)
        pod.fd = os.open(netns.ns_path(name), os.O_RDONLY)
        self.pods[pod.ref] = pod
        assert self._node_ipr is not None
        node = self._node_ipr
        node.link("add", ifname=pod.veth, kind="veth", peer={"ifname": "eth0", "net_ns_fd": pod.fd})
        veth = node.link_lookup(ifname=pod.veth)[0]
        node.link("set", index=veth, master=node.link_lookup(ifname="br0")[0], state="up")
        node.link("set", index=veth, hairpin=1)
        with self._ipr_in(name) as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            ipr.link("set", index=lo, state="up")
            self._add_address(ipr, eth0, pod.ip, self.addressing.prefix)
            ipr.link("set", index=eth0, state="up")
            family = socket.AF_INET6 if self.family == "ipv6" else socket.AF_INET
            ipr.route("add", dst="default", gateway=self.addressing.gateway, family=family)
            if template.injected and self.family == "ipv6":
                # istio-init on an IPv6 pod: ::6 on lo for the IPv6 inbound passthrough bind (reference §6).
                self._add_address(ipr, lo, "::6", 128)
        loading = []
        if template.injected:
            excluded = capture.excluded_inbound_ports(template.annotations.get(kube.EXCLUDE_INBOUND_ANNOTATION))
            loading.append(capture.install(name, excluded, ipv6=self.family == "ipv6"))
        if template.ambient:
            loading.append(ambient_capture.install(name))
            netns.write_sysctl(name, "net.ipv4.ip_local_port_range", ENROLLED_PORT_RANGE)
            for key, value in ENROLLED_TCP_SETTINGS.items():
                netns.write_sysctl(name, key, value)
        return pod, loading

    def _create_services(self) -> None:
        v6 = self.family == "ipv6"
        rules = ["*nat", ":KUBE-SERVICES - [0:0]", "-A PREROUTING -j KUBE-SERVICES", "-A OUTPUT -j KUBE-SERVICES"]
        for index, service in enumerate(self.objects.services):
            address = self.addressing.service_address(index)
            self.services[(service.namespace, service.name)] = address
            backends = [p for p in self.pods.values() if service.selects(p.template)]
            if len(backends) != 1:
                raise BackendError(f"Service {service.namespace}/{service.name} selects {len(backends)} pods, not 1")
            backend = backends[0]
            self._endpoints[(service.namespace, service.name)] = backend.ip
            mask = "128" if v6 else "32"
            for port in service.ports:
                to = f"[{backend.ip}]:{port.target_port}" if v6 else f"{backend.ip}:{port.target_port}"
                rules.append(
                    f"-A KUBE-SERVICES -d {address}/{mask} -p tcp --dport {port.port} -j DNAT --to-destination {to}"
                )
        # istio-cni's host rules: the kubelet's probes to enrolled pods leave the node from 169.254.7.127.
        rules += ambient_capture.host_probe_rules([p.ip for p in self.pods.values() if p.template.ambient], v6)
        rules.append("COMMIT")
        tool = "ip6tables-restore" if v6 else "iptables-restore"
        netns.run(self.node, [tool], input=("\n".join(rules) + "\n").encode())

    # --- containers ----------------------------------------------------------------------------------

    def _env(self, pod: EmulatedPod) -> dict[str, str]:
        values = {
            "metadata.name": pod.template.name,
            "metadata.namespace": pod.template.namespace,
            "status.podIP": pod.ip,
            "status.podIPs": pod.ip,
        }
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1"}
        for var in pod.template.env:
            if var.field_path is not None:
                if var.field_path not in values:
                    raise BackendError(f"{pod.ref}: env {var.name}: fieldRef {var.field_path} is not emulated")
                env[var.name] = values[var.field_path]
            else:
                env[var.name] = var.value or ""
        return env

    def _start_app(self, pod: EmulatedPod) -> None:
        command = list(pod.template.command)
        if command[-1:] != [ECHO_IMAGE_PATH] or not command[0].startswith("python"):
            raise BackendError(f"{pod.ref}: the emulated cluster runs the echo program only, not {command}")
        # The image's /app/echo.py is this very file; -I -S: no site-packages, like the slim image.
        argv = [sys.executable, "-I", "-S", str(echo_program()), *pod.template.args]
        pod.app = self._spawn(pod.netns, argv, env=self._env(pod), log=self.work_dir / f"{pod.netns}.app.log")
        for container in pod.template.containers[1:]:
            # Every container of a pod runs the echo program too (the emulation runs nothing else).
            argv = [sys.executable, "-I", "-S", str(echo_program()), *container.args]
            log = self.work_dir / f"{pod.netns}.{container.name}.log"
            pod.containers[container.name] = self._spawn(pod.netns, argv, env=self._env(pod), log=log)

    def _spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        log: Path,
        credentials: netns.Credentials | None = None,
    ) -> Process:
        """Start a container's process in namespace `name`: forked when the fork server runs the program."""
        if self._forkserver is not None and credentials is None and self._forkserver.serves(argv):
            try:
                return self._forkserver.start(argv, env, netns.ns_path(name), log)
            except ForkServerError as err:
                raise BackendError(f"emulated cluster: {err}") from None
        return netns.spawn(name, argv, env=env, log=log, credentials=credentials)

    def _sidecar_argv(self, config_path: Path) -> list[str]:
        if self.sidecar_command:
            return [*self.sidecar_command, str(config_path)]
        return [sys.executable, "-I", "-S", str(REFERENCE_SIDECAR), str(config_path)]

    def _start_sidecar(self, pod: EmulatedPod) -> None:
        pod.sidecar_config = controlplane.sidecar_config(
            pod.template, pod.ip, self.family, self.objects, self._inbound_mode
        )
        pod.sidecar_config["status"] = injector.status_config(pod.template, self.rewrite_probes, self._inbound_mode)
        config_path = self.work_dir / f"{pod.netns}.sidecar.json"
        config_path.write_text(json.dumps(pod.sidecar_config, indent=2) + "\n")
        config_path.chmod(0o644)
        argv = self._sidecar_argv(config_path)
        # The reference sidecar drops to 1337 itself after reading its configuration as root (so it can run
        # from anywhere); a replaced sidecar is started as 1337, as Envoy is in a real pod.
        credentials = netns.Credentials(capture.PROXY_UID, capture.PROXY_GID) if self.sidecar_command else None
        try:
            pod.sidecar = self._spawn(
                pod.netns,
                argv,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                log=self.work_dir / f"{pod.netns}.sidecar.log",
                credentials=credentials,
            )
        except PermissionError as err:
            raise PrerequisiteError(
                f"--emulator-sidecar: uid 1337 cannot execute {shlex.join(argv[:1])} ({err.strerror}): "
                "put the program where every user may read and execute it"
            ) from None
        except FileNotFoundError:
            raise PrerequisiteError(f"--emulator-sidecar: {argv[0]} not found") from None

    def _sync_ztunnel(self) -> None:
        """Write ztunnel's configuration; start the node's ztunnel, or have it re-read (SIGHUP)."""
        enrolled = [p for p in self.pods.values() if p.template.ambient]
        if not enrolled and self.ztunnel is None:
            return
        services = [
            (s, self.services[(s.namespace, s.name)], self._endpoints[(s.namespace, s.name)])
            for s in self.objects.services
            if (s.namespace, s.name) in self._endpoints
        ]
        config = ztunnel_config(
            self.node, [(p.template, p.ip, str(netns.ns_path(p.netns))) for p in enrolled], services
        )
        path = self.work_dir / "ztunnel.json"
        path.write_text(json.dumps(config, indent=2) + "\n")
        self._note_deaths()  # a dead ztunnel is started again below: its death is news first
        if self.ztunnel is not None and self.ztunnel.poll() is None:
            self.ztunnel.send_signal(signal.SIGHUP)
            return
        argv = (
            [*self.ztunnel_command, str(path)]
            if self.ztunnel_command
            else [sys.executable, "-I", "-S", str(REFERENCE_ZTUNNEL), str(path)]
        )
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        # Like the ztunnel DaemonSet: one privileged process on the node (IP_TRANSPARENT needs CAP_NET_ADMIN).
        try:
            self.ztunnel = netns.spawn(self.node, argv, env=env, log=self.work_dir / "ztunnel.log")
        except (FileNotFoundError, PermissionError) as err:
            raise PrerequisiteError(f"--emulator-ztunnel: cannot run {argv[0]}: {err.strerror}") from None

    def _listening(self, pod: EmulatedPod) -> set[int]:
        """The ports listened on in the pod's namespace for this run's family.

        An IPv4 socket serves only IPv4; an IPv6 one serves IPv6, and IPv4 too when it is the wildcard `::`
        (counted for both, IPV6_V6ONLY or not). A sidecar listening on one family only is therefore not ready
        in a run of the other.
        """
        found = listeners.read_by_family(pod.fd, self._home_fd)
        v6 = {lst.port for lst in found[socket.AF_INET6]}
        if self.family == "ipv6":
            return v6
        return {lst.port for lst in found[socket.AF_INET]} | {
            lst.port for lst in found[socket.AF_INET6] if lst.address == "*"
        }

    def _wait_ready(self, pods: Iterable[EmulatedPod]) -> None:
        pending = list(pods)
        deadline = time.monotonic() + self.ready_timeout
        while pending:
            still = []
            for pod in pending:
                problem = self._not_ready(pod)
                if problem is None:
                    continue
                if problem.startswith("exited"):
                    raise BackendError(f"{pod.ref}: {problem}; log: {self._tail(pod, problem)}")
                still.append((pod, problem))
            if not still:
                return
            if time.monotonic() > deadline:
                pod, problem = still[0]
                raise BackendError(f"{pod.ref} not ready after {self.ready_timeout:.0f}s: {problem}")
            pending = [p for p, _ in still]
            time.sleep(0.005)

    def _not_ready(self, pod: EmulatedPod) -> str | None:
        assert pod.app is not None
        if pod.app.poll() is not None:
            return f"exited app container (exit {pod.app.returncode})"
        for name, proc in pod.containers.items():
            if proc.poll() is not None:
                return f"exited app container {name} (exit {proc.returncode})"
        if pod.template.injected:
            assert pod.sidecar is not None
            if pod.sidecar.poll() is not None:
                return f"exited sidecar (exit {pod.sidecar.returncode})"
            missing = {capture.INBOUND_CAPTURE_PORT, capture.OUTBOUND_CAPTURE_PORT} - self._listening(pod)
            if missing:
                return f"sidecar not listening on {sorted(missing)} for {self.family}"
        if pod.template.ambient:
            if self.ztunnel is None or self.ztunnel.poll() is not None:
                code = self.ztunnel.returncode if self.ztunnel is not None else None
                return f"exited ztunnel (exit {code})"
            missing = ZTUNNEL_PORTS - self._listening(pod)
            if missing:
                return f"ztunnel not listening in the pod on {sorted(missing)}"
        port = pod.template.readiness_port
        if port is not None and not self._http_ok(pod, port):
            return f"readiness probe GET :{port}/healthz failing"
        return None

    def _http_ok(self, pod: EmulatedPod, port: int) -> bool:
        # Like kubelet: from the node, to the pod IP (the port is excluded from capture).
        try:
            body = self._node_http(pod.ip, port, "/healthz", timeout=0.5)
        except OSError:
            return False
        return body is not None

    def _node_http(self, address: str, port: int, path: str, timeout: float) -> bytes | None:
        """GET from the node namespace; the body on 200, None otherwise."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        netns.setns(self._node_fd)
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        finally:
            netns.setns(self._home_fd)
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

    def _tail(self, pod: EmulatedPod, problem: str, lines: int = 5) -> str:
        which = "sidecar" if "sidecar" in problem else "app"
        path = self.work_dir / f"{pod.netns}.{which}.log"
        if "ztunnel" in problem:
            path = self.work_dir / "ztunnel.log"
        try:
            return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:]) or "(empty)"
        except OSError:
            return "(no log)"

    # --- the build's processes ----------------------------------------------------------------------

    def _watched(self) -> list[tuple[str, Process, tuple[PodRef, ...], Path]]:
        """The processes of the build under test now in place: name, process, pods it serves, its log."""
        watched: list[tuple[str, Process, tuple[PodRef, ...], Path]] = [
            (f"sidecar of {pod.ref}", pod.sidecar, (pod.ref,), self.work_dir / f"{pod.netns}.sidecar.log")
            for pod in self.pods.values()
            if pod.sidecar is not None
        ]
        if self.ztunnel is not None:
            enrolled = tuple(p.ref for p in self.pods.values() if p.template.ambient)
            watched.append(("ztunnel (node)", self.ztunnel, enrolled, self.work_dir / "ztunnel.log"))
        return watched

    def _serving(self, pods: tuple[PodRef, ...], sidecar: bool) -> bool:
        """Whether a watched process still listens where its pods' capture rules send traffic.

        A sidecar on 15001 and 15006 in its pod; ztunnel on its ports in at least one enrolled pod (a pod
        enrolled a moment ago may not have them yet).
        """
        wanted = {capture.INBOUND_CAPTURE_PORT, capture.OUTBOUND_CAPTURE_PORT} if sidecar else ZTUNNEL_PORTS
        present = [self.pods[ref] for ref in pods if ref in self.pods]
        return not present or any(wanted <= self._listening(pod) for pod in present)

    def _note_deaths(self) -> None:
        """Record each watched process that has exited, once, with its log's last lines.

        One that has stopped listening is given DEATH_GRACE seconds to exit: a proxy that handles SIGTERM (the
        `timeout 2` of issue 20) closes its listeners first, and under load its exit can lag by seconds, while
        the cells already fail. The lines are read now: the work folder goes at teardown. Called before the
        harness itself stops or replaces one, so that only deaths the harness did not cause are news.
        """
        if not self._started or not self._up:
            return
        ended: list[tuple[str, Process, tuple[PodRef, ...], Path]] = []
        for name, proc, pods, log in self._watched():
            if any(seen is proc for seen, _ in self._deaths):
                continue
            if proc.poll() is not None or not self._serving(pods, name.startswith("sidecar")):
                ended.append((name, proc, pods, log))
        deadline = time.monotonic() + DEATH_GRACE  # one grace for all: a broken build costs it once
        for name, proc, pods, log in ended:
            try:
                code: int | None = proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                code = None
            status = describe_exit(code) if code is not None else "stopped listening, still running"
            try:
                tail = tuple(log.read_text(errors="replace").strip().splitlines()[-DEATH_LOG_LINES:])
            except OSError:
                tail = ()
            death = ProcessDeath(name, status, pods, tail, f"{name}/{proc.pid}/{len(self._deaths)}")
            self._deaths.append((proc, death))

    def deaths(self) -> list[ProcessDeath]:
        """The sidecars and ztunnel that died on their own (not stopped by a switch or teardown), each once.

        `ongoing` while the dead process is still the one in place (a profile switch restarts the sidecars).
        """
        self._note_deaths()
        in_place = [proc for _, proc, _, _ in self._watched()] if self._started else []
        return [dataclasses.replace(death, ongoing=any(proc is p for p in in_place)) for proc, death in self._deaths]

    # --- mesh ----------------------------------------------------------------------------------------

    @property
    def inbound_mode(self) -> str:
        """The emulated mesh's inbound setting."""
        return self._inbound_mode

    def set_inbound_mode(self, mode: str) -> None:
        """Recompute every sidecar's configuration and restart the sidecars (as the istiod switch needs)."""
        if mode not in controlplane.INBOUND_MODES:
            raise ValueError(f"inbound mode {mode!r}: expected one of {', '.join(controlplane.INBOUND_MODES)}")
        if mode == self._inbound_mode:
            return
        self._inbound_mode = mode
        self._note_deaths()  # before the restart replaces a sidecar that died on its own
        meshed = [p for p in self.pods.values() if p.template.injected]
        _stop([p.sidecar for p in meshed if p.sidecar is not None])
        for pod in meshed:
            self._start_sidecar(pod)
        self._wait_ready(meshed)
        for pod in meshed:
            # The injector's probe destination changed with the mode: as after a rollout restart, probe afresh.
            self._watch_probes(pod)

    # --- kubelet probes ---------------------------------------------------------------------------------

    def _start_kubelet(self) -> None:
        self.kubelet = Kubelet(self._node_fd)
        self.kubelet.start()
        for pod in self.pods.values():
            self._watch_probes(pod)

    def _watch_probes(self, pod: EmulatedPod) -> None:
        if self.kubelet is None:
            return
        probes = injector.kubelet_probes(pod.template, self.rewrite_probes)
        if any(p.port == injector.STATUS_PORT for p in probes.values()) and pod.sidecar is not None:
            # Like a pod whose istio-proxy is not yet ready: wait (briefly) for the status port before probing.
            deadline = time.monotonic() + 2
            while injector.STATUS_PORT not in self._listening(pod) and time.monotonic() < deadline:
                time.sleep(0.005)
        self.kubelet.watch(str(pod.ref), pod.ip, probes)

    def container_readiness(self, pod: PodRef) -> dict[str, ContainerReadiness]:
        """Each probed container's readiness as the emulated kubelet has it."""
        target = self._pod(pod)
        if self.kubelet is None:
            raise BackendError("the emulated kubelet is not running")
        out = {}
        for name, (state, probe, started) in self.kubelet.status(str(target.ref)).items():
            out[name] = ContainerReadiness(state.ready, state.settled(probe), state.last, started)
        return out

    def probe_connections(self, pod: PodRef, container: str, after: int = 0) -> list[dict[str, object]]:
        """The connections a container's echo program accepted on its app ports (newer than sequence `after`)."""
        target = self._pod(pod)
        spec = next((c for c in target.template.containers if c.name == container), None)
        if spec is None or "--control-port" not in spec.args:
            raise BackendError(f"{pod}: no container {container} with a control port")
        port = int(spec.args[spec.args.index("--control-port") + 1])
        body = self._node_http(target.ip, port, f"/connections?after={after}", timeout=5)
        if body is None:
            raise BackendError(f"{pod}: container {container} did not answer /connections")
        records: list[dict[str, object]] = json.loads(body)["connections"]
        return records

    def mesh_info(self) -> dict[str, str]:
        """The emulated reference mesh, or the replaced sidecar program."""
        if self.sidecar_command:
            # The build under test is the given program, not the suite's reference sidecar.
            version, build = "custom sidecar", shlex.join(self.sidecar_command)
        else:
            version, build = "reference", "reference sidecar"
        if self.ztunnel_command:
            version = "custom ztunnel" if version == "reference" else f"{version} and ztunnel"
            build += f", ztunnel {shlex.join(self.ztunnel_command)}"
        return {"name": "emulated", "version": version, "build": build, "hub": "", "tag": ""}

    # --- addresses, probes, records --------------------------------------------------------------------

    def _pod(self, ref: PodRef) -> EmulatedPod:
        try:
            return self.pods[ref]
        except KeyError:
            raise BackendError(f"no pod {ref} in the emulated cluster") from None

    def pod_ip(self, pod: PodRef) -> str:
        """The pod's address."""
        return self._pod(pod).ip

    def listeners(self, pod: PodRef) -> list[Listener]:
        """The pod's listening sockets, both families (what `ss -ltn` in any of its containers shows)."""
        return listeners.read(self._pod(pod).fd, self._home_fd)

    def service_ip(self, namespace: str, name: str) -> str:
        """The Service's ClusterIP."""
        try:
            return self.services[(namespace, name)]
        except KeyError:
            raise BackendError(f"no Service {namespace}/{name} in the emulated cluster") from None

    def probe(self, requests: Sequence[ProbeRequest], timeout: float) -> list[dict[str, object]]:
        """Dial every request from inside its source pod, concurrently, on one event loop (dialer.py)."""
        assert self._dialer is not None
        return self._dialer.probe(requests, timeout, lambda ref: self._pod(ref).fd)

    def request_record(self, pod: PodRef, request_ids: Sequence[str]) -> list[dict[str, object]]:
        """Ask the pod's echo control port (from the node, like a port-forward) for these request ids."""
        target = self._pod(pod)
        records: list[dict[str, object]] = []
        # Chunk the ids so the request line stays short.
        ids = list(request_ids)
        for start in range(0, len(ids), 200):
            query = "&".join(f"id={i}" for i in ids[start : start + 200])
            body = self._node_http(target.ip, self._control_port(target), f"/requests?{query}", timeout=5)
            if body is None:
                raise BackendError(f"{pod}: the echo control port did not answer /requests")
            records += json.loads(body)["requests"]
        return records

    def _control_port(self, pod: EmulatedPod) -> int:
        if pod.template.readiness_port is None:
            raise BackendError(f"{pod.ref}: no control port (readiness probe port) declared")
        return pod.template.readiness_port

    # --- precheck and diagnostics ---------------------------------------------------------------------

    def precheck(self, namespace: str) -> PrecheckRun:
        """The suite's IST0143 checker over the namespace's meshed pods: inbound clusters vs. listeners."""
        findings = []
        checked = []
        for pod in self.pods.values():
            if pod.template.namespace != namespace or not pod.template.injected:
                continue
            found = self.listeners(pod.ref)
            exposed = controlplane.exposed_ports(pod.sidecar_config)
            findings += check_pod(pod.template.namespace, pod.template.name, exposed, found)
            checked.append(f"{pod.template.name}.{pod.template.namespace}")
        return render_run(findings, checked)

    def diagnostics(self, pods: Sequence[PodRef]) -> dict[str, str]:
        """Per pod: listeners, capture rules, sidecar configuration and log, app log."""
        out: dict[str, str] = {}
        for ref in pods:
            pod = self.pods.get(ref)
            if pod is None:
                continue
            prefix = f"{ref}"
            if pod.app is not None:
                with contextlib.suppress(OSError):
                    found = self.listeners(ref)
                    out[f"{prefix} listeners"] = "\n".join(f"{lst.address}:{lst.port}" for lst in found)
            out[f"{prefix} app log"] = self._read(self.work_dir / f"{pod.netns}.app.log")
            if pod.template.injected:
                out[f"{prefix} sidecar config"] = json.dumps(pod.sidecar_config, indent=2)
                out[f"{prefix} sidecar log"] = self._read(self.work_dir / f"{pod.netns}.sidecar.log")
                try:
                    out[f"{prefix} capture rules"] = capture.dump(pod.netns)
                except netns.NamespaceError as err:
                    out[f"{prefix} capture rules"] = str(err)
            if pod.template.ambient:
                out[f"{prefix} ztunnel log"] = self._read(self.work_dir / "ztunnel.log")
                try:
                    out[f"{prefix} ambient capture rules"] = ambient_capture.dump(pod.netns)
                except netns.NamespaceError as err:
                    out[f"{prefix} ambient capture rules"] = str(err)
        return out

    @staticmethod
    def _read(path: Path, limit: int = 200) -> str:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return "(none)"
        return "\n".join(lines[-limit:])
