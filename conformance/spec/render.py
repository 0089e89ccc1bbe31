"""The spec as a versioned JSON document and as Markdown tables a person reads.

JSON format `mesh-inbound-conformance/spec`, version 5 (documented in docs/spec.md, "Reading the spec", with
what each version changed): the top-level keys `format`, `version`, `dimensions`, `rules` and `cells` are
stable; each cell has `id`, the nine key fields (`interception` since version 5), and
`expected {reachable, source, failure, because}`. New
fields may be added within a version; renaming or removing one, or changing what it means, bumps the version.
Version 4 (from 3): a reachable cell always has a `source` (a sidecar client of an ambient server sees the
client too), so `expected.source_judged` is gone; `[::]:P` on an IPv4 pod is unreachable (it dials ::1).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from conformance.spec.capture import CAPTURE_RULES
from conformance.spec.cells import default_endpoints, interceptions, paths, uncaptured_cells
from conformance.spec.dimensions import (
    ADDRESSES,
    Bind,
    CellKey,
    Client,
    DefaultEndpoint,
    Failure,
    InboundCapture,
    Interception,
    IpFamily,
    Path,
    PortKind,
    Profile,
    Protocol,
    Source,
    binds,
)
from conformance.spec.outcome import Expectation
from conformance.spec.probes import probe_spec_entries, probe_spec_markdown
from conformance.spec.semantics import RULES, expect
from conformance.spec.ztunnel import ztunnel_spec_entries, ztunnel_spec_markdown

SPEC_FORMAT = "mesh-inbound-conformance/spec"
SPEC_FORMAT_VERSION = 6


def spec_document(cells: Sequence[CellKey]) -> dict[str, object]:
    """The whole spec for `cells` as one JSON-ready document."""
    return {
        "format": SPEC_FORMAT,
        "version": SPEC_FORMAT_VERSION,
        "dimensions": {
            "profile": [p.value for p in Profile],
            "default_endpoint": [d.value for d in DefaultEndpoint],
            "bind": [b.value for b in Bind],
            "port": [p.value for p in PortKind],
            "protocol": [p.value for p in Protocol],
            "path": [p.value for p in Path],
            "client": [c.value for c in Client] + [None],
            "ip_family": [f.value for f in IpFamily],
            "interception": [m.value for m in Interception],
            "capture": [c.value for c in InboundCapture],
            "source": [s.value for s in Source],
            "failure": [f.value for f in Failure],
        },
        "rules": [r.to_json() for r in (*RULES.values(), *CAPTURE_RULES.values())],
        "cells": [{"id": cell.id, **cell.to_json(), "expected": expect(cell).to_json()} for cell in cells],
        # Health probes (probes.py): added within version 1, beside the traffic cells.
        **probe_spec_entries(
            tuple(dict.fromkeys(c.profile for c in cells)), tuple(dict.fromkeys(c.ip_family for c in cells))
        ),
        # The node proxy's own contract (ztunnel.py): added within version 5, beside the traffic cells.
        **ztunnel_spec_entries(
            tuple(dict.fromkeys(c.profile for c in cells)), tuple(dict.fromkeys(c.ip_family for c in cells))
        ),
    }


def spec_json(cells: Sequence[CellKey]) -> str:
    """`spec_document` serialised with sorted-stable, indented output."""
    return json.dumps(spec_document(cells), indent=2) + "\n"


_FAILURE_TEXT = {Failure.REFUSED: "refused", Failure.HTTP_503: "503", Failure.RESET_OR_EOF: "reset/EOF"}


def describe_source(source: Source, family: IpFamily) -> str:
    """A source as a reader expects to see it: the literal address where there is one."""
    if source in ADDRESSES[family]:
        return ADDRESSES[family][source]
    return {Source.CLIENT: "client IP", Source.SELF: "own pod IP"}.get(source, source.value)


def describe_expectation(expected: Expectation, family: IpFamily) -> str:
    """One table cell: `✓ 127.0.0.6` or `✗ 503`."""
    if expected.reachable and expected.source is not None:
        return f"✓ {describe_source(expected.source, family)}"
    return "✗ " + " or ".join(_FAILURE_TEXT[f] for f in expected.failure)


def endpoint_label(endpoint: DefaultEndpoint, capture: InboundCapture = InboundCapture.ALL) -> str:
    """The first column of a table row: the Sidecar situation, and the capture setting where ports are left out."""
    if capture is InboundCapture.ALL:
        return endpoint.value
    return f"{endpoint.value}, capture {capture.value}"


def _row_label(
    endpoint: DefaultEndpoint,
    port: PortKind,
    protocol: Protocol,
    path: Path,
    client: Client | None,
    capture: InboundCapture = InboundCapture.ALL,
) -> str:
    who = f"{client.value} client" if client else "in the pod"
    return f"| {endpoint_label(endpoint, capture)} | {port.value} | {protocol.value} | {path.value} | {who} |"


def _uncaptured_rows(profile: Profile, family: IpFamily) -> list[str]:
    """The rows of a profile's servers with ports left out of capture (REDIRECT, no Sidecar, from other pods)."""
    rows: dict[tuple[InboundCapture, PortKind, Protocol, Path, Client | None], str] = {}
    for cell in uncaptured_cells(profile, family):  # a row's binds come one after another
        key = (cell.capture, cell.port, cell.protocol, cell.path, cell.client)
        label = rows.get(key) or _row_label(DefaultEndpoint.NONE, *key[1:], cell.capture)
        rows[key] = label + f" {describe_expectation(expect(cell), family)} |"
    return list(rows.values())


def spec_markdown(profiles: Iterable[Profile], families: Iterable[IpFamily]) -> str:
    """Per family and profile, a table: rows are (defaultEndpoint, port, protocol, path, client), columns binds."""
    lines = [
        "# Expected inbound semantics",
        "",
        "Each cell: what the app sees (✓ and the peer address) or how the client sees the failure (✗).",
        "Rules and their Istio sources: `python -m conformance spec --format json` (`rules`).",
    ]
    profile_list = tuple(profiles)
    families = tuple(families)
    for family in families:
        for profile in profile_list:
            for mode in interceptions(profile):
                title = profile.value if mode is Interception.REDIRECT else f"{profile.value}, {mode.value.upper()}"
                lines += ["", f"## {title} ({family.value})", ""]
                columns = " | ".join(b.value for b in binds(family))
                lines.append(f"| defaultEndpoint | port | protocol | path | client | {columns} |")
                lines.append("|---|---|---|---|---|" + "---|" * len(binds(family)))
                for port in PortKind:
                    for endpoint in default_endpoints(profile, port, family, mode):
                        for protocol in Protocol:
                            for path, client in paths(port, profile, mode, endpoint):
                                row = _row_label(endpoint, port, protocol, path, client)
                                for bind in binds(family):
                                    cell = CellKey(profile, endpoint, bind, port, protocol, path, client, family, mode)
                                    row += f" {describe_expectation(expect(cell), family)} |"
                                lines.append(row)
                if mode is Interception.REDIRECT:
                    lines += _uncaptured_rows(profile, family)
    lines += probe_spec_markdown(profile_list, families)
    lines += ztunnel_spec_markdown(profile_list, families)
    return "\n".join(lines) + "\n"
