"""The kind and kubeconfig backends against fake kind, istioctl and docker and a fake API server (no cluster).

`tests/fakes/fakebin.py` answers like the real tools and logs every invocation; `tests/fakes/kind_api.py` serves
the same cluster model over HTTP (and the exec websocket) to the official `kubernetes` client. Each test drives
`KubeCluster` through up / set_inbound_mode / precheck / probe / request_record / diagnostics / down and
compares the steps of the run's transcript with the sequence written out below, one matrix row
(fixtures/versions.yaml) at a time: commands as they ran, API calls as the kubectl command that repeats them by
hand (the backend runs no kubectl). Lines are shown with the repository as `<repo>` and the run's work directory
as `<work>`; every istioctl command and kubectl equivalent must carry `--kubeconfig <the run's kubeconfig>`,
which is checked, then left out of the comparison. Every command in the transcript must be one the fakes ran.

The istioctl precheck outputs in tests/data/istioctl/ (formats from istioctl's source, see its README) are both
replayed by the fake istioctl and parsed directly at the end of this module.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml
from conftest import ECHO_IMAGE
from fakes.host import DOCKER_DOWN, fake_host
from fakes.kind_api import FakeKindApi

from conformance.backends.base import BackendError, ProbeRequest
from conformance.backends.kind import probing
from conformance.backends.kind import tools as toolbox
from conformance.backends.kind.backend import KubeCluster
from conformance.backends.kind.cluster import Tools
from conformance.backends.kind.runner import CommandError, Runner, Step
from conformance.backends.kind.watches import NotReady
from conformance.backends.precheck import Finding, parse_istioctl
from conformance.backends.timeouts import TimeoutConfig
from conformance.spec.capabilities import istio_capabilities
from conformance.spec.dimensions import SINGLE_STACK, IpFamily
from conformance.world.layout import World
from conformance.world.pods import PodRef
from conformance.world.probe_pods import PROBED_CONTAINERS
from conformance.world.resources import resource

REPO = Path(__file__).resolve().parents[1]
# Where the installed package finds fixtures/ and workloads/: the repository itself, or the wheel's bundled copy
# (tox installs a wheel); both are shown as <repo>.
BUNDLE = resource("fixtures").parent
FAKEBIN = REPO / "tests" / "fakes" / "fakebin.py"
PRECHECK_DATA = REPO / "tests" / "data" / "istioctl"

NODE_1_20 = "kindest/node:v1.20.15@sha256:a32bf55309294120616886b5338f95dd98a2f7231519c7dedcec32ba29699394"
NODE_1_29 = "kindest/node:v1.29.14@sha256:8703bd94ee24e51b778d5556ae310c6c0fa67d761fae6379c8e0bb480e6fea29"
NODE_1_36 = "kindest/node:v1.36.1@sha256:3489c7674813ba5d8b1a9977baea8a6e553784dab7b84759d1014dbd78f7ebd5"

# The fake names pods <app>-<template hash>-<suffix>; a restart changes the hash (and the suffix).
POD = {
    "echo.mic-baseline": "echo-5d9c8b7f6-s77h6",
    "client.mic-baseline": "client-5d9c8b7f6-wdrvc",
    "echo-none.mic-mesh": "echo-none-5d9c8b7f6-7ml2z",
    "echo-localhost.mic-mesh": "echo-localhost-5d9c8b7f6-9wsgv",
    "echo-instance.mic-mesh": "echo-instance-5d9c8b7f6-mc4z2",
    "echo-localhost-cross.mic-mesh": "echo-localhost-cross-5d9c8b7f6-594gz",
    "echo-instance-cross.mic-mesh": "echo-instance-cross-5d9c8b7f6-r5946",
    "echo-empty.mic-mesh": "echo-empty-5d9c8b7f6-c5nbc",
    "echo-unlisted.mic-mesh": "echo-unlisted-5d9c8b7f6-45czv",
    "echo-excluded.mic-mesh": "echo-excluded-5d9c8b7f6-4phzf",
    "echo-not-included.mic-mesh": "echo-not-included-5d9c8b7f6-64k9v",
    "client.mic-mesh": "client-5d9c8b7f6-5s2b6",
    "probe-rewrite.mic-mesh": "probe-rewrite-5d9c8b7f6-7l5nn",
    "probe-norewrite.mic-mesh": "probe-norewrite-5d9c8b7f6-xggc4",
}
RESTARTED_MESH_POD = {
    "echo-none.mic-mesh": "echo-none-7f6d5c9b8-km84l",
    "echo-localhost.mic-mesh": "echo-localhost-7f6d5c9b8-8hkx6",
    "echo-instance.mic-mesh": "echo-instance-7f6d5c9b8-pgwqm",
    "echo-unlisted.mic-mesh": "echo-unlisted-7f6d5c9b8-k5px2",
    "client.mic-mesh": "client-7f6d5c9b8-r4jx2",
}

CREATE_V4 = "<repo>/fixtures/kind/ipv4.yaml --kubeconfig <work>/kubeconfig --wait 600s"
CREATE_V6 = "<repo>/fixtures/kind/ipv6.yaml --kubeconfig <work>/kubeconfig --wait 600s"
WAIT_ISTIOD = "kubectl -n istio-system rollout status deploy/istiod --timeout=120s"
# Server-side apply through the API, shown as the kubectl command that does the same.
APPLY = "kubectl apply --server-side --field-manager=mesh-inbound-conformance -f -"
WAIT_AMBIENT = [
    "kubectl -n istio-system rollout status ds/istio-cni-node --timeout=120s",
    "kubectl -n istio-system rollout status ds/ztunnel --timeout=120s",
]
# The meshed servers, one per Sidecar situation of the family (issue 10: the other family's literals as `-cross`,
# the empty host `:P`), in the world's order.
MESH_SERVERS = (
    "echo-none",
    "echo-localhost",
    "echo-instance",
    "echo-localhost-cross",
    "echo-instance-cross",
    "echo-empty",
    "echo-unlisted",
)
# The meshed servers whose test ports are left out of capture (issue 22), after those; not in the enrolled namespace.
CAPTURE_SERVERS = ("echo-excluded", "echo-not-included")
# The probe pods (issue 11: mic-baseline/probe, mic-mesh/probe-rewrite and probe-norewrite, and mic-ambient/probe
# where the mesh has ambient) get no `rollout status`: a Deployment whose probed container is never Ready is never
# available. The backend waits for them by reading their pods (their main containers Ready) with the others.
ROLLOUT_BASELINE_AND_MESH = [
    "kubectl -n mic-baseline rollout status deploy/echo --timeout=120s",
    "kubectl -n mic-baseline rollout status deploy/client --timeout=120s",
    *[f"kubectl -n mic-mesh rollout status deploy/{app} --timeout=120s" for app in (*MESH_SERVERS, *CAPTURE_SERVERS)],
    "kubectl -n mic-mesh rollout status deploy/client --timeout=120s",
]
READ_BASELINE_AND_MESH = [
    "kubectl -n mic-baseline get pods -o json --watch",
    "kubectl -n mic-baseline get services -o json",
    "kubectl -n mic-mesh get pods -o json --watch",
    "kubectl -n mic-mesh get services -o json",
]
WAIT_WORKLOADS = [*ROLLOUT_BASELINE_AND_MESH, *READ_BASELINE_AND_MESH]
# A world with ambient (issue 12) also has the enrolled namespace: the same servers and the ambient client. Every
# release with ambient has TPROXY too: the two TPROXY servers (mic-mesh only) come before the meshed client.
WAIT_WORKLOADS_AMBIENT = [
    *ROLLOUT_BASELINE_AND_MESH[:-1],
    *[
        f"kubectl -n mic-mesh rollout status deploy/{app} --timeout=120s"
        for app in ("echo-tproxy", "echo-tproxy-instance")
    ],
    ROLLOUT_BASELINE_AND_MESH[-1],
    *[f"kubectl -n mic-ambient rollout status deploy/{app} --timeout=120s" for app in MESH_SERVERS],
    "kubectl -n mic-ambient rollout status deploy/client --timeout=120s",
    # And the namespace the run enrols while its pod runs (issue 22), unenrolled at start.
    "kubectl -n mic-late rollout status deploy/echo --timeout=120s",
    *READ_BASELINE_AND_MESH,
    "kubectl -n mic-ambient get pods -o json --watch",
    "kubectl -n mic-ambient get services -o json",
    "kubectl -n mic-late get pods -o json --watch",
    "kubectl -n mic-late get services -o json",
]
# After a re-install: istioctl has rolled istiod itself when its env changed (the backend only waits for it), then
# the injected namespace's workloads restart to get proxies with the new settings; mic-baseline is left alone.
RESTART_MESH = [WAIT_ISTIOD, "kubectl -n mic-mesh rollout restart deploy", *WAIT_WORKLOADS]
CONFIG_DUMP = "pilot-agent request GET config_dump?resource=dynamic_active_clusters&mask=cluster.name"
# The pod's listeners, read in the echo container (any container of the pod sees its network namespace): a distroless
# proxy has no `ss`.
LISTENERS = "cat /proc/net/tcp /proc/net/tcp6"
# Before a precheck: no pod of the run's namespaces may still be Terminating (istioctl 1.10 would check it too).
NO_TERMINATING = ["kubectl -n mic-baseline get pods -o json --watch", "kubectl -n mic-mesh get pods -o json --watch"]
CROSS_CHECK = [
    f"kubectl -n mic-mesh exec echo-none-5d9c8b7f6-7ml2z -c echo -- {LISTENERS}",
    f"kubectl -n mic-mesh exec echo-none-5d9c8b7f6-7ml2z -c istio-proxy -- {CONFIG_DUMP}",
    f"kubectl -n mic-mesh exec echo-localhost-5d9c8b7f6-9wsgv -c echo -- {LISTENERS}",
    f"kubectl -n mic-mesh exec echo-localhost-5d9c8b7f6-9wsgv -c istio-proxy -- {CONFIG_DUMP}",
    f"kubectl -n mic-mesh exec echo-instance-5d9c8b7f6-mc4z2 -c echo -- {LISTENERS}",
    f"kubectl -n mic-mesh exec echo-instance-5d9c8b7f6-mc4z2 -c istio-proxy -- {CONFIG_DUMP}",
    f"kubectl -n mic-mesh exec echo-localhost-cross-5d9c8b7f6-594gz -c echo -- {LISTENERS}",
    f"kubectl -n mic-mesh exec echo-localhost-cross-5d9c8b7f6-594gz -c istio-proxy -- {CONFIG_DUMP}",
    f"kubectl -n mic-mesh exec echo-instance-cross-5d9c8b7f6-r5946 -c echo -- {LISTENERS}",
    f"kubectl -n mic-mesh exec echo-instance-cross-5d9c8b7f6-r5946 -c istio-proxy -- {CONFIG_DUMP}",
    f"kubectl -n mic-mesh exec echo-empty-5d9c8b7f6-c5nbc -c echo -- {LISTENERS}",
    f"kubectl -n mic-mesh exec echo-empty-5d9c8b7f6-c5nbc -c istio-proxy -- {CONFIG_DUMP}",
    f"kubectl -n mic-mesh exec echo-unlisted-5d9c8b7f6-45czv -c echo -- {LISTENERS}",
    f"kubectl -n mic-mesh exec echo-unlisted-5d9c8b7f6-45czv -c istio-proxy -- {CONFIG_DUMP}",
    f"kubectl -n mic-mesh exec echo-excluded-5d9c8b7f6-4phzf -c echo -- {LISTENERS}",
    f"kubectl -n mic-mesh exec echo-excluded-5d9c8b7f6-4phzf -c istio-proxy -- {CONFIG_DUMP}",
    f"kubectl -n mic-mesh exec echo-not-included-5d9c8b7f6-64k9v -c echo -- {LISTENERS}",
    f"kubectl -n mic-mesh exec echo-not-included-5d9c8b7f6-64k9v -c istio-proxy -- {CONFIG_DUMP}",
    f"kubectl -n mic-mesh exec probe-rewrite-5d9c8b7f6-7l5nn -c echo -- {LISTENERS}",
    f"kubectl -n mic-mesh exec probe-rewrite-5d9c8b7f6-7l5nn -c istio-proxy -- {CONFIG_DUMP}",
    f"kubectl -n mic-mesh exec probe-norewrite-5d9c8b7f6-xggc4 -c echo -- {LISTENERS}",
    f"kubectl -n mic-mesh exec probe-norewrite-5d9c8b7f6-xggc4 -c istio-proxy -- {CONFIG_DUMP}",
]
# What the suite's checker finds in the fake's world: the loopback listeners on ports with an inbound cluster. Every
# server but echo-unlisted (whose Sidecar lists only the anchor port 7070) has inbound clusters for its declared
# loopback ports 8081/9081 and its remapped ones: Service ports 18281/19281 target 8281/9281, and the inbound
# cluster is keyed by the target port (`inbound|8281||`), which is where the app listens (issue 10).
CHECKER_FINDINGS = [
    *[
        Finding("mic-mesh", pod, port)
        for pod in (
            "echo-empty-5d9c8b7f6-c5nbc",
            "echo-excluded-5d9c8b7f6-4phzf",
            "echo-instance-5d9c8b7f6-mc4z2",
            "echo-instance-cross-5d9c8b7f6-r5946",
            "echo-localhost-5d9c8b7f6-9wsgv",
            "echo-localhost-cross-5d9c8b7f6-594gz",
            "echo-none-5d9c8b7f6-7ml2z",
            "echo-not-included-5d9c8b7f6-64k9v",  # excluded ports keep their inbound clusters
        )
        for port in (8081, 8281, 9081, 9281)
    ],
    # The probe pods' loopback containers serve ports their Services declare (issue 11; startup 8371 and liveness
    # 8391, issue 22: running in the fake, as a container its probe has not killed yet is).
    *[
        Finding("mic-mesh", pod, port)
        for pod in ("probe-norewrite-5d9c8b7f6-xggc4", "probe-rewrite-5d9c8b7f6-7l5nn")
        for port in (8371, 8381, 8391, 9381)
    ],
]


def release_install(version: str, *overlays: str) -> str:
    files = "".join(f" -f <repo>/fixtures/mesh/{o}" for o in ("base.yaml", *overlays))
    return f"istioctl install -y{files} --set hub=docker.io/istio --set tag={version} --readiness-timeout 600s"


# --- the fakes ------------------------------------------------------------------------------------------------------


class Fakes:
    """Wrappers named kind, istioctl, istioctl-1.10.6 and docker in `root/bin`, a log, a state file, an API server."""

    WRAPPERS = ("kind", "istioctl", "istioctl-1.10.6", "docker")

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        # The fake needs only the standard library (-I -S), and is imported rather than run as a script so that
        # Python reuses its bytecode: a test starts it a hundred times.
        start = (
            f"import sys; sys.path[:0] = [{str(FAKEBIN.parent)!r}]; from fakebin import main; sys.exit(main(sys.argv))"
        )
        for name in self.WRAPPERS:
            wrapper = self.bin / name
            python, code = shlex.quote(sys.executable), shlex.quote(start)
            wrapper.write_text(f'#!/bin/sh\nexec {python} -I -S -c {code} {name} "$@"\n')
            wrapper.chmod(0o755)
        self.log_file = root / "fake-log.jsonl"
        self.state_file = root / "fake-state.json"
        self.work = root / "work"
        self.work.mkdir()
        # PATH holds the fakes only: `docker` is looked up there, and nothing real can ever run.
        self.env = {
            "PATH": str(self.bin),
            "HOME": str(root),
            "FAKE_LOG": str(self.log_file),
            "FAKE_STATE": str(self.state_file),
        }
        # Sets FAKE_API_URL in env: fake kind writes kubeconfigs that point at it.
        self.api = FakeKindApi(self.state_file, self.env).start()
        self.runners: list[Runner] = []

    def tools(self, precheck: str = "istioctl") -> Tools:
        return Tools(str(self.bin / "kind"), str(self.bin / "istioctl"), str(self.bin / precheck))

    def cluster(
        self,
        version: str,
        family: str = "ipv4",
        backend: str = "kind",
        precheck: str = "istioctl",
        timeouts: TimeoutConfig | None = None,
        **options: Any,
    ) -> KubeCluster:
        runner = Runner(env=self.env, default_timeout=30.0)
        self.runners.append(runner)
        return KubeCluster(
            backend,
            family,
            {"istio_version": version, **options},
            timeouts or TimeoutConfig(),
            runner=runner,
            tools=self.tools(precheck),
            work_dir=self.work,
            host=fake_host(self.root / "host"),
        )

    def seed(self, **state: Any) -> None:
        self.state_file.write_text(json.dumps(state))

    def state(self) -> dict[str, Any]:
        return dict(json.loads(self.state_file.read_text()))

    def entries(self) -> list[dict[str, Any]]:
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text().splitlines()]

    def clear(self) -> None:
        self.log_file.unlink(missing_ok=True)
        for runner in self.runners:
            runner.transcript.clear()
        self.api.requests.clear()

    def steps(self) -> list[Step]:
        return [step for runner in self.runners for step in runner.transcript if step.kind in ("command", "api")]

    def commands(self, kubeconfig: Path | None = None) -> list[str]:
        """The commands and API calls, in order, with their --kubeconfig checked and dropped (kind's is kept).

        The commands are checked against what the fakes logged: each ran, in that order.
        """
        expected_kubeconfig = str(kubeconfig or self.work / "kubeconfig")
        ran = [
            [e["tool"], *e["argv"]]
            for e in self.entries()
            if not (e["tool"].startswith("istioctl") and e["argv"] == ["version", "--remote=false"])
        ]
        recorded = [shlex.split(step.text) for step in self.steps() if step.kind == "command"]
        assert [[Path(argv[0]).name, *argv[1:]] for argv in recorded] == ran
        out = []
        for step in self.steps():
            argv = shlex.split(step.text)
            argv[0] = Path(argv[0]).name
            if argv[0].startswith(("kubectl", "istioctl")):
                at = argv.index("--kubeconfig")
                assert argv[at + 1] == expected_kubeconfig, step
                del argv[at : at + 2]
            text = " ".join(argv)
            out.append(
                text.replace(str(BUNDLE), "<repo>").replace(str(REPO), "<repo>").replace(str(self.work), "<work>")
            )
        return out

    def applied(self) -> list[str]:
        """The manifests the runs applied (server-side apply), as the YAML the transcript shows."""
        return [
            step.text
            for runner in self.runners
            for before, step in zip(runner.transcript, runner.transcript[1:], strict=False)
            if step.kind == "manifest" and before.kind == "api"
        ]

    def stdin_of(self, prefix: str) -> list[str]:
        return [
            e["stdin"] for e in self.entries() if "stdin" in e and " ".join([e["tool"], *e["argv"]]).startswith(prefix)
        ]


@pytest.fixture
def fakes(tmp_path: Path) -> Iterator[Fakes]:
    made = Fakes(tmp_path)
    yield made
    made.api.stop()


def kind_up(version: str, node_image: str, install: str, create: str = CREATE_V4) -> list[str]:
    """The commands of up() on a fresh kind cluster for a release."""
    return [
        "kind get clusters",
        f"kind create cluster --name mic --image {node_image} --config {create}",
        f"docker build --tag {ECHO_IMAGE} <repo>/workloads/echo",
        f"kind load docker-image {ECHO_IMAGE} --name mic",
        install,
        WAIT_ISTIOD,
        APPLY,
        *WAIT_WORKLOADS,
    ]


def manifests_with_echo_image(family: IpFamily, image: str = ECHO_IMAGE) -> list[dict[str, Any]]:
    return [dict(m) for m in World(family, image=image).manifests()]


# --- one matrix row at a time ---------------------------------------------------------------------------------------


def test_istio_1_10_release_up_switch_to_legacy_and_back_then_down(fakes: Fakes) -> None:
    cluster = fakes.cluster("1.10.6")
    cluster.up(World(IpFamily.IPV4).manifests())
    up = kind_up("1.10.6", NODE_1_20, release_install("1.10.6"))
    assert fakes.commands() == up
    assert cluster.inbound_mode == "passthrough"
    # kubectl apply was fed the world's manifests, with the echo image the backend built.
    (applied,) = fakes.applied()
    assert list(yaml.safe_load_all(applied)) == manifests_with_echo_image(IpFamily.IPV4)
    assert cluster.workloads.pod_names[PodRef("mic-mesh", "echo-none")] == POD["echo-none.mic-mesh"]
    assert cluster.pod_ip(PodRef("mic-mesh", "echo-none")) == "10.244.0.12"
    assert cluster.service_ip("mic-mesh", "echo-none") == "10.96.0.11"

    cluster.set_inbound_mode("legacy")
    legacy = [release_install("1.10.6", "legacy-pilot-env.yaml"), *RESTART_MESH]
    assert fakes.commands() == [*up, *legacy]
    assert cluster.inbound_mode == "legacy"
    assert fakes.state()["istio"]["overlays"] == ["base.yaml", "legacy-pilot-env.yaml"]
    # Only the injected namespace was restarted, and the backend reads the new pods back.
    assert cluster.workloads.pod_names[PodRef("mic-mesh", "echo-none")] == RESTARTED_MESH_POD["echo-none.mic-mesh"]
    assert cluster.workloads.pod_names[PodRef("mic-baseline", "echo")] == POD["echo.mic-baseline"]

    cluster.set_inbound_mode("legacy")  # already there: nothing runs
    cluster.set_inbound_mode("passthrough")
    back = [release_install("1.10.6"), *RESTART_MESH]
    cluster.down()
    assert fakes.commands() == [*up, *legacy, *back, "kind delete cluster --name mic"]
    assert fakes.state()["clusters"] == []


def test_istio_1_9_is_legacy_without_a_switch_and_prechecks_with_istioctl_1_10(fakes: Fakes) -> None:
    cluster = fakes.cluster("1.9.9", precheck="istioctl-1.10.6")
    cluster.up(World(IpFamily.IPV4).manifests())
    up = kind_up("1.9.9", NODE_1_20, release_install("1.9.9"))
    assert fakes.commands() == up
    assert cluster.inbound_mode == "legacy"
    cluster.set_inbound_mode("legacy")
    with pytest.raises(BackendError) as raised:
        cluster.set_inbound_mode("passthrough")
    assert str(raised.value) == "Istio 1.9.9 has no passthrough mode"
    assert fakes.commands() == up

    run = cluster.precheck("mic-mesh")
    assert fakes.commands() == [*up, *NO_TERMINATING, "istioctl-1.10.6 x precheck", *CROSS_CHECK]
    assert run.tool == "istioctl"
    cluster.down()
    assert fakes.commands()[-1] == "kind delete cluster --name mic"


def test_istio_1_21_has_no_legacy_switch(fakes: Fakes) -> None:
    fakes.env["FAKE_FAMILY"] = "dual"  # an IPv4 run on a dual-stack cluster takes the IPv4 addresses
    cluster = fakes.cluster("1.21.6")
    cluster.up(World(IpFamily.IPV4).manifests())
    up = kind_up("1.21.6", NODE_1_29, release_install("1.21.6"))
    assert fakes.commands() == up
    assert cluster.pod_ip(PodRef("mic-mesh", "echo-none")) == "10.244.0.12"
    with pytest.raises(BackendError) as raised:
        cluster.set_inbound_mode("legacy")
    assert str(raised.value) == "Istio 1.21.6 cannot switch to legacy: it has no legacy switch"
    assert "\n" not in str(raised.value)
    assert cluster.inbound_mode == "passthrough"
    assert fakes.commands() == up


def test_istio_1_31_ipv6_switches_with_the_mesh_config_overlay(fakes: Fakes) -> None:
    fakes.env["FAKE_FAMILY"] = "dual"  # an IPv6 run on a dual-stack cluster takes the IPv6 addresses
    cluster = fakes.cluster("1.31.1", family="ipv6")
    # The world a 1.31 run deploys: every Sidecar form, and the namespace enrolled in ambient mode.
    world = World.for_mesh(IpFamily.IPV6, istio_capabilities("1.31.1"))
    assert world.ambient
    cluster.up(world.manifests())
    # The sidecar profiles run first, on the install a sidecar user has: the minimal profile, no ambient overlay.
    up = kind_up("1.31.1", NODE_1_36, release_install("1.31.1"), create=CREATE_V6)
    up[-len(WAIT_WORKLOADS) :] = WAIT_WORKLOADS_AMBIENT
    assert fakes.commands() == up
    assert cluster.pod_ip(PodRef("mic-ambient", "client")) == "fd00:10:244::23"  # after the capture and TPROXY servers
    enrolled = cluster.workloads.pod_names[PodRef("mic-ambient", "echo-none")]
    cluster.set_inbound_mode("legacy")
    legacy = release_install("1.31.1", "legacy-mesh-config.yaml")
    # Only the injected namespace restarts: the enrolled pods have no proxy to pick up the new settings.
    restart = [WAIT_ISTIOD, "kubectl -n mic-mesh rollout restart deploy", *WAIT_WORKLOADS_AMBIENT]
    assert fakes.commands() == [*up, legacy, *restart]
    assert cluster.pod_ip(PodRef("mic-mesh", "echo-none")) == "fd00:10:244::20"  # restarted: new pod, new IP
    assert cluster.workloads.pod_names[PodRef("mic-ambient", "echo-none")] == enrolled


def test_custom_build_sets_hub_tag_values_pull_policy_and_loads_its_images(fakes: Fakes) -> None:
    hub, tag = "ghcr.io/example/istio", "1.31.1-dev.7"
    images = [f"{hub}/pilot:{tag}", f"{hub}/proxyv2:{tag}"]
    fakes.seed(images=images)  # built locally, as `kind load docker-image` requires
    values = fakes.root / "values.yaml"
    values.write_text("spec:\n  values:\n    global:\n      logging:\n        level: default:debug\n")
    cluster = fakes.cluster("1.31.1", istio_hub=hub, istio_tag=tag, install_values=str(values), load_image=images)
    cluster.up(World(IpFamily.IPV4).manifests())
    cluster.set_inbound_mode("legacy")
    custom = (
        f"--set hub={hub} --set tag={tag} --set values.global.imagePullPolicy=IfNotPresent --readiness-timeout 600s"
    )
    assert fakes.commands() == [
        "kind get clusters",
        f"kind create cluster --name mic --image {NODE_1_36} --config {CREATE_V4}",
        f"docker build --tag {ECHO_IMAGE} <repo>/workloads/echo",
        f"kind load docker-image {ECHO_IMAGE} --name mic",
        # Pulled images go through an archive of the nodes' platform (Docker 29's containerd store, kind#3795).
        f"docker save --platform linux/amd64 --output <work>/image-0.tar {hub}/pilot:{tag}",
        "kind load image-archive <work>/image-0.tar --name mic",
        f"docker save --platform linux/amd64 --output <work>/image-1.tar {hub}/proxyv2:{tag}",
        "kind load image-archive <work>/image-1.tar --name mic",
        f"istioctl install -y -f <repo>/fixtures/mesh/base.yaml -f {values} {custom}",
        WAIT_ISTIOD,
        APPLY,
        *WAIT_WORKLOADS,
        f"istioctl install -y -f <repo>/fixtures/mesh/base.yaml -f <repo>/fixtures/mesh/legacy-mesh-config.yaml "
        f"-f {values} {custom}",
        *RESTART_MESH,
    ]
    assert cluster.mesh_info() == {
        "name": "istio",
        "version": "1.31.1",
        "build": "custom build",
        "hub": hub,
        "tag": tag,
    }


def test_an_existing_kind_cluster_is_reused_and_kept(fakes: Fakes) -> None:
    fakes.seed(clusters=[{"name": "mic", "kubernetes": "v1.20.15", "family": "ipv4"}])
    cluster = fakes.cluster("1.10.6")
    cluster.up(World(IpFamily.IPV4).manifests())
    assert fakes.commands()[:5] == [
        "kind get clusters",
        "kind get kubeconfig --name mic",
        "kubectl get nodes -o json",
        f"docker build --tag {ECHO_IMAGE} <repo>/workloads/echo",
        f"kind load docker-image {ECHO_IMAGE} --name mic",
    ]
    # The kubeconfig kind printed is the one every later command uses (the fake kubectl insists it exists).
    assert "current-context: kind-mic" in (fakes.work / "kubeconfig").read_text()
    fakes.clear()
    cluster.down()
    assert fakes.commands() == []
    assert [c["name"] for c in fakes.state()["clusters"]] == ["mic"]


@pytest.mark.parametrize(
    ("kubernetes", "family", "found"),
    [
        ("v1.36.1", "ipv4", "Kubernetes v1.36.1 with ipv4 pods"),
        ("v1.20.15", "ipv6", "Kubernetes v1.20.15 with ipv6 pods"),
    ],
)
def test_a_reused_cluster_of_another_version_or_family_is_refused(
    fakes: Fakes, kubernetes: str, family: str, found: str
) -> None:
    fakes.seed(clusters=[{"name": "mic", "kubernetes": kubernetes, "family": family}])
    cluster = fakes.cluster("1.10.6")
    with pytest.raises(BackendError) as raised:
        cluster.up(World(IpFamily.IPV4).manifests())
    assert str(raised.value) == (
        f"the existing kind cluster mic runs {found}; this run needs 1.20 and ipv4: delete it or pick another "
        "--cluster-name"
    )


def test_keep_cluster_leaves_the_created_cluster(fakes: Fakes) -> None:
    cluster = fakes.cluster("1.10.6", keep_cluster=True, cluster_name="nightly-7")
    cluster.up(World(IpFamily.IPV4).manifests())
    assert fakes.commands()[1:4] == [
        f"kind create cluster --name nightly-7 --image {NODE_1_20} --config {CREATE_V4}",
        f"docker build --tag {ECHO_IMAGE} <repo>/workloads/echo",
        f"kind load docker-image {ECHO_IMAGE} --name nightly-7",
    ]
    fakes.clear()
    cluster.down()
    assert fakes.commands() == []
    assert [c["name"] for c in fakes.state()["clusters"]] == ["nightly-7"]


# --- the kubeconfig backend -----------------------------------------------------------------------------------------


@pytest.fixture
def user_kubeconfig(fakes: Fakes) -> Path:
    return fakes.api.kubeconfig(fakes.root / "user-kubeconfig")


def test_kubeconfig_backend_uses_the_installed_istio_and_runs_no_kind(fakes: Fakes, user_kubeconfig: Path) -> None:
    fakes.seed(istio={"hub": "docker.io/istio", "tag": "1.10.6"})  # the cluster already has Istio
    cluster = fakes.cluster(
        "1.10.6", backend="kubeconfig", kubeconfig=str(user_kubeconfig), echo_image="registry.example/echo:1"
    )
    cluster.up(World(IpFamily.IPV4).manifests())
    assert fakes.commands(user_kubeconfig) == [
        "kubectl version",
        "kubectl get nodes -o json",  # the nodes carry the run's family (podCIDRs)
        "kubectl -n istio-system get deployment istiod -o name",
        APPLY,
        *WAIT_WORKLOADS,
    ]
    (applied,) = fakes.applied()
    assert list(yaml.safe_load_all(applied)) == manifests_with_echo_image(IpFamily.IPV4, "registry.example/echo:1")
    with pytest.raises(BackendError) as raised:
        cluster.set_inbound_mode("legacy")
    assert str(raised.value) == "switching profiles reinstalls Istio: pass --allow-mesh-install"
    cluster.down()
    cluster.down()  # safe to call twice
    assert fakes.commands(user_kubeconfig)[-1:] == ["kubectl delete namespace mic-baseline mic-mesh --wait=false"]
    assert fakes.commands(user_kubeconfig).count("kubectl delete namespace mic-baseline mic-mesh --wait=false") == 1


def test_kubeconfig_backend_with_allow_mesh_install(fakes: Fakes, user_kubeconfig: Path) -> None:
    cluster = fakes.cluster(
        "1.10.6",
        backend="kubeconfig",
        kubeconfig=str(user_kubeconfig),
        echo_image="registry.example/echo:1",
        allow_mesh_install=True,
    )
    cluster.up(World(IpFamily.IPV4).manifests())
    cluster.set_inbound_mode("legacy")
    cluster.down()
    cluster.down()  # safe to call twice: the Istio it installed is removed, the namespaces are gone
    assert fakes.commands(user_kubeconfig) == [
        "kubectl version",
        "kubectl get nodes -o json",
        "kubectl -n istio-system get deployment istiod -o name",
        release_install("1.10.6"),
        WAIT_ISTIOD,
        APPLY,
        *WAIT_WORKLOADS,
        release_install("1.10.6", "legacy-pilot-env.yaml"),
        *RESTART_MESH,
        "kubectl delete namespace mic-baseline mic-mesh --wait=false",
        "istioctl uninstall --purge -y",
    ]
    assert fakes.state()["istio"] == {}


def test_kubeconfig_backend_restores_an_istio_it_found(fakes: Fakes, user_kubeconfig: Path) -> None:
    """With --allow-mesh-install on a cluster that had Istio, the suite reconfigures it and puts it back."""
    fakes.seed(istio={"hub": "docker.io/istio", "tag": "1.10.6"})
    cluster = fakes.cluster(
        "1.10.6",
        backend="kubeconfig",
        kubeconfig=str(user_kubeconfig),
        echo_image="registry.example/echo:1",
        allow_mesh_install=True,
    )
    cluster.up(World(IpFamily.IPV4).manifests())
    cluster.set_inbound_mode("legacy")
    fakes.clear()
    cluster.down()
    cluster.down()
    assert fakes.commands(user_kubeconfig) == [
        "kubectl delete namespace mic-baseline mic-mesh --wait=false",
        release_install("1.10.6"),
        WAIT_ISTIOD,
    ]


def test_kubeconfig_backend_without_istio_needs_allow_mesh_install(fakes: Fakes, user_kubeconfig: Path) -> None:
    cluster = fakes.cluster(
        "1.10.6", backend="kubeconfig", kubeconfig=str(user_kubeconfig), echo_image="registry.example/echo:1"
    )
    with pytest.raises(BackendError) as raised:
        cluster.up(World(IpFamily.IPV4).manifests())
    assert str(raised.value) == (
        "no Istio in istio-system: pass --allow-mesh-install to let the suite install Istio 1.10.6"
    )


def test_kubeconfig_backend_needs_an_echo_image(fakes: Fakes, user_kubeconfig: Path) -> None:
    fakes.seed(istio={"hub": "docker.io/istio", "tag": "1.10.6"})
    cluster = fakes.cluster("1.10.6", backend="kubeconfig", kubeconfig=str(user_kubeconfig))
    with pytest.raises(BackendError) as raised:
        cluster.up(World(IpFamily.IPV4).manifests())
    assert str(raised.value) == "--backend kubeconfig needs --echo-image (an echo image the cluster can pull)"
    assert fakes.commands(user_kubeconfig) == [
        "kubectl version",
        "kubectl get nodes -o json",
        "kubectl -n istio-system get deployment istiod -o name",
    ]


def _ambient_kubeconfig_cluster(fakes: Fakes, user_kubeconfig: Path, **options: Any) -> KubeCluster:
    return fakes.cluster(
        "1.31.1", backend="kubeconfig", kubeconfig=str(user_kubeconfig), echo_image="registry.example/echo:1", **options
    )


def test_kubeconfig_backend_needs_ztunnel_for_the_ambient_profile(fakes: Fakes, user_kubeconfig: Path) -> None:
    """The installed Istio is used as it is: without ztunnel every ambient cell would fail, for no reason given."""
    fakes.seed(istio={"hub": "docker.io/istio", "tag": "1.31.1", "overlays": []})
    world = World.for_mesh(IpFamily.IPV4, istio_capabilities("1.31.1")).manifests()
    with pytest.raises(BackendError) as raised:
        _ambient_kubeconfig_cluster(fakes, user_kubeconfig).up(world)
    assert str(raised.value) == (
        "the Istio in istio-system has no ztunnel DaemonSet, so the ambient profile cannot run: install Istio with "
        "the ambient profile, or leave it out (--profile baseline,legacy,passthrough)"
    )
    assert fakes.commands(user_kubeconfig)[-1] == "kubectl -n istio-system get daemonset ztunnel -o name"
    fakes.clear()
    # Without the ambient profile, nothing needs ztunnel.
    _ambient_kubeconfig_cluster(fakes, user_kubeconfig, profiles=["baseline", "legacy", "passthrough"]).up(world)
    assert "kubectl -n istio-system get daemonset ztunnel -o name" not in fakes.commands(user_kubeconfig)
    fakes.clear()
    fakes.seed(istio={"hub": "docker.io/istio", "tag": "1.31.1", "overlays": ["ambient.yaml"]})
    _ambient_kubeconfig_cluster(fakes, user_kubeconfig).up(world)
    assert fakes.commands(user_kubeconfig)[3] == "kubectl -n istio-system get daemonset ztunnel -o name"


def test_diagnostics_of_enrolled_pods_include_ztunnel_and_istio_cni_logs(fakes: Fakes) -> None:
    cluster = fakes.cluster("1.31.1")
    cluster.up(World.for_mesh(IpFamily.IPV4, istio_capabilities("1.31.1")).manifests())
    cluster.use_profile("ambient", "legacy")  # the ambient tests run on the ambient profile's install
    fakes.clear()
    out = cluster.diagnostics([PodRef("mic-ambient", "echo-none")])
    # Every pod of the DaemonSet, each container (the fake node runs one of each).
    assert out["istio-system ztunnel log"] == "== ztunnel-abcde/ztunnel\nztunnel: started"
    assert out["istio-system istio-cni-node log"] == "== istio-cni-node-abcde/istio-cni-node\nistio-cni-node: started"
    assert "kubectl -n istio-system logs ds/ztunnel --all-containers --tail=200" in fakes.commands()
    assert "echo-none.mic-ambient log istio-proxy" not in out  # enrolled pods have no sidecar
    fakes.clear()
    out = cluster.diagnostics([PodRef("mic-mesh", "echo-none")])
    assert "istio-system ztunnel log" not in out  # a sidecar pod's traffic never meets ztunnel


# --- the API calls: the official client against the fake API server --------------------------------------------------


def test_workloads_go_in_by_server_side_apply_without_force(fakes: Fakes) -> None:
    cluster = fakes.cluster("1.10.6")
    cluster.up(World(IpFamily.IPV4).manifests())
    patches = [r for r in fakes.api.requests if r["method"] == "PATCH"]
    manifests = manifests_with_echo_image(IpFamily.IPV4)
    assert [r["body"] for r in patches] == manifests  # one PATCH per object, in the world's order
    assert {r["content_type"] for r in patches} == {"application/apply-patch+yaml"}
    assert all(r["query"] == {"fieldManager": ["mesh-inbound-conformance"]} for r in patches)  # no force=true
    assert patches[0]["path"] == "/api/v1/namespaces/mic-baseline"
    assert "/apis/networking.istio.io/v1beta1/namespaces/mic-mesh/sidecars/echo-localhost" in [
        r["path"] for r in patches
    ]


def test_fields_another_manager_owns_stop_the_apply_with_the_api_server_s_409(fakes: Fakes) -> None:
    conflict = 'Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using apps/v1: .spec.replicas'
    fakes.api.fail[("PATCH", "/apis/apps/v1/namespaces/mic-mesh/deployments/echo-none")] = (409, "Conflict", conflict)
    cluster = fakes.cluster("1.10.6")
    with pytest.raises(CommandError) as raised:
        cluster.up(World(IpFamily.IPV4).manifests())
    assert str(raised.value) == (
        f"apply the workloads: Deployment mic-mesh/echo-none: HTTP 409: {conflict} (another field manager owns these "
        "fields: delete the object, or its namespace, and run again)"
    )
    assert fakes.commands()[-1] == APPLY
    assert not (fakes.work / "kind-commands.log").exists()  # no --artifacts-dir: no commands log


def test_a_rollout_the_kubeconfig_may_not_watch_is_one_line_with_the_api_server_s_message(fakes: Fakes) -> None:
    forbidden = (
        'deployments.apps is forbidden: User "dev" cannot watch resource "deployments" in API group "apps" in the '
        'namespace "istio-system"'
    )
    fakes.api.fail[("GET", "/apis/apps/v1/namespaces/istio-system/deployments")] = (403, "Forbidden", forbidden)
    cluster = fakes.cluster("1.10.6")
    with pytest.raises(CommandError) as raised:
        cluster.up(World(IpFamily.IPV4).manifests())
    assert str(raised.value) == f"wait for istio-system/istiod: HTTP 403: {forbidden}"


def test_a_watch_that_times_out_is_listed_and_watched_again_until_the_wait_is_over(fakes: Fakes) -> None:
    """The API server ends every watch at its timeoutSeconds; the wait lists again, never sleeps."""
    cluster = fakes.cluster("1.10.6")
    cluster.up(World(IpFamily.IPV4).manifests())
    fakes.clear()
    fakes.api.stall_watches = 2
    fakes.api.watch_stall_seconds = 0.2
    fakes.env["FAKE_TERMINATING"] = "3"  # 3 listings of mic-mesh with a Terminating pod, then none
    cluster.precheck("mic-mesh")
    asked = [
        (r["query"].get("watch", [""])[0], r["query"].get("timeoutSeconds", [""])[0])
        for r in fakes.api.requests
        if r["path"] == "/api/v1/namespaces/mic-mesh/pods"
    ]
    # list, watch (silent, ends at its timeout), list, watch (silent), list, watch: the old pod's DELETED event ends it.
    assert [w for w, _ in asked] == ["", "true", "", "true", "", "true"]
    assert all(t.isdigit() and 1 <= int(t) <= 60 for w, t in asked if w)


def test_a_wait_that_never_ends_is_one_line_with_what_it_still_waits_for(fakes: Fakes) -> None:
    cluster = fakes.cluster("1.10.6", timeouts=TimeoutConfig(pod_ready=1.5))
    cluster.up(World(IpFamily.IPV4).manifests())
    fakes.api.watch_stall_seconds = 0.2
    fakes.env["FAKE_TERMINATING"] = "1000"
    with pytest.raises(CommandError) as raised:
        cluster.precheck("mic-mesh")
    assert str(raised.value) == (
        "wait until no pod of mic-mesh is Terminating: not done after 1.5 s: still Terminating: "
        "echo-none-6f7d9c8b5-old00"
    )


def test_an_api_server_that_does_not_answer_is_one_line(fakes: Fakes) -> None:
    fakes.seed(istio={"hub": "docker.io/istio", "tag": "1.10.6"})
    kubeconfig = fakes.api.kubeconfig(fakes.root / "user-kubeconfig")
    url = fakes.api.url
    fakes.api.stop()  # nothing answers at its address any more
    cluster = fakes.cluster(
        "1.10.6", backend="kubeconfig", kubeconfig=str(kubeconfig), echo_image="registry.example/echo:1"
    )
    with pytest.raises(CommandError) as raised:
        cluster.up(World(IpFamily.IPV4).manifests())
    message = str(raised.value)
    assert message.startswith(f"reach the cluster: cannot reach the API server at {url}: ")
    assert "\n" not in message


def test_an_answer_that_is_not_the_api_server_s_json_is_one_line(fakes: Fakes) -> None:
    """A proxy or gateway in front of the API server answers with a page of its own."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>502 Bad Gateway</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        kubeconfig = fakes.api.kubeconfig(fakes.root / "user-kubeconfig")
        text = kubeconfig.read_text().replace(fakes.api.url, f"http://127.0.0.1:{server.server_address[1]}")
        kubeconfig.write_text(text)
        cluster = fakes.cluster("1.10.6", backend="kubeconfig", kubeconfig=str(kubeconfig), echo_image="r.example/e:1")
        with pytest.raises(CommandError) as raised:
            cluster.up(World(IpFamily.IPV4).manifests())
    finally:
        server.shutdown()
        server.server_close()
    assert str(raised.value) == (
        "reach the cluster: the answer is not the API server's JSON (Expecting value: line 1 column 1 (char 0))"
    )


def test_an_unusable_kubeconfig_is_one_line_naming_it(fakes: Fakes) -> None:
    broken = fakes.root / "broken-kubeconfig"
    broken.write_text("apiVersion: v1\nkind: Config\n")
    cluster = fakes.cluster("1.10.6", backend="kubeconfig", kubeconfig=str(broken), echo_image="registry.example/e:1")
    with pytest.raises(BackendError) as raised:
        cluster.up(World(IpFamily.IPV4).manifests())
    assert str(raised.value) == (
        f"reach the cluster: kubeconfig {broken}: Invalid kube-config file. Expected key current-context in {broken}"
    )


def test_the_commands_log_shows_each_api_call_with_its_kubectl_equivalent(fakes: Fakes) -> None:
    artifacts = fakes.root / "artifacts"
    cluster = fakes.cluster("1.10.6", artifacts_dir=str(artifacts))
    cluster.up(World(IpFamily.IPV4).manifests())
    log = (artifacts / "kind-commands.log").read_text().replace(str(fakes.work), "<work>")
    assert (
        "API GET /apis/apps/v1/namespaces/istio-system/deployments?fieldSelector=metadata.name=istiod, then watch\n"
        "# by hand: kubectl --kubeconfig <work>/kubeconfig -n istio-system rollout status deploy/istiod "
        "--timeout=120s\n# ok in "
    ) in log
    objects = len(World(IpFamily.IPV4).manifests())
    assert f"API PATCH (server-side apply, fieldManager=mesh-inbound-conformance) of {objects} objects\n" in log
    assert "$ " in log  # the commands (kind, istioctl, docker) as before
    assert "kubectl --kubeconfig" not in log.replace("# by hand: kubectl --kubeconfig", "")


# --- families, readiness, injection, failures -----------------------------------------------------------------------


def test_ipv6_cluster_and_pod_addresses(fakes: Fakes) -> None:
    fakes.env["FAKE_FAMILY"] = "ipv6"
    cluster = fakes.cluster("1.10.6", family="ipv6")
    cluster.up(World(IpFamily.IPV6).manifests())
    assert fakes.commands()[1] == f"kind create cluster --name mic --image {NODE_1_20} --config {CREATE_V6}"
    assert "ipFamily: ipv6" in fakes.state()["clusters"][0]["config"]
    (applied,) = fakes.applied()
    assert list(yaml.safe_load_all(applied)) == manifests_with_echo_image(IpFamily.IPV6)
    assert cluster.pod_ip(PodRef("mic-baseline", "echo")) == "fd00:10:244::a"
    assert cluster.pod_ip(PodRef("mic-mesh", "client")) == "fd00:10:244::15"
    assert cluster.service_ip("mic-mesh", "echo-none") == "fd00:10:96::b"


def test_a_pod_without_an_ip_of_the_family_is_not_ready(fakes: Fakes) -> None:
    fakes.env["FAKE_FAMILY"] = "ipv4"  # the cluster gives IPv4 only, the run wants IPv6
    # The pods are watched until pod_ready runs out; a pod_ready this short ends the wait after the first listing.
    cluster = fakes.cluster("1.10.6", family="ipv6", timeouts=TimeoutConfig(pod_ready=0.01))
    with pytest.raises(CommandError) as raised:
        cluster.up(World(IpFamily.IPV6).manifests())
    assert str(raised.value) == (
        "wait for the pods of mic-baseline: not done after 0.01 s: echo.mic-baseline: no ipv6 pod IP yet"
    )
    assert fakes.commands()[-1] == "kubectl -n mic-baseline get pods -o json --watch"


def test_missing_sidecar_injection_stops_at_once_naming_the_namespace(fakes: Fakes) -> None:
    fakes.env["FAKE_NO_INJECTION"] = "1"
    cluster = fakes.cluster("1.10.6")
    with pytest.raises(BackendError) as raised:
        cluster.up(World(IpFamily.IPV4).manifests())
    assert str(raised.value) == (
        "wait for the pods of mic-mesh: echo-none.mic-mesh: no istio-proxy container: sidecar injection did not "
        "happen in mic-mesh"
    )
    assert not isinstance(raised.value, NotReady)  # not waited for until the readiness timeout
    assert fakes.commands().count("kubectl -n mic-mesh get pods -o json --watch") == 1
    # Judged on the first listing: no watch was opened.
    assert not [r for r in fakes.api.requests if r["query"].get("watch")]


def test_a_failing_command_is_one_line_with_command_status_and_stderr_tail(fakes: Fakes) -> None:
    fakes.env["FAKE_FAIL"] = "istioctl install"
    fakes.env["FAKE_FAIL_STDERR"] = (
        "- Processing resources for Istiod.\n"
        "✘ Istiod encountered an error: failed to wait for resource: resources not ready after 10m0s: "
        "timed out waiting for the condition\n"
        "  Deployment/istio-system/istiod (containers with unready status: [discovery])\n"
        "✘ Installation incomplete\n"
        "Error: failed to install manifests: errors occurred during operation"
    )
    fakes.env["FAKE_FAIL_EXIT"] = "1"
    cluster = fakes.cluster("1.10.6")
    with pytest.raises(CommandError) as raised:
        cluster.up(World(IpFamily.IPV4).manifests())
    message = (
        str(raised.value).replace(str(BUNDLE), "<repo>").replace(str(REPO), "<repo>").replace(str(fakes.root), "<tmp>")
    )
    assert "\n" not in message
    assert message == (
        "install Istio 1.10.6 (passthrough): `<tmp>/bin/istioctl install -y -f <repo>/fixtures/mesh/base.yaml "
        "--set hub=docker.io/istio --set tag=1.10.6 --readiness-timeout 600s --kubeconfig <tmp>/work/kubeconfig` "
        "exited 1: Deployment/istio-system/istiod (containers with unready status: [discovery]) | "
        "✘ Installation incomplete | Error: failed to install manifests: errors occurred during operation"
    )


def test_a_missing_tool_is_one_line(fakes: Fakes) -> None:
    cluster = KubeCluster(
        "kind",
        "ipv4",
        {"istio_version": "1.10.6"},
        TimeoutConfig(),
        runner=Runner(env=fakes.env),
        tools=Tools(str(fakes.root / "no-kind"), "istioctl", "istioctl"),
        work_dir=fakes.work,
        host=fake_host(fakes.root / "host"),
    )
    with pytest.raises(CommandError) as raised:
        cluster.up(World(IpFamily.IPV4).manifests())
    assert str(raised.value) == f"list kind clusters: {fakes.root}/no-kind not found"


# --- probes, request records, precheck, diagnostics on one running cluster ------------------------------------------


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fakes, KubeCluster]]:
    """Istio 1.10.6 on a fake kind cluster, up once for the tests below (each starts with an empty log)."""
    fakes = Fakes(tmp_path_factory.mktemp("running"))
    cluster = fakes.cluster("1.10.6")
    cluster.up(World(IpFamily.IPV4).manifests())
    yield fakes, cluster
    cluster.down()
    fakes.api.stop()


