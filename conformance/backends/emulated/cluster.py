"""The emulated cluster: the Cluster interface over the pods' network and the containers.

A node namespace holds a bridge; each pod is a namespace with Istio's capture rules (if meshed), the echo
program as the app container and a sidecar process. network.py makes the namespaces, links, addresses,
capture rules and Services; containers.py starts the processes in them and waits until they are ready. This
module composes the two in the order a cluster comes up and goes down, and answers the Cluster interface
(base.py): what a question needs of both (a probe from one pod to another, the precheck, diagnostics) is here.

Lifecycle: `up()` reaps what dead runs left, builds the node, the pods and the Services, starts the
containers and waits until every readiness check passes; `down()` stops every process and removes every
namespace it made. Nothing touches the host's namespace: the bridge, the routes and every iptables rule
live in namespaces this run created and named `mic-<tag>-...`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from conformance.backends.base import (
    BackendError,
    Cluster,
    ContainerReadiness,
    Manifest,
    PrerequisiteError,
    ProbeRequest,
    ProcessDeath,
)
from conformance.backends.emulated import ambient_capture, capture, controlplane, kube, netns
from conformance.backends.emulated.containers import Containers
from conformance.backends.emulated.dialer import Dialer
from conformance.backends.emulated.network import Network
from conformance.backends.emulated.pod import EmulatedPod
from conformance.backends.emulated.processes import ForkServerError
from conformance.backends.precheck import Listener, PrecheckRun, check_pod, render_run
from conformance.world.pods import PodRef


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
        self.tag = secrets.token_hex(3)
        self.network = Network(family, self.tag)
        self.family = family
        self.containers = Containers(
            self.network,
            sidecar_command=sidecar_command,
            ztunnel_command=ztunnel_command,
            inbound_mode=inbound_mode,
            rewrite_probes=rewrite_probes,
            ready_timeout=ready_timeout,
        )
        self._lock = netns.RunLock(self.tag)
        self._base_work_dir = work_dir
        self.work_dir = Path()
        self._dialer: Dialer | None = None
        self._started = False
        self.timings: dict[str, float] = {}

    @property
    def pods(self) -> dict[PodRef, EmulatedPod]:
        """Every pod, by the name tests use (the network's record, which the containers complete)."""
        return self.network.pods

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
        self._dialer = Dialer(self.network.open())
        self.containers.start_forkserver(self.work_dir)
        try:
            objects = kube.read([dict(m) for m in manifests])
            self.network.create_node()
            # Every pod's capture rules load side by side (netns.start_all), and all are in place before any
            # container starts, as istio-init and istio-cni finish before a pod's containers do.
            self.network.create_pods(objects.pods)
            self.network.create_services(objects.services)
            self.timings["network"] = time.perf_counter() - start
            self.containers.start(objects)
        except kube.ManifestError as err:
            raise BackendError(str(err)) from None
        except (netns.NamespaceError, ForkServerError) as err:
            raise BackendError(f"emulated cluster: {err}") from None
        self.timings["up"] = time.perf_counter() - start

    def down(self) -> None:
        """Stop every process, remove every namespace and the work directory; idempotent."""
        if not self._started:
            return
        self._started = False
        try:
            self.containers.close()
        finally:  # whatever stopped the containers' teardown, the namespaces go
            self.network.close()
            if self._dialer is not None:
                self._dialer.close()
                self._dialer = None
            if self.work_dir != Path() and self.work_dir.exists():
                shutil.rmtree(self.work_dir, ignore_errors=True)
            self._lock.release()

    def add_pod(self, template: kube.PodTemplate) -> EmulatedPod:
        """Create one more pod on a running cluster, start its containers and wait until it is ready."""
        pod = self.network.add_pod(template)
        self.containers.add(pod)
        return pod

    def remove_pod(self, ref: PodRef) -> None:
        """Kill a pod's containers (grace period 0) and delete its network namespace."""
        pod = self.network.pods[ref]
        self.containers.remove(pod)
        self.network.remove_pod(pod)
        if pod.template.ambient:
            self.containers.sync_ztunnel()

    def enrol(self, namespace: str) -> None:
        """As istio-cni on a namespace labelled while it runs: in-pod rules into its pods, then ztunnel is told.

        The new configuration reaches ztunnel as every pod change does (rewritten file, SIGHUP); waits until
        ztunnel listens inside each newly enrolled pod, or says why not.
        """
        if namespace not in {p.template.namespace for p in self.pods.values()}:
            raise BackendError(f"enrol {namespace}: not a namespace of this run")
        try:
            pods = self.network.enrol(namespace)
        except netns.NamespaceError as err:
            raise BackendError(f"emulated cluster: enrol {namespace}: {err}") from None
        if pods:
            self.containers.enrolled(pods)

    def deaths(self) -> list[ProcessDeath]:
        """The sidecars and ztunnel that died on their own (not stopped by a switch or teardown), each once."""
        return self.containers.deaths()

    # --- mesh ----------------------------------------------------------------------------------------

    @property
    def inbound_mode(self) -> str:
        """The emulated mesh's inbound setting."""
        return self.containers.inbound_mode

    def set_inbound_mode(self, mode: str) -> None:
        """Recompute every sidecar's configuration and restart the sidecars (as the istiod switch needs)."""
        if mode not in controlplane.INBOUND_MODES:
            raise ValueError(f"inbound mode {mode!r}: expected one of {', '.join(controlplane.INBOUND_MODES)}")
        if mode != self.containers.inbound_mode:
            self.containers.set_inbound_mode(mode)

    def mesh_info(self) -> dict[str, str]:
        """The emulated reference mesh, or the replaced sidecar program."""
        sidecar, ztunnel = self.containers.sidecar_command, self.containers.ztunnel_command
        if sidecar:
            # The build under test is the given program, not the suite's reference sidecar.
            version, build = "custom sidecar", shlex.join(sidecar)
        else:
            version, build = "reference", "reference sidecar"
        if ztunnel:
            version = "custom ztunnel" if version == "reference" else f"{version} and ztunnel"
            build += f", ztunnel {shlex.join(ztunnel)}"
        return {"name": "emulated", "version": version, "build": build, "hub": "", "tag": ""}

    # --- addresses, probes, records --------------------------------------------------------------------

    def pod_ip(self, pod: PodRef, family: str | None = None) -> str:
        """The pod's address of `family` (None: the primary one, status.podIP)."""
        ip = self.network.pod(pod).ip_of(family)
        if ip is None:
            raise BackendError(f"pod {pod} has no {family} address in this {self.family} cluster")
        return ip

    def service_ip(self, namespace: str, name: str, family: str | None = None) -> str:
        """The Service's ClusterIP of `family` (None: the primary one)."""
        return self.network.service_ip(namespace, name, family)

    def listeners(self, pod: PodRef) -> list[Listener]:
        """The pod's listening sockets, both families (what `ss -ltn` in any of its containers shows)."""
        return self.network.listeners(self.network.pod(pod))

    def probe(self, requests: Sequence[ProbeRequest], timeout: float) -> list[dict[str, object]]:
        """Dial every request from inside its source pod, concurrently, on one event loop (dialer.py)."""
        assert self._dialer is not None
        pod = self.network.pod
        return self._dialer.probe(requests, timeout, lambda ref: pod(ref).fd)

    def request_record(self, pod: PodRef, request_ids: Sequence[str]) -> list[dict[str, object]]:
        """Ask the pod's echo control port (from the node, like a port-forward) for these request ids."""
        target = self.network.pod(pod)
        records: list[dict[str, object]] = []
        # Chunk the ids so the request line stays short.
        ids = list(request_ids)
        for start in range(0, len(ids), 200):
            query = "&".join(f"id={i}" for i in ids[start : start + 200])
            body = self.network.node_http(target.ip, self._control_port(target), f"/requests?{query}", timeout=5)
            if body is None:
                raise BackendError(f"{pod}: the echo control port did not answer /requests")
            records += json.loads(body)["requests"]
        return records

    @staticmethod
    def _control_port(pod: EmulatedPod) -> int:
        if pod.template.readiness_port is None:
            raise BackendError(f"{pod.ref}: no control port (readiness probe port) declared")
        return pod.template.readiness_port

    # --- kubelet probes ---------------------------------------------------------------------------------

    def container_readiness(self, pod: PodRef) -> dict[str, ContainerReadiness]:
        """Each probed container's readiness as the emulated kubelet has it."""
        return self.containers.readiness(self.network.pod(pod))

    def probe_connections(self, pod: PodRef, container: str, after: int = 0) -> list[dict[str, object]]:
        """The connections a container's echo program accepted on its app ports (newer than sequence `after`)."""
        target = self.network.pod(pod)
        spec = next((c for c in target.template.containers if c.name == container), None)
        if spec is None or "--control-port" not in spec.args:
            raise BackendError(f"{pod}: no container {container} with a control port")
        port = int(spec.args[spec.args.index("--control-port") + 1])
        try:
            body = self.network.node_http(target.ip, port, f"/connections?after={after}", timeout=5)
        except OSError as err:  # e.g. a container the kubelet killed and has not started again yet
            raise BackendError(f"{pod}: container {container}: /connections: {err.strerror or err}") from None
        if body is None:
            raise BackendError(f"{pod}: container {container} did not answer /connections")
        records: list[dict[str, object]] = json.loads(body)["connections"]
        return records

    # --- precheck and diagnostics ---------------------------------------------------------------------

    def precheck(self, namespace: str) -> PrecheckRun:
        """The suite's IST0143 checker over the namespace's meshed pods: inbound clusters vs. listeners."""
        findings = []
        checked = []
        for pod in self.pods.values():
            if pod.template.namespace != namespace or not pod.template.injected:
                continue
            found = self.network.listeners(pod)
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
                    found = self.network.listeners(pod)
                    out[f"{prefix} listeners"] = "\n".join(lst.shown for lst in found)
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
