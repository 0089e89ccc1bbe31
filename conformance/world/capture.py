"""The servers whose test ports are left out of the sidecar's inbound capture: their annotations and DestinationRule.

One server per setting of `InboundCapture` other than `all`, in the injected namespace (`echo-excluded`,
`echo-not-included`), serving the same ports as every server. Facts: settings-dualstack.md §3.

- `excluded`: `traffic.sidecar.istio.io/excludeInboundPorts` lists every test port and the control port (which every
  server excludes); the include list stays the default `*`, the only one under which exclusions apply.
- `not_included`: `traffic.sidecar.istio.io/includeInboundPorts: ""`, no inbound capture at all. The control port
  stays in the exclusion list as on every server (moot here).

A sidecar client originates auto-mTLS to such a server (its endpoints carry the sidecar's tlsMode label), so the app
would receive TLS bytes: istio/istio#30311, and the istio.io FAQ added by istio/istio.io#8917 whose workaround is a
DestinationRule with `tls.mode: DISABLE` for the host. The world applies exactly that per server; the emulated
mesh has no mTLS and reads the rule as what it is, plaintext.
"""

from __future__ import annotations

from conformance.spec.dimensions import InboundCapture, IpFamily
from conformance.world.namespaces import Manifest
from conformance.world.pods import PodRef
from conformance.world.ports import CONTROL_PORT, EXCLUDE_INBOUND_ANNOTATION, family_test_ports

INCLUDE_INBOUND_ANNOTATION = "traffic.sidecar.istio.io/includeInboundPorts"
"""The pod annotation for istio-iptables' `-b` (default `*`; empty: no inbound capture)."""


def server_name(capture: InboundCapture) -> str:
    """The app name of the server with this capture setting (`echo-excluded`, `echo-not-included`)."""
    if capture is InboundCapture.ALL:
        raise ValueError("the servers of capture `all` are named by their Sidecar situation")
    return "echo-" + capture.value.replace("_", "-")


def capture_annotations(capture: InboundCapture, family: IpFamily) -> dict[str, str]:
    """The pod template annotations of a server of this family with this setting (`all`: the control port's)."""
    if capture is InboundCapture.EXCLUDED:
        ports = [*(p.number for p in family_test_ports(family)), CONTROL_PORT]
        return {EXCLUDE_INBOUND_ANNOTATION: ",".join(str(p) for p in ports)}
    annotations = {EXCLUDE_INBOUND_ANNOTATION: str(CONTROL_PORT)}
    if capture is InboundCapture.NOT_INCLUDED:
        annotations[INCLUDE_INBOUND_ANNOTATION] = ""
    return annotations


def plaintext_destination_rule(server: PodRef) -> Manifest:
    """A DestinationRule that turns auto-mTLS off for the server's Service host (istio/istio.io#8917)."""
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "DestinationRule",
        "metadata": {"name": server.app, "namespace": server.namespace},
        "spec": {
            "host": f"{server.app}.{server.namespace}.svc.cluster.local",
            "trafficPolicy": {"tls": {"mode": "DISABLE"}},
        },
    }
