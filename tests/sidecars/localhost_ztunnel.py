"""A deliberately wrong ztunnel for the harness's own tests: it forwards inbound traffic to localhost.

It is the reference ztunnel with one change: instead of the local workload IP (ztunnel src/proxy/inbound.rs)
it dials 127.0.0.1 / ::1 at the requested port, with no transparent source, as a legacy sidecar would. A
loopback-only app becomes reachable and every app sees localhost, so under the ambient profile the suite must
fail every cell where another pod dials the app. Run it as `--emulator-ztunnel` runs any program:
`python3 localhost_ztunnel.py CONFIG` as root.
"""

import sys

from reference import load


def main() -> int:
    ztunnel = load("ztunnel")
    original = ztunnel.Ztunnel.dial

    def local(self, workload, port):  # type: ignore[no-untyped-def]
        return ("::1" if ":" in workload.ip else "127.0.0.1"), port

    async def dial(self, workload, address, port, source):  # type: ignore[no-untyped-def]
        loopback = address in ("127.0.0.1", "::1")
        return await original(self, workload, address, port, None if loopback else source)

    ztunnel.Ztunnel._local = local
    ztunnel.Ztunnel.dial = dial
    return int(ztunnel.main())


if __name__ == "__main__":
    sys.exit(main())