@pytest.fixture
def live(running: tuple[Fakes, KubeCluster]) -> Iterator[tuple[Fakes, KubeCluster]]:
    fakes, cluster = running
    fakes.clear()
    saved = dict(fakes.env)
    yield fakes, cluster
    fakes.env.clear()
    fakes.env.update(saved)
    fakes.api.fail.clear()
    fakes.api.exec_fail.clear()
    fakes.api.gone_pods.clear()
    fakes.api.stall_watches = 0
    fakes.api.watch_stall_seconds = 1.0


def test_probes_run_one_exec_per_source_and_come_back_in_request_order(live: tuple[Fakes, KubeCluster]) -> None:
    fakes, cluster = live
    plain, meshed = PodRef("mic-baseline", "client"), PodRef("mic-mesh", "client")
    requests = [
        ProbeRequest(plain, "http", "10.244.0.12", 8083, "r1"),
        ProbeRequest(meshed, "tcp", "10.96.0.11", 9083, "r2"),
        ProbeRequest(plain, "tcp", "10.244.0.10", 9083, "r3"),
    ]
    results = cluster.probe(requests, timeout=2.0)
    assert results == [
        {
            "target": {"protocol": "http", "address": "10.244.0.12", "port": 8083, "request_id": "r1"},
            "outcome": "ok",
            "status": 200,
            "peer": "10.244.0.11",
            "pod": "echo-none-5d9c8b7f6-7ml2z",
            "latency_ms": 1.25,
            "detail": "",
        },
        {
            "target": {"protocol": "tcp", "address": "10.96.0.11", "port": 9083, "request_id": "r2"},
            "outcome": "ok",
            "status": None,
            "peer": "10.244.0.21",
            "pod": "echo-none-5d9c8b7f6-7ml2z",
            "latency_ms": 1.25,
            "detail": "",
        },
        {
            "target": {"protocol": "tcp", "address": "10.244.0.10", "port": 9083, "request_id": "r3"},
            "outcome": "ok",
            "status": None,
            "peer": "10.244.0.11",
            "pod": "echo-5d9c8b7f6-s77h6",
            "latency_ms": 1.25,
            "detail": "",
        },
    ]
    # Started side by side, so the fake may log them in either order. The batch is an argument (no stdin).
    probes = sorted(fakes.commands())
    assert [c.partition(" --batch ")[0] for c in probes] == [
        "kubectl -n mic-baseline exec client-5d9c8b7f6-wdrvc -c echo -- python3 /app/echo.py probe",
        "kubectl -n mic-mesh exec client-5d9c8b7f6-5s2b6 -c echo -- python3 /app/echo.py probe",
    ]
    execs = [r for r in fakes.api.requests if r["path"].endswith("/exec")]
    assert all(r["query"]["stdin"] == ["false"] for r in execs)  # nothing is written to stdin
    batches = [r["query"]["command"][-1] for r in execs]
    assert {json.dumps(json.loads(b), sort_keys=True) for b in batches} == {
        json.dumps(
            {
                "timeout": 2.0,
                "targets": [
                    {"protocol": "http", "address": "10.244.0.12", "port": 8083, "request_id": "r1"},
                    {"protocol": "tcp", "address": "10.244.0.10", "port": 9083, "request_id": "r3"},
                ],
            },
            sort_keys=True,
        ),
        json.dumps(
            {
                "timeout": 2.0,
                "targets": [{"protocol": "tcp", "address": "10.96.0.11", "port": 9083, "request_id": "r2"}],
            },
            sort_keys=True,
        ),
    }


