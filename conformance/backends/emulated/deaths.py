"""Deaths of the build under test: a sidecar or ztunnel that stops on its own while the run still needs it.

Split from containers.py, which starts and stops the processes and so knows which ones are the build's and
when it stops them itself: this module only remembers what it saw die, once each, with how it ended and the
last lines of its log (read at once: the work folder goes at teardown), so the report can void the cells
that depended on it (issue 20 item 18). A process that stopped listening where its pods' capture rules send
traffic counts as dead too, after a grace to exit.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from conformance.backends.base import ProcessDeath
from conformance.backends.emulated.network import Network
from conformance.backends.emulated.processes import Process, describe_exit
from conformance.world.pods import PodRef

DEATH_LOG_LINES = 5
"""Lines of a dead process's log kept with the news of its death."""
DEATH_GRACE = 2.0
"""Seconds a watched process that stopped listening has to exit before it is reported as stopped anyway."""


@dataclass(frozen=True)
class Watched:
    """A process of the build under test now in place."""

    name: str
    """Which, and whose: `sidecar of client.mic-mesh`, `ztunnel (node)`."""
    process: Process
    pods: tuple[PodRef, ...]
    """The pods whose traffic it carries."""
    log: Path
    ports: frozenset[int]
    """Where it listens in its pods while it serves them."""


class DeathWatch:
    """The build's processes seen dead, each with the news of its death (see module docstring)."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self.armed = False
        """Every pod was ready once: from then on a process of the build that stops is news (before, a setup
        failure, which says so itself)."""
        self._deaths: list[tuple[Process, ProcessDeath]] = []

    def _serving(self, watched: Watched) -> bool:
        """Whether a watched process still listens where its pods' capture rules send traffic.

        A sidecar on 15001 and 15006 in its pod; ztunnel on its ports in at least one enrolled pod (a pod
        enrolled a moment ago may not have them yet).
        """
        pods = self.network.pods
        present = [pods[ref] for ref in watched.pods if ref in pods]
        return not present or any(watched.ports <= self.network.listening(pod) for pod in present)

    def note(self, in_place: Sequence[Watched]) -> None:
        """Record each watched process that has exited, once, with its log's last lines.

        One that has stopped listening is given DEATH_GRACE seconds to exit: a proxy that handles SIGTERM (the
        `timeout 2` of issue 20) closes its listeners first, and under load its exit can lag by seconds, while
        the cells already fail. Called before the harness itself stops or replaces one, so that only deaths the
        harness did not cause are news.
        """
        if not self.armed:
            return
        ended = [
            w
            for w in in_place
            if not any(seen is w.process for seen, _ in self._deaths)
            and (w.process.poll() is not None or not self._serving(w))
        ]
        deadline = time.monotonic() + DEATH_GRACE  # one grace for all: a broken build costs it once
        for w in ended:
            try:
                code: int | None = w.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                code = None
            status = describe_exit(code) if code is not None else "stopped listening, still running"
            try:
                tail = tuple(w.log.read_text(errors="replace").strip().splitlines()[-DEATH_LOG_LINES:])
            except OSError:
                tail = ()
            death = ProcessDeath(w.name, status, w.pods, tail, f"{w.name}/{w.process.pid}/{len(self._deaths)}")
            self._deaths.append((w.process, death))

    def deaths(self, in_place: Sequence[Watched]) -> list[ProcessDeath]:
        """Every death so far, oldest first; `ongoing` while the dead process is still one of `in_place`."""
        self.note(in_place)
        return [
            dataclasses.replace(death, ongoing=any(proc is w.process for w in in_place)) for proc, death in self._deaths
        ]
