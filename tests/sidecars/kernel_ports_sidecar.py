"""A correct sidecar that lets the kernel choose the source port of every outbound upstream connection.

It is the reference sidecar with its outbound dial written out here: no port is bound before the connect, so
the kernel picks one per destination, as Envoy, HAProxy and most proxies let it. Nothing about that is wrong,
and the harness must give such a proxy the same verdicts every run (issue 20 item 15).

`--port-range LO-HI` (before the configuration path) keeps the kernel's choice within LO-HI with the
IP_LOCAL_PORT_RANGE socket option (Linux >= 6.3; proxies that share addresses use it). The pick is still the
kernel's, per destination, but from so few ports that one port serves connections to several ports of one pod
at once in every run, which the full range does only on some boots (the kernel's per-destination offsets come
from secrets drawn at boot). Only outbound connections are narrowed: inbound dials bind 127.0.0.6, where each
needs a port of its own. In TPROXY mode it dials as the reference does, from the client's address with port 0
(original_src.py). On a dual-stack pod the bind it is handed is already the one of the upstream's family
(the reference's `forward` picks it from the configuration's bind list).
Run it the way `--emulator-sidecar` runs any program:
`python3 kernel_ports_sidecar.py [--port-range LO-HI] CONFIG` as uid 1337.
"""

import asyncio
import contextvars
import socket
import struct
import sys

from reference import load

IP_LOCAL_PORT_RANGE = 51
OUTBOUND = contextvars.ContextVar("outbound", default=False)


def port_range(argv: list[str]) -> tuple[int, int] | None:
    """Remove `--port-range LO-HI` from argv; the range, or None."""
    if "--port-range" not in argv:
        return None
    at = argv.index("--port-range")
    low, _, high = argv[at + 1].partition("-")
    del argv[at : at + 2]
    return int(low), int(high)


def main() -> int:
    argv = sys.argv[1:]
    narrow = port_range(argv)
    sidecar = load("sidecar")
    original_forward = sidecar.Sidecar.forward

    async def forward(self, direction, *args, **kwargs):  # type: ignore[no-untyped-def]
        token = OUTBOUND.set(direction == "outbound")
        try:
            return await original_forward(self, direction, *args, **kwargs)
        finally:
            OUTBOUND.reset(token)

    async def connect(self, address, port, bind, mark=None):  # type: ignore[no-untyped-def]
        sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if bind and mark is not None:
                # TPROXY: Envoy's original_src, the client's address with port 0 (the reference's helper).
                sidecar.original_src.prebind(sock, bind, mark)
            elif bind:
                sock.bind((bind, 0))
            elif narrow is not None and OUTBOUND.get():
                sock.setsockopt(socket.IPPROTO_IP, IP_LOCAL_PORT_RANGE, struct.pack("=I", narrow[1] << 16 | narrow[0]))
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.sock_connect(sock, (address, port)), sidecar.CONNECT_TIMEOUT)
        except TimeoutError:
            sock.close()
            raise OSError(110, "connect timeout") from None
        except OSError:
            sock.close()
            raise
        return sock

    sidecar.Sidecar.forward = forward
    sidecar.Sidecar._connect = connect
    return int(sidecar.main(argv))


if __name__ == "__main__":
    sys.exit(main())