@pytest.mark.parametrize(
    "output", ["Traceback (most recent call last):\n  ...\n", '{"results": []}\n', '{"error": "bad batch"}\n']
)
def test_a_broken_probe_answer_is_a_backend_error(live: tuple[Fakes, KubeCluster], output: str) -> None:
    fakes, cluster = live
    fakes.env["FAKE_PROBE_OUTPUT"] = output
    with pytest.raises(BackendError) as raised:
        cluster.probe([ProbeRequest(PodRef("mic-mesh", "client"), "http", "10.244.0.12", 8083, "r1")], timeout=2.0)
    assert str(raised.value).startswith(
        "probe from client.mic-mesh: expected the echo program's results for 1 targets, got "
    )
    assert "\n" not in str(raised.value)


def test_an_exec_into_a_pod_that_is_gone_is_one_line(live: tuple[Fakes, KubeCluster]) -> None:
    fakes, cluster = live
    fakes.api.gone_pods.add("client-5d9c8b7f6-5s2b6")
    with pytest.raises(CommandError) as raised:
        cluster.probe([ProbeRequest(PodRef("mic-mesh", "client"), "http", "10.244.0.12", 8083, "r1")], timeout=2.0)
    assert str(raised.value) == (
        "probe from client.mic-mesh: pod mic-mesh/client-5d9c8b7f6-5s2b6 is gone "
        '(HTTP 404: pods "client-5d9c8b7f6-5s2b6" not found)'
    )


