"""A deliberately wrong sidecar for the harness's own tests: a failed upstream on a sniffed port is a reset.

It is the reference sidecar with one change: its inbound catch-all never recognises HTTP, so when the app
behind an undeclared (or Sidecar-unlisted) port does not accept, it closes the connection instead of answering
503. Reachable cells are unaffected (bytes are relayed either way). Istio's catch-all chains sniff HTTP with no
timeout and answer exactly 503 (reference section 1, "exact failure forms"), so the suite must fail the
unreachable HTTP cells of sniffed ports. Run it the way `--emulator-sidecar` runs any program:
`python3 sniff_reset_sidecar.py CONFIG` as uid 1337.
"""

import sys

from reference import load


def main() -> int:
    sidecar = load("sidecar")
    original = sidecar.Sidecar._sniff

    async def sniff_never_http(self, reader, timeout):  # type: ignore[no-untyped-def]
        head, _protocol = await original(self, reader, timeout)
        return head, "tcp"

    sidecar.Sidecar._sniff = sniff_never_http
    return int(sidecar.main())


if __name__ == "__main__":
    sys.exit(main())
