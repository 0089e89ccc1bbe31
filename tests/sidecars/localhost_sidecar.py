"""A deliberately wrong sidecar for the harness's own tests: every declared port forwards to localhost.

It is the reference sidecar with one change: each configured inbound listener dials 127.0.0.1 / ::1 with no
upstream bind, as Istio <= 1.9 did, whatever the mesh setting or the Sidecar resource says. Under the
passthrough profile the suite must fail exactly the cells where that makes a difference. Run it the way
`--emulator-sidecar` runs any program: `python3 localhost_sidecar.py CONFIG` as uid 1337.
"""

import dataclasses
import sys

from reference import load


def main() -> int:
    sidecar = load("sidecar")
    original = sidecar.load_config

    def load_config(path: str):  # type: ignore[no-untyped-def]
        config = original(path)
        # The pod's family, from the catch-all's bind (127.0.0.6 / ::6): a listener's address is no guide, since
        # `[::]:P` on an IPv4 pod is configured to dial ::1.
        ipv6 = ":" in (config.passthrough.bind or "")
        localhost = "::1" if ipv6 else "127.0.0.1"
        listeners = {
            port: dataclasses.replace(route, address=localhost, port=port, bind=None)
            for port, route in config.listeners.items()
        }
        return dataclasses.replace(config, listeners=listeners)

    sidecar.load_config = load_config
    return int(sidecar.main())


if __name__ == "__main__":
    sys.exit(main())
