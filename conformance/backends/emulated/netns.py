"""Linux network namespace primitives: create, enter, spawn into, and reap.

Why our own and not `ip netns` or pyroute2's `netns.create`: both fork (`ip` a whole process, pyroute2 a
child) and take 10-20 ms per namespace, while `unshare(CLONE_NEWNET)` in the calling thread plus a bind
mount takes under 1 ms. A thread's network namespace is its own, so the main thread can step into a pod,
create a socket or a netlink handle there (the object stays bound to that namespace), and step back.

Every namespace of a run is named `mic-<tag>-...`; the run holds an flock on `/run/mesh-inbound-conformance/
<tag>.lock`, so a later run can tell a live run's namespaces from those a dead run left behind and reap them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import netns as pyroute2_netns

CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
PR_SET_PDEATHSIG = 1
NETNS_RUN_DIR = Path("/run/netns")
LOCK_DIR = Path("/run/mesh-inbound-conformance")
PREFIX = "mic-"

_libc = ctypes.CDLL(None, use_errno=True)


class NamespaceError(RuntimeError):
    """A namespace operation failed; the message names the namespace and the errno."""


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise NamespaceError(f"{what}: {os.strerror(err)} (errno {err})")


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace behind `fd`."""
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def _ensure_run_dir() -> None:
    # Same dance as iproute2: /run/netns must be a shared mount so the bind mounts propagate.
    NETNS_RUN_DIR.mkdir(parents=True, exist_ok=True)
    path = str(NETNS_RUN_DIR).encode()
    if _libc.mount(b"none", path, b"none", MS_SHARED | MS_REC, None) != 0:
        _check(_libc.mount(path, path, b"none", MS_BIND | MS_REC, None), f"bind-mount {NETNS_RUN_DIR}")
        _check(_libc.mount(b"none", path, b"none", MS_SHARED | MS_REC, None), f"share {NETNS_RUN_DIR}")


def ns_path(name: str) -> Path:
    """Where a named namespace is mounted."""
    return NETNS_RUN_DIR / name


def create(name: str) -> Path:
    """Create a named network namespace (like `ip netns add`) without forking."""
    _ensure_run_dir()
    path = ns_path(name)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
    os.close(fd)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _check(_libc.unshare(CLONE_NEWNET), f"unshare for {name}")
        try:
            _check(
                _libc.mount(b"/proc/thread-self/ns/net", str(path).encode(), b"none", MS_BIND, None),
                f"bind-mount namespace {name}",
            )
        finally:
            setns(home)
    except NamespaceError:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    finally:
        os.close(home)
    return path


def remove(name: str) -> None:
    """Unmount and unlink a named namespace (like `ip netns del`); the kernel frees it once unused."""
    if ns_path(name).exists():
        pyroute2_netns.remove(name)


