"""pilot-agent's status port for the reference sidecar: the rewritten probes' `/app-health/<container>/readyz`.

The kubelet's rewritten probe arrives on 15020; the original probe (httpGet or tcpSocket) is sent to the app as
pilot-agent >= 1.10 does: to the pod IP, or to localhost when the injector set the legacy destination
(REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION), always from 127.0.0.6 / ::6, which the capture rules let through
(in TPROXY mode too: ISTIO_INBOUND `-s 127.0.0.6/32 -i lo -j RETURN`). Standalone and standard library only:
sidecar.py loads it from its own folder, and dials through the sidecar's own `_connect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from asyncio import StreamReader, StreamWriter
from typing import Any

CONNECT_TIMEOUT = 2.0
PROBE_SOURCE = {socket.AF_INET: "127.0.0.6", socket.AF_INET6: "::6"}
PROBE_LOCALHOST = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}


def _peer(writer: StreamWriter) -> str:
    info = writer.get_extra_info("peername")
    return f"{info[0]}:{info[1]}" if info else "?"


async def _close(writer: StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


class StatusServer:
    """pilot-agent's application health checks on the status port (see module docstring)."""

    def __init__(self, sidecar: Any, status: Any) -> None:
        self.sidecar = sidecar
        self.status = status

    def destination(self) -> str:
        """Where the app is probed: the pod IP, or localhost with the legacy destination."""
        family = socket.AF_INET6 if ":" in self.status.pod_ip else socket.AF_INET
        return PROBE_LOCALHOST[family] if self.status.legacy_localhost_destination else self.status.pod_ip

    def source(self, destination: str) -> str | None:
        """The local address of a probe connection (pilot-agent's upstreamLocalAddress)."""
        return PROBE_SOURCE[socket.AF_INET6 if ":" in destination else socket.AF_INET]

    async def handle(self, reader: StreamReader, writer: StreamWriter) -> None:
        """Answer one request: 200 when the app's probe passes, 500 (or 404 for an unknown path) otherwise."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONNECT_TIMEOUT)
            path = head.split(b" ", 2)[1].decode("latin-1") if head.count(b" ") >= 2 else ""
            prober = self.status.probers.get(path)
            if prober is None:
                code, text = 404, f"no app prober for {path}"
            else:
                problem = await self.probe(prober)
                code, text = (200, "ok") if problem is None else (500, problem)
            self.sidecar.log(f"status {_peer(writer)} {path} -> {code} {text}")
            body = text.encode() + b"\n"
            reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}[code]
            writer.write(
                f"HTTP/1.1 {code} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {len(body)}\r\n"
                "connection: close\r\n\r\n".encode()
                + body
            )
            with contextlib.suppress(OSError):
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            await _close(writer)

    async def probe(self, prober: dict[str, Any]) -> str | None:
        """Run the original probe against the app; None on a pass, else the reason."""
        timeout = float(prober.get("timeoutSeconds", 1) or 1)
        destination = self.destination()
        if "tcpSocket" in prober:
            port, path = int(prober["tcpSocket"]["port"]), None
        else:
            port, path = int(prober["httpGet"]["port"]), str(prober["httpGet"].get("path", "/"))
        try:
            sock = await self.sidecar._connect(destination, port, self.source(destination))
            reader, writer = await asyncio.open_connection(sock=sock)  # a probe now and then: streams will do
        except OSError as err:
            return f"dial {destination}:{port}: {err.strerror or err}"
        try:
            if path is None:
                return None
            host = f"[{destination}]" if ":" in destination else destination
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), timeout)
            parts = line.split()
            if len(parts) < 2 or not parts[1].isdigit() or not 200 <= int(parts[1]) < 400:
                return f"app answered {line.strip()[:60]!r}"
            return None
        except (OSError, TimeoutError) as err:
            return f"probe {destination}:{port}: {err}"
        finally:
            await _close(writer)
