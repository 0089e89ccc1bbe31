"""A deliberately wrong ztunnel for the harness's own tests: its tunnel answers 200 before it dials the app.

It is the reference ztunnel with one change: a CONNECT on 15008 is answered `200` as soon as it is read, and the
app is dialled afterwards; when that fails the tunnel is just closed. Real ztunnel waits for the upstream
connection and answers 503 when it fails (src/proxy/inbound.rs serve_connect). Every traffic cell still passes
(an ambient client's ztunnel, told 200, relays into a connection that then closes: reset/EOF, an allowed failure),
so only the TunnelAnswer cells of loopback-only apps catch it. Run as `--emulator-ztunnel` runs any program:
`python3 tunnel_200_ztunnel.py CONFIG` as root.
"""

import sys

from reference import load


def main() -> int:
    ztunnel = load("ztunnel")
    original = ztunnel.Ztunnel.dial

    async def tunnel(self, workload, client):  # type: ignore[no-untyped-def]
        head = await client.readuntil(b"\r\n\r\n")
        target = head.split(b"\r\n", 1)[0].decode().split(" ")[1]
        await client.send(b"HTTP/1.1 200 OK\r\n\r\n")  # the bug: before the app is known to be reachable
        peer = client.peername[0]
        try:
            upstream = await original(self, workload, workload.ip, int(target.rpartition(":")[2]), peer)
        except OSError as err:
            self.log(f"tunnel {workload.name} target={target} connect_failed={err} (200 already sent)")
            return  # the client's connection is closed by whoever accepted it
        await ztunnel.relay(client, ztunnel.Conn(upstream))

    ztunnel.Ztunnel.tunnel = tunnel
    return int(ztunnel.main())


if __name__ == "__main__":
    sys.exit(main())
