"""Which combinations of the dimensions are cells at all.

Not every combination is a question: an undeclared port has no ClusterIP to dial, a Sidecar resource means
nothing to a pod without a sidecar, and each IP family has its own literal `defaultEndpoint` forms.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

from conformance.spec.capture import captures
from conformance.spec.dimensions import (
    OVERRIDES_BY_FAMILY,
    SIDECAR_FORMS_BY_FAMILY,
    UNCAPTURED,
    CellKey,
    Client,
    DefaultEndpoint,
    Interception,
    IpFamily,
    Path,
    PortKind,
    Profile,
    Protocol,
    binds,
)
from conformance.spec.dualstack import DUAL_PROFILES, client_families


def interceptions(profile: Profile, family: IpFamily | None = None) -> tuple[Interception, ...]:
    """The interception modes asked of a profile's servers (REDIRECT only on dual-stack pods: dualstack.py).

    TPROXY is asked under passthrough only: under legacy (and a Sidecar's `127.0.0.1:P`) Envoy dials 127.0.0.1
    from the client's address, which reaches the app only if the pod inherits route_localnet=1 from the node
    (UNCONFIRMED, settings-dualstack.md §1(c)). Baseline and ambient servers have no sidecar, so no mode.
    """
    if profile is Profile.PASSTHROUGH and family is not IpFamily.DUAL:
        return (Interception.REDIRECT, Interception.TPROXY)
    return (Interception.REDIRECT,)


def default_endpoints(
    profile: Profile, port: PortKind, family: IpFamily, interception: Interception = Interception.REDIRECT
) -> tuple[DefaultEndpoint, ...]:
    """The Sidecar situations that apply to a port.

    Only meshed pods read Sidecar resources, and the literal overrides are modelled on declared ports (the
    ports Istio's own instanceIPTests exercise); an undeclared port is asked without a Sidecar. A TPROXY server
    is asked without a Sidecar and with the family's own instance form (`0.0.0.0:P` / `[::]:P`), the only
    Sidecar situations whose TPROXY outcome is traced (settings-dualstack.md §1(c)); see docs/spec.md "TPROXY".
    """
    if profile is Profile.BASELINE or port is PortKind.UNDECLARED:
        return (DefaultEndpoint.NONE,)
    if interception is Interception.TPROXY:
        return (DefaultEndpoint.NONE, OVERRIDES_BY_FAMILY[family][1])
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


def paths(
    port: PortKind,
    profile: Profile | None = None,
    interception: Interception = Interception.REDIRECT,
    endpoint: DefaultEndpoint = DefaultEndpoint.NONE,
) -> tuple[tuple[Path, Client | None], ...]:
    """The (path, client) pairs that exist for a port: a ClusterIP only fronts declared ports.

    A TPROXY server with a Sidecar resource is asked from other pods only: a Sidecar changes nothing inside the
    pod, and its in-pod paths are those of the TPROXY server without one (fewer cells, the issue's speed target).
    """
    from_pods = (Path.POD_IP, Path.SERVICE) if port.declared else (Path.POD_IP,)
    pairs: list[tuple[Path, Client | None]] = [(p, c) for p in from_pods for c in clients(profile)]
    if interception is Interception.REDIRECT or endpoint is DefaultEndpoint.NONE:
        pairs += [(Path.LOCALHOST, None), (Path.SELF_POD_IP, None)]
    return tuple(pairs)


def family_profiles(profiles: Iterable[Profile], family: IpFamily) -> tuple[Profile, ...]:
    """The profiles of `profiles` a family asks: all of them, but no ambient in a dual run (dualstack.py)."""
    return tuple(p for p in profiles if family is not IpFamily.DUAL or p in DUAL_PROFILES)


def iter_cells(
    profiles: Iterable[Profile] = tuple(Profile), families: Iterable[IpFamily] = tuple(IpFamily)
) -> Iterator[CellKey]:
    """Every cell, in a stable order: family, profile, mode, port, endpoint, protocol, path, client family, bind.

    A profile's REDIRECT cells come first, in the order they had before interception was a coordinate, then
    those of its servers with ports left out of capture (`capture.py`: REDIRECT, no Sidecar resource, from other
    pods only, per setting), then its TPROXY cells.
    """
    profile_list = tuple(profiles)
    for family in families:
        for profile in family_profiles(profile_list, family):
            for mode in interceptions(profile, family):
                for port in PortKind:
                    for endpoint in default_endpoints(profile, port, family, mode):
                        for protocol in Protocol:
                            for path, client in paths(port, profile, mode, endpoint):
                                for cf in client_families(family):
                                    for bind in binds(family):
                                        yield CellKey(
                                            profile,
                                            endpoint,
                                            bind,
                                            port,
                                            protocol,
                                            path,
                                            client,
                                            family,
                                            mode,
                                            client_family=cf,
                                        )
                if mode is Interception.REDIRECT:
                    yield from uncaptured_cells(profile, family)


def uncaptured_cells(profile: Profile, family: IpFamily) -> Iterator[CellKey]:
    """A profile's cells of servers with ports left out of capture, per setting (see `capture.py`)."""
    for setting in UNCAPTURED:
        for port in PortKind:
            for protocol in Protocol:
                for path, client in paths(port, profile):
                    if setting not in captures(profile, path):
                        continue
                    for cf in client_families(family):
                        for bind in binds(family):
                            yield CellKey(
                                profile,
                                DefaultEndpoint.NONE,
                                bind,
                                port,
                                protocol,
                                path,
                                client,
                                family,
                                capture=setting,
                                client_family=cf,
                            )


def all_cells(
    profiles: Iterable[Profile] = tuple(Profile), families: Iterable[IpFamily] = tuple(IpFamily)
) -> tuple[CellKey, ...]:
    """`iter_cells` as a tuple (computed once per selection: a run asks for the same cells ~200 times)."""
    return _all_cells(tuple(profiles), tuple(families))


@functools.cache
def _all_cells(profiles: tuple[Profile, ...], families: tuple[IpFamily, ...]) -> tuple[CellKey, ...]:
    return tuple(iter_cells(profiles, families))
