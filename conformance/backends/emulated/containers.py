"""The containers: what runs in the pods' namespaces, from start to readiness to death.

Split from the pods' network (network.py), which makes the namespaces these processes run in and reads their
sockets; this module starts and stops the processes: each pod's echo containers and sidecar (forked by the
node's fork server when they are the suite's own programs), the node's ztunnel, and the kubelet that probes
them. It waits until every pod is ready as the harness means it (every process up, every capture port
listened on, the readiness probe passing). It names the processes of the build under test (the sidecars, the
ztunnel) to deaths.py before it stops any, so that only one that dies on its own is news. It is the kubelet's
container runtime too: a container whose liveness or startup probe fails is stopped and started again here, in
its pod's namespace, as it was first started (never once the cluster is closing, so no process is left behind).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from conformance.backends.base import BackendError, ContainerReadiness, PrerequisiteError, ProcessDeath
from conformance.backends.emulated import ambient_capture, capture, controlplane, injector, kube, netns
from conformance.backends.emulated.deaths import DeathWatch, Watched
from conformance.backends.emulated.kubelet import Kubelet
from conformance.backends.emulated.network import Network
from conformance.backends.emulated.pod import EmulatedPod
from conformance.backends.emulated.processes import ForkServer, ForkServerError, Process
from conformance.backends.emulated.ztunnel_config import ztunnel_config
from conformance.world.resources import echo_program

REFERENCE_SIDECAR = Path(__file__).with_name("sidecar.py")
REFERENCE_ZTUNNEL = Path(__file__).with_name("ztunnel.py")
ZTUNNEL_PORTS = {ambient_capture.INBOUND_PORT, ambient_capture.OUTBOUND_PORT, ambient_capture.TUNNEL_PORT}
ECHO_IMAGE_PATH = "/app/echo.py"


def stop(procs: Sequence[Process], grace: float = 2.0) -> None:
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


class Containers:
    """The processes of every pod of `network` and of its node, and the kubelet (see module docstring)."""

    def __init__(
        self,
        network: Network,
        *,
        sidecar_command: Sequence[str] | None,
        ztunnel_command: Sequence[str] | None,
        inbound_mode: str,
        rewrite_probes: bool,
        ready_timeout: float,
    ) -> None:
        self.network = network
        self.sidecar_command = list(sidecar_command) if sidecar_command else None
        self.ztunnel_command = list(ztunnel_command) if ztunnel_command else None
        self.inbound_mode = inbound_mode
        self.rewrite_probes = rewrite_probes
        """The mesh-wide probe rewrite (Istio's values.sidecarInjectorWebhook.rewriteAppHTTPProbe)."""
        self.ready_timeout = ready_timeout
        self.work_dir = Path()
        """Where each process's configuration and log go (the cluster's work directory)."""
        self.objects = kube.Objects()
        """The deployed objects a sidecar's configuration is computed from (as istiod has them)."""
        self.ztunnel: Process | None = None
        self.kubelet: Kubelet | None = None
        self._forkserver: ForkServer | None = None
        self.watch = DeathWatch(network)
        self._runtime_lock = threading.Lock()
        """Held while the kubelet's thread replaces a container's process, and while close() or remove() takes
        the processes to stop: a restart never starts a process that teardown no longer sees."""
        self._closing = False
        self._removed: set[str] = set()

    # --- lifecycle -----------------------------------------------------------------------------------

    def start_forkserver(self, work_dir: Path) -> None:
        """Start the node's fork server, first: it imports Python's asyncio while the namespaces are made."""
        self.work_dir = work_dir
        self._forkserver = ForkServer(
            [echo_program(), REFERENCE_SIDECAR], self.work_dir / "forkserver.log", netns.dies_with_harness
        )

    def start(self, objects: kube.Objects) -> None:
        """Start the kubelet, every pod's containers and the node's ztunnel; probe each pod once it is ready.

        The pods the kubelet may restart (a liveness or startup probe) start first, and each pod is probed as soon
        as it is ready, as a kubelet probes a pod once its containers run, whatever the other pods do: a restart
        story (a liveness probe that restarts its container once a second or two) then runs while the other ~60
        containers start, instead of after them (~0.7 s of a run spent waiting for the first restart).
        """
        self.objects = objects
        probed = [p for p in self.network.pods.values() if self._restarts_possible(p)]
        others = [p for p in self.network.pods.values() if not self._restarts_possible(p)]
        self.kubelet = Kubelet(self.network.node_fd, self)
        self.kubelet.start()
        for group in (probed, others):
            for pod in group:
                self._start_app(pod)
            for pod in group:
                if pod.template.injected:
                    self._start_sidecar(pod)
        self.sync_ztunnel()
        self._wait_ready(probed + others, then=self._watch_probes)
        self.watch.armed = True

    def add(self, pod: EmulatedPod) -> None:
        """Start a new pod's containers (and tell ztunnel of it), wait until it is ready, probe it."""
        self._start_app(pod)
        if pod.template.injected:
            self._start_sidecar(pod)
        if pod.template.ambient:
            self.sync_ztunnel()
        self._wait_ready([pod], then=self._watch_probes)

    def enrolled(self, pods: Sequence[EmulatedPod]) -> None:
        """Running pods were just enrolled (network.enrol): tell ztunnel, wait until it serves them."""
        self.sync_ztunnel()
        self._wait_ready(pods)

    def remove(self, pod: EmulatedPod) -> None:
        """Kill a pod's containers (grace period 0) and stop probing it."""
        self.note_deaths()
        if self.kubelet is not None:
            self.kubelet.forget(str(pod.ref))
        with self._runtime_lock:
            self._removed.add(str(pod.ref))
            processes = pod.processes()
        stop(processes, grace=0)

    def close(self) -> None:
        """Stop the kubelet, every container, ztunnel and the fork server; idempotent."""
        # A death seen now is still news for the report; a read that fails here must not stop the teardown.
        with contextlib.suppress(OSError):
            self.note_deaths()
        self.watch.armed = False
        with self._runtime_lock:
            self._closing = True
        if self.kubelet is not None:
            self.kubelet.stop()
            self.kubelet = None
        with self._runtime_lock:
            processes = [p for pod in self.network.pods.values() for p in pod.processes()]
        stop(processes)
        if self.ztunnel is not None:
            stop([self.ztunnel])
            self.ztunnel = None
        if self._forkserver is not None:
            self._forkserver.close()
            self._forkserver = None

    def set_inbound_mode(self, mode: str) -> None:
        """Recompute every sidecar's configuration and restart the sidecars (as the istiod switch needs)."""
        self.inbound_mode = mode
        self.note_deaths()  # before the restart replaces a sidecar that died on its own
        meshed = [p for p in self.network.pods.values() if p.template.injected]
        stop([p.sidecar for p in meshed if p.sidecar is not None])
        meshed.sort(key=lambda pod: not self._restarts_possible(pod))  # as in start()
        for pod in meshed:
            self._start_sidecar(pod)
        # The injector's probe destination changed with the mode: as after a rollout restart, probe afresh.
        self._wait_ready(meshed, then=self._watch_probes)

    # --- starting ------------------------------------------------------------------------------------

    def _env(self, pod: EmulatedPod) -> dict[str, str]:
        values = {
            "metadata.name": pod.template.name,
            "metadata.namespace": pod.template.namespace,
            "status.podIP": pod.ip,
            "status.podIPs": ",".join(pod.ips or (pod.ip,)),
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
        for index in range(len(pod.template.containers) or 1):
            self._start_container(pod, index)

    def _start_container(self, pod: EmulatedPod, index: int) -> None:
        """Start container `index` of the pod (0: the app, `pod.app`); every one runs the echo program."""
        # The image's /app/echo.py is this very file; -I -S: no site-packages, like the slim image.
        if index == 0:
            argv = [sys.executable, "-I", "-S", str(echo_program()), *pod.template.args]
            pod.app = self._spawn(pod.netns, argv, env=self._env(pod), log=self.work_dir / f"{pod.netns}.app.log")
            return
        container = pod.template.containers[index]
        argv = [sys.executable, "-I", "-S", str(echo_program()), *container.args]
        log = self.work_dir / f"{pod.netns}.{container.name}.log"
        pod.containers[container.name] = self._spawn(pod.netns, argv, env=self._env(pod), log=log)

    # --- the kubelet's container runtime -------------------------------------------------------------

    def _find(self, pod: str, container: str) -> tuple[EmulatedPod, int] | None:
        for candidate in self.network.pods.values():
            if str(candidate.ref) == pod:
                names = [c.name for c in candidate.template.containers]
                return (candidate, names.index(container)) if container in names else None
        return None

    def kill_container(self, pod: str, container: str) -> None:
        """Stop a container's process as the kubelet kills it: SIGTERM, SIGKILL after a second (kubelet thread)."""
        with self._runtime_lock:
            found = self._find(pod, container)
            if found is None or self._closing or pod in self._removed:
                return
            target, index = found
            process = target.app if index == 0 else target.containers.get(container)
        if process is not None:
            stop([process], grace=1.0)

    def start_container(self, pod: str, container: str) -> None:
        """Start a killed container's process again, as it was first started (kubelet thread)."""
        with self._runtime_lock:
            found = self._find(pod, container)
            if found is None or self._closing or pod in self._removed:
                return
            target, index = found
            try:
                self._start_container(target, index)
            except BackendError as err:
                with contextlib.suppress(OSError), open(self.work_dir / f"{target.netns}.{container}.log", "a") as log:
                    log.write(f"restart failed: {err}\n")

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
        family = self.network.family
        ips = pod.ips or (pod.ip,)
        pod.sidecar_config = controlplane.sidecar_config(pod.template, ips, family, self.objects, self.inbound_mode)
        pod.sidecar_config["status"] = injector.status_config(pod.template, self.rewrite_probes, self.inbound_mode)
        config_path = self.work_dir / f"{pod.netns}.sidecar.json"
        config_path.write_text(json.dumps(pod.sidecar_config, indent=2) + "\n")
        config_path.chmod(0o644)
        argv = self._sidecar_argv(config_path)
        # The reference sidecar drops to 1337 itself after reading its configuration as root (so it can run
        # from anywhere); a replaced sidecar is started as 1337, as Envoy is in a real pod.
        # In TPROXY mode that is uid 0 / gid 1337 (the configuration's proxy_uid / proxy_gid).
        uid, gid = int(pod.sidecar_config["proxy_uid"]), int(pod.sidecar_config["proxy_gid"])  # type: ignore[call-overload]
        credentials = netns.Credentials(uid, gid) if self.sidecar_command else None
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

    def sync_ztunnel(self) -> None:
        """Write ztunnel's configuration; start the node's ztunnel, or have it re-read (SIGHUP)."""
        enrolled = [p for p in self.network.pods.values() if p.template.ambient]
        if not enrolled and self.ztunnel is None:
            return
        node = self.network.node
        workloads = [(p.template, p.ip, str(netns.ns_path(p.netns))) for p in enrolled]
        path = self.work_dir / "ztunnel.json"
        path.write_text(json.dumps(ztunnel_config(node, workloads, self.network.endpoints), indent=2) + "\n")
        self.note_deaths()  # a dead ztunnel is started again below: its death is news first
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
            self.ztunnel = netns.spawn(node, argv, env=env, log=self.work_dir / "ztunnel.log")
        except (FileNotFoundError, PermissionError) as err:
            raise PrerequisiteError(f"--emulator-ztunnel: cannot run {argv[0]}: {err.strerror}") from None

    # --- readiness -----------------------------------------------------------------------------------

    def _wait_ready(self, pods: Iterable[EmulatedPod], then: Callable[[EmulatedPod], None] | None = None) -> None:
        """Wait until every pod is ready, calling `then` with each as soon as it is."""
        pending = list(pods)
        deadline = time.monotonic() + self.ready_timeout
        while pending:
            still = []
            for pod in pending:
                problem = self._not_ready(pod)
                if problem is None:
                    if then is not None:
                        then(pod)
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
            if proc.poll() is not None and not (self.kubelet and self.kubelet.down(str(pod.ref), name)):
                # (One the kubelet killed for a failed liveness or startup probe is started again by it.)
                return f"exited app container {name} (exit {proc.returncode})"
        if pod.template.injected:
            assert pod.sidecar is not None
            if pod.sidecar.poll() is not None:
                return f"exited sidecar (exit {pod.sidecar.returncode})"
            missing = {capture.INBOUND_CAPTURE_PORT, capture.OUTBOUND_CAPTURE_PORT} - self.network.listening(pod)
            if missing:
                return f"sidecar not listening on {sorted(missing)} for {self.network.family}"
        if pod.template.ambient:
            if self.ztunnel is None or self.ztunnel.poll() is not None:
                code = self.ztunnel.returncode if self.ztunnel is not None else None
                return f"exited ztunnel (exit {code})"
            missing = ZTUNNEL_PORTS - self.network.listening(pod)
            if missing:
                return f"ztunnel not listening in the pod on {sorted(missing)}"
        port = pod.template.readiness_port
        if port is not None and not self._http_ok(pod, port):
            return f"readiness probe GET :{port}/healthz failing"
        return None

    def _http_ok(self, pod: EmulatedPod, port: int) -> bool:
        # Like kubelet: from the node, to the pod IP (the port is excluded from capture).
        try:
            body = self.network.node_http(pod.ip, port, "/healthz", timeout=0.5)
        except OSError:
            return False
        return body is not None

    def _tail(self, pod: EmulatedPod, problem: str, lines: int = 5) -> str:
        which = "sidecar" if "sidecar" in problem else "app"
        path = self.work_dir / f"{pod.netns}.{which}.log"
        if "ztunnel" in problem:
            path = self.work_dir / "ztunnel.log"
        try:
            return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:]) or "(empty)"
        except OSError:
            return "(no log)"

    # --- the kubelet's probes ------------------------------------------------------------------------

    def _kubelet_probes(self, pod: EmulatedPod) -> dict[str, kube.ContainerProbes]:
        return injector.kubelet_probes(pod.template, self.rewrite_probes)

    def _restarts_possible(self, pod: EmulatedPod) -> bool:
        """Whether the kubelet may restart a container of the pod: it has a liveness or a startup probe."""
        return any(p.liveness or p.startup for p in self._kubelet_probes(pod).values())

    def _watch_probes(self, pod: EmulatedPod) -> None:
        if self.kubelet is None:
            return
        probes = self._kubelet_probes(pod)
        ports = {p.port for container in probes.values() for p in container.of_use().values()}
        if injector.STATUS_PORT in ports and pod.sidecar is not None:
            # Like a pod whose istio-proxy is not yet ready: wait (briefly) for the status port before probing.
            deadline = time.monotonic() + 2
            while injector.STATUS_PORT not in self.network.listening(pod) and time.monotonic() < deadline:
                time.sleep(0.005)
        self.kubelet.watch(str(pod.ref), pod.ip, probes)

    def readiness(self, pod: EmulatedPod) -> dict[str, ContainerReadiness]:
        """Each probed container's readiness and restart count as the emulated kubelet has them."""
        if self.kubelet is None:
            raise BackendError("the emulated kubelet is not running")
        out = {}
        for name, (state, probes, since) in self.kubelet.status(str(pod.ref)).items():
            out[name] = ContainerReadiness(state.ready, state.settled(probes), state.last, since, state.restarts)
        return out

    # --- the build's processes ----------------------------------------------------------------------

    def _watched(self) -> list[Watched]:
        """The processes of the build under test now in place: the sidecars, and the node's ztunnel."""
        pods = self.network.pods.values()
        sidecar_ports = frozenset({capture.INBOUND_CAPTURE_PORT, capture.OUTBOUND_CAPTURE_PORT})
        watched = [
            Watched(
                f"sidecar of {pod.ref}",
                pod.sidecar,
                (pod.ref,),
                self.work_dir / f"{pod.netns}.sidecar.log",
                sidecar_ports,
            )
            for pod in pods
            if pod.sidecar is not None
        ]
        if self.ztunnel is not None:
            enrolled = tuple(p.ref for p in pods if p.template.ambient)
            log = self.work_dir / "ztunnel.log"
            watched.append(Watched("ztunnel (node)", self.ztunnel, enrolled, log, frozenset(ZTUNNEL_PORTS)))
        return watched

    def note_deaths(self) -> None:
        """Record the build's processes that died on their own (deaths.py); before the harness stops any."""
        self.watch.note(self._watched())

    def deaths(self) -> list[ProcessDeath]:
        """The sidecars and ztunnel that died on their own (not stopped by a switch or teardown), each once.

        `ongoing` while the dead process is still the one in place (a profile switch restarts the sidecars).
        """
        return self.watch.deaths(self._watched())
