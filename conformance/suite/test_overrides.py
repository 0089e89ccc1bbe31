"""Sidecar `spec.ingress[].defaultEndpoint` overrides (istio/api sidecar.proto, reference section 4).

127.0.0.1:P brings a loopback-only app back, 0.0.0.0:P sends to the pod IP from 127.0.0.6 (to the other family's
localhost on a pod without an address of its family), and a port the Sidecar does not list falls to the catch-all
passthrough.
"""

from __future__ import annotations

from conformance.spec.dimensions import CellKey, DefaultEndpoint, IpFamily, Profile
from conformance.suite.cases import ConformanceCase
from conformance.suite.checks import ConformanceRun


def _sidecar_pod(cell: CellKey) -> bool:
    """From another pod, to a server with a sidecar (ambient servers ignore Sidecars: test_ambient)."""
    return cell.path.from_other_pod and cell.profile is not Profile.AMBIENT


def _instance_without_ipv4(cell: CellKey) -> bool:
    return cell.default_endpoint is DefaultEndpoint.INSTANCE_V4 and cell.ip_family is IpFamily.IPV6


def _instance_without_ipv6(cell: CellKey) -> bool:
    return cell.default_endpoint is DefaultEndpoint.INSTANCE_V6 and cell.ip_family is IpFamily.IPV4


CASES = (
    ConformanceCase(
        name="SidecarLocalhostEndpoint",
        description="defaultEndpoint 127.0.0.1:P / [::1]:P: the sidecar dials localhost, so loopback and "
        "wildcard apps are reached and see localhost; a pod-IP app is not.",
        select=lambda c: _sidecar_pod(c) and c.default_endpoint.targets_localhost,
    ),
    ConformanceCase(
        name="SidecarInstanceEndpoint",
        description="defaultEndpoint 0.0.0.0:P / [::]:P on a pod of that family: the sidecar dials the pod IP "
        "from 127.0.0.6 / ::6, so pod-IP and wildcard apps are reached; a loopback app is not.",
        select=lambda c: (
            _sidecar_pod(c)
            and c.default_endpoint.targets_instance_ip
            and not (_instance_without_ipv4(c) or _instance_without_ipv6(c))
        ),
    ),
    ConformanceCase(
        name="SidecarInstanceEndpointWithoutIpv4",
        description="defaultEndpoint 0.0.0.0:P on a pod with no IPv4 address: the sidecar dials 127.0.0.1 "
        "with no bind (1.15+), which no app of an IPv6-only pod listens on.",
        select=lambda c: _sidecar_pod(c) and _instance_without_ipv4(c),
    ),
    ConformanceCase(
        name="SidecarInstanceEndpointWithoutIpv6",
        description="defaultEndpoint [::]:P on a pod with no IPv6 address: the sidecar dials [::1] with no bind "
        "(1.14.4+, 1.15+), which no app of an IPv4-only pod listens on.",
        select=lambda c: _sidecar_pod(c) and _instance_without_ipv6(c),
    ),
    ConformanceCase(
        name="SidecarEmptyEndpoint",
        description="defaultEndpoint with an empty host, :P: ORIGINAL_DST from 127.0.0.6 / ::6, like "
        "passthrough, whatever the mesh setting (1.10+; on 1.9, localhost with no bind, like 127.0.0.1:P).",
        select=lambda c: _sidecar_pod(c) and c.default_endpoint is DefaultEndpoint.EMPTY,
    ),
    ConformanceCase(
        name="SidecarUnlistedPort",
        description="A Sidecar with ingress listeners for other ports only: this port has no inbound cluster "
        "and falls to the catch-all passthrough, in legacy and passthrough alike.",
        select=lambda c: _sidecar_pod(c) and c.default_endpoint is DefaultEndpoint.UNLISTED,
    ),
)


def test_sidecar_override(conformance: ConformanceRun, case: ConformanceCase) -> None:
    """Each override forwards where istio/api's sidecar.proto says."""
    conformance.check_cells(case)
