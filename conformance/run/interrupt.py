"""Ctrl-C and SIGTERM: one interruption, then a cleanup that no further signal breaks.

tox forwards a second SIGINT to the process group that already got the terminal's Ctrl-C, and CI may follow
SIGTERM with another. The first signal raises KeyboardInterrupt (pytest stops, the session fixture tears the
cluster down, the report is written with `interrupted: true`); later ones only count: raising again in the
middle of the teardown printed a second KeyboardInterrupt traceback, killed pytest before the report was
final and left the teardown half done.

An exception raised from a signal handler surfaces wherever Python was, and some places swallow it: a weakref
callback or a `__del__` run by the garbage collector prints "Exception ignored in ..." and goes on. CI saw a
SIGTERM land there and the run finish with exit 0. So the signal is also remembered, and the plugin stops the
run at the next test boundary (and reports it interrupted) when pytest never saw the exception.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

import pytest


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
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Take over SIGINT and SIGTERM for the rest of the run."""
        self._previous = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    def finish(self) -> None:
        """At the run's very end: after a signal, ignore further ones; else give the signals back.

        Python's finalization resets a Python-level handler to the default, which kills the process: a second
        Ctrl-C (tox sends one) that came while the interpreter was exiting, after a quick cleanup, ended the
        run by SIGINT (exit -2) instead of the interrupted status 2 its report says. An ignored signal stays
        ignored through the finalization.
        """
        for sig, previous in self._previous.items():
            signal.signal(sig, signal.SIG_IGN if self.received else previous)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The first signal interrupts the run; later ones wait for the cleanup the first one started."""
        self.received.append(signum)
        if len(self.received) == 1:
            raise Interrupted(self.message())

    def message(self) -> str:
        """The one line for the first signal received."""
        where = f", report: {self.report}" if self.report else ""
        return f"{signal.Signals(self.received[0]).name}: run stopped, cleaning up{where}"

    def lost(self) -> str | None:
        """The interruption's line if a signal came: asked where a delivered Interrupted cannot have passed.

        A delivered one unwinds the test it hit and every later one, so a test boundary, or a session that
        finished with another status than INTERRUPTED, that sees a received signal saw a swallowed exception.
        """
        return self.message() if self.received else None


def trim_traceback(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """Keep only the signal handler's own frame in an interruption's traceback.

    pytest builds the whole traceback of a KeyboardInterrupt to print its last line. A signal is handled between
    two bytecodes, and on Python 3.11 the frame it lands in may have no line number there (`tb_lineno` is None):
    pytest's report then failed with a TypeError, an INTERNALERROR and exit code 1 instead of 2. The handler's
    frame (the `raise` above) always has a line, and the line pytest prints names the signal, not a place.
    """
    if not isinstance(excinfo.value, Interrupted):
        return
    excinfo.traceback = excinfo.traceback[-1:]
    # An exception being handled when the signal came is not the reason the run stopped; its frames may lack lines too.
    excinfo.value.__suppress_context__ = True