def test_an_exec_the_kubeconfig_may_not_make_is_one_line_with_the_api_server_s_message(
    live: tuple[Fakes, KubeCluster],
) -> None:
    fakes, cluster = live
    forbidden = (
        'pods "client-5d9c8b7f6-5s2b6" is forbidden: User "dev" cannot create resource "pods/exec" in API group "" '
        'in the namespace "mic-mesh"'
    )
    fakes.api.fail[("GET", "/api/v1/namespaces/mic-mesh/pods/client-5d9c8b7f6-5s2b6/exec")] = (
        403,
        "Forbidden",
        forbidden,
    )
    with pytest.raises(CommandError) as raised:
        cluster.probe([ProbeRequest(PodRef("mic-mesh", "client"), "http", "10.244.0.12", 8083, "r1")], timeout=2.0)
    assert str(raised.value) == (
        f"probe from client.mic-mesh: exec in mic-mesh/client-5d9c8b7f6-5s2b6 refused: HTTP 403: {forbidden}"
    )


def test_an_echo_program_that_exits_non_zero_is_a_backend_error(live: tuple[Fakes, KubeCluster]) -> None:
    fakes, cluster = live
    fakes.api.exec_fail["probe --batch"] = (2, "echo.py probe: --batch: not a JSON object")
    with pytest.raises(BackendError) as raised:
        cluster.probe([ProbeRequest(PodRef("mic-mesh", "client"), "http", "10.244.0.12", 8083, "r1")], timeout=2.0)
    assert str(raised.value) == (
        "probe from client.mic-mesh: the echo program exited 2: echo.py probe: --batch: not a JSON object"
    )


