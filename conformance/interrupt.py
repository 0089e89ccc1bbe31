"""Ctrl-C and SIGTERM: one interruption, then a cleanup that no further signal breaks.

tox forwards a second SIGINT to the process group that already got the terminal's Ctrl-C, and CI may follow
SIGTERM with another. The first signal raises KeyboardInterrupt (pytest stops, the session fixture tears the
cluster down, the report is written with `interrupted: true`); later ones only count: raising again in the
middle of the teardown printed a second KeyboardInterrupt traceback, killed pytest before the report was
final and left the teardown half done.
"""

from __future__ import annotations

import signal
from types import FrameType


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal: pytest stops as on Ctrl-C.

    Its own class, so pytest prints one line for it instead of a KeyboardInterrupt with its location and a hint.
    """


class Interrupts:
    """The run's signal handler for SIGINT and SIGTERM."""

    def __init__(self, report: str = "") -> None:
        self.received: list[int] = []
        self.report = report
        """Where the report goes, said in the one line pytest prints for the interruption."""

    def install(self) -> None:
        """Take over SIGINT and SIGTERM for the rest of the run."""
        signal.signal(signal.SIGINT, self.handle)
        signal.signal(signal.SIGTERM, self.handle)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The first signal interrupts the run; later ones wait for the cleanup the first one started."""
        self.received.append(signum)
        if len(self.received) == 1:
            where = f", report: {self.report}" if self.report else ""
            raise Interrupted(f"{signal.Signals(signum).name}: run stopped, cleaning up{where}")
