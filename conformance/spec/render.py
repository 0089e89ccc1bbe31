"""The spec as a versioned JSON document and as Markdown tables a person reads.

JSON format `mesh-inbound-conformance/spec`, version 7 (documented in docs/spec.md, "Reading the spec", with
what each version changed): the top-level keys `format`, `version`, `dimensions`, `rules` and `cells` are
stable; each cell has `id`, the nine key fields (`interception` since version 5), and
`expected {reachable, source, failure, because}`. New
fields may be added within a version; renaming or removing one, or changing what it means, bumps the version.
Version 4 (from 3): a reachable cell always has a `source` (a sidecar client of an ambient server sees the
client too), so `expected.source_judged` is gone; `[::]:P` on an IPv4 pod is unreachable (it dials ::1).
Version 7 (from 6): a dual document has probe cells (`probe/.../dual`, four binds, rule `dual-probe-primary-ipv4`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace

from conformance.spec.capture import CAPTURE_RULES
from conformance.spec.cells import default_endpoints, family_profiles, interceptions, paths, uncaptured_cells
from conformance.spec.dimensions import (
    SINGLE_STACK,
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
    source_addresses,
)
from conformance.spec.dualstack import client_families
from conformance.spec.outcome import Expectation
from conformance.spec.probes import probe_spec_entries, probe_spec_markdown
from conformance.spec.semantics import RULES, expect
from conformance.spec.ztunnel import ztunnel_spec_entries, ztunnel_spec_markdown

SPEC_FORMAT = "mesh-inbound-conformance/spec"
SPEC_FORMAT_VERSION = 7


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
            "client_family": [f.value for f in SINGLE_STACK] + [None],
            "interception": [m.value for m in Interception],
            "capture": [c.value for c in InboundCapture],
            "source": [s.value for s in Source],
            "failure": [f.value for f in Failure],
        },
        "rules": [r.to_json() for r in (*RULES.values(), *CAPTURE_RULES.values())],
        "cells": [{"id": cell.id, **cell.to_json(), "expected": expect(cell).to_json()} for cell in cells],
        # Health probes (probes.py): added within version 1, beside the traffic cells; dual ones from version 7.
        **probe_spec_entries(tuple(dict.fromkeys(c.profile for c in cells)), _families(cells)),
        # The node proxy's own contract (ztunnel.py): added within version 5, beside the traffic cells.
        **ztunnel_spec_entries(tuple(dict.fromkeys(c.profile for c in cells)), _single_stack(cells)),
    }


def _families(cells: Sequence[CellKey]) -> tuple[IpFamily, ...]:
    """The families of `cells`, in order: each asks probe cells (a dual one of its profiles, probes.py)."""
    return tuple(dict.fromkeys(c.ip_family for c in cells))


def _single_stack(cells: Sequence[CellKey]) -> tuple[IpFamily, ...]:
    """The single-stack families of `cells`: node proxy cells are not asked in dual runs (dualstack.py)."""
    return tuple(f for f in _families(cells) if f in SINGLE_STACK)


def spec_json(cells: Sequence[CellKey]) -> str:
    """`spec_document` serialised with sorted-stable, indented output."""
    return json.dumps(spec_document(cells), indent=2) + "\n"


_FAILURE_TEXT = {Failure.REFUSED: "refused", Failure.HTTP_503: "503", Failure.RESET_OR_EOF: "reset/EOF"}


def describe_source(source: Source, family: IpFamily, client_family: IpFamily | None = None) -> str:
    """A source as a reader expects to see it: the literal address where there is one."""
    addresses = source_addresses(family, client_family)
    if source in addresses:
        return addresses[source]
    return {Source.CLIENT: "client IP", Source.SELF: "own pod IP"}.get(source, source.value)


def describe_expectation(expected: Expectation, family: IpFamily, client_family: IpFamily | None = None) -> str:
    """One table cell: `✓ 127.0.0.6` or `✗ 503`."""
    if expected.reachable and expected.source is not None:
        return f"✓ {describe_source(expected.source, family, client_family)}"
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
    client_family: IpFamily | None = None,
) -> str:
    who = f"{client.value} client" if client else "in the pod"
    label = f"| {endpoint_label(endpoint, capture)} | {port.value} | {protocol.value} | {path.value} | {who} |"
    return label if client_family is None else f"{label} {client_family.value} |"


def _uncaptured_rows(profile: Profile, family: IpFamily) -> list[str]:
    """The rows of a profile's servers with ports left out of capture (REDIRECT, no Sidecar, from other pods)."""
    rows: dict[tuple[InboundCapture, PortKind, Protocol, Path, Client | None, IpFamily | None], str] = {}
    for cell in uncaptured_cells(profile, family):  # a row's binds come one after another
        key = (cell.capture, cell.port, cell.protocol, cell.path, cell.client, cell.client_family)
        label = rows.get(key) or _row_label(DefaultEndpoint.NONE, *key[1:5], cell.capture, cell.client_family)
        rows[key] = label + f" {describe_expectation(expect(cell), family, cell.client_family)} |"
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
        dual = family is IpFamily.DUAL  # a dual family's rows also carry the client family (dualstack.py)
        for profile in family_profiles(profile_list, family):
            for mode in interceptions(profile, family):
                title = profile.value if mode is Interception.REDIRECT else f"{profile.value}, {mode.value.upper()}"
                lines += ["", f"## {title} ({family.value})", ""]
                columns = " | ".join(b.value for b in binds(family))
                keys = "| defaultEndpoint | port | protocol | path | client |" + (" client family |" if dual else "")
                lines.append(f"{keys} {columns} |")
                lines.append("|---|---|---|---|---|" + "---|" * (len(binds(family)) + dual))
                for port in PortKind:
                    for endpoint in default_endpoints(profile, port, family, mode):
                        for protocol in Protocol:
                            for path, client in paths(port, profile, mode, endpoint):
                                for cf in client_families(family):
                                    row = _row_label(endpoint, port, protocol, path, client, client_family=cf)
                                    for bind in binds(family):
                                        key = CellKey(
                                            profile, endpoint, bind, port, protocol, path, client, family, mode
                                        )
                                        cell = replace(key, client_family=cf)
                                        row += f" {describe_expectation(expect(cell), family, cf)} |"
                                    lines.append(row)
                if mode is Interception.REDIRECT:
                    lines += _uncaptured_rows(profile, family)
    single = tuple(f for f in families if f in SINGLE_STACK)  # node proxy cells: not in dual runs
    lines += probe_spec_markdown(profile_list, families)
    lines += ztunnel_spec_markdown(profile_list, single)
    return "\n".join(lines) + "\n"
