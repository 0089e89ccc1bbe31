"""The node proxy's own contract (issue 22 item 5): its spec cells, the capability only the emulated mesh has, the
echo program's tunnel probe, and the suite's cases. Runs anywhere (no namespaces): the runs are in test_suite_runs."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from conformance.spec.capabilities import Capability, emulated_capabilities, istio_capabilities
from conformance.spec.cells import all_cells
from conformance.spec.dimensions import SINGLE_STACK, Bind, Client, IpFamily, PortKind, Profile
from conformance.spec.render import spec_document, spec_markdown
from conformance.spec.semantics import RULES, expect
from conformance.spec.ztunnel import (
    TUNNEL_PORT,
    ZTUNNEL_RULES,
    expect_late,
    expect_tunnel,
    late_cells,
    tunnel_cells,
)
from conformance.suite import test_ztunnel
from conformance.suite.ztunnel_checks import ZtunnelCase
from conformance.world.echo_client import echo_module


@pytest.mark.parametrize("family", list(SINGLE_STACK))
def test_tunnel_cells_200_with_the_client_where_the_bind_admits_the_pod_ip_else_503(family: IpFamily) -> None:
    cells = tunnel_cells((Profile.AMBIENT,), (family,))
    assert len(cells) == 3 * 2  # bind x (declared, undeclared)
    for cell in cells:
        want = expect_tunnel(cell)
        assert (want.status, want.client_source) == ((503, False) if cell.bind is Bind.LOOPBACK else (200, True))
        assert want.because[0] == "ambient-tunnel-answer"
    assert {c.port for c in cells} == {PortKind.DECLARED, PortKind.UNDECLARED}
    assert tunnel_cells((Profile.PASSTHROUGH,), (family,)) == ()


@pytest.mark.parametrize("family", list(SINGLE_STACK))
def test_a_late_pod_expects_exactly_what_a_pod_enrolled_from_the_start_does(family: IpFamily) -> None:
    cells = late_cells((Profile.AMBIENT,), (family,))
    assert len(cells) == 3 * 2 * 2  # bind x protocol x (plain, ambient client)
    assert {c.client for c in cells} == {Client.PLAIN, Client.AMBIENT}
    for cell in cells:
        late, traffic = expect_late(cell), expect(cell.traffic_cell)
        assert (late.reachable, late.source, late.failure) == (traffic.reachable, traffic.source, traffic.failure)
        assert late.because == ("ambient-enrolled-late", *traffic.because)
        assert cell.traffic_cell in all_cells([Profile.AMBIENT], [family])


def test_spec_document_carries_the_node_proxy_cells_and_rules() -> None:
    doc = spec_document(all_cells(list(Profile), [IpFamily.IPV6]))
    assert [r["id"] for r in doc["ztunnel_rules"]] == list(ZTUNNEL_RULES)  # type: ignore[index]
    tunnel, late = doc["tunnel_cells"], doc["late_cells"]
    assert isinstance(tunnel, list)
    assert isinstance(late, list)
    assert (len(tunnel), len(late)) == (6, 12)
    assert tunnel[0]["id"] == "tunnel/ambient/loopback/declared/plain/ipv6"
    assert tunnel[0]["expected"] == {
        "status": 503,
        "source": None,
        "because": ["ambient-tunnel-answer", "ambient-local-workload", "bind-admits"],
    }
    # Every rule a cell cites exists, and every node-proxy rule is cited (its source named).
    cited = {r for c in [*tunnel, *late] for r in c["expected"]["because"]}
    assert cited <= set(RULES) | set(ZTUNNEL_RULES)
    assert set(ZTUNNEL_RULES) <= cited
    assert "inbound.rs" in ZTUNNEL_RULES["ambient-tunnel-answer"].istio_source
    # Without ambient in the selection there is nothing to say.
    assert spec_document(all_cells([Profile.LEGACY], [IpFamily.IPV4]))["tunnel_cells"] == []
    assert "a pod enrolled while the run is under way" in spec_markdown([Profile.AMBIENT], [IpFamily.IPV4])


def test_only_the_emulated_mesh_has_a_plaintext_tunnel_and_kind_skips_with_the_reason() -> None:
    assert Capability.PLAINTEXT_TUNNEL in emulated_capabilities().capabilities
    istio = istio_capabilities("1.31.1")
    assert Capability.PROFILE_AMBIENT in istio.capabilities
    (tunnel, late) = test_ztunnel.CASES
    assert isinstance(tunnel, ZtunnelCase)
    assert tunnel.profiles(IpFamily.IPV4) == (Profile.AMBIENT,)
    reason = istio.missing(tunnel.needed(Profile.AMBIENT, IpFamily.IPV4))
    assert reason is not None
    assert "HBONE" in reason
    assert "mutual TLS" in reason
    # The late pod needs ambient only: a real mesh answers it.
    assert istio.missing(late.needed(Profile.AMBIENT, IpFamily.IPV4)) is None
    assert emulated_capabilities().missing(tunnel.needed(Profile.AMBIENT, IpFamily.IPV6)) is None


# --- the echo program's tunnel probe ---------------------------------------------------------------------------


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _probe_through(handler: Handler, address: str = "10.0.0.7", port: int = 9082) -> tuple[dict[str, Any], list[int]]:
    """Probe `connect://address:port` with a connector that sends every dial to a local server running `handler`."""
    echo = echo_module()
    dialled: list[int] = []

    async def run() -> dict[str, Any]:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        local = server.sockets[0].getsockname()[1]

        async def connect(target: Any) -> socket.socket:
            dialled.append(target.port)
            sock = socket.socket()
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", local))
            return sock

        async with server:
            (result,) = await echo.probe_batch([echo.ProbeTarget("connect", address, port, "zt-1")], 2.0, 4, connect)
        out: dict[str, Any] = result.to_json()
        return out

    return asyncio.run(run()), dialled


def test_the_tunnel_probe_dials_15008_asks_for_the_port_and_reads_a_503() -> None:
    asked: list[bytes] = []

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    result, dialled = _probe_through(tunnel)
    assert dialled == [TUNNEL_PORT]
    assert asked[0].startswith(b"CONNECT 10.0.0.7:9082 HTTP/1.1\r\n")
    assert (result["outcome"], result["status"], result["peer"]) == ("http_status", 503, None)


def test_behind_a_200_the_tunnel_probe_speaks_tcp_and_reports_the_peer() -> None:
    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
        request_id = (await reader.readline()).strip().decode()
        writer.write(json.dumps({"pod": "echo-none-0", "peer": "10.0.0.3", "request_id": request_id}).encode() + b"\n")
        await writer.drain()
        writer.close()

    result, _ = _probe_through(tunnel, "fd00::7")
    assert (result["outcome"], result["status"], result["peer"]) == ("ok", 200, "10.0.0.3")


def test_a_200_whose_app_then_closes_is_a_reset_not_a_503() -> None:
    """What a tunnel that answers before it dials (tests/sidecars/tunnel_200_ztunnel.py) shows a plain client."""

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
        await writer.drain()
        writer.close()

    result, _ = _probe_through(tunnel)
    assert result["outcome"] == "reset_or_eof"


def test_connect_targets_parse_on_the_command_line() -> None:
    echo = echo_module()
    target = echo.parse_target("connect://[fd00::7]:9082#abc")
    assert (target.protocol, target.address, target.port, target.request_id) == ("connect", "fd00::7", 9082, "abc")
    with pytest.raises(ValueError, match="connect://HOST:PORT"):
        echo.parse_target("udp://10.0.0.1:1")
