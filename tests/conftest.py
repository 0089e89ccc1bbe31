"""Shared fixtures of the suite's own tests.

Tests marked `netns` build real network namespaces and need root. Elsewhere they skip with the reason;
under CI=true they fail instead, because CI must exercise the emulated backend, never silently skip it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# The echo image the kind backend builds, tagged by the content of the echo program's four files (docs/kind.md):
# computed here from the files themselves, not with the package's echo_digest().
ECHO_IMAGE = (
    "localhost/mesh-inbound-conformance/echo:"
    + hashlib.sha256(
        b"".join(
            (REPO / "workloads" / "echo" / n).read_bytes()
            for n in ("echo.py", "echo_serve.py", "echo_probe.py", "echo_socket.py")
        )
    ).hexdigest()[:12]
)


@pytest.fixture(autouse=True)
def _root_for_netns(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("netns") and os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI=true: this test builds network namespaces and must run as root")
        pytest.skip("needs root (network namespaces, iptables)")


def mic_namespaces() -> set[str]:
    """The emulated backend's namespaces currently on the machine."""
    try:
        return {n for n in os.listdir("/run/netns") if n.startswith("mic-")}
    except FileNotFoundError:
        return set()


def harness_processes() -> set[int]:
    """Processes running the echo program, a sidecar or a ztunnel (by command line).

    Forked containers keep the fork server's command line, which names both programs it runs: they match too.
    """
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"echo.py serve" in cmdline or b"sidecar.py" in cmdline or b"ztunnel.py" in cmdline:
            found.add(int(entry))
    return found


def host_links() -> set[str]:
    """Link names in the host's namespace."""
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def _ours(processes: set[int]) -> set[int]:
    """The harness processes started from this checkout (other checkouts' runs may share the machine)."""
    mine = set()
    for pid in processes:
        try:
            if str(REPO).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                mine.add(pid)
        except OSError:
            continue
    return mine


def _parent(pid: int) -> int | None:
    """A process's parent pid (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def left_behind(names: set[str]) -> set[str]:
    """Namespaces no live run owns: another run's are held by its lock, a leftover's lock is gone."""
    from conformance.backends.emulated import netns

    return {n for n in names if not netns._owner_alive(n.split("-")[1])}


@pytest.fixture
def no_leftovers() -> Iterator[None]:
    """Asserts that a test leaves no namespaces, harness processes or host links behind.

    Other runs may share the machine (parallel checkouts): namespaces still owned by a live run and processes
    started from another checkout are theirs, not leftovers of this test.
    """
    before = (mic_namespaces(), harness_processes(), host_links())
    yield
    time.sleep(0.2)
    after = (left_behind(mic_namespaces()), _ours(harness_processes()), host_links())
    assert after[0] <= before[0], f"namespaces left behind: {sorted(after[0] - before[0])}"
    # A container a cluster that was already up restarted meanwhile (its kubelet, for a failing liveness or
    # startup probe) is a new child of that cluster's fork server, which was there before: not this test's.
    # Such a container may also be killed again between the listing and the look at its parent: a process
    # gone by then (no parent to read) is not left behind either.
    new = {pid for pid in after[1] - before[1] if (parent := _parent(pid)) is not None and parent not in before[1]}
    assert not new, f"processes left behind: {sorted(new)}"
    assert after[2] <= before[2], f"host links left behind: {sorted(after[2] - before[2])}"


def suite_command(*args: str) -> list[str]:
    """Run the conformance suite in a subprocess, the way tox does."""
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--pyargs", "conformance.suite", *args]
