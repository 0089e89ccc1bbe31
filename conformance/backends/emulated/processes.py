"""Containers' processes: exec'd ones (subprocess.Popen) and forked ones (the fork server), behind one type.

The cluster starts, polls, signals and waits for a container's process without knowing how it was started:
the echo program and the reference sidecar are forked by the node's fork server (forkserver.py says why),
anything else (a replaced sidecar or ztunnel) is exec'd. A forked process is the server's child, not ours:
its exit status comes from the server, which reports each child's exit on the same socket.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

FORKSERVER = Path(__file__).with_name("forkserver.py")


class Process(Protocol):
    """What the cluster needs of a container's process (subprocess.Popen has it)."""

    @property
    def pid(self) -> int:
        """The process id (in the harness's pid namespace)."""

    @property
    def returncode(self) -> int | None:
        """The exit status once known: the exit code, or -N for signal N; None while running."""

    def poll(self) -> int | None:
        """The exit status if it exited, else None."""

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit; subprocess.TimeoutExpired after `timeout` seconds."""

    def send_signal(self, sig: int) -> None:
        """Signal the process (nothing once it has exited)."""

    def terminate(self) -> None:
        """SIGTERM."""

    def kill(self) -> None:
        """SIGKILL."""


def describe_exit(returncode: int) -> str:
    """A process's end in words: `exit status 124`, `signal 9 (SIGKILL)`."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"
    return f"signal {-returncode} ({name})"


class ForkServerError(RuntimeError):
    """The fork server could not start a process, or is gone; the message says why."""