def list_names(prefix: str = PREFIX) -> list[str]:
    """The named namespaces whose name starts with `prefix`."""
    try:
        return sorted(n for n in os.listdir(NETNS_RUN_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with the calling thread inside namespace `name`, then step back out."""
    target = os.open(ns_path(name), os.O_RDONLY)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        setns(target)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(target)
        os.close(home)


def write_sysctl(name: str, key: str, value: str) -> None:
    """Set a per-namespace sysctl (`net.ipv4.ip_forward`) inside namespace `name`."""
    with entered(name):
        Path("/proc/sys", *key.split(".")).write_text(value)


@dataclass(frozen=True)
class Credentials:
    """The uid/gid a spawned process runs as (None: stay root)."""

    uid: int
    gid: int


def dies_with_harness() -> None:
    """A preexec_fn: the child is killed when the harness's main thread exits."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _preexec(ns_fd: int, credentials: Credentials | None) -> Callable[[], None]:
    harness = os.getpid()

    def run() -> None:
        # In the child, between fork and exec: enter the pod, drop to the proxy user, die with the harness.
        # The death signal is set last: Linux clears it when the process changes its uid or gid.
        if _libc.setns(ns_fd, CLONE_NEWNET) != 0:
            os._exit(126)
        if credentials is not None:
            os.setgroups([])
            os.setgid(credentials.gid)
            os.setuid(credentials.uid)
        dies_with_harness()
        if os.getppid() != harness:
            os._exit(1)  # the harness died before the death signal was set

    return run


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    credentials: Credentials | None = None,
    stdin: int | None = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """Start a process inside namespace `name`; it is killed if the harness dies (PR_SET_PDEATHSIG).

    Must be called from the main thread: the death signal follows the thread that forked.
    """
    fd = os.open(ns_path(name), os.O_RDONLY)
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            stdin=stdin,
            stdout=out,
            stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
            preexec_fn=_preexec(fd, credentials),
            start_new_session=True,
        )
    finally:
        os.close(fd)
        if log:
            out.close()  # type: ignore[union-attr]


def run(name: str, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 30) -> str:
    """Run a short command inside namespace `name` and return its stdout; NamespaceError on failure."""
    return run_all(name, [(argv, input)], timeout=timeout)[0]


def run_all(name: str, commands: Sequence[tuple[Sequence[str], bytes | None]], *, timeout: float = 30) -> list[str]:
    """Run short commands inside namespace `name` concurrently; their stdouts, or NamespaceError."""
    return start_all(name, commands).wait(timeout)


class Started:
    """Commands started in a namespace and not waited for yet (see `start_all`)."""

    def __init__(self, name: str, procs: list[tuple[Sequence[str], subprocess.Popen[bytes], bytes | None]]) -> None:
        self.name = name
        self._procs = procs

    def wait(self, timeout: float = 30) -> list[str]:
        """Feed each its input and wait; their stdouts, or NamespaceError naming the first that failed."""
        outputs = []
        failure = None
        for argv, proc, data in self._procs:
            try:
                out, err = proc.communicate(data, timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            if proc.returncode != 0 and failure is None:
                failure = (
                    f"{' '.join(argv)} in {self.name} exited {proc.returncode}: {err.decode(errors='replace').strip()}"
                )
            outputs.append(out.decode(errors="replace"))
        if failure is not None:
            raise NamespaceError(failure)
        return outputs


def start_all(name: str, commands: Sequence[tuple[Sequence[str], bytes | None]]) -> Started:
    """Start short commands inside namespace `name` and return without waiting for them.

    Loading iptables rules is slow in wall time but not in CPU (~28 ms a table, mostly the kernel's nf_tables
    commit waiting for an RCU grace period): a cluster's pods load theirs side by side, then wait for all.
    The calling thread steps into the namespace to start them, so the children are born there: with no
    preexec_fn, Python can vfork instead of copying the harness (~3 ms a command, ~60 commands a cluster).
    Such a short command does not need to die with the harness.
    """
    with entered(name):
        procs = [
            (
                argv,
                subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE),
                data,
            )
            for argv, data in commands
        ]
    return Started(name, procs)


def pids_in(name: str) -> list[int]:
    """The processes whose network namespace is `name` (like `ip netns pids`)."""
    try:
        target = os.stat(ns_path(name))
    except FileNotFoundError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/{entry}/ns/net")
            if (st.st_ino, st.st_dev) == (target.st_ino, target.st_dev):
                found.append(int(entry))
    return found


def kill_all(pids: Sequence[int], grace: float = 1.0) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL what is left."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _alive(p)]
        if alive:
            time.sleep(0.01)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


class RunLock:
    """The flock that marks a run as alive; its absence marks a run's namespaces as leftovers."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.path = LOCK_DIR / f"{tag}.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Create and lock the run's lock file."""
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        """Unlock and remove the lock file."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            os.close(self._fd)
            self._fd = None


def _tag_of(name: str) -> str | None:
    parts = name.split("-")
    return parts[1] if len(parts) >= 3 and name.startswith(PREFIX) else None


def _owner_alive(tag: str) -> bool:
    path = LOCK_DIR / f"{tag}.lock"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        path.unlink()
    return False


def reap_leftovers() -> list[str]:
    """Remove the namespaces (and their processes) of runs that are no longer alive; return their names."""
    reaped = []
    for name in list_names():
        tag = _tag_of(name)
        if tag is None or _owner_alive(tag):
            continue
        kill_all(pids_in(name), grace=0.5)
        remove(name)
        reaped.append(name)
    return reaped


WORK_DIR_NAME = re.compile(r"^mic-([0-9a-f]{6})-")


def reap_work_dirs(base: Path) -> list[Path]:
    """Remove the `mic-<tag>-*` work folders (sidecar configs, logs) of runs that are no longer alive.

    A SIGKILLed run leaves its folder behind with its namespaces; the next run reaps both.
    """
    reaped = []
    for path in sorted(base.glob("mic-*")):
        match = WORK_DIR_NAME.match(path.name)
        if match is None or not path.is_dir() or path.is_symlink() or _owner_alive(match.group(1)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        reaped.append(path)
    return reaped
