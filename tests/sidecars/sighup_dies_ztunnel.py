"""A deliberately wrong ztunnel for the harness's own tests: SIGHUP kills it.

It is the reference ztunnel with one change: its re-read handler is installed on SIGUSR2 instead of SIGHUP, so
SIGHUP keeps the default action and ends the process the first time its configuration changes. Nothing before
the EnrolledWhileRunning case sends SIGHUP: those cells fail (void, the death named), and the run reports the
death. Run as `--emulator-ztunnel` runs any program: `python3 sighup_dies_ztunnel.py CONFIG` as root.
"""

import signal
import sys
import types

from reference import load


def main() -> int:
    ztunnel = load("ztunnel")
    ztunnel.signal = types.SimpleNamespace(SIGTERM=signal.SIGTERM, SIGINT=signal.SIGINT, SIGHUP=signal.SIGUSR2)
    return int(ztunnel.main())


if __name__ == "__main__":
    sys.exit(main())
