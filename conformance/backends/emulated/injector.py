"""The emulated sidecar injector's probe rewrite, as Istio's injector does it (never reading the suite's spec).

For an injected pod, each container's readiness, liveness and startup probe (httpGet, and tcpSocket as Istio >=
1.12 does) is replaced by an httpGet on pilot-agent's status port 15020 at `/app-health/<container>/readyz`,
`/livez` or `/startupz` (Istio's app_probe.go convertAppProber, status.FormatProberURL); the original probes go to
the proxy, keyed by that path, the way `ISTIO_KUBE_APP_PROBERS` carries them. The pod annotation
`sidecar.istio.io/rewriteAppHTTPProbers: "false"` and the mesh-wide setting (Istio's
`values.sidecarInjectorWebhook.rewriteAppHTTPProbe`) turn the rewrite off.

The injector also tells the proxy where to send the probes: when the mesh is in legacy mode it sets the
equivalent of `REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION=true` (Istio's templates do so when istiod has
`PILOT_ENABLE_INBOUND_PASSTHROUGH=false` or the mesh's inbound mode is LOCALHOST).
"""

from __future__ import annotations

from dataclasses import replace

from conformance.backends.emulated.kube import ContainerProbes, PodTemplate

STATUS_PORT = 15020
REWRITE_ANNOTATION = "sidecar.istio.io/rewriteAppHTTPProbers"
PATH_SEGMENTS = {"readiness": "readyz", "liveness": "livez", "startup": "startupz"}
"""pilot-agent's path per probe use: it accepts exactly `/app-health/<container>/(livez|readyz|startupz)`."""


def app_health_path(container: str, use: str = "readiness") -> str:
    """pilot-agent's path for a container's probe of this use (`readiness`, `liveness`, `startup`)."""
    return f"/app-health/{container}/{PATH_SEGMENTS[use]}"


def rewrites(pod: PodTemplate, mesh_rewrite: bool) -> bool:
    """Whether the injector rewrites this pod's probes: injected, the mesh setting on, no opt-out annotation."""
    return pod.injected and mesh_rewrite and pod.annotations.get(REWRITE_ANNOTATION, "").lower() != "false"


def kubelet_probes(pod: PodTemplate, mesh_rewrite: bool) -> dict[str, ContainerProbes]:
    """The probes of each probed container as kubelet runs them after injection (ports relative to the pod IP)."""
    out: dict[str, ContainerProbes] = {}
    rewrite = rewrites(pod, mesh_rewrite)
    for container in pod.containers:
        probes = container.probes.of_use()
        if not probes:
            continue
        if rewrite:
            probes = {
                use: replace(probe, kind="http", port=STATUS_PORT, path=app_health_path(container.name, use))
                for use, probe in probes.items()
            }
        out[container.name] = ContainerProbes(**probes)
    return out


def status_config(pod: PodTemplate, mesh_rewrite: bool, inbound_mode: str) -> dict[str, object]:
    """The `status` block of the sidecar configuration: the status port and the app probers it serves."""
    probers: dict[str, object] = {}
    if rewrites(pod, mesh_rewrite):
        for container in pod.containers:
            for use, probe in container.probes.of_use().items():
                probers[app_health_path(container.name, use)] = probe.to_json()
    return {
        "port": STATUS_PORT,
        "app_probers": probers,
        "legacy_localhost_destination": inbound_mode == "legacy",
    }
