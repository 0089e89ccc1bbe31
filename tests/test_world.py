"""The world adapts to what the mesh accepts, and cases keep the cells the world can answer."""

from __future__ import annotations

from conformance.spec.capabilities import Capability, istio_capabilities
from conformance.spec.dimensions import DefaultEndpoint, IpFamily, Path, Profile
from conformance.suite import test_in_pod, test_overrides
from conformance.world.layout import World


def test_ipv6_before_1144_deploys_no_literal_sidecar_resources() -> None:
    """istiod before 1.14.4 (and 1.15.0) rejects [::1]:P and [::]:P (istio/api sidecar.proto): applying fails.

    The IPv4 literals and the empty host `:P` are accepted from 1.10, so 1.10.6 keeps those Sidecars: on an IPv6
    pod they are the cross-family cells, judged as 1.10-1.14.3 resolve them (semantics.traffic_behaviour).
    """
    old = World.for_mesh(IpFamily.IPV6, istio_capabilities("1.10.6"))
    assert old.mesh_endpoints == (
        DefaultEndpoint.NONE,
        DefaultEndpoint.LOCALHOST_V4,
        DefaultEndpoint.INSTANCE_V4,
        DefaultEndpoint.EMPTY,
    )
    assert [m["metadata"]["name"] for m in old.manifests() if m["kind"] == "Sidecar"] == [  # type: ignore[index]
        "echo-localhost-cross",
        "echo-instance-cross",
        "echo-empty",
    ]
    assert [m["metadata"]["name"] for m in old.manifests() if m["kind"] == "Deployment"] == [  # type: ignore[index]
        "echo",
        "client",
        "echo-none",
        "echo-localhost-cross",
        "echo-instance-cross",
        "echo-empty",
        "client",
        "probe",
        "probe-rewrite",
        "probe-norewrite",
    ]
    assert World.for_mesh(IpFamily.IPV4, istio_capabilities("1.10.6")).sidecars
    # The IPv6 forms came with PR #40265, cherry-picked to 1.14.4: every Sidecar situation from there; 1.14.3 keeps
    # the servers whose forms it accepts (the IPv4 literals, cross-family on an IPv6 pod, and the empty host).
    assert len(World.for_mesh(IpFamily.IPV6, istio_capabilities("1.14.4")).mesh_endpoints) == 7
    assert len(World.for_mesh(IpFamily.IPV6, istio_capabilities("1.15.0")).mesh_endpoints) == 7
    assert World.for_mesh(IpFamily.IPV6, istio_capabilities("1.14.3")).mesh_endpoints == (
        DefaultEndpoint.NONE,
        DefaultEndpoint.LOCALHOST_V4,
        DefaultEndpoint.INSTANCE_V4,
        DefaultEndpoint.EMPTY,
    )
    # 1.9 accepts the empty host too (localhost with no bind there, semantics.traffic_behaviour).
    assert World.for_mesh(IpFamily.IPV4, istio_capabilities("1.9.9")).mesh_endpoints == (
        DefaultEndpoint.NONE,
        DefaultEndpoint.LOCALHOST_V4,
        DefaultEndpoint.INSTANCE_V4,
        DefaultEndpoint.EMPTY,
        DefaultEndpoint.UNLISTED,
    )


def test_mixed_cases_keep_their_cells_without_a_sidecar_and_sidecar_cases_skip() -> None:
    localhost = next(c for c in test_in_pod.CASES if c.name == "LocalhostInPod")
    mesh = istio_capabilities("1.10.6")
    # The in-pod case mixes Sidecar situations: it does not need the IPv6 forms, it runs the cells it can.
    assert mesh.missing(localhost.needed(Profile.PASSTHROUGH, IpFamily.IPV6)) is None
    world = World.for_mesh(IpFamily.IPV6, mesh)
    kept = [c for c in localhost.cells(Profile.PASSTHROUGH, IpFamily.IPV6) if world.deployed(c)]
    assert kept
    assert {c.default_endpoint for c in kept} == {
        DefaultEndpoint.NONE,
        DefaultEndpoint.LOCALHOST_V4,
        DefaultEndpoint.INSTANCE_V4,
        DefaultEndpoint.EMPTY,
    }
    assert {c.path for c in kept} == {Path.LOCALHOST}
    # A case made of Sidecar cells only is skipped, with the reason.
    override = next(c for c in test_overrides.CASES if c.name == "SidecarLocalhostEndpoint")
    needed = override.needed(Profile.PASSTHROUGH, IpFamily.IPV6)
    assert Capability.SIDECAR_ENDPOINT_IPV6 in needed
    assert mesh.missing(needed) == (
        "Istio 1.10.6 predates the [::1]:PORT / [::]:PORT defaultEndpoint forms (added in 1.14.4 and 1.15.0)"
    )
