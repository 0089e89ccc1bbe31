"""A workload as the suite names it, on every backend: the one world type the backends share."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PodRef:
    """A workload by namespace and `app` label (kind pod names carry random suffixes)."""

    namespace: str
    app: str

    def __str__(self) -> str:
        return f"{self.app}.{self.namespace}"
