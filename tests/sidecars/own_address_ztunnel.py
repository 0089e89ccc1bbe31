"""A deliberately wrong ztunnel for the harness's own tests: it dials the app from its own address.

It is the reference ztunnel with one change: no IP_TRANSPARENT / freebind bind to the client's address, so the
app sees the pod's own IP instead of the client's (what real ztunnel logs as `transparent=false`,
probes-ambient.md §2). Under the ambient profile the suite must fail every cell where another pod reaches the
app. Run it the way `--emulator-ztunnel` runs any program: `python3 own_address_ztunnel.py CONFIG` as root.
"""

import sys

from reference import load


def main() -> int:
    ztunnel = load("ztunnel")
    original = ztunnel.Ztunnel.dial

    async def dial(self, workload, address, port, source):  # type: ignore[no-untyped-def]
        return await original(self, workload, address, port, None)

    ztunnel.Ztunnel.dial = dial
    return int(ztunnel.main())


if __name__ == "__main__":
    sys.exit(main())
