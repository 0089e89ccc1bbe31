"""A deliberately wrong sidecar: it listens on 15006 and 15001 for IPv4 only (0.0.0.0, no IPv6 socket).

The `--emulator-sidecar` contract asks for both ports on both families. In an IPv6 run such a proxy never
receives a captured connection; the suite must call its pods not ready, saying which family is missing,
instead of failing every cell with a timeout. Run as `python3 ipv4_only_sidecar.py CONFIG` as uid 1337.
"""

import socket
import sys
import time


def main() -> int:
    listeners = []
    for port in (15006, 15001):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen()
        listeners.append(sock)
    print("listening on 0.0.0.0:15006 and 0.0.0.0:15001 only", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    sys.exit(main())