def test_container_readiness_comes_from_the_container_statuses(live: tuple[Fakes, KubeCluster]) -> None:
    fakes, cluster = live
    readiness = cluster.container_readiness(PodRef("mic-mesh", "probe-rewrite"))
    assert sorted(readiness) == sorted(["echo", *(c.name for c in PROBED_CONTAINERS)])
    # Readiness-probed containers: Ready, settled. Liveness and startup ones, never restarted: Ready, and settled
    # because they have run (since STARTED_AT) longer than their probes need to kill them.
    assert all(r.ready and r.settled and r.restarts == 0 for r in readiness.values())
    assert not [r for r in fakes.api.requests if r["query"].get("watch")]  # all settled: nothing to wait for


def test_restart_counts_come_from_the_container_statuses(live: tuple[Fakes, KubeCluster]) -> None:
    """A container its liveness probe keeps killing: restartCount from the pod's status, settled at once."""
    fakes, cluster = live
    fakes.env["FAKE_RESTARTING"] = "loopback-http-liveness,loopback-http-startup"
    readiness = cluster.container_readiness(PodRef("mic-mesh", "probe-rewrite"))
    for name in ("loopback-http-liveness", "loopback-http-startup"):
        status = readiness[name]
        assert (status.ready, status.settled, status.restarts) == (False, True, 3)
        assert status.detail == "containerStatuses ready=false; restartCount 3; CrashLoopBackOff; last: Completed"
    assert readiness["pod-ip-http-liveness"].restarts == 0
    assert not [r for r in fakes.api.requests if r["query"].get("watch")]


