"""How the kind backend installs and inspects Istio (issue 20, items 9, 11 and 16), against the fakes.

The same fakes as tests/test_kind_backend.py (fake kind, istioctl, docker and API server), which inject as Istio
does: istio-init without istio-cni, istio-validation under the ambient profile; the install's image variant on the
proxy (distroless under the ambient profile unless the install sets another), and no `ss` in a distroless proxy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import fakebin
from fakes.host import fake_host
from test_kind_backend import (
    APPLY,
    NODE_1_36,
    REPO,
    WAIT_AMBIENT,
    WAIT_ISTIOD,
    WAIT_WORKLOADS,
    WAIT_WORKLOADS_AMBIENT,
    Fakes,
    kind_up,
    release_install,
)

from conformance.backends.base import BackendError
from conformance.backends.kind.backend import KubeCluster
from conformance.backends.kind.matrix import load_matrix
from conformance.spec.capabilities import istio_capabilities
from conformance.spec.dimensions import IpFamily
from conformance.world.layout import World
from conformance.world.pods import PodRef

TO_AMBIENT = [
    WAIT_ISTIOD,
    *WAIT_AMBIENT,
    "kubectl -n mic-mesh rollout restart deploy",
    "kubectl -n mic-ambient rollout restart deploy",
    *WAIT_WORKLOADS_AMBIENT,
]


@pytest.fixture
def fakes(tmp_path: Path) -> Iterator[Fakes]:
    made = Fakes(tmp_path)
    yield made
    made.api.stop()


def up(fakes: Fakes, version: str = "1.31.1", **options: Any) -> KubeCluster:
    cluster = fakes.cluster(version, **options)
    cluster.up(World.for_mesh(IpFamily.IPV4, istio_capabilities(version)).manifests())
    return cluster


def injected(fakes: Fakes, namespace: str = "mic-mesh", app: str = "echo-none") -> dict[str, Any]:
    """A pod of the fake cluster, as the API lists it."""
    state = fakebin.load_state(str(fakes.state_file))
    return next(p for p in fakebin.pods(state, namespace) if p["metadata"]["labels"]["app"] == app)


def containers(pod: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["image"] for c in pod["spec"]["initContainers"] + pod["spec"]["containers"]}


# --- item 16: the sidecar profiles on the install sidecar users run, ambient on its own ------------------------------


def test_sidecar_profiles_run_on_the_minimal_profile_and_ambient_on_its_own_install(fakes: Fakes) -> None:
    cluster = up(fakes)
    start = kind_up("1.31.1", NODE_1_36, release_install("1.31.1"))
    start[-len(WAIT_WORKLOADS) :] = WAIT_WORKLOADS_AMBIENT
    assert fakes.commands() == start
    assert fakes.state()["istio"]["overlays"] == ["base.yaml"]
    # What a sidecar user's pod is: istio-init sets up the capture, the default proxy image.
    assert containers(injected(fakes)) == {
        "istio-init": "docker.io/istio/proxyv2:1.31.1",
        "echo": containers(injected(fakes))["echo"],
        "istio-proxy": "docker.io/istio/proxyv2:1.31.1",
    }
    assert cluster.mesh.group == "sidecar"
    assert not cluster.use_profile("passthrough", "passthrough")  # already there: nothing runs
    assert cluster.use_profile("legacy", "legacy")
    assert fakes.commands()[len(start)] == release_install("1.31.1", "legacy-mesh-config.yaml")

    fakes.clear()
    assert cluster.use_profile("ambient", "legacy")
    assert fakes.commands() == [release_install("1.31.1", "ambient.yaml", "legacy-mesh-config.yaml"), *TO_AMBIENT]
    assert cluster.mesh.group == "ambient"
    assert (cluster.inbound_mode, fakes.state()["istio"]["overlays"]) == (
        "legacy",
        ["base.yaml", "ambient.yaml", "legacy-mesh-config.yaml"],
    )
    # Re-injected for the ambient profile: istio-cni sets up the capture, istio-validation checks it; distroless.
    assert containers(injected(fakes)) == {
        "istio-validation": "docker.io/istio/proxyv2:1.31.1-distroless",
        "echo": containers(injected(fakes))["echo"],
        "istio-proxy": "docker.io/istio/proxyv2:1.31.1-distroless",
    }
    fakes.clear()
    assert not cluster.use_profile("ambient", "legacy")
    assert fakes.commands() == []


def test_a_run_of_ambient_alone_installs_the_ambient_profile_only(fakes: Fakes) -> None:
    up(fakes, profiles=["baseline", "ambient"])
    start = kind_up("1.31.1", NODE_1_36, release_install("1.31.1", "ambient.yaml"))
    start[6:6] = WAIT_AMBIENT
    start[-len(WAIT_WORKLOADS) :] = WAIT_WORKLOADS_AMBIENT
    assert fakes.commands() == start


def test_a_release_without_ambient_is_one_install_as_before(fakes: Fakes) -> None:
    cluster = up(fakes, "1.21.6")
    assert cluster.mesh.groups == ["sidecar"]
    assert not cluster.use_profile("passthrough", "passthrough")
    assert fakes.state()["istio"]["overlays"] == ["base.yaml"]
    assert APPLY in fakes.commands()


# --- item 9: distroless proxies, istio-validation, the variant a build chooses --------------------------------------


def test_diagnostics_on_the_ambient_install_read_istio_validation_not_istio_init(fakes: Fakes) -> None:
    cluster = up(fakes)
    out = cluster.diagnostics([PodRef("mic-mesh", "echo-none")])
    assert out["echo-none.mic-mesh log istio-init"] == "istio-init: started"
    cluster.use_profile("ambient", "legacy")
    out = cluster.diagnostics([PodRef("mic-mesh", "echo-none")])
    assert out["echo-none.mic-mesh log istio-validation"] == "istio-validation: started"
    assert "echo-none.mic-mesh log istio-init" not in out


def test_the_precheck_cross_check_reads_listeners_without_ss_in_a_distroless_proxy(fakes: Fakes) -> None:
    """The cross-check used `ss` in istio-proxy; a distroless proxy has none. It reads /proc/net/tcp{,6} in the echo
    container instead (the same network namespace), so it checks distroless pods too."""
    cluster = up(fakes)
    cluster.use_profile("ambient", "legacy")
    pod = injected(fakes)
    assert containers(pod)["istio-proxy"].endswith("-distroless")
    run = cluster.precheck("mic-mesh")
    assert not [w for w in run.warnings if "cross-check skipped" in w]
    # The fake istioctl finds nothing (its default answer); the suite's checker finds echo-none's loopback ports.
    (disagreement,) = run.warnings
    assert f"('mic-mesh', '{pod['metadata']['name']}', 8081)" in disagreement


def test_the_variant_option_sets_the_variant_of_every_install(fakes: Fakes) -> None:
    hub, tag = "ghcr.io/you/istio", "1.31.1-fix.1"
    cluster = up(fakes, istio_hub=hub, istio_tag=tag, istio_variant="default")
    cluster.use_profile("ambient", "legacy")
    installs = [c for c in fakes.commands() if c.startswith("istioctl install")]
    assert len(installs) == 2
    assert all(
        f"--set tag={tag} --set values.global.variant= --set values.global.imagePullPolicy" in c for c in installs
    )
    assert containers(injected(fakes))["istio-proxy"] == f"{hub}/proxyv2:{tag}"  # not -distroless
    notes = [s.text for r in fakes.runners for s in r.transcript if s.kind == "note"]
    assert (
        "images of the install for ambient (the ambient profile, variant default from --istio-variant): "
        f"{hub}/pilot:{tag}, {hub}/proxyv2:{tag}, {hub}/install-cni:{tag}, {hub}/ztunnel:{tag}"
    ) in notes


def test_a_variant_in_the_install_values_names_the_images(fakes: Fakes) -> None:
    values = fakes.root / "values.yaml"
    values.write_text('spec:\n  values:\n    global:\n      variant: ""\n')
    cluster = fakes.cluster("1.31.1", istio_hub="ghcr.io/you/istio", istio_tag="t1", install_values=str(values))
    assert cluster.mesh.installs["ambient"].images == [
        "ghcr.io/you/istio/pilot:t1",
        "ghcr.io/you/istio/proxyv2:t1",
        "ghcr.io/you/istio/install-cni:t1",
        "ghcr.io/you/istio/ztunnel:t1",
    ]
    assert cluster.mesh.installs["ambient"].chosen_by == "--install-values"


# --- item 11: the request record of enrolled pods goes through ztunnel, under PERMISSIVE -----------------------------


def test_the_enrolled_namespace_is_kept_permissive_before_its_pods_start(fakes: Fakes) -> None:
    up(fakes)
    objects = fakes.state()["objects"]
    kinds = [(o["kind"], o["metadata"].get("namespace", o["metadata"]["name"])) for o in objects]
    policy = next(o for o in objects if o["kind"] == "PeerAuthentication")
    assert policy["metadata"]["namespace"] == "mic-ambient"
    assert policy["spec"] == {"mtls": {"mode": "PERMISSIVE"}}
    assert "selector" not in policy["spec"]  # namespace-wide: it wins over a mesh-wide STRICT
    assert kinds.index(("PeerAuthentication", "mic-ambient")) < kinds.index(("Deployment", "mic-ambient"))
    assert [k for k in kinds if k[0] == "PeerAuthentication"] == [("PeerAuthentication", "mic-ambient")]


def test_a_release_without_ambient_applies_no_policy(fakes: Fakes) -> None:
    up(fakes, "1.10.6")
    assert not [o for o in fakes.state()["objects"] if o["kind"] == "PeerAuthentication"]


# --- item 9: fixtures/versions.yaml says nothing no reader uses ----------------------------------------------------


def test_a_matrix_row_lists_no_profiles_and_one_that_does_is_refused(tmp_path: Path) -> None:
    """Rows used to list profiles that nothing read (and left ambient out of rows that test it). A row's profiles
    are its version's capabilities: the field is gone, and a row that brings it back is refused, naming it."""
    text = (REPO / "fixtures" / "versions.yaml").read_text()
    assert "\n    profiles:" not in text
    assert all(not hasattr(row, "profiles") for row in load_matrix())
    path = tmp_path / "versions.yaml"
    path.write_text(text.replace("    istio: 1.9.9\n", "    istio: 1.9.9\n    profiles: [baseline, legacy]\n"))
    with pytest.raises(ValueError, match=r"row istio-1\.9-legacy: no reader uses profiles \(a row has name, istio"):
        load_matrix(path)


