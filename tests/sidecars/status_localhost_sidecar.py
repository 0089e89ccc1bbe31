"""A deliberately wrong sidecar for the harness's own tests: its status port always probes localhost.

It is the reference sidecar with one change: pilot-agent's status port sends every rewritten probe to
127.0.0.1 / ::1, as if REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION were always set, whatever the mesh mode.
Under passthrough a loopback-only app then looks Ready though no other pod can reach it (the 1.21 quirk of
probes reference section 1), and a pod-IP-only app never becomes Ready. Traffic is forwarded correctly, so only
the probe cases can catch it. Run it the way `--emulator-sidecar` runs any program:
`python3 status_localhost_sidecar.py CONFIG` as uid 1337.
"""

import sys

from reference import load


def main() -> int:
    sidecar = load("sidecar")

    def destination(self):  # type: ignore[no-untyped-def]
        return "::1" if ":" in self.status.pod_ip else "127.0.0.1"

    sidecar.StatusServer.destination = destination
    return int(sidecar.main())


if __name__ == "__main__":
    sys.exit(main())