def test_a_liveness_container_not_yet_past_its_window_is_not_settled() -> None:
    """Just started, Ready (no readiness probe), never restarted: not settled until its liveness probe (period 1 x
    failureThreshold 2 + timeout 1) and the restart's slack have passed, so "never restarted" is not said early."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    probe = {"httpGet": {"path": "/livez", "port": 8392}, "periodSeconds": 1, "failureThreshold": 2}
    pod = {
        "spec": {"containers": [{"name": "pod-ip-http-liveness", "livenessProbe": probe}]},
        "status": {
            "containerStatuses": [
                {"name": "pod-ip-http-liveness", "ready": True, "restartCount": 0,
                 "state": {"running": {"startedAt": now}}}
            ]
        },
    }  # fmt: skip
    probed = probing._readiness(pod)["pod-ip-http-liveness"]
    assert (probed.readiness.ready, probed.readiness.settled, probed.readiness.restarts) == (True, False, 0)
    assert probed.settles_in is not None
    assert 6.0 < probed.settles_in <= 1 * 2 + 1 + probing.RESTART_SLACK_SECONDS
    pod["status"]["containerStatuses"][0]["restartCount"] = 1  # type: ignore[index]
    assert probing._readiness(pod)["pod-ip-http-liveness"].readiness.settled


def test_an_unsettled_container_is_waited_for_by_watching_its_pod(live: tuple[Fakes, KubeCluster]) -> None:
    """Not Ready, and its probe has not had its chances yet (2 s: period 1 x failureThreshold 1 + timeout 1): the
    pod is watched until a readiness changes or that time is up, so the caller's loop is paced by the API."""
    fakes, cluster = live
    fakes.env["FAKE_NOT_READY"] = "loopback-http"  # just started, every time the fake is asked
    fakes.api.watch_stall_seconds = 0.3
    started = time.monotonic()
    readiness = cluster.container_readiness(PodRef("mic-mesh", "probe-rewrite"))
    waited = time.monotonic() - started
    assert (readiness["loopback-http"].ready, readiness["loopback-http"].settled) == (False, False)
    assert readiness["pod-ip-http"].ready
    watches = [r for r in fakes.api.requests if r["query"].get("watch")]
    assert watches
    assert {r["query"]["fieldSelector"][0] for r in watches} == {"metadata.name=probe-rewrite-5d9c8b7f6-7l5nn"}
    assert 1.0 <= waited < 5.0
    assert "kubectl -n mic-mesh get pod probe-rewrite-5d9c8b7f6-7l5nn -o json --watch" in fakes.commands()


def test_request_record_through_the_pod_proxy_in_batches_of_100(live: tuple[Fakes, KubeCluster]) -> None:
    fakes, cluster = live
    ids = [f"id{i}" for i in range(150)]
    assert cluster.request_record(PodRef("mic-mesh", "echo-none"), ids) == []
    path = "kubectl get --raw /api/v1/namespaces/mic-mesh/pods/echo-none-5d9c8b7f6-7ml2z:19000/proxy/requests?"
    assert fakes.commands() == [
        path + "&".join(f"id=id{i}" for i in range(100)),
        path + "&".join(f"id=id{i}" for i in range(100, 150)),
    ]
    sent = [r["query"]["id"] for r in fakes.api.requests if r["path"].endswith("/proxy/requests")]
    assert sent == [ids[:100], ids[100:]]  # every id reached the API server, as a repeated query parameter


@pytest.mark.parametrize("capture", ["1.10-findings", "1.12-findings"])
def test_precheck_agrees_with_the_suite_s_checker(live: tuple[Fakes, KubeCluster], capture: str) -> None:
    fakes, cluster = live
    fakes.env["FAKE_PRECHECK_DIR"] = str(PRECHECK_DATA / capture)
    run = cluster.precheck("mic-mesh")
    assert fakes.commands() == [*NO_TERMINATING, "istioctl x precheck", *CROSS_CHECK]
    assert run.exit_code == 1
    assert run.findings == CHECKER_FINDINGS
    assert run.warnings == []


def test_precheck_finding_the_checker_lacks_is_a_disagreement(live: tuple[Fakes, KubeCluster]) -> None:
    fakes, cluster = live
    fakes.env["FAKE_PRECHECK_DIR"] = str(PRECHECK_DATA / "1.10-extra-finding")
    run = cluster.precheck("mic-mesh")
    assert run.findings == sorted([*CHECKER_FINDINGS, Finding("mic-mesh", "echo-unlisted-5d9c8b7f6-45czv", 7070)])
    assert run.warnings == [
        "istioctl and the suite's checker disagree: only istioctl "
        "[('mic-mesh', 'echo-unlisted-5d9c8b7f6-45czv', 7070)], only the checker []"
    ]


def test_precheck_that_finds_nothing_disagrees_with_the_checker(live: tuple[Fakes, KubeCluster]) -> None:
    _, cluster = live  # no FAKE_PRECHECK_DIR: "No issues found" (as istioctl >= 1.21, which lost the check)
    run = cluster.precheck("mic-mesh")
    assert (run.exit_code, run.findings) == (0, [])
    only_checker = ", ".join(f"('mic-mesh', '{f.pod}', {f.port})" for f in CHECKER_FINDINGS)
    assert run.warnings == [
        f"istioctl and the suite's checker disagree: only istioctl [], only the checker [{only_checker}]"
    ]
    assert "('mic-mesh', 'echo-none-5d9c8b7f6-7ml2z', 8281)" in only_checker  # a remapped port's target port


def test_precheck_that_checked_nothing_says_so(live: tuple[Fakes, KubeCluster]) -> None:
    fakes, cluster = live
    fakes.env["FAKE_PRECHECK_DIR"] = str(PRECHECK_DATA / "checked-nothing")
    run = cluster.precheck("mic-mesh")
    failure = (
        "failed to get config dump:  failure running port forward process: "
        "unable to listen on any of the requested ports: [{15000 15000}]"
    )
    # One line per injected pod istioctl tried: nine servers, the client and the two probe pods of mic-mesh.
    assert run.warnings[:12] == [failure] * 12
    assert run.warnings[12].startswith("istioctl and the suite's checker disagree: only istioctl [], only the checker")
    assert len(run.warnings) == 13


