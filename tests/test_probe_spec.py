"""The probe rules of the spec (conformance/spec/probes.py), the injector rewrite and the probe pods' manifests."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from conformance.backends.emulated import injector, kube
from conformance.spec.dimensions import ONE_FAMILY_BINDS, SINGLE_STACK, Bind, IpFamily, Profile
from conformance.spec.probes import (
    CURRENT,
    PROBE_RULES,
    ProbeCellKey,
    ProbeKind,
    ProbeSource,
    ProbeUse,
    expect_probe,
    probe_behaviour,
    probe_cells,
)
from conformance.spec.semantics import RULES
from conformance.world.layout import World
from conformance.world.probe_pods import (
    PROBE_REWRITE_ANNOTATION,
    PROBED_CONTAINERS,
    RESTART_FAILURE_THRESHOLD,
    probe_pods_of,
)

V4 = IpFamily.IPV4


def cell(
    profile: Profile, bind: Bind, probe: ProbeKind, rewrite: bool | None, use: ProbeUse = ProbeUse.READINESS
) -> ProbeCellKey:
    return ProbeCellKey(profile, bind, probe, rewrite, V4, use)


def test_probe_cells_per_family_and_profile() -> None:
    cells = probe_cells(tuple(Profile), (V4,))
    # Without a sidecar (baseline, ambient): 3 binds x (2 readiness probes + http liveness + http startup); each
    # sidecar profile: x 2 rewrite settings.
    per_profile = Counter(c.profile for c in cells)
    assert per_profile == {Profile.BASELINE: 12, Profile.AMBIENT: 12, Profile.PASSTHROUGH: 24, Profile.LEGACY: 24}
    assert Counter(c.use for c in cells) == {ProbeUse.READINESS: 36, ProbeUse.LIVENESS: 18, ProbeUse.STARTUP: 18}
    assert len({c.id for c in cells}) == len(cells)
    assert len({c.container for c in cells}) == len(PROBED_CONTAINERS)
    no_sidecar = (Profile.BASELINE, Profile.AMBIENT)
    assert all(c.rewrite is None for c in cells if c.profile in no_sidecar)
    assert {c.rewrite for c in cells if c.profile not in no_sidecar} == {True, False}


def test_every_rule_applied_is_defined_and_cites_istio() -> None:
    for c in probe_cells(tuple(Profile), SINGLE_STACK):
        for rule in expect_probe(c).because:
            assert rule in PROBE_RULES or rule in RULES, rule
    for rule in PROBE_RULES.values():
        assert rule.istio_source
        assert "probes reference" in rule.reference


@pytest.mark.parametrize(
    ("profile", "bind", "ready", "source"),
    [
        # >= 1.10 passthrough: pod IP from 127.0.0.6 (istio/istio#36894: loopback apps fail their probes).
        (Profile.PASSTHROUGH, Bind.LOOPBACK, False, None),
        (Profile.PASSTHROUGH, Bind.POD_IP, True, ProbeSource.INBOUND_PASSTHROUGH),
        (Profile.PASSTHROUGH, Bind.WILDCARD, True, ProbeSource.INBOUND_PASSTHROUGH),
        # >= 1.10 legacy switch: localhost, still from 127.0.0.6.
        (Profile.LEGACY, Bind.LOOPBACK, True, ProbeSource.INBOUND_PASSTHROUGH),
        (Profile.LEGACY, Bind.POD_IP, False, None),
        (Profile.LEGACY, Bind.WILDCARD, True, ProbeSource.INBOUND_PASSTHROUGH),
    ],
)
def test_rewritten_http_probes_of_the_current_release(
    profile: Profile, bind: Bind, ready: bool, source: ProbeSource | None
) -> None:
    want = expect_probe(cell(profile, bind, ProbeKind.HTTP, True), CURRENT)
    assert (want.ready, want.source) == (ready, source)
    assert not want.false_ready  # probes and traffic agree in both modes


def test_istio_1_9_probes_localhost_without_a_bind() -> None:
    behaviour = probe_behaviour("1.9.9")
    loopback = expect_probe(cell(Profile.LEGACY, Bind.LOOPBACK, ProbeKind.HTTP, True), behaviour)
    pod_ip = expect_probe(cell(Profile.LEGACY, Bind.POD_IP, ProbeKind.HTTP, True), behaviour)
    assert (loopback.ready, loopback.source) == (True, ProbeSource.LOCALHOST)
    assert pod_ip.ready is False  # istio/istio#25177
    assert "probe-agent-1.9-localhost" in loopback.because


def test_tcp_probes_are_rewritten_only_from_1_12() -> None:
    passthrough_loopback = cell(Profile.PASSTHROUGH, Bind.LOOPBACK, ProbeKind.TCP, True)
    assert expect_probe(passthrough_loopback, probe_behaviour("1.12.0")).ready is False
    old = expect_probe(passthrough_loopback, probe_behaviour("1.10.6"))
    assert old.ready is True
    assert old.false_ready
    assert probe_behaviour(None) == CURRENT


def test_unrewritten_probes() -> None:
    # HTTP: captured like a plain client dialling the pod IP on the declared port.
    http = expect_probe(cell(Profile.LEGACY, Bind.LOOPBACK, ProbeKind.HTTP, False))
    assert (http.ready, http.source) == (True, ProbeSource.LOCALHOST)
    assert expect_probe(cell(Profile.PASSTHROUGH, Bind.LOOPBACK, ProbeKind.HTTP, False)).ready is False
    # TCP: Envoy accepts; a false Ready exactly where traffic cannot reach the app.
    false_ready = {
        c.id for c in probe_cells((Profile.LEGACY, Profile.PASSTHROUGH), (V4,)) if expect_probe(c).false_ready
    }
    assert false_ready == {
        "probe/legacy/pod_ip/tcp/no_rewrite/ipv4",
        "probe/passthrough/loopback/tcp/no_rewrite/ipv4",
    }


def test_baseline_probes_come_from_kubelet() -> None:
    for bind in ONE_FAMILY_BINDS:
        want = expect_probe(cell(Profile.BASELINE, bind, ProbeKind.TCP, None))
        assert want.ready is (bind is not Bind.LOOPBACK)
        assert want.source is (ProbeSource.KUBELET if want.ready else None)


def test_readiness_cell_ids_are_the_ones_reports_had() -> None:
    # Reports are compared by id: a readiness cell keeps the id it had before the use was a coordinate.
    readiness = cell(Profile.PASSTHROUGH, Bind.LOOPBACK, ProbeKind.HTTP, True)
    assert readiness.id == "probe/passthrough/loopback/http/rewrite/ipv4"
    assert readiness.container == "loopback-http"
    liveness = dataclasses.replace(readiness, use=ProbeUse.LIVENESS)
    assert liveness.id == "probe/passthrough/loopback/http/liveness/rewrite/ipv4"
    assert liveness.container == "loopback-http-liveness"
    assert liveness.to_json()["use"] == "liveness"


def test_the_36894_story_a_loopback_app_restarts_under_passthrough_not_under_legacy() -> None:
    for use in (ProbeUse.LIVENESS, ProbeUse.STARTUP):
        passthrough = expect_probe(cell(Profile.PASSTHROUGH, Bind.LOOPBACK, ProbeKind.HTTP, True, use))
        legacy = expect_probe(cell(Profile.LEGACY, Bind.LOOPBACK, ProbeKind.HTTP, True, use))
        assert passthrough.restarts
        assert not legacy.restarts
        assert "probe-rewrite-all-uses" in passthrough.because
        # Istio 1.9 probed localhost too: no restart there either.
        old = expect_probe(cell(Profile.LEGACY, Bind.LOOPBACK, ProbeKind.HTTP, True, use), probe_behaviour("1.9.9"))
        assert not old.restarts
    liveness = expect_probe(cell(Profile.PASSTHROUGH, Bind.LOOPBACK, ProbeKind.HTTP, True, ProbeUse.LIVENESS))
    assert liveness.ready is None  # no readiness probe: Ready while each run lasts
    assert "probe-liveness-restarts" in liveness.because
    startup = expect_probe(cell(Profile.PASSTHROUGH, Bind.LOOPBACK, ProbeKind.HTTP, True, ProbeUse.STARTUP))
    assert startup.ready is False  # never started, never Ready
    assert "probe-startup-holds" in startup.because


def test_a_liveness_or_startup_probe_fails_exactly_where_the_readiness_probe_does() -> None:
    for c in probe_cells(tuple(Profile), SINGLE_STACK):
        want = expect_probe(c)
        readiness = expect_probe(dataclasses.replace(c, use=ProbeUse.READINESS))
        if c.use is ProbeUse.READINESS:
            assert not want.restarts
            assert "probe-readiness-no-restart" in want.because
        else:
            assert want.restarts is (not readiness.ready), c.id
            assert want.source == readiness.source
            assert want.ready is (True if readiness.ready else (None if c.use is ProbeUse.LIVENESS else False))


def test_restart_cells_per_family() -> None:
    restarting = {c.id for c in probe_cells(tuple(Profile), (V4,)) if expect_probe(c).restarts}
    # Loopback apps without a sidecar and in passthrough (both rewrite settings), pod-IP apps in legacy: each with
    # a liveness and a startup container.
    assert len(restarting) == 2 * (1 + 1 + 2 + 2)
    assert "probe/passthrough/loopback/http/liveness/rewrite/ipv4" in restarting
    assert "probe/legacy/pod_ip/http/startup/no_rewrite/ipv4" in restarting


def _objects(family: IpFamily) -> kube.Objects:
    return kube.read(World(family).manifests())


def test_probe_pods_in_the_world() -> None:
    objects = _objects(V4)
    pods = {(p.namespace, p.app): p for p in objects.pods}
    for ref, rewrite in probe_pods_of():
        pod = pods[(ref.namespace, ref.app)]
        names = [c.name for c in pod.containers]
        assert names == ["echo", *(c.name for c in PROBED_CONTAINERS)]
        assert (pod.annotations.get(PROBE_REWRITE_ANNOTATION) == "false") is (rewrite is False)
        for container, probed in zip(pod.containers[1:], PROBED_CONTAINERS, strict=True):
            # One probe each, of the container's use; liveness and startup with failureThreshold 2.
            probes = container.probes.of_use()
            assert list(probes) == [probed.use.value]
            assert probes[probed.use.value].period == 1
            threshold = 1 if probed.use is ProbeUse.READINESS else RESTART_FAILURE_THRESHOLD
            assert probes[probed.use.value].failure_threshold == threshold
        assert pod.injected is (rewrite is not None)
    assert dataclasses.asdict(pods[("mic-mesh", "probe-rewrite")].containers[1].readiness)["kind"] == "http"


def test_injector_rewrites_probes_unless_told_not_to() -> None:
    pods = {p.app: p for p in _objects(V4).pods}
    rewritten = injector.kubelet_probes(pods["probe-rewrite"], mesh_rewrite=True)
    readiness = rewritten["loopback-tcp"].readiness
    assert readiness is not None
    assert readiness.port == injector.STATUS_PORT
    assert readiness.path == "/app-health/loopback-tcp/readyz"
    assert readiness.kind == "http"
    # Liveness and startup probes alike, to livez and startupz (app_probe.go convertAppProber).
    liveness = rewritten["loopback-http-liveness"]
    assert liveness.readiness is None
    assert liveness.liveness is not None
    assert (liveness.liveness.port, liveness.liveness.path) == (15020, "/app-health/loopback-http-liveness/livez")
    startup = rewritten["pod-ip-http-startup"].startup
    assert startup is not None
    assert startup.path == "/app-health/pod-ip-http-startup/startupz"
    status = injector.status_config(pods["probe-rewrite"], True, "legacy")
    assert status["legacy_localhost_destination"] is True
    probers = status["app_probers"]
    assert isinstance(probers, dict)
    assert probers["/app-health/loopback-tcp/readyz"] == {"tcpSocket": {"port": 9381}, "timeoutSeconds": 1.0,
                                                          "periodSeconds": 1.0}  # fmt: skip
    assert probers["/app-health/loopback-http-liveness/livez"] == {
        "httpGet": {"path": "/livez", "port": 8391}, "timeoutSeconds": 1.0, "periodSeconds": 1.0
    }  # fmt: skip
    assert "/app-health/wildcard-http-startup/startupz" in probers
    # The annotation, the mesh setting and a pod without a sidecar each keep the original probes.
    for pod, mesh_rewrite in ((pods["probe-norewrite"], True), (pods["probe-rewrite"], False), (pods["probe"], True)):
        kept = injector.kubelet_probes(pod, mesh_rewrite)
        assert kept["loopback-tcp"].readiness is not None
        assert kept["loopback-tcp"].readiness.port == 9381
        assert injector.status_config(pod, mesh_rewrite, "passthrough")["app_probers"] == {}


def test_unsupported_probes_are_one_line_errors() -> None:
    manifest = World(V4).probe_manifests()[0]
    container = manifest["spec"]["template"]["spec"]["containers"][1]  # type: ignore[index]
    container["readinessProbe"] = {"exec": {"command": ["true"]}}
    with pytest.raises(kube.ManifestError, match="only httpGet and tcpSocket"):
        kube.read([manifest])


def test_spec_document_carries_probe_rules_and_cells() -> None:
    from conformance.spec.cells import all_cells
    from conformance.spec.render import spec_document, spec_markdown

    doc = spec_document(all_cells([Profile.PASSTHROUGH], [IpFamily.IPV6]))
    cells = doc["probe_cells"]
    assert isinstance(cells, list)
    assert len(cells) == 24
    assert list(cells[0]) == ["id", "profile", "bind", "probe", "use", "rewrite", "ip_family", "expected"]
    assert {r["id"] for r in doc["probe_rules"]} == set(PROBE_RULES)  # type: ignore[union-attr]
    markdown = spec_markdown([Profile.PASSTHROUGH], iter([IpFamily.IPV4]))
    assert "## passthrough (ipv4): health probes" in markdown
    assert "| tcp | off | ✓ Ready ⚠️ false Ready | ✓ Ready | ✓ Ready |" in markdown
    assert (
        "| liveness | http | on | ↻ restarted again and again | ✓ never restarted (inbound_passthrough) |" in markdown
    )
