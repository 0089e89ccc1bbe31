"""`--plan`: the kind backend's whole command sequence for the given options, produced without running it.

The plan runs the real backend code with a PlanRunner, which records each command and API call instead of making
it and answers the few calls whose answers the run reads (pod and Service listings) with documentation
addresses (192.0.2.0/24, 2001:db8::/32). So the plan cannot drift from what a run does. API calls are shown as
the request the official client makes, with the kubectl command that would repeat it by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conformance.backends.base import ProbeRequest
from conformance.backends.kind.backend import KubeCluster
from conformance.backends.kind.runner import PlanRunner, render_plan
from conformance.spec.capabilities import Capability
from conformance.spec.dimensions import MESH_PROFILES, Client, IpFamily, Profile
from conformance.world.layout import World
from conformance.world.namespaces import NS_MESH
from conformance.world.ports import CONTROL_PORT
from conformance.world.resources import fixture


class _StandIns:
    """Plausible answers for the listings a run reads, built from the world's own manifests."""

    def __init__(self, world: World) -> None:
        self.family = world.family
        self.deployments = [m for m in world.manifests() if m["kind"] == "Deployment"]
        self.services = [m for m in world.manifests() if m["kind"] == "Service"]

    def _ips(self, index: int, service: bool) -> list[str]:
        """The object's addresses, the primary first: IPv4 then IPv6 on dual-stack pods, as kind lists them."""
        v4 = f"{'198.51.100' if service else '192.0.2'}.{index + 10}"
        v6 = f"2001:db8:{1 if service else 0}::{index + 10:x}"
        return {IpFamily.IPV4: [v4], IpFamily.IPV6: [v6], IpFamily.DUAL: [v4, v6]}[self.family]

    def __call__(self, argv: Sequence[str]) -> Any:
        """The pods or Services of a namespace (the API calls' values); nothing for the rest."""
        if "get" in argv and "pods" in argv:
            namespace = argv[argv.index("-n") + 1]
            items = []
            for index, d in enumerate(self.deployments):
                meta: Any = d["metadata"]
                if meta["namespace"] != namespace:
                    continue
                containers = [{"name": "echo"}] + ([{"name": "istio-proxy"}] if namespace == NS_MESH else [])
                ips = self._ips(index, service=False)
                status = {"phase": "Running", "podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips]}
                items.append(
                    {
                        "metadata": {"name": f"{meta['name']}-plan", "labels": {"app": meta["name"]}},
                        "spec": {"containers": containers},
                        "status": {**status, "containerStatuses": []},
                    }
                )
            return items
        if "get" in argv and "services" in argv:
            namespace = argv[argv.index("-n") + 1]
            items = [
                {
                    "metadata": {"name": s["metadata"]["name"]},  # type: ignore[index]
                    "spec": {"clusterIP": self._ips(i, service=True)[0], "clusterIPs": self._ips(i, service=True)},
                }
                for i, s in enumerate(self.services)
                if s["metadata"]["namespace"] == namespace  # type: ignore[index]
            ]
            return items
        return None


def _note_dual_stack_files(runner: PlanRunner, settings: Any) -> None:
    """A dual-stack plan shows what makes it dual-stack: the kind config and the install overlays, as they are."""
    from conformance.backends.kind.mesh import dual_stack_overlays

    files = [str(fixture("kind", "dual.yaml"))] if settings.backend == "kind" else []
    files += dual_stack_overlays(IpFamily.DUAL.value, settings.backend_options["istio_version"])
    runner.note(
        "dual-stack: every pod and Service gets an IPv4 and an IPv6 address (Services: ipFamilyPolicy "
        "RequireDualStack); Istio runs with ISTIO_DUAL_STACK=true, as its own tests install it. The files:"
    )
    for path in files:
        text = Path(path).read_text().rstrip()
        runner.note(f"{Path(path).name}:\n" + "\n".join(f"    {line}" for line in text.splitlines()))


def plan_text(settings: Any) -> str:
    """The plan for a run with these settings (a `conformance.run.settings.Settings`), in the run's order.

    The run's order (the plugin's collection hook and `conformance.run.session`): baseline, the sidecar profiles
    (the default mode first) with their prechecks, the legacy round trip, then ambient, on the install of its own
    that the kind backend makes for it.
    """
    from conformance.spec.dimensions import AMBIENT_MESH_SETTING

    world = World.for_mesh(settings.family, settings.mesh)
    runner = PlanRunner(responder=_StandIns(world))
    cluster = KubeCluster(
        settings.backend, settings.family.value, settings.backend_options, settings.timeouts, runner=runner
    )
    if settings.family is IpFamily.DUAL:
        _note_dual_stack_files(runner, settings)
    cluster.up(world.manifests())
    order = [Profile.BASELINE, settings.mesh.default_profile] + [p for p in Profile]
    ambient = Client.AMBIENT in world.clients and Profile.AMBIENT in settings.profiles
    runner.note("probes: per convergence round, one exec per client pod (and per server for in-pod paths)")
    sources = [world.clients[Client.PLAIN], world.clients[Client.MESHED]]
    server = world.mesh_server(world.mesh_endpoints[0])
    cluster.probe(
        [ProbeRequest(s, "http", cluster.pod_ip(server), 8083, f"plan-{s.app}-{s.namespace}") for s in sources],
        settings.timeouts.probe,
    )
    runner.note("request record: through the API server's pod proxy, the control port being excluded from capture")
    cluster.request_record(server, ["plan-client-mic-baseline"])
    done: set[Profile] = set()
    for profile in order:
        if profile in done or profile not in settings.profiles or profile not in MESH_PROFILES:
            continue
        done.add(profile)
        if profile in settings.mesh.profiles():
            cluster.use_profile(profile.value, profile.value)
            if Capability.PRECHECK_LOCALHOST in settings.mesh.capabilities:
                cluster.precheck(NS_MESH)
    if Capability.LEGACY_SWITCH in settings.mesh.capabilities and Profile.LEGACY in settings.profiles:
        # As the test does: it runs after the other sidecar tests, so the legacy group's switch is its first leg.
        runner.note("LegacySwitchRoundTrip: (passthrough ->) legacy -> passthrough")
        for mode in (Profile.LEGACY, Profile.PASSTHROUGH):
            cluster.use_profile(mode.value, mode.value)
    if ambient:
        runner.note(
            f"ambient, last: its own install (the ambient profile), inbound {AMBIENT_MESH_SETTING.value} "
            "(LOCALHOST must change nothing there)"
        )
        cluster.use_profile(Profile.AMBIENT.value, AMBIENT_MESH_SETTING.value)
        enrolled = world.ambient_server(world.mesh_endpoints[0])
        client = world.clients[Client.AMBIENT]  # the enrolled client: its probes go through ztunnel
        cluster.probe(
            [ProbeRequest(client, "http", cluster.pod_ip(enrolled), 8083, "plan-client-mic-ambient")],
            settings.timeouts.probe,
        )
        runner.note(
            "request record of an enrolled pod: through the API server's pod proxy and ztunnel's plaintext inbound "
            "(ambient capture ignores the port exclusion; PERMISSIVE lets it through)"
        )
        cluster.request_record(enrolled, ["plan-client-mic-ambient"])
    runner.note(
        "teardown (diagnostics on failure, through the API: pod details, logs and events; istioctl proxy-config, "
        "ztunnel and istio-cni logs for enrolled pods, kind export logs)"
    )
    cluster.down()
    header = (
        f"# mesh-inbound-conformance plan: --backend {settings.backend}, Istio {cluster.istio_version}, "
        f"{settings.family.value}, profiles {', '.join(p.value for p in settings.profiles)}\n"
        f"# echo control port {CONTROL_PORT}; nothing below has been run.\n"
    )
    return header + render_plan(runner.transcript)
