"""A deliberately wrong sidecar for the harness's own tests: its status port never binds 127.0.0.6 for probes.

It is the reference sidecar with one change: pilot-agent's status port dials the app with no local address,
as pilot-agent <= 1.9 did. Sent to localhost (the legacy destination) the app then sees 127.0.0.1 instead of
127.0.0.6; sent to the pod IP, the probe leaves as uid 1337 without the 127.0.0.6 exemption and is captured
into the inbound listener again. Run it the way `--emulator-sidecar` runs any program:
`python3 status_nobind_sidecar.py CONFIG` as uid 1337.
"""

import importlib.util
import sys
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[2] / "conformance" / "backends" / "emulated" / "sidecar.py"


def main() -> int:
    spec = importlib.util.spec_from_file_location("reference_sidecar", REFERENCE)
    assert spec is not None
    assert spec.loader is not None
    sidecar = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = sidecar
    spec.loader.exec_module(sidecar)

    def source(self, destination):  # type: ignore[no-untyped-def]
        return None

    sidecar.StatusServer.source = source
    return int(sidecar.main())


if __name__ == "__main__":
    sys.exit(main())