class ForkServer:
    """The harness's end of forkserver.py: start a program, learn its children's exits.

    One per cluster, started from the main thread with PR_SET_PDEATHSIG (it dies with the harness, and its
    children with it). A lock makes it safe to poll from the kubelet's thread.
    """

    def __init__(self, programs: Sequence[Path], log: Path, preexec: Callable[[], None]) -> None:
        self.programs = {str(p) for p in programs}
        self._conn, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with open(log, "ab") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(FORKSERVER), str(theirs.fileno()), *self.programs],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=(theirs.fileno(),),
                preexec_fn=preexec,
                # Its own session, as exec'd containers have: a terminal's Ctrl-C (and tox's second SIGINT to the
                # process group) is the harness's to handle; the server would die of it, and its children with it.
                start_new_session=True,
            )
        theirs.close()
        self._log = log
        self._lock = threading.Lock()
        self._exits: dict[int, int] = {}
        self._pending: collections.deque[ForkedProcess] = collections.deque()
        """Started processes whose answer (pid or error) has not been read yet, in the order asked."""
        self._gone = False

    @property
    def pid(self) -> int:
        """The server's own process id."""
        return self._proc.pid

    def serves(self, argv: Sequence[str]) -> bool:
        """Whether `argv` is `python -I -S PROGRAM ...` for a program this server preloaded."""
        return len(argv) >= 4 and list(argv[:3]) == [sys.executable, "-I", "-S"] and argv[3] in self.programs

    def start(self, argv: Sequence[str], env: Mapping[str, str], netns: Path, log: Path | None) -> ForkedProcess:
        """Ask for `argv` to be forked inside the network namespace at `netns`, its output appended to `log`.

        Returns at once: the server's answer (the pid) is read when the process is first looked at, so that a
        cluster's ~60 containers are asked for in one go instead of one round trip (and one fork) at a time.
        """
        ns_fd = os.open(netns, os.O_RDONLY)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        log_fd = os.open(log, flags, 0o644) if log else os.open(os.devnull, os.O_WRONLY)
        with self._lock:
            try:
                # The socket holds the requests until the server, its programs loaded, reads them.
                request = json.dumps({"argv": list(argv), "env": dict(env)}).encode()
                socket.send_fds(self._conn, [request], [ns_fd, log_fd])
            except OSError as err:
                try:
                    self._proc.wait(1)  # a reset socket: the server is exiting, or gone
                except subprocess.TimeoutExpired:
                    raise ForkServerError(f"fork server: {err}") from None
                self._gone = True
                raise ForkServerError(self._exited()) from None
            finally:
                os.close(ns_fd)
                os.close(log_fd)
            process = ForkedProcess(self, list(argv), log)
            self._pending.append(process)
        return process

    def resolve(self, process: ForkedProcess) -> None:
        """Read the server's answers until this process's has come (or the server is gone)."""
        with self._lock:
            try:
                while process in self._pending:
                    self._receive(None)
            except ForkServerError as err:
                # Gone before it answered: whatever it had forked died with it.
                for waiting in self._pending:
                    waiting.failed(f"{err}", -signal.SIGKILL)
                self._pending.clear()

    def exit_status(self, pid: int, timeout: float = 0.0) -> int | None:
        """A child's exit status, waiting up to `timeout` seconds for news of it."""
        deadline = time.monotonic() + timeout
        with self._lock:
            try:
                while pid not in self._exits:
                    left = deadline - time.monotonic()
                    if not self._receive(max(0.0, left)) and left <= 0:
                        break
            except ForkServerError:
                # The server is gone, and with it the news: a child still in /proc is running (a program that
                # changed its uid lost PR_SET_PDEATHSIG); one that is not was killed with the server.
                if pid not in self._exits and not _running(pid):
                    self._exits[pid] = -signal.SIGKILL
            return self._exits.get(pid)

    def close(self) -> None:
        """Close the socket: the server exits, and any child still running is killed with it."""
        with self._lock:
            self._conn.close()
            self._gone = True
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def _exited(self) -> str:
        """Why the server is gone, in one line: its log's last line (the log goes with the run's work folder)."""
        try:
            lines = self._log.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return f"the fork server exited ({lines[-1].strip() if lines else 'no output'}); its log: {self._log}"

    def _receive(self, timeout: float | None) -> bool:
        """Read one message (waiting up to `timeout`; None: no limit); False if none came."""
        if self._gone:
            raise ForkServerError(self._exited())
        ready, _, _ = select.select([self._conn], [], [], timeout)
        if not ready:
            return False
        try:
            data = self._conn.recv(1 << 16)
        except ConnectionError:
            data = b""
        if not data:
            # Every child still running was killed with the server (PR_SET_PDEATHSIG).
            self._gone = True
            raise ForkServerError(self._exited())
        message = json.loads(data)
        if "exit" in message:
            self._exits[int(message["exit"])] = int(message["code"])
        elif "pid" in message:
            # A pid is reused only after its earlier owner was reaped, whose exit came before on this socket.
            self._exits.pop(int(message["pid"]), None)
            self._pending.popleft().started(int(message["pid"]))
        else:
            self._pending.popleft().failed(f"fork server: {message.get('error', message)}", 127)
        return True


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class ForkedProcess:
    """A process the fork server started: a Process whose pid and exit status the server reports."""

    def __init__(self, server: ForkServer, args: list[str], log: Path | None) -> None:
        self.server = server
        self.args = args
        self.log = log
        self.returncode: int | None = None
        self._pid: int | None = None
        self._resolved = False

    @property
    def pid(self) -> int:
        """The process id (0 if it never started: then `returncode` says so)."""
        if not self._resolved:
            self.server.resolve(self)
        return self._pid or 0

    def started(self, pid: int) -> None:
        """The server forked it (called by the server's client)."""
        self._pid, self._resolved = pid, True

    def failed(self, reason: str, returncode: int) -> None:
        """It could not be started: exited at once, the reason in its log (as a failed exec would print)."""
        self._resolved, self.returncode = True, returncode
        if self.log is not None:
            with contextlib.suppress(OSError), open(self.log, "a") as out:
                out.write(reason + "\n")

    def poll(self) -> int | None:
        """The exit status if the server reported it."""
        pid = self.pid
        if self.returncode is None:
            self.returncode = self.server.exit_status(pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the server's word of the exit (as Popen.wait, TimeoutExpired on timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = 0.5 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            self.returncode = self.server.exit_status(self.pid, min(left, 0.5))
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal it unless it is known to have exited (its pid may be reused by then)."""
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)
