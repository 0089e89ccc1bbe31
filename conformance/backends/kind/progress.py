"""What a tool download shows the user while it runs and when it is done (download.py does the downloading).

Apart from the download itself because it is about the terminal, not the bytes: whether stderr is one, how
often a line is redrawn, and what a CI log gets instead.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger(__name__)

_METER_INTERVAL = 0.1


def megabytes(size: int) -> str:
    """A size as people read it (decimal megabytes)."""
    return f"{size / 1_000_000:.1f} MB"


def _stderr() -> TextIO:
    return sys.stderr


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def say(progress: bool, message: str) -> None:
    """Log the message, and print it on stderr too when progress is shown."""
    log.info("%s", message)
    if progress:
        print(message, file=_stderr(), flush=True)


class Meter:
    """Download progress on stderr: one line rewritten in place on a terminal, else a line when it starts.

    A CI log must not fill with carriage-return frames, and a terminal user wants to see a 100 MB download move.
    """

    def __init__(self, label: str, url: str, total: int | None, enabled: bool) -> None:
        self.stream = _stderr()
        self.enabled = enabled
        self.tty = enabled and _isatty(self.stream)
        self.label = label
        self.total = total
        self.last = 0.0
        if enabled and not self.tty:
            size = f" ({megabytes(total)})" if total else ""
            print(f"{label}: downloading {url}{size}", file=self.stream, flush=True)

    def update(self, done: int) -> None:
        """`done` bytes so far (redrawn at most every 0.1 s, and only on a terminal)."""
        if not self.tty:
            return
        now = time.monotonic()
        if now - self.last < _METER_INTERVAL:
            return
        self.last = now
        self._draw(done)

    def finish(self, done: int) -> None:
        """The download is complete: the last frame and a newline on a terminal."""
        if self.tty:
            self._draw(done)
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, done: int) -> None:
        if self.total:
            share = f"{megabytes(done)} of {megabytes(self.total)} ({100 * done // self.total}%)"
        else:
            share = megabytes(done)
        self.stream.write(f"\r{self.label}: downloading {share}\x1b[K")
        self.stream.flush()
