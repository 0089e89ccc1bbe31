"""A correct sidecar that is slow to answer: its status port answers each app prober's first request late.

It is the reference sidecar with one change: the first time pilot-agent's status port is asked for a given
probe after the sidecar starts, it answers correctly but only after SLOW_SECONDS, longer than the kubelet's
probe timeout (1 s), as a cold proxy under load might. The kubelet counts that probe as failed; the next one, a
period later, passes. Nothing is wrong with it: the suite must pass it (no false failures), which a verdict
taken from the first probe would not. Run it the way `--emulator-sidecar` runs any program:
`python3 slow_status_sidecar.py CONFIG` as uid 1337.
"""

import asyncio
import json
import sys

from reference import load

SLOW_SECONDS = 1.5


def main() -> int:
    sidecar = load("sidecar")
    answered: set[str] = set()
    probe = sidecar.StatusServer.probe

    async def slow_probe(self, prober):  # type: ignore[no-untyped-def]
        key = json.dumps(prober, sort_keys=True)
        if key not in answered:
            answered.add(key)
            await asyncio.sleep(SLOW_SECONDS)
        return await probe(self, prober)

    sidecar.StatusServer.probe = slow_probe
    return int(sidecar.main())


if __name__ == "__main__":
    sys.exit(main())