# --- item 10: a kind run of an ambient release checks the host's modules first --------------------------------------


def test_a_kind_run_of_ambient_1_22_stops_before_creating_anything_without_the_tproxy_modules(fakes: Fakes) -> None:
    cluster = fakes.cluster("1.22.8")
    cluster.site.host = fake_host(fakes.root / "bare-host", modules=("iptable_nat", "ip6table_nat"))
    with pytest.raises(BackendError) as raised:
        cluster.up(World.for_mesh(IpFamily.IPV4, istio_capabilities("1.22.8")).manifests())
    assert str(raised.value) == (
        "preflight (1 problem(s), see --preflight): kernel modules xt_TPROXY, xt_socket, xt_connmark, ip_set not "
        "loaded: Istio 1.22's ambient capture (istio-cni) uses TPROXY, the socket match and connmark, and keeps its "
        "probe addresses in an ipset: run `sudo modprobe -a xt_TPROXY xt_socket xt_connmark ip_set`"
    )
    assert fakes.commands() == []
    # Without the ambient profile the modules are not needed.
    cluster = fakes.cluster("1.22.8", profiles=["baseline", "legacy", "passthrough"])
    cluster.site.host = fake_host(fakes.root / "bare-host-2", modules=("iptable_nat", "ip6table_nat"))
    cluster.up(World.for_mesh(IpFamily.IPV4, istio_capabilities("1.22.8")).manifests())
    assert fakes.commands()[0] == "kind get clusters"


