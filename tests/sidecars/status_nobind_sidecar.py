"""A deliberately wrong sidecar for the harness's own tests: its status port never binds 127.0.0.6 for probes.

It is the reference sidecar with one change: pilot-agent's status port dials the app with no local address,
as pilot-agent <= 1.9 did. Sent to localhost (the legacy destination) the app then sees 127.0.0.1 instead of
127.0.0.6; sent to the pod IP, the probe leaves as uid 1337 without the 127.0.0.6 exemption and is captured
into the inbound listener again. Run it the way `--emulator-sidecar` runs any program:
`python3 status_nobind_sidecar.py CONFIG` as uid 1337.
"""

import sys

from reference import load


def main() -> int:
    sidecar = load("sidecar")

    def source(self, destination):  # type: ignore[no-untyped-def]
        return None

    sidecar.StatusServer.source = source
    return int(sidecar.main())


if __name__ == "__main__":
    sys.exit(main())
