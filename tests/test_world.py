"""The world adapts to what the mesh accepts, and cases keep the cells the world can answer."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.spec.capabilities import Capability, istio_capabilities
from conformance.spec.cells import all_cells
from conformance.spec.dimensions import (
    SINGLE_STACK,
    UNCAPTURED,
    DefaultEndpoint,
    InboundCapture,
    IpFamily,
    Path,
    Profile,
)
from conformance.suite import test_capture, test_in_pod, test_overrides, test_reachability, test_source_address
from conformance.world.capture import INCLUDE_INBOUND_ANNOTATION
from conformance.world.layout import World
from conformance.world.namespaces import NS_MESH
from conformance.world.pods import PodRef
from conformance.world.ports import CONTROL_PORT, EXCLUDE_INBOUND_ANNOTATION, family_test_ports


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
        "echo-excluded",
        "echo-not-included",
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


# --- ports left out of capture (conformance.world.capture) ------------------------------------------------------


def _annotations(world: World, app: str) -> dict[str, str]:
    deployment: Any = next(m for m in world.manifests() if m["kind"] == "Deployment" and m["metadata"]["name"] == app)  # type: ignore[index]
    return dict(deployment["spec"]["template"]["metadata"]["annotations"])


@pytest.mark.parametrize("family", list(SINGLE_STACK), ids=str)
def test_each_capture_setting_has_a_meshed_server_with_its_annotations(family: IpFamily) -> None:
    world = World(family)
    assert world.mesh_servers[-2:] == (PodRef(NS_MESH, "echo-excluded"), PodRef(NS_MESH, "echo-not-included"))
    excluded = _annotations(world, "echo-excluded")
    # Every test port and the control port; the include list stays the default `*` (no annotation).
    assert excluded == {
        EXCLUDE_INBOUND_ANNOTATION: ",".join(str(p) for p in [*(t.number for t in family_test_ports(family)), 19000])
    }
    assert _annotations(world, "echo-not-included") == {
        EXCLUDE_INBOUND_ANNOTATION: str(CONTROL_PORT),
        INCLUDE_INBOUND_ANNOTATION: "",
    }
    # Every other server only keeps the control port out of capture.
    assert _annotations(world, "echo-none") == {EXCLUDE_INBOUND_ANNOTATION: "19000"}


@pytest.mark.parametrize("family", list(SINGLE_STACK), ids=str)
def test_each_capture_server_gets_a_destination_rule_disabling_auto_mtls(family: IpFamily) -> None:
    """istio/istio#30311: a sidecar client sends mTLS to an excluded port; istio.io#8917's workaround."""
    rules = [m for m in World(family).manifests() if m["kind"] == "DestinationRule"]
    assert rules == [
        {
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "DestinationRule",
            "metadata": {"name": app, "namespace": "mic-mesh"},
            "spec": {"host": f"{app}.mic-mesh.svc.cluster.local", "trafficPolicy": {"tls": {"mode": "DISABLE"}}},
        }
        for app in ("echo-excluded", "echo-not-included")
    ]
    names = [(m["kind"], m["metadata"]["name"]) for m in World(family).manifests()]  # type: ignore[index]
    for app in ("echo-excluded", "echo-not-included"):
        assert names.index(("Deployment", app)) < names.index(("Service", app)) < names.index(("DestinationRule", app))


def test_uncaptured_cells_land_on_their_server_and_only_in_their_case() -> None:
    world = World(IpFamily.IPV4)
    cells = [c for c in all_cells(families=[IpFamily.IPV4]) if c.capture is not InboundCapture.ALL]
    assert {(c.capture, world.server_for(c).app) for c in cells} == {
        (InboundCapture.EXCLUDED, "echo-excluded"),
        (InboundCapture.NOT_INCLUDED, "echo-not-included"),
    }
    assert all(world.deployed(c) for c in cells)
    assert not any(World(IpFamily.IPV4, captures=()).deployed(c) for c in cells)
    assert {c.id.split("/")[0] for c in cells} == {
        "legacy+excluded",
        "legacy+not_included",
        "passthrough+excluded",
        "passthrough+not_included",
    }
    # The capture cases hold exactly these cells; the reachability and source cases none of them.
    for profile in (Profile.LEGACY, Profile.PASSTHROUGH):
        asked = [c for case in test_capture.CASES for c in case.cells(profile, IpFamily.IPV4)]
        assert sorted(asked, key=str) == sorted((c for c in cells if c.profile is profile), key=str)
        others = [*test_reachability.CASES, *test_source_address.CASES]
        assert not [c for case in others for c in case.cells(profile, IpFamily.IPV4) if c.capture in UNCAPTURED]
    assert [case.profiles(IpFamily.IPV4) for case in test_capture.CASES] == [(Profile.LEGACY, Profile.PASSTHROUGH)] * 2
