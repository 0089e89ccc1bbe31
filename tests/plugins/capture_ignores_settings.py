"""A pytest plugin for the suite's own tests: emulated capture rules that lose the pod's include/exclude settings.

tests/test_capture_runs.py runs the suite with `-p capture_ignores_settings` (tests/plugins on PYTHONPATH). Every
meshed pod then gets the rules of a pod without `traffic.sidecar.istio.io/excludeInboundPorts` and
`includeInboundPorts`, as an istio-iptables (or an injector) that dropped them would write: include `*`, and only the
injector's own ports (15090, 15021, 15020) and the harness's control port excluded, as on every other server. The
suite never loads it, so nothing a user runs can trip it.
"""

from __future__ import annotations

from collections.abc import Sequence

from conformance.backends.emulated import capture
from conformance.world.ports import CONTROL_PORT

_nat_rules = capture.nat_rules


def _ignoring_settings(ipv6: bool, excluded: Sequence[int], included: str = "*", tproxy: bool = False) -> str:
    kept = [p for p in excluded if p in (*capture.DEFAULT_EXCLUDED_INBOUND, CONTROL_PORT)]
    return _nat_rules(ipv6, kept, "*", tproxy)


capture.nat_rules = _ignoring_settings
