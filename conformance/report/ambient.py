"""The report's "Moving to ambient" note: loopback-only apps that the legacy profile reaches and ambient does not.

An app that relied on legacy semantics (or LOCALHOST mode, or a Sidecar `defaultEndpoint: 127.0.0.1:P`) and
listens on loopback only breaks when its namespace is enrolled in ambient: ztunnel always dials the pod IP and
nothing overrides that (probes-ambient.md §2 "No override"). The note is written from what the run OBSERVED,
so it speaks about the mesh under test, not about the spec.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol as TypingProtocol

from conformance.engine.probe import Observation
from conformance.report.fold import fold
from conformance.spec.dimensions import Bind, CellKey, InboundCapture, Profile


class _Record(TypingProtocol):
    cell: CellKey
    observed: Observation


def _key(cell: CellKey) -> tuple[object, ...]:
    return (cell.default_endpoint, cell.port, cell.protocol, cell.path, cell.client)


def moving_to_ambient(records: Iterable[_Record]) -> list[str]:
    """Markdown lines of the note, folded (none when no loopback-only app is reached in legacy and lost in ambient).

    Advice, not a verdict on the mesh: folded closed with an ℹ️ summary whatever the run's result.
    """
    legacy: dict[tuple[object, ...], CellKey] = {}
    ambient: dict[tuple[object, ...], bool] = {}
    for record in records:
        cell = record.cell
        if cell.bind is not Bind.LOOPBACK or not cell.path.from_other_pod or cell.capture is not InboundCapture.ALL:
            continue
        reached = record.observed.last.label == "ok"
        if cell.profile is Profile.LEGACY and reached:
            legacy[_key(cell)] = cell
        elif cell.profile is Profile.AMBIENT:
            ambient[_key(cell)] = reached
    broken: Sequence[CellKey] = [cell for key, cell in legacy.items() if ambient.get(key) is False]
    if not broken:
        return []
    lines = [
        "",
        "## Moving to ambient",
        "",
        f"{len(broken)} loopback-only cells are reached from other pods under legacy semantics but not under "
        "ambient on this mesh. An app that listens on 127.0.0.1 / ::1 only and relies on legacy mode, "
        "meshConfig.inboundTrafficPolicy LOCALHOST or a Sidecar `defaultEndpoint: 127.0.0.1:P` breaks when its "
        "namespace is enrolled in ambient (`istio.io/dataplane-mode=ambient`): ztunnel always dials the pod IP and "
        "has no override. Make such apps listen on the pod IP or 0.0.0.0 before moving them.",
        "",
    ]
    lines += [f"- `{cell.id}` (legacy) reached; ambient not" for cell in sorted(broken, key=lambda c: c.id)[:20]]
    if len(broken) > 20:
        lines.append(f"- ... and {len(broken) - 20} more")
    summary = f"Moving to ambient: {len(broken)} loopback-only cells reached under legacy, not under ambient ℹ️"
    return fold(summary, lines, False)