def test_precheck_cross_check_skipped_when_the_listeners_cannot_be_read(live: tuple[Fakes, KubeCluster]) -> None:
    fakes, cluster = live
    fakes.env["FAKE_PRECHECK_DIR"] = str(PRECHECK_DATA / "1.10-findings")
    fakes.api.exec_fail[LISTENERS] = (1, "cat: can't open '/proc/net/tcp': Permission denied")
    run = cluster.precheck("mic-mesh")
    skipped = [
        f"cross-check skipped for {app}.mic-mesh: could not read its listeners or clusters"
        for app in (*MESH_SERVERS, *CAPTURE_SERVERS, "probe-rewrite", "probe-norewrite")
    ]
    assert run.warnings[:11] == skipped
    # With nothing to compare, every istioctl finding is "only istioctl".
    assert run.warnings[11].startswith("istioctl and the suite's checker disagree: only istioctl [('mic-mesh', ")
    assert len(run.warnings) == 12


def test_diagnostics_collect_describe_logs_proxy_config_events_and_kind_logs(live: tuple[Fakes, KubeCluster]) -> None:
    fakes, cluster = live
    out = cluster.diagnostics([PodRef("mic-mesh", "echo-none"), PodRef("mic-baseline", "echo")])
    assert list(out) == [
        "mic-baseline get all",
        "mic-baseline events",
        "mic-mesh get all",
        "mic-mesh events",
        "echo-none.mic-mesh describe",
        "echo-none.mic-mesh log echo",
        "echo-none.mic-mesh log istio-init",
        "echo-none.mic-mesh log istio-proxy",
        "echo-none.mic-mesh proxy-config listeners",
        "echo-none.mic-mesh proxy-config clusters",
        "echo.mic-baseline describe",
        "echo.mic-baseline log echo",
        "kind export logs",
    ]
    assert fakes.commands() == [
        "kubectl -n mic-baseline get all,sidecars -o wide",
        "kubectl -n mic-baseline get events --sort-by=.lastTimestamp",
        "kubectl -n mic-mesh get all,sidecars -o wide",
        "kubectl -n mic-mesh get events --sort-by=.lastTimestamp",
        "kubectl -n mic-mesh describe pod echo-none-5d9c8b7f6-7ml2z",
        "kubectl -n mic-mesh logs echo-none-5d9c8b7f6-7ml2z -c echo --tail=200",
        "kubectl -n mic-mesh logs echo-none-5d9c8b7f6-7ml2z -c istio-init --tail=200",
        "kubectl -n mic-mesh logs echo-none-5d9c8b7f6-7ml2z -c istio-proxy --tail=200",
        "istioctl proxy-config listeners echo-none-5d9c8b7f6-7ml2z.mic-mesh",
        "istioctl proxy-config clusters echo-none-5d9c8b7f6-7ml2z.mic-mesh",
        "kubectl -n mic-baseline describe pod echo-5d9c8b7f6-s77h6",
        "kubectl -n mic-baseline logs echo-5d9c8b7f6-s77h6 -c echo --tail=200",
        "kind export logs <work>/kind-logs --name mic",
    ]
    assert out["echo-none.mic-mesh describe"].startswith("Name:       echo-none-5d9c8b7f6-7ml2z\n")
    assert "Container echo: running, ready=True" in out["echo-none.mic-mesh describe"]
    assert "Started container echo" in out["mic-mesh events"]
    assert out["echo-none.mic-mesh log istio-proxy"] == "istio-proxy: started"
    assert "PassthroughCluster" in out["echo-none.mic-mesh proxy-config listeners"]
    assert "pod/echo-5d9c8b7f6-s77h6" in out["mic-baseline get all"]
    assert f"{fakes.work}/kind-logs" in out["kind export logs"]
    assert (fakes.work / "kind-logs" / "mic-control-plane" / "kubelet.log").is_file()


def test_diagnostics_keep_going_when_a_read_fails(live: tuple[Fakes, KubeCluster]) -> None:
    fakes, cluster = live
    forbidden = 'pods "client-5d9c8b7f6-5s2b6" is forbidden: User "dev" cannot get resource "pods" in the namespace'
    fakes.api.fail[("GET", "/api/v1/namespaces/mic-mesh/pods/client-5d9c8b7f6-5s2b6")] = (403, "Forbidden", forbidden)
    out = cluster.diagnostics([PodRef("mic-mesh", "client")])
    assert out["client.mic-mesh describe"] == f"client.mic-mesh describe: HTTP 403: {forbidden}"
    assert out["client.mic-mesh log istio-proxy"].startswith("client.mic-mesh log istio-proxy: HTTP 403: ")
    assert out["client.mic-mesh proxy-config listeners"].startswith("ADDRESS PORT")  # istioctl still ran


# --- the fakes themselves -------------------------------------------------------------------------------------------


def _fakebin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fakebin", FAKEBIN)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("family", list(SINGLE_STACK))
def test_the_fake_kubectl_reads_yaml_as_pyyaml_does(family: IpFamily) -> None:
    text = yaml.safe_dump_all(manifests_with_echo_image(family), sort_keys=False)
    assert _fakebin().load_yaml_stream(text) == list(yaml.safe_load_all(text))


def test_the_fakes_reject_commands_and_requests_they_do_not_know(fakes: Fakes) -> None:
    (fakes.root / "kc").write_text("")
    result = subprocess.run(
        [fakes.bin / "istioctl", "dashboard", "kiali", "--kubeconfig", fakes.root / "kc"],
        capture_output=True,
        text=True,
        env=fakes.env,
        check=False,
    )
    assert (result.returncode, result.stderr) == (
        1,
        f"fakebin: unknown istioctl command: dashboard kiali --kubeconfig {fakes.root}/kc\n",
    )
    assert fakes.entries() == [{"tool": "istioctl", "argv": ["dashboard", "kiali", "--kubeconfig", f"{fakes.root}/kc"]}]
    # The API server: a request it does not serve is a 404 Status, and logged.
    answer = httpx.get(f"{fakes.api.url}/apis/batch/v1/namespaces/mic-mesh/jobs")
    assert answer.status_code == 404
    assert answer.json()["message"] == "the server could not find the requested resource"
    assert [r["path"] for r in fakes.api.requests] == ["/apis/batch/v1/namespaces/mic-mesh/jobs"]


@pytest.mark.parametrize(("printed", "version"), [("1.10.6", "1.10.6"), ("client version: 1.21.6", "1.21.6")])
def test_the_fake_istioctl_reports_its_version_as_tool_resolution_reads_it(
    fakes: Fakes, monkeypatch: pytest.MonkeyPatch, printed: str, version: str
) -> None:
    """1.9/1.10 print the bare version, newer releases `client version: X` (tools.istioctl_version reads both)."""
    for key, value in {**fakes.env, "FAKE_ISTIOCTL_VERSION": printed}.items():
        monkeypatch.setenv(key, value)
    assert toolbox.istioctl_version(fakes.bin / "istioctl") == version
    assert fakes.entries() == [{"tool": "istioctl", "argv": ["version", "--remote=false"]}]


# --- istioctl x precheck outputs, parsed --------------------------------------------------------------------------


def read_capture(name: str) -> tuple[str, str, int]:
    base = PRECHECK_DATA / name
    return (base / "stdout.txt").read_text(), (base / "stderr.txt").read_text(), int((base / "exit_code").read_text())


@pytest.mark.parametrize("name", ["1.10-findings", "1.12-findings"])
def test_parse_istioctl_findings_in_both_origin_styles(name: str) -> None:
    run = parse_istioctl(*read_capture(name))
    assert (run.tool, run.exit_code) == ("istioctl", 1)
    assert run.findings == CHECKER_FINDINGS
    assert all(f.code == "IST0143" and f.level == "Error" for f in run.findings)
    assert run.warnings == []


def test_parse_istioctl_no_issues() -> None:
    run = parse_istioctl(*read_capture("no-issues"))
    assert (run.exit_code, run.findings, run.warnings) == (0, [], [])


def test_parse_istioctl_exit_0_having_checked_nothing() -> None:
    run = parse_istioctl(*read_capture("checked-nothing"))
    assert (run.exit_code, run.findings) == (0, [])
    assert (
        run.warnings
        == [
            "failed to get config dump:  failure running port forward process: "
            "unable to listen on any of the requested ports: [{15000 15000}]"
        ]
        * 12
    )


def test_parse_istioctl_control_plane_only() -> None:
    run = parse_istioctl(*read_capture("control-plane-only"))
    assert (run.exit_code, run.findings) == (1, [])
    assert run.warnings == ["istioctl reported issues that are not IST0143 (control-plane checks?)"]


def test_precheck_waits_for_terminating_pods_and_ignores_findings_about_pods_that_are_gone(
    live: tuple[Fakes, KubeCluster],
) -> None:
    """After a profile switch the old pods stay Terminating: the precheck waits them out, and a finding istioctl
    still prints about a pod that is not the run's current pod is ignored, with a note (not a warning)."""
    fakes, cluster = live
    fakes.env["FAKE_TERMINATING"] = "2"
    fakes.env["FAKE_PRECHECK_DIR"] = str(PRECHECK_DATA / "1.10-stale-pod")
    run = cluster.precheck("mic-mesh")
    assert fakes.commands() == [*NO_TERMINATING, "istioctl x precheck", *CROSS_CHECK]
    # Waited for by list-then-watch: the listing and the watch from its resourceVersion still hold the Terminating
    # pod; the watch ends at its timeout (the fake keeps it 1 s), and the next listing has the pod gone.
    asked = [
        (r["query"].get("watch", [""])[0], r["query"].get("resourceVersion", [""])[0] != "")
        for r in fakes.api.requests
        if r["path"] == "/api/v1/namespaces/mic-mesh/pods"
    ]
    assert asked == [("", False), ("true", True), ("", False)]
    assert run.findings == CHECKER_FINDINGS
    assert run.ignored == [Finding("mic-mesh", "echo-none-6f7d9c8b5-old00", 8081)]
    assert run.warnings == []
    assert run.notes == [
        "ignored 1 istioctl finding(s) for pods that are not this run's current pods: "
        "mic-mesh/echo-none-6f7d9c8b5-old00"
    ]


def test_precheck_parse_state_failure_is_a_partial_check_warning() -> None:
    stdout = (PRECHECK_DATA / "1.10-findings" / "stdout.txt").read_text() + (
        'failed to get parse state: strconv.Atoi: parsing "*": invalid syntax\n'
    )
    run = parse_istioctl(stdout, (PRECHECK_DATA / "1.10-findings" / "stderr.txt").read_text(), 1)
    assert run.warnings == [
        "partial check: istioctl skipped a listener it could not parse "
        '(failed to get parse state: strconv.Atoi: parsing "*": invalid syntax)'
    ]


