"""Every wait of the suite in one place, with documented defaults and maximums (Gateway API's TimeoutConfig).

`--timeout-config probe=5,converge=60` overrides them; a key that does not exist, a value that is not a
number, or a value above its maximum is a usage error, so a typo never silently leaves a default in force.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class TimeoutConfig:
    """Seconds, except `consecutive` (a count)."""

    probe: float = 2.0
    """One probe: connect, send, read the answer."""
    converge: float = 30.0
    """A cell must give `consecutive` identical outcomes within this time (Istio's echo: 30 s)."""
    consecutive: int = 3
    """Identical outcomes in a row that make an observation (Gateway API: RequiredConsecutiveSuccesses 3)."""
    poll_interval: float = 0.02
    """First pause after a probe round in which an outcome changed; each later one doubles, up to 16x.

    A round in which every outcome held is followed at once (Istio's echo calls: `BackoffDelay`, no delay after
    a success; `engine.probe.converge_rounds`)."""
    pod_ready: float = 120.0
    """Until every pod passes its readiness checks."""
    mesh_install: float = 600.0
    """istioctl install, and a profile switch with its restarts."""
    cluster_create: float = 600.0
    """kind create cluster (node image pull included)."""
    command: float = 120.0
    """Any single kind/istioctl/docker command or Kubernetes API request not covered above."""


MAXIMUMS = TimeoutConfig(
    probe=30.0,
    converge=600.0,
    consecutive=20,
    poll_interval=5.0,
    pod_ready=1800.0,
    mesh_install=3600.0,
    cluster_create=3600.0,
    command=3600.0,
)


def parse_timeout_config(text: str, base: TimeoutConfig | None = None) -> TimeoutConfig:
    """Parse `KEY=SECONDS,...`; ValueError carries the one-line reason."""
    config = base or TimeoutConfig()
    known = {f.name: f for f in fields(TimeoutConfig)}
    changes: dict[str, float | int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in known:
            raise ValueError(f"--timeout-config: {item!r} is not KEY=SECONDS with KEY one of {', '.join(known)}")
        try:
            value: float | int = int(raw) if key == "consecutive" else float(raw)
        except ValueError:
            kind = "a whole number" if key == "consecutive" else "a number of seconds"
            raise ValueError(f"--timeout-config: {key}={raw!r} is not {kind}") from None
        limit = getattr(MAXIMUMS, key)
        if not 0 < value <= limit:
            raise ValueError(f"--timeout-config: {key}={raw} is outside (0, {limit}]")
        changes[key] = value
    return replace(config, **changes)  # type: ignore[arg-type]


def describe() -> str:
    """The keys with defaults and maximums, for --help."""
    default = TimeoutConfig()
    return ", ".join(f"{f.name}={getattr(default, f.name)} (max {getattr(MAXIMUMS, f.name)})" for f in fields(default))
