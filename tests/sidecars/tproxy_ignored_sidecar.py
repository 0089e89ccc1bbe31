"""A deliberately wrong sidecar for the harness's own tests: it ignores TPROXY's original_src.

It is the reference sidecar with one change: in a pod annotated `sidecar.istio.io/interceptionMode: TPROXY` it
still accepts the TPROXY'd connections (its inbound listener is transparent, the original destination is the
socket's own address), but it dials the app as in REDIRECT mode, from the listener's bind 127.0.0.6 / ::6,
without Envoy's original_src listener filter. The capture rules let that dial through (`-s 127.0.0.6/32 -i lo
-j RETURN`), so every cell is reached as before and only the source the app sees changes: the suite must fail
exactly the TPROXY cells that expect the client's address. Run it the way `--emulator-sidecar` runs any program:
`python3 tproxy_ignored_sidecar.py CONFIG` (as uid 0 / gid 1337 in a TPROXY pod).
"""

import sys

from reference import load


def main() -> int:
    sidecar = load("sidecar")

    async def connect(self, address, port, bind, mark=None):  # type: ignore[no-untyped-def]
        return await original(self, address, port, self.config.passthrough.bind if mark is not None else bind)

    original = sidecar.Sidecar._connect
    sidecar.Sidecar._connect = connect
    return int(sidecar.main())


if __name__ == "__main__":
    sys.exit(main())
