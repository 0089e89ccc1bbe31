"""Conformance cases as data, in the manner of Gateway API's ConformanceTest.

A case has a short name, a description, the capabilities it needs and a selection of the spec's cells. The
profiles it runs under are the profiles where the selection is not empty; the capabilities a profile or a
family's Sidecar forms add are derived, so a case never forgets to ask for them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from conformance.spec.capabilities import Capability, endpoint_capabilities
from conformance.spec.cells import all_cells
from conformance.spec.dimensions import CellKey, DefaultEndpoint, Interception, IpFamily, Profile
from conformance.spec.semantics import CURRENT_TRAFFIC, TrafficBehaviour, expect

CellFilter = Callable[[CellKey], bool]


@dataclass(frozen=True)
class ConformanceCase:
    """One conformance test, over a set of cells."""

    name: str
    description: str
    select: CellFilter
    part: str = "full"
    """What the test judges of each cell: `reachability`, `source`, `full` or `arrival`."""
    needs: frozenset[Capability] = field(default_factory=frozenset)
    reached: bool | None = None
    """Only the cells the spec says the app is reached in (True) or not (False), as the release under test
    behaves (`semantics.traffic_behaviour`): where releases differ, a cell moves between such cases."""
    interception: Interception | None = Interception.REDIRECT
    """The interception mode of the cells asked (None: either). TPROXY cells have cases of their own
    (test_interception), which need the mesh's TPROXY capability."""
    after_traffic: bool = False
    """Asked after the profile's traffic cases: its check waits for what the kubelet does meanwhile (restarts)."""

    def cells(
        self, profile: Profile, family: IpFamily, behaviour: TrafficBehaviour = CURRENT_TRAFFIC
    ) -> tuple[CellKey, ...]:
        """The spec's cells this case asks of a profile (of the release with `behaviour`; the current one)."""
        return _cells(self, profile, family, behaviour)

    def profiles(self, family: IpFamily) -> tuple[Profile, ...]:
        """The profiles under which the case has cells."""
        return tuple(p for p in Profile if self.cells(p, family))

    def needed(self, profile: Profile, family: IpFamily) -> frozenset[Capability]:
        """Static needs plus what the profile needs, and the family's Sidecar forms when every cell uses one.

        A case that mixes cells with and without a Sidecar resource runs the cells without one when the mesh
        lacks the forms (see `runnable`); a case made only of Sidecar cells is skipped with the reason.
        """
        needs = set(self.needs)
        if profile is Profile.LEGACY:
            needs.add(Capability.PROFILE_LEGACY)
        if profile is Profile.PASSTHROUGH:
            needs.add(Capability.PROFILE_PASSTHROUGH)
        if profile is Profile.AMBIENT:
            needs.add(Capability.PROFILE_AMBIENT)
        if self.interception is Interception.TPROXY:
            needs.add(Capability.INTERCEPTION_TPROXY)
        if family is IpFamily.DUAL:
            needs.add(Capability.DUAL_STACK)  # dual-stack pods, ISTIO_DUAL_STACK=true (spec/dualstack.py)
        cells = self.cells(profile, family)
        if cells and all(c.default_endpoint is not DefaultEndpoint.NONE for c in cells):
            # The least any of its Sidecar situations needs: without it the case has nothing to ask.
            forms = {endpoint_capabilities(c.default_endpoint, family) for c in cells}
            needs |= min(forms, key=lambda f: (len(f), sorted(f)))
        return frozenset(needs)


def every_cell(_cell: CellKey) -> bool:
    """The selection of a case that picks its cells by `reached` alone."""
    return True


@functools.cache
def _cells(
    case: ConformanceCase, profile: Profile, family: IpFamily, behaviour: TrafficBehaviour
) -> tuple[CellKey, ...]:
    """ConformanceCase.cells, computed once per case, profile, family and behaviour.

    All four are frozen, and the spec's cells a pure function of them; collection asks each case for every
    profile, and each test asks again (~0.1 s a run).
    """
    return tuple(
        c
        for c in all_cells([profile], [family])
        if case.select(c)
        and (case.interception is None or c.interception is case.interception)
        and (case.reached is None or expect(c, behaviour).reachable is case.reached)
    )
