"""A deliberately wrong ztunnel for the harness's own tests: it never re-reads its configuration.

It is the reference ztunnel with one change: SIGHUP is caught and ignored (logged), so the pods it serves are
the pods of its first configuration. A pod enrolled later gets istio-cni's rules but no ztunnel listener inside
it: every connection to it is refused. Only the EnrolledWhileRunning cells catch it (nothing else enrols a pod
after start). Run as `--emulator-ztunnel` runs any program: `python3 no_reload_ztunnel.py CONFIG` as root.
"""

import sys

from reference import load


def main() -> int:
    ztunnel = load("ztunnel")

    async def reload(self, path):  # type: ignore[no-untyped-def]
        self.log(f"SIGHUP: not re-reading {path}")

    ztunnel.Ztunnel.reload = reload
    return int(ztunnel.main())


if __name__ == "__main__":
    sys.exit(main())
