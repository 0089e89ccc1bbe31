"""Which combinations of the dimensions are cells at all.

Not every combination is a question: an undeclared port has no ClusterIP to dial, a Sidecar resource means
nothing to a pod without a sidecar, and each IP family has its own literal `defaultEndpoint` forms.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

from conformance.spec.capture import captures
from conformance.spec.dimensions import (
    SIDECAR_FORMS_BY_FAMILY,
    UNCAPTURED,
    Bind,
    CellKey,
    Client,
    DefaultEndpoint,
    IpFamily,
    Path,
    PortKind,
    Profile,
    Protocol,
)


def default_endpoints(profile: Profile, port: PortKind, family: IpFamily) -> tuple[DefaultEndpoint, ...]:
    """The Sidecar situations that apply to a port.

    Only meshed pods read Sidecar resources, and the literal overrides are modelled on declared ports (the
    ports Istio's own instanceIPTests exercise); an undeclared port is asked without a Sidecar.
    """
    if profile is Profile.BASELINE or port is PortKind.UNDECLARED:
        return (DefaultEndpoint.NONE,)
    return (DefaultEndpoint.NONE, *SIDECAR_FORMS_BY_FAMILY[family], DefaultEndpoint.UNLISTED)


def clients(profile: Profile | None = None) -> tuple[Client, ...]:
    """The clients asked of a profile's servers.

    Ambient servers are asked from plain, sidecar and ambient clients ("from another pod (ambient or not)",
    probes-ambient.md §2); each sees the client pod's IP (rules `ambient-original-source`,
    `ambient-sidecar-client-original-source`). Ambient clients are asked of ambient servers only.
    """
    if profile is Profile.AMBIENT:
        return (Client.PLAIN, Client.MESHED, Client.AMBIENT)
    return (Client.PLAIN, Client.MESHED)


def paths(port: PortKind, profile: Profile | None = None) -> tuple[tuple[Path, Client | None], ...]:
    """The (path, client) pairs that exist for a port: a ClusterIP only fronts declared ports."""
    from_pods = (Path.POD_IP, Path.SERVICE) if port.declared else (Path.POD_IP,)
    pairs: list[tuple[Path, Client | None]] = [(p, c) for p in from_pods for c in clients(profile)]
    pairs += [(Path.LOCALHOST, None), (Path.SELF_POD_IP, None)]
    return tuple(pairs)


def iter_cells(
    profiles: Iterable[Profile] = tuple(Profile), families: Iterable[IpFamily] = tuple(IpFamily)
) -> Iterator[CellKey]:
    """Every cell, in a stable order: family, profile, defaultEndpoint, port, protocol, path, client, bind.

    After a sidecar profile's cells come those of its servers with ports left out of capture (`capture.py`): no
    Sidecar resource, from other pods only, per setting.
    """
    profile_list = tuple(profiles)
    for family in families:
        for profile in profile_list:
            for port in PortKind:
                for endpoint in default_endpoints(profile, port, family):
                    for protocol in Protocol:
                        for path, client in paths(port, profile):
                            for bind in Bind:
                                yield CellKey(profile, endpoint, bind, port, protocol, path, client, family)
            for setting in UNCAPTURED:
                for port in PortKind:
                    for protocol in Protocol:
                        for path, client in paths(port, profile):
                            if setting not in captures(profile, path):
                                continue
                            for bind in Bind:
                                yield CellKey(
                                    profile, DefaultEndpoint.NONE, bind, port, protocol, path, client, family, setting
                                )


def all_cells(
    profiles: Iterable[Profile] = tuple(Profile), families: Iterable[IpFamily] = tuple(IpFamily)
) -> tuple[CellKey, ...]:
    """`iter_cells` as a tuple (computed once per selection: a run asks for the same cells ~200 times)."""
    return _all_cells(tuple(profiles), tuple(families))


@functools.cache
def _all_cells(profiles: tuple[Profile, ...], families: tuple[IpFamily, ...]) -> tuple[CellKey, ...]:
    return tuple(iter_cells(profiles, families))