# --- issue 22 item 5: a namespace enrolled while its pods run -------------------------------------------------------


def test_enrol_labels_the_running_namespace_and_waits_for_istio_cni(fakes: Fakes) -> None:
    cluster = up(fakes, profiles=["baseline", "ambient"])
    late = injected(fakes, "mic-late", "echo")
    assert "ambient.istio.io/redirection" not in late["metadata"]["annotations"]  # deployed unenrolled
    fakes.clear()
    cluster.enrol("mic-late")
    commands = fakes.commands()
    # One server-side apply (the namespace's PERMISSIVE policy, the Namespace again with the label), then the pods
    # are read until istio-cni has annotated every one; nothing restarts.
    assert len(commands) == 2, commands
    assert commands[1] == "kubectl -n mic-late get pods -o json --watch"
    assert "rollout restart" not in " ".join(commands)
    (namespace,) = [n for n in fakebin.objects(fakes.state(), "Namespace") if n["metadata"]["name"] == "mic-late"]
    assert namespace["metadata"]["labels"] == {
        "istio-injection": "disabled",
        "app.kubernetes.io/part-of": "mesh-inbound-conformance",
        "istio.io/dataplane-mode": "ambient",
    }
    policies = [p["metadata"]["namespace"] for p in fakebin.objects(fakes.state(), "PeerAuthentication")]
    assert sorted(policies) == ["mic-ambient", "mic-late"]
    assert injected(fakes, "mic-late", "echo")["metadata"]["annotations"]["ambient.istio.io/redirection"] == "enabled"
    assert cluster.workloads.enrolled_namespaces == ["mic-ambient", "mic-late"]


def test_enrol_of_a_namespace_the_run_did_not_make_is_one_line(fakes: Fakes) -> None:
    cluster = up(fakes, profiles=["baseline", "ambient"])
    with pytest.raises(BackendError, match=r"^enrol mic-nope: not a namespace of this run$"):
        cluster.enrol("mic-nope")
