"""A rule of the spec: one fact of the model, with the Istio source it comes from.

Shared by the modules that hold rules (semantics.py, capture.py, probes.py), so that none of them has to import
another for the type alone.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """One fact of the model, with where it comes from."""

    id: str
    statement: str
    istio_source: str
    reference: str

    def to_json(self) -> dict[str, str]:
        """The rule as every list of rules in the spec's JSON document has it."""
        return {
            "id": self.id,
            "statement": self.statement,
            "istio_source": self.istio_source,
            "reference": self.reference,
        }
