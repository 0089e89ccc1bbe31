"""One fact of the model and where it comes from: the shape every rule of the spec's modules shares."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """One fact of the model, with where it comes from."""

    id: str
    statement: str
    istio_source: str
    reference: str
