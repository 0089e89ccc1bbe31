"""A deliberately wrong sidecar for the harness's own tests: it dies during the run.

It is the reference sidecar with one change: once it has taken `--after-connections N` proxied connections
(inbound or outbound; default 20) it writes one line to its log and exits with status 3, as a proxy that
crashes would. Started again by each profile switch, it dies again. The cells its pod's traffic needs then fail
(refused, as capture rules without a proxy refuse), and the suite must say that its process died, with the pod,
the exit status and the log's last lines, once and before the cells (issue 20 item 18). Counting connections
instead of seconds (the `timeout 2` of the issue) makes it die at the same point of every run, after the pods
were ready. Run it the way `--emulator-sidecar` runs any program:
`python3 exiting_sidecar.py [--after-connections N] CONFIG` as uid 1337.
"""

import os
import sys

from reference import load

EXIT_STATUS = 3


def main() -> int:
    argv = sys.argv[1:]
    limit = 20
    if "--after-connections" in argv:
        at = argv.index("--after-connections")
        limit = int(argv[at + 1])
        del argv[at : at + 2]
    sidecar = load("sidecar")
    original = sidecar.Sidecar.forward

    async def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.connections >= limit:
            self.log(f"exiting on purpose after {limit} connections (status {EXIT_STATUS})")
            os._exit(EXIT_STATUS)
        return await original(self, *args, **kwargs)

    sidecar.Sidecar.forward = forward
    return int(sidecar.main(argv))


if __name__ == "__main__":
    sys.exit(main())
