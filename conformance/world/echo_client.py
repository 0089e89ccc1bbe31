"""The echo program's probe code, loaded from the very file the image carries (workloads/echo/echo_probe.py).

The emulated backend dials from inside pod namespaces in-process, with the echo program's own probe
functions, so an outcome is classified (ok, refused, reset_or_eof, timeout, http_status) by one piece of code
on every backend: in the kind pod it runs as `echo.py probe`, here as a library with a custom connector.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import cache
from types import ModuleType
from typing import Protocol, cast

from conformance.world.resources import echo_prober


class ProbeTargetLike(Protocol):
    """The echo program's ProbeTarget, as this package uses it."""

    protocol: str
    address: str
    port: int
    request_id: str


class ProbeResultLike(Protocol):
    """The echo program's ProbeResult, as this package uses it."""

    def to_json(self) -> dict[str, object]:
        """The result in the echo program's JSON format."""


Connector = Callable[[ProbeTargetLike], Awaitable[socket.socket]]
"""Dials a target: a connected, non-blocking socket (the echo program's exchanges read and write it)."""


@cache
def echo_module() -> ModuleType:
    """Import workloads/echo/echo_probe.py by path (a program's half first, not part of this package)."""
    path = echo_prober()
    spec = importlib.util.spec_from_file_location("mesh_inbound_echo_probe", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the echo program's prober from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered while it executes
    spec.loader.exec_module(module)
    return module


def make_target(protocol: str, address: str, port: int, request_id: str) -> ProbeTargetLike:
    """An echo ProbeTarget."""
    return cast(ProbeTargetLike, echo_module().ProbeTarget(protocol, address, port, request_id))


async def probe_batch(
    targets: Sequence[ProbeTargetLike], timeout: float, concurrency: int, connect: Connector
) -> list[dict[str, object]]:
    """Run the echo program's batch probe with `connect`, returning its JSON result objects."""
    results = await echo_module().probe_batch(list(targets), timeout, concurrency, connect)
    return [cast(ProbeResultLike, r).to_json() for r in results]