@pytest.mark.parametrize("capture", sorted(p.name for p in PRECHECK_DATA.iterdir() if p.is_dir()))
def test_recorded_istioctl_outputs_carry_their_release_s_docs_url(capture: str) -> None:
    """istioctl prints its own docs version (pkg/url/url.go DocsVersion), e.g. https://istio.io/v1.10/docs/...,
    never `latest`."""
    stderr = (PRECHECK_DATA / capture / "stderr.txt").read_text()
    release = capture.split("-", maxsplit=1)[0] if capture[0].isdigit() else "1.10"
    for line in stderr.splitlines():
        if line.startswith("See https://istio.io/"):
            assert line == (
                f"See https://istio.io/v{release}/docs/reference/config/analysis for more information about causes "
                "and resolutions."
            )


def test_a_kind_run_stops_before_creating_anything_when_preflight_finds_a_problem(fakes: Fakes) -> None:
    cluster = fakes.cluster("1.10.6")
    cluster.site.host = fake_host(fakes.root / "host-down", docker=DOCKER_DOWN)
    with pytest.raises(BackendError, match=r"^preflight \(1 problem\(s\), see --preflight\): Docker: the daemon"):
        cluster.up(World(IpFamily.IPV4).manifests())
    assert fakes.commands() == []


# --- dual-stack (issue 23): both families' addresses, probes to each -------------------------------------------------

CREATE_DUAL = "<repo>/fixtures/kind/dual.yaml --kubeconfig <work>/kubeconfig --wait 600s"


def test_a_dual_stack_run_creates_a_dual_cluster_installs_the_flag_and_keeps_both_addresses(fakes: Fakes) -> None:
    # No FAKE_FAMILY: the fake cluster takes its family from the kind config the backend gives it (ipFamily: dual).
    cluster = fakes.cluster("1.31.1", family="dual")
    world = World.for_mesh(IpFamily.DUAL, istio_capabilities("1.31.1", family=IpFamily.DUAL))
    assert not world.ambient  # ambient on dual-stack pods is not traced (settings-dualstack.md section 5)
    cluster.up(world.manifests())
    dual_install = release_install("1.31.1", "dual-stack.yaml", "dual-stack-ip-family-policy.yaml")
    up = kind_up("1.31.1", NODE_1_36, dual_install, create=CREATE_DUAL)
    up[-len(WAIT_WORKLOADS) :] = [
        w.replace("echo-localhost-cross", "echo-localhost-v6").replace("echo-instance-cross", "echo-instance-v6")
        for w in WAIT_WORKLOADS
    ]
    assert fakes.commands() == up
    assert "ipFamily: dual" in fakes.state()["clusters"][0]["config"]
    (applied,) = fakes.applied()
    (echo_none,) = [
        m for m in yaml.safe_load_all(applied) if m["kind"] == "Service" and m["metadata"]["name"] == "echo-none"
    ]
    assert echo_none["spec"]["ipFamilyPolicy"] == "RequireDualStack"  # the fake gives it a ClusterIP of each family
    server = PodRef("mic-mesh", "echo-none")
    # Each family's address; None is the primary, IPv4 (status.podIP, the first of spec.clusterIPs).
    assert [cluster.pod_ip(server, f) for f in (None, "ipv4", "ipv6")] == [
        "10.244.0.12",
        "10.244.0.12",
        "fd00:10:244::c",
    ]
    service = [cluster.service_ip("mic-mesh", "echo-none", f) for f in (None, "ipv4", "ipv6")]
    assert service == ["10.96.0.11", "10.96.0.11", "fd00:10:96::b"]
    # The probe pods' Services are dual-stack too (their probe cells are asked in dual runs since spec version 7).
    (probe,) = [m for m in yaml.safe_load_all(applied) if m["kind"] == "Service" and m["metadata"]["name"] == "probe"
                and m["metadata"]["namespace"] == "mic-baseline"]  # fmt: skip
    assert probe["spec"]["ipFamilyPolicy"] == "RequireDualStack"
    assert ":" in cluster.service_ip("mic-baseline", "probe", "ipv6")
    assert cluster.pod_ip(PodRef("mic-baseline", "probe")) == cluster.pod_ip(PodRef("mic-baseline", "probe"), "ipv4")


def test_a_single_stack_run_has_no_address_of_the_other_family(fakes: Fakes) -> None:
    cluster = fakes.cluster("1.10.6")
    cluster.up(World(IpFamily.IPV4).manifests())
    with pytest.raises(BackendError, match=r"^pod echo-none.mic-mesh has no ipv6 address on this ipv4 run$"):
        cluster.pod_ip(PodRef("mic-mesh", "echo-none"), "ipv6")


def test_dual_cells_probe_the_address_of_their_client_family_and_see_that_family_s_peer(fakes: Fakes) -> None:
    from conformance.engine.probe import ProbeOutcome, Prober
    from conformance.spec.cells import all_cells
    from conformance.spec.dimensions import Path as CellPath
    from conformance.spec.dimensions import Source

    cluster = fakes.cluster("1.31.1", family="dual")
    world = World.for_mesh(IpFamily.DUAL, istio_capabilities("1.31.1", family=IpFamily.DUAL))
    cluster.up(world.manifests())
    prober = Prober(cluster, world, TimeoutConfig())
    cells = [c for c in all_cells(families=[IpFamily.DUAL]) if world.deployed(c)]
    assert {c.client_family for c in cells} == set(SINGLE_STACK)
    requests = {}
    for cell in cells:
        request = prober._request(cell)
        family = cell.client_family.value  # type: ignore[union-attr]
        server = world.server_for(cell)
        if cell.path is CellPath.LOCALHOST:
            want = {"ipv4": "127.0.0.1", "ipv6": "::1"}[family]
        elif cell.path is CellPath.SERVICE:
            want = cluster.service_ip(server.namespace, server.app, family)
        else:
            want = cluster.pod_ip(server, family)
        assert request.address == want, cell.id
        assert (":" in request.address) == (family == "ipv6"), cell.id
        requests[cell] = request
    # A client pod's probe of each family reaches the server, which sees the client's address of that family: the
    # CLIENT source of the cell's client family.
    client, server = PodRef("mic-mesh", "client"), PodRef("mic-mesh", "echo-none")
    picked = {}
    for cell, request in requests.items():
        if request.source == client and world.server_for(cell) == server and cell.path is CellPath.POD_IP:
            picked.setdefault(cell.client_family, cell)
    assert set(picked) == set(SINGLE_STACK)
    results = cluster.probe([requests[c] for c in picked.values()], 2.0)
    for cell, result in zip(picked.values(), results, strict=True):
        family = cell.client_family.value  # type: ignore[union-attr]
        assert result["pod"] == cluster.workloads.name_of(server)
        assert result["peer"] == cluster.pod_ip(client, family)
        outcome = ProbeOutcome.from_json(result, requests[cell].request_id)
        assert prober._classify(cell, outcome) == Source.CLIENT.value


@pytest.mark.parametrize("given", ["ipv4", "ipv6"])
def test_a_dual_stack_pod_without_an_address_of_each_family_is_not_ready(fakes: Fakes, given: str) -> None:
    fakes.env["FAKE_FAMILY"] = given  # the cluster gives one family only, the run wants both
    cluster = fakes.cluster("1.31.1", family="dual", timeouts=TimeoutConfig(pod_ready=0.01))
    with pytest.raises(CommandError) as raised:
        cluster.up(World.for_mesh(IpFamily.DUAL, istio_capabilities("1.31.1", family=IpFamily.DUAL)).manifests())
    assert str(raised.value) == (
        "wait for the pods of mic-baseline: not done after 0.01 s: echo.mic-baseline: no dual pod IP yet"
    )


def _dual_kubeconfig_up(fakes: Fakes, user_kubeconfig: Path, overlays: list[str]) -> KubeCluster:
    fakes.seed(
        clusters=[{"name": "user", "kubernetes": "v1.31.0", "family": "dual"}],
        istio={"hub": "docker.io/istio", "tag": "1.31.1", "overlays": overlays},
    )
    cluster = fakes.cluster(
        "1.31.1",
        family="dual",
        backend="kubeconfig",
        kubeconfig=str(user_kubeconfig),
        echo_image="registry.example/echo:1",
    )
    cluster.up(World.for_mesh(IpFamily.DUAL, istio_capabilities("1.31.1", family=IpFamily.DUAL)).manifests())
    return cluster


def test_a_dual_stack_kubeconfig_run_needs_the_installed_istio_to_be_dual_stack(
    fakes: Fakes, user_kubeconfig: Path
) -> None:
    """Without ISTIO_DUAL_STACK every IPv6 cell would fail for the install's reason: one line before anything runs."""
    with pytest.raises(BackendError) as raised:
        _dual_kubeconfig_up(fakes, user_kubeconfig, [])
    assert str(raised.value) == (
        "the Istio in istio-system is not dual-stack: ISTIO_DUAL_STACK=true is missing from istiod's env "
        "(values.pilot.env.ISTIO_DUAL_STACK) and the mesh config's proxyMetadata (configmap istio-system/istio, "
        "meshConfig.defaultConfig.proxyMetadata.ISTIO_DUAL_STACK); install it with fixtures/mesh/dual-stack.yaml, "
        "or pass --allow-mesh-install to let the suite install its own"
    )
    assert fakes.commands(user_kubeconfig)[-2:] == [
        "kubectl -n istio-system get deployment istiod -o json",
        "kubectl -n istio-system get configmap istio -o json",
    ]
    fakes.clear()
    # Installed as the suite installs it (the overlay sets both): the run goes on and deploys the world.
    _dual_kubeconfig_up(fakes, user_kubeconfig, ["dual-stack.yaml"])
    assert APPLY in fakes.commands(user_kubeconfig)


def test_a_kubeconfig_cluster_without_the_run_s_family_stops_before_anything_runs(
    fakes: Fakes, user_kubeconfig: Path
) -> None:
    fakes.seed(
        clusters=[{"name": "user", "kubernetes": "v1.31.0", "family": "ipv4"}],
        istio={"hub": "docker.io/istio", "tag": "1.31.1", "overlays": ["dual-stack.yaml"]},
    )
    cluster = fakes.cluster(
        "1.31.1", family="dual", backend="kubeconfig", kubeconfig=str(user_kubeconfig), echo_image="r.example/e:1"
    )
    with pytest.raises(BackendError) as raised:
        cluster.up(World(IpFamily.DUAL).manifests())
    assert str(raised.value) == (
        "node user-control-plane gives its pods ipv4 addresses only (spec.podCIDRs); this dual run needs ipv4 and "
        "ipv6: use a cluster of that family, or --ip-family ipv4"
    )
    assert fakes.commands(user_kubeconfig) == ["kubectl version", "kubectl get nodes -o json"]
