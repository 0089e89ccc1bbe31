"""`--plan`: the kind/kubeconfig backends' whole command sequence, printed without running or creating anything.

A command is `# [n] what` and `$ COMMAND`. An API call (made by the official Python client: no kubectl) is
`# [n] what`, `API REQUEST` and `#   by hand: kubectl --kubeconfig K ...`, the kubectl command that repeats it;
here both count as commands, an API call as its kubectl line.

Each plan runs `pytest --pyargs conformance.suite ... --plan` in a subprocess whose PATH holds no kind, kubectl,
istioctl or docker, whose cache (XDG_CACHE_HOME), home and temporary directory (TMPDIR, the child's
`tempfile.gettempdir()`) are fresh directories, and whose working directory is empty. All runs start together
(they take ~0.4 s each and are independent) and each test then reads its own.

Plans print tool paths under the cache, the kubeconfig under the temporary directory and fixtures under the
repository: they are shown here as `<cache>`, `<tmp>` and `<repo>`.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import ECHO_IMAGE
from packaging.version import Version

from conformance.backends.kind.matrix import load_matrix
from conformance.spec.capabilities import istio_capabilities
from conformance.spec.dimensions import IpFamily
from conformance.world.layout import World
from conformance.world.probe_pods import PROBE_REWRITE_ANNOTATION, PROBED_CONTAINERS

REPO = Path(__file__).resolve().parents[1]
NODE_1_20 = "kindest/node:v1.20.15@sha256:a32bf55309294120616886b5338f95dd98a2f7231519c7dedcec32ba29699394"
NODE_1_29 = "kindest/node:v1.29.14@sha256:8703bd94ee24e51b778d5556ae310c6c0fa67d761fae6379c8e0bb480e6fea29"
NODE_1_36 = "kindest/node:v1.36.1@sha256:3489c7674813ba5d8b1a9977baea8a6e553784dab7b84759d1014dbd78f7ebd5"
KC = "--kubeconfig <tmp>/mic-kind-mic/kubeconfig"
KUBECTL = f"kubectl {KC}"  # how an API call of a kind plan is shown: the literal word, never a downloaded path
APPLY = "apply --server-side --field-manager=mesh-inbound-conformance -f -"
BY_HAND = "#   by hand: "
ARCHIVE = "<tmp>/mic-kind-mic"  # where --load-image archives are saved
TOOLS = "<cache>/mesh-inbound-conformance/tools"
CUSTOM_HUB, CUSTOM_TAG = "ghcr.io/example/istio", "1.31.1-dev.7"
PERMISSIVE_MIC_AMBIENT = {
    "apiVersion": "security.istio.io/v1beta1",
    "kind": "PeerAuthentication",
    "metadata": {
        "name": "mic-permissive",
        "namespace": "mic-ambient",
        "labels": {"app.kubernetes.io/part-of": "mesh-inbound-conformance"},
    },
    "spec": {"mtls": {"mode": "PERMISSIVE"}},
}

# Every manifest the backend applies, in order (the same for both families), as (kind, namespace/name).
APPLIED = [
    ("Namespace", "mic-baseline"),
    ("Namespace", "mic-mesh"),
    ("Deployment", "mic-baseline/echo"),
    ("Service", "mic-baseline/echo"),
    ("Deployment", "mic-baseline/client"),
    ("Deployment", "mic-mesh/echo-none"),
    ("Service", "mic-mesh/echo-none"),
    ("Deployment", "mic-mesh/echo-localhost"),
    ("Service", "mic-mesh/echo-localhost"),
    ("Sidecar", "mic-mesh/echo-localhost"),
    ("Deployment", "mic-mesh/echo-instance"),
    ("Service", "mic-mesh/echo-instance"),
    ("Sidecar", "mic-mesh/echo-instance"),
    ("Deployment", "mic-mesh/echo-localhost-cross"),
    ("Service", "mic-mesh/echo-localhost-cross"),
    ("Sidecar", "mic-mesh/echo-localhost-cross"),
    ("Deployment", "mic-mesh/echo-instance-cross"),
    ("Service", "mic-mesh/echo-instance-cross"),
    ("Sidecar", "mic-mesh/echo-instance-cross"),
    ("Deployment", "mic-mesh/echo-empty"),
    ("Service", "mic-mesh/echo-empty"),
    ("Sidecar", "mic-mesh/echo-empty"),
    ("Deployment", "mic-mesh/echo-unlisted"),
    ("Service", "mic-mesh/echo-unlisted"),
    ("Sidecar", "mic-mesh/echo-unlisted"),
    # Test ports left out of capture (issue 22), each with a DestinationRule turning auto-mTLS off for its host.
    ("Deployment", "mic-mesh/echo-excluded"),
    ("Service", "mic-mesh/echo-excluded"),
    ("DestinationRule", "mic-mesh/echo-excluded"),
    ("Deployment", "mic-mesh/echo-not-included"),
    ("Service", "mic-mesh/echo-not-included"),
    ("DestinationRule", "mic-mesh/echo-not-included"),
    # The TPROXY servers (issue 22), where the mesh has TPROXY interception in the family.
    ("Deployment", "mic-mesh/echo-tproxy"),
    ("Service", "mic-mesh/echo-tproxy"),
    ("Deployment", "mic-mesh/echo-tproxy-instance"),
    ("Service", "mic-mesh/echo-tproxy-instance"),
    ("Sidecar", "mic-mesh/echo-tproxy-instance"),
    ("Deployment", "mic-mesh/client"),
    # The probe pods (issue 11): one without a sidecar, and in the mesh one per probe rewrite setting.
    ("Deployment", "mic-baseline/probe"),
    ("Service", "mic-baseline/probe"),
    ("Deployment", "mic-mesh/probe-rewrite"),
    ("Service", "mic-mesh/probe-rewrite"),
    ("Deployment", "mic-mesh/probe-norewrite"),
    ("Service", "mic-mesh/probe-norewrite"),
]
# Releases with ambient (>= 1.22) also get the enrolled namespace (applied with the other namespaces), its probe pod
# (with the other probe pods: probes bypass ztunnel) and then the same servers, Sidecars and client as mic-mesh
# (the TPROXY servers excepted: ambient has no interception mode).
AMBIENT_PROBE_APPLIED = [("Deployment", "mic-ambient/probe"), ("Service", "mic-ambient/probe")]
AMBIENT_APPLIED = [
    *[
        (k, n.replace("mic-mesh", "mic-ambient"))
        for k, n in APPLIED
        if n.startswith("mic-mesh/")
        and not n.startswith(
            ("mic-mesh/probe-", "mic-mesh/echo-excluded", "mic-mesh/echo-not-", "mic-mesh/echo-tproxy")
        )
    ],
]
# The namespace a run enrols while its pod runs (issue 22): deployed unenrolled, its one server last.
LATE_APPLIED = [("Deployment", "mic-late/echo"), ("Service", "mic-late/echo")]

CASES: dict[str, tuple[str, ...]] = {
    "1.9.9": ("--backend", "kind", "--istio-version", "1.9.9"),
    "1.10.6": ("--backend", "kind", "--istio-version", "1.10.6"),
    "1.21.6": ("--backend", "kind", "--istio-version", "1.21.6"),
    "1.31.1": ("--backend", "kind", "--istio-version", "1.31.1"),
    "1.10.6-ipv6": ("--backend", "kind", "--istio-version", "1.10.6", "--ip-family", "ipv6"),
    "custom": (
        "--backend",
        "kind",
        "--istio-version",
        "1.31.1",
        "--istio-hub",
        CUSTOM_HUB,
        "--istio-tag",
        CUSTOM_TAG,
        "--install-values",
        "{values}",
        "--load-image",
        f"{CUSTOM_HUB}/pilot:{CUSTOM_TAG}",
        "--load-image",
        f"{CUSTOM_HUB}/proxyv2:{CUSTOM_TAG}",
    ),
    "kubeconfig": (
        "--backend",
        "kubeconfig",
        "--kubeconfig",
        "{kubeconfig}",
        "--allow-mesh-install",
        "--echo-image",
        "registry.example/echo:1",
        "--istio-version",
        "1.10.6",
    ),
    "unreleased-with-istioctl": (
        "--backend",
        "kind",
        "--istio-version",
        "1.32-dev",
        "--istio-hub",
        CUSTOM_HUB,
        "--istio-tag",
        "1.32-dev.3",
        "--istioctl",
        "{istioctl}",
    ),
    "unreleased-with-url": (
        "--backend",
        "kind",
        "--istio-version",
        "1.32-dev",
        "--istio-hub",
        CUSTOM_HUB,
        "--istio-tag",
        "1.32-dev.3",
        "--istioctl-url",
        "https://builds.example/istioctl-1.32-dev-linux-amd64.tar.gz",
        "--istioctl-sha256",
        "ab" * 32,
    ),
    "unreleased-no-istioctl": (
        "--backend",
        "kind",
        "--istio-version",
        "1.32-dev",
        "--istio-hub",
        CUSTOM_HUB,
        "--istio-tag",
        "1.32-dev.3",
    ),
    "1.15.1": ("--backend", "kind", "--istio-version", "1.15.1"),
    "1.20.8": ("--backend", "kind", "--istio-version", "1.20.8"),
    "1.22.3": ("--backend", "kind", "--istio-version", "1.22.3"),
    "out-of-range": ("--backend", "kind", "--istio-version", "1.8.5"),
    "versions-disagree": ("--backend", "kind", "--istio-version", "1.10.6", "--mesh-version", "1.21.0"),
    "versions-agree": ("--backend", "kind", "--istio-version", "1.21.6", "--mesh-version", "1.21.6"),
    "emulated-plan": ("--backend", "emulated", "--plan"),
    "no-istio-version": ("--backend", "kind"),
    "1.31.1-ipv6": ("--backend", "kind", "--istio-version", "1.31.1", "--ip-family", "ipv6"),  # ambient, IPv6
    # Issue 23: a dual-stack plan, and a release without dual-stack.
    "1.31.1-dual": ("--backend", "kind", "--istio-version", "1.31.1", "--ip-family", "dual"),
    "1.18.7-dual": ("--backend", "kind", "--istio-version", "1.18.7", "--ip-family", "dual"),
    "1.16.7-dual": ("--backend", "kind", "--istio-version", "1.16.7", "--ip-family", "dual"),
    # Issue 20, item 9: a custom build of an ambient release needs the distroless images the ambient profile pulls.
    "custom-1.24": (
        "--backend",
        "kind",
        "--istio-version",
        "1.24.0",
        "--istio-hub",
        "ghcr.io/you/istio",
        "--istio-tag",
        "1.24.0-fix.1",
    ),
    "custom-1.24-default-variant": (
        "--backend",
        "kind",
        "--istio-version",
        "1.24.0",
        "--istio-hub",
        "ghcr.io/you/istio",
        "--istio-tag",
        "1.24.0-fix.1",
        "--istio-variant",
        "default",
    ),
    "variant-unknown": ("--backend", "kind", "--istio-version", "1.24.0", "--istio-variant", "slim"),
    "variant-distroless-precheck": ("--backend", "kind", "--istio-version", "1.10.6", "--istio-variant", "distroless"),
    "ambient-only": ("--backend", "kind", "--istio-version", "1.31.1", "--profile", "baseline,ambient"),
}
# Every matrix row's plan: the rows whose release is not a case above get one of their own.
ROW_CASES = {
    f"row-{row.name}": ("--backend", "kind", "--istio-version", row.istio)
    for row in load_matrix()
    if row.istio not in CASES
}
CASES.update(ROW_CASES)
# The plans that print a plan (the rest are usage errors): the matrix rows, both families, a custom build, releases
# without a row, unreleased builds and the kubeconfig backend.
PRINTED = [
    name
    for name in CASES
    if name
    not in (
        "unreleased-no-istioctl",
        "out-of-range",
        "versions-disagree",
        "emulated-plan",
        "no-istio-version",
        "variant-unknown",
        "variant-distroless-precheck",
        "1.16.7-dual",
    )
]


@dataclass
class Plan:
    returncode: int
    stdout: str
    stderr: str
    root: Path
    created: list[str]

    def normalized(self) -> str:
        return (
            self.stdout.replace(str(self.root / "cache"), "<cache>")
            .replace(str(self.root / "tmp"), "<tmp>")
            .replace(str(self.root), "<root>")
            .replace(str(REPO), "<repo>")
        )

    @property
    def commands(self) -> list[str]:
        """Each `$ COMMAND`, and each API call as the kubectl command that repeats it (its `by hand:` line)."""
        commands = []
        lines = self.normalized().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("$ "):
                commands.append(line[2:])
            elif line.startswith(BY_HAND) and i > 0 and lines[i - 1].startswith("API "):
                commands.append(line[len(BY_HAND) :])
        return commands

    @property
    def notes(self) -> list[str]:
        return [line[6:] for line in self.normalized().splitlines() if line.startswith("# --- ")]

    @property
    def manifests(self) -> list[str]:
        """Each `# stdin:` block, dedented."""
        blocks: list[list[str]] = []
        current: list[str] | None = None
        for line in self.stdout.splitlines():
            if line == "# stdin:":
                current = []
                blocks.append(current)
            elif current is not None and line.startswith("    "):
                current.append(line)
            else:
                current = None
        return [textwrap.dedent("\n".join(block)) for block in blocks]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Plan]:
    started = {}
    for name, args in CASES.items():
        root = tmp_path_factory.mktemp(f"plan-{name}")
        for sub in ("bin", "home", "tmp", "run"):
            (root / sub).mkdir()
        (root / "values.yaml").write_text(
            "spec:\n  values:\n    global:\n      logging:\n        level: default:debug\n"
        )
        (root / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
        istioctl = root / "istioctl-dev"
        istioctl.write_text("#!/bin/sh\necho 'client version: 1.32-dev'\n")
        istioctl.chmod(0o755)
        argv = [a.format(values=root / "values.yaml", kubeconfig=root / "kubeconfig", istioctl=istioctl) for a in args]
        if name not in ("emulated-plan",):
            argv.append("--plan")
        env = {
            "PATH": str(root / "bin"),  # empty: no kind, kubectl, istioctl or docker to find
            "HOME": str(root / "home"),
            "TMPDIR": str(root / "tmp"),
            "XDG_CACHE_HOME": str(root / "cache"),
            "PYTHONPATH": str(REPO),
            "LANG": "C.UTF-8",
        }
        before = {sub: _tree(root / sub) for sub in ("home", "tmp", "run")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--pyargs", "conformance.suite", *argv],
            cwd=root / "run",
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started[name] = (proc, root, before)
    done = {}
    for name, (proc, root, before) in started.items():
        out, err = proc.communicate(timeout=120)
        created = [f"{sub}/{p}" for sub in ("home", "tmp", "run") for p in _tree(root / sub) if p not in before[sub]]
        if (root / "cache").exists():
            created += [f"cache/{p}" for p in ["", *_tree(root / "cache")]]
        done[name] = Plan(proc.returncode, out, err, root, created)
    return done


def in_order(commands: Sequence[str], expected: Sequence[str]) -> None:
    """`expected` appear in `commands` in this order (other commands may come between them)."""
    at = 0
    for want in expected:
        try:
            if want.endswith(" --batch "):  # the probe batch (JSON) follows as an argument
                at = next(i for i in range(at, len(commands)) if commands[i].startswith(want)) + 1
                continue
            at = commands.index(want, at) + 1
        except (ValueError, StopIteration):
            later = want in commands
            pytest.fail(f"{'out of order' if later else 'missing'}: {want!r}\nplan commands:\n" + "\n".join(commands))


def tools(kind: str, istioctl: str) -> tuple[str, str, str]:
    """The downloaded kind and istioctl, and how the plan's API calls show kubectl (no kubectl is downloaded)."""
    return f"{TOOLS}/kind/{kind}/kind", KUBECTL, f"{TOOLS}/istioctl/{istioctl}/istioctl"


def workloads(kubectl: str) -> list[str]:
    return [
        f"{kubectl} {APPLY}",
        f"{kubectl} -n mic-baseline rollout status deploy/echo --timeout=120s",
        f"{kubectl} -n mic-mesh rollout status deploy/client --timeout=120s",
        # Pods are waited for with a watch, once per namespace, then its Services are listed.
        f"{kubectl} -n mic-baseline get pods -o json --watch",
        f"{kubectl} -n mic-baseline get services -o json",
        f"{kubectl} -n mic-mesh get pods -o json --watch",
        f"{kubectl} -n mic-mesh get services -o json",
        f"{kubectl} -n mic-baseline exec client-plan -c echo -- python3 /app/echo.py probe --batch ",
        f"{kubectl} -n mic-mesh exec client-plan -c echo -- python3 /app/echo.py probe --batch ",
        f"{kubectl} get --raw "
        "'/api/v1/namespaces/mic-mesh/pods/echo-none-plan:19000/proxy/requests?id=plan-client-mic-baseline'",
    ]


def switch(kubectl: str) -> list[str]:
    """After a re-install: wait for istiod, restart the injected namespace's workloads, wait for them."""
    return [
        f"{kubectl} -n istio-system rollout status deploy/istiod --timeout=120s",
        f"{kubectl} -n mic-mesh rollout restart deploy",
        f"{kubectl} -n mic-baseline rollout status deploy/echo --timeout=120s",
        f"{kubectl} -n mic-mesh rollout status deploy/client --timeout=120s",
        f"{kubectl} -n mic-mesh get pods -o json --watch",
    ]


def install(istioctl: str, version: str, *overlays: str) -> str:
    files = "".join(f" -f <repo>/fixtures/mesh/{o}" for o in ("base.yaml", *overlays))
    return f"{istioctl} install -y{files} --set hub=docker.io/istio --set tag={version} --readiness-timeout 600s {KC}"


def create(kind: str, node: str, family: str = "ipv4") -> list[str]:
    return [
        f"{kind} get clusters",
        f"{kind} create cluster --name mic --image {node} --config <repo>/fixtures/kind/{family}.yaml {KC} --wait 600s",
        f"docker build --tag {ECHO_IMAGE} <repo>/workloads/echo",
        f"{kind} load docker-image {ECHO_IMAGE} --name mic",
    ]


def precheck_commands(plan: Plan) -> list[str]:
    return [c for c in plan.commands if " x precheck " in c]


# --- the matrix rows ------------------------------------------------------------------------------------------------


def test_plan_1_9_is_legacy_only_and_prechecks_with_istioctl_1_10(plans: dict[str, Plan]) -> None:
    plan = plans["1.9.9"]
    assert (plan.returncode, plan.stderr.strip()) == (0, "Exit: --plan: printed the plan; nothing was run")
    kind, kubectl, istioctl = tools("v0.17.0", "1.9.9")
    in_order(
        plan.commands,
        [
            *create(kind, NODE_1_20),
            install(istioctl, "1.9.9"),
            f"{kubectl} -n istio-system rollout status deploy/istiod --timeout=120s",
            *workloads(kubectl),
            f"{TOOLS}/istioctl/1.10.6/istioctl x precheck {KC}",
            # The cross-check's listeners, from /proc in the echo container: no `ss` in a distroless proxy.
            f"{kubectl} -n mic-mesh exec echo-none-plan -c echo -- cat /proc/net/tcp /proc/net/tcp6",
            f"{kind} delete cluster --name mic",
        ],
    )
    assert precheck_commands(plan) == [f"{TOOLS}/istioctl/1.10.6/istioctl x precheck {KC}"]
    assert not [c for c in plan.commands if "legacy-" in c or "rollout restart" in c]
    assert plan.notes[0] == "kind backend: Istio 1.9.9 (release), ipv4, matrix row istio-1.9-legacy"


def test_plan_1_10_switches_with_the_pilot_env_and_prechecks_each_profile(plans: dict[str, Plan]) -> None:
    plan = plans["1.10.6"]
    assert plan.returncode == 0
    kind, kubectl, istioctl = tools("v0.17.0", "1.10.6")
    precheck = f"{istioctl} x precheck {KC}"
    in_order(
        plan.commands,
        [
            *create(kind, NODE_1_20),
            install(istioctl, "1.10.6"),
            *workloads(kubectl),
            precheck,  # passthrough, the default
            install(istioctl, "1.10.6", "legacy-pilot-env.yaml"),
            *switch(kubectl),
            precheck,  # legacy
            install(istioctl, "1.10.6"),  # LegacySwitchRoundTrip's way back
            *switch(kubectl),
            f"{kind} delete cluster --name mic",
        ],
    )
    assert len(precheck_commands(plan)) == 2
    assert len([c for c in plan.commands if " install " in c]) == 3


def test_plan_1_21_has_no_switch_and_no_precheck(plans: dict[str, Plan]) -> None:
    plan = plans["1.21.6"]
    assert plan.returncode == 0
    kind, kubectl, istioctl = tools("v0.27.0", "1.21.6")
    in_order(
        plan.commands,
        [
            *create(kind, NODE_1_29),
            install(istioctl, "1.21.6"),
            *workloads(kubectl),
            f"{kind} delete cluster --name mic",
        ],
    )
    assert precheck_commands(plan) == []  # istioctl >= 1.21 has no localhost check
    assert not [c for c in plan.commands if "legacy-" in c or "rollout restart" in c]
    assert len([c for c in plan.commands if " install " in c]) == 1


def to_ambient(kubectl: str) -> list[str]:
    """After the ambient install: its DaemonSets, then every meshed and enrolled workload restarted and waited for."""
    return [
        f"{kubectl} -n istio-system rollout status deploy/istiod --timeout=120s",
        f"{kubectl} -n istio-system rollout status ds/istio-cni-node --timeout=120s",
        f"{kubectl} -n istio-system rollout status ds/ztunnel --timeout=120s",
        f"{kubectl} -n mic-mesh rollout restart deploy",
        f"{kubectl} -n mic-ambient rollout restart deploy",
        f"{kubectl} -n mic-ambient rollout status deploy/client --timeout=120s",
        f"{kubectl} -n mic-ambient get pods -o json --watch",
    ]


def test_plan_1_31_switches_with_the_mesh_config(plans: dict[str, Plan]) -> None:
    """The sidecar profiles on the minimal profile (what sidecar users run), then ambient on the ambient profile.

    Ambient comes last, after the legacy round trip, in LOCALHOST mode (the run's AMBIENT_MESH_SETTING), so its
    install is made once and never left (issue 20, item 16).
    """
    plan = plans["1.31.1"]
    assert plan.returncode == 0
    kind, kubectl, istioctl = tools("v0.32.0", "1.31.1")
    in_order(
        plan.commands,
        [
            *create(kind, NODE_1_36),
            install(istioctl, "1.31.1"),
            *workloads(kubectl),
            install(istioctl, "1.31.1", "legacy-mesh-config.yaml"),
            *switch(kubectl),
            install(istioctl, "1.31.1"),
            *switch(kubectl),
            install(istioctl, "1.31.1", "ambient.yaml", "legacy-mesh-config.yaml"),
            *to_ambient(kubectl),
            # The enrolled client probes on the ambient install: its requests are the ones that go through ztunnel.
            f"{kubectl} -n mic-ambient exec client-plan -c echo -- python3 /app/echo.py probe --batch ",
            f"{kubectl} get --raw "
            "'/api/v1/namespaces/mic-ambient/pods/echo-none-plan:19000/proxy/requests?id=plan-client-mic-ambient'",
            f"{kind} delete cluster --name mic",
        ],
    )
    installs = [c for c in plan.commands if " install -y " in c]
    assert len(installs) == 4
    assert [("ambient.yaml" in c) for c in installs] == [False, False, False, True]
    # istio-cni and ztunnel are waited for on the ambient install only; nothing enrolled restarts before it.
    first_ambient = plan.commands.index(installs[-1])
    assert all(
        i > first_ambient for i, c in enumerate(plan.commands) if " ds/" in c or "mic-ambient rollout restart" in c
    )
    assert precheck_commands(plan) == []
    assert not [c for c in plan.commands if "legacy-pilot-env" in c]
    assert (
        "installs: the sidecar profiles on istioctl's minimal profile (-f base.yaml: what sidecar users run, "
        "istio-init and default images), then ambient on its own install, the ambient profile "
        "(-f base.yaml -f ambient.yaml: istio-cni, ztunnel), after every sidecar test"
    ) in plan.notes
    assert "install switch: sidecar -> ambient install, inbound legacy" in plan.notes
    assert not [c for c in plans["1.21.6"].commands if "mic-ambient" in c]  # no ambient before 1.22


def test_plan_ipv6_uses_the_ipv6_kind_config_and_ipv6_manifests(plans: dict[str, Plan]) -> None:
    plan = plans["1.10.6-ipv6"]
    assert plan.returncode == 0
    kind, kubectl, istioctl = tools("v0.17.0", "1.10.6")
    in_order(plan.commands, [*create(kind, NODE_1_20, "ipv6"), install(istioctl, "1.10.6"), *workloads(kubectl)])
    (manifest,) = plan.manifests
    # istiod before 1.14.4 (and 1.15.0) rejects the [::1]:P / [::]:P Sidecar forms: the IPv6 world of 1.10.6 keeps
    # the server without a Sidecar, the IPv4 literals (cross-family on an IPv6 pod, judged as 1.10-1.14.3 resolve
    # them) and the empty host `:P` (1.10+); the other Sidecar cases are skipped, with the reason.
    docs = list(yaml.safe_load_all(manifest))
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Sidecar"] == [
        "echo-localhost-cross",
        "echo-instance-cross",
        "echo-empty",
    ]
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"] == [
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


def test_plan_dual_stack_shows_the_dual_kind_config_the_dual_stack_install_and_dual_services(
    plans: dict[str, Plan],
) -> None:
    """Issue 23: `--plan --ip-family dual` shows what makes the run dual-stack, as Istio's own tests install it."""
    plan = plans["1.31.1-dual"]
    assert plan.returncode == 0, plan.stderr
    kind, kubectl, istioctl = tools("v0.32.0", "1.31.1")
    policy = "dual-stack-ip-family-policy.yaml"  # the chart has values.pilot.ipFamilyPolicy from 1.20
    in_order(
        plan.commands,
        [
            *create(kind, NODE_1_36, "dual"),
            install(istioctl, "1.31.1", "dual-stack.yaml", policy),
            *workloads(kubectl),
            install(istioctl, "1.31.1", "legacy-mesh-config.yaml", "dual-stack.yaml", policy),
        ],
    )
    # No ambient (not traced on dual-stack pods), no TPROXY servers; every install carries the flag.
    installs = [c for c in plan.commands if " install -y " in c]
    assert installs
    assert all("dual-stack.yaml" in c and "ambient.yaml" not in c for c in installs)
    text = plan.normalized()
    for line in ("      ipFamily: dual", 'ISTIO_DUAL_STACK: "true"', "ipFamilyPolicy: RequireDualStack"):
        assert line in text, line
    (manifest,) = plan.manifests
    docs = list(yaml.safe_load_all(manifest))
    # The servers' Services get a ClusterIP of each family; the probe pods' keep the primary one (no probe cells
    # in a dual-stack run: a probe goes to the pod's primary address).
    services = [d for d in docs if d["kind"] == "Service" and not d["metadata"]["name"].startswith("probe")]
    assert services
    assert {(d["spec"]["ipFamilyPolicy"], tuple(d["spec"]["ipFamilies"])) for d in services} == {
        ("RequireDualStack", ("IPv4", "IPv6"))
    }
    sidecars = [d["metadata"]["name"] for d in docs if d["kind"] == "Sidecar"]
    assert sidecars == [
        "echo-localhost",
        "echo-instance",
        "echo-localhost-v6",
        "echo-instance-v6",
        "echo-empty",
        "echo-unlisted",
    ]
    assert not [d for d in docs if d["metadata"]["name"].startswith("echo-tproxy") or "ambient" in str(d)]
    # 1.17-1.19: the flag, but no ipFamilyPolicy value in the chart yet.
    older = [c for c in plans["1.18.7-dual"].commands if " install -y " in c]
    assert older
    assert all("dual-stack.yaml" in c and policy not in c for c in older)


@pytest.mark.parametrize("name", ["1.9.9", "1.10.6", "1.21.6", "1.31.1"])
def test_plan_shows_the_probe_workloads(plans: dict[str, Plan], name: str) -> None:
    """Each probe pod carries one probed container per bind, probe kind and use, with short probe periods."""
    plan = plans[name]
    (manifest,) = plan.manifests
    docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(manifest) if d["kind"] == "Deployment"}
    for app in ("probe", "probe-rewrite", "probe-norewrite"):
        template = docs[app]["spec"]["template"]
        containers = template["spec"]["containers"]
        assert [c["name"] for c in containers[1:]] == [c.name for c in PROBED_CONTAINERS]
        for container, probed in zip(containers[1:], PROBED_CONTAINERS, strict=True):
            # One probe each, of the container's use (readiness, liveness, startup).
            (field,) = [f for f in ("readinessProbe", "livenessProbe", "startupProbe") if f in container]
            assert field == f"{probed.use.value}Probe"
            probe = container[field]
            assert ("httpGet" in probe) is (probed.probe.value == "http")
            assert probe["periodSeconds"] == 1
        rewrite_off = template["metadata"]["annotations"].get(PROBE_REWRITE_ANNOTATION) == "false"
        assert rewrite_off is (app == "probe-norewrite")
    # A probe pod is never "available" while a probed container is not Ready: no rollout status waits for it.
    assert not [c for c in plan.commands if "rollout status deploy/probe" in c]


def test_plan_custom_build(plans: dict[str, Plan]) -> None:
    plan = plans["custom"]
    assert plan.returncode == 0
    kind, kubectl, istioctl = tools("v0.32.0", "1.31.1")
    custom = (
        f"--set hub={CUSTOM_HUB} --set tag={CUSTOM_TAG} --set values.global.imagePullPolicy=IfNotPresent "
        f"--readiness-timeout 600s {KC}"
    )
    in_order(
        plan.commands,
        [
            *create(kind, NODE_1_36),
            f"docker save --platform linux/amd64 --output {ARCHIVE}/image-0.tar {CUSTOM_HUB}/pilot:{CUSTOM_TAG}",
            f"{kind} load image-archive <tmp>/mic-kind-mic/image-0.tar --name mic",
            f"docker save --platform linux/amd64 --output {ARCHIVE}/image-1.tar {CUSTOM_HUB}/proxyv2:{CUSTOM_TAG}",
            f"{kind} load image-archive <tmp>/mic-kind-mic/image-1.tar --name mic",
            f"{istioctl} install -y -f <repo>/fixtures/mesh/base.yaml -f <root>/values.yaml {custom}",
            *workloads(kubectl),
            f"{istioctl} install -y -f <repo>/fixtures/mesh/base.yaml "
            f"-f <repo>/fixtures/mesh/legacy-mesh-config.yaml -f <root>/values.yaml {custom}",
            *switch(kubectl),
            f"{istioctl} install -y -f <repo>/fixtures/mesh/base.yaml -f <repo>/fixtures/mesh/ambient.yaml "
            f"-f <repo>/fixtures/mesh/legacy-mesh-config.yaml -f <root>/values.yaml {custom}",
            *to_ambient(kubectl),
            f"{kind} delete cluster --name mic",
        ],
    )
    assert plan.notes[0] == (
        f"kind backend: Istio 1.31.1 (custom build {CUSTOM_HUB}:{CUSTOM_TAG}), ipv4, matrix row istio-current"
    )
    # The loaded images are the default variant: the ambient install's distroless ones come from the hub.
    distroless = [
        f"{CUSTOM_HUB}/{name}:{CUSTOM_TAG}-distroless" for name in ("pilot", "proxyv2", "install-cni", "ztunnel")
    ]
    assert f"not among --load-image, so the node pulls them from {CUSTOM_HUB}: {', '.join(distroless)}" in plan.notes


def test_plan_kubeconfig_backend_runs_no_kind_and_no_docker(plans: dict[str, Plan]) -> None:
    plan = plans["kubeconfig"]
    assert plan.returncode == 0
    kubectl = "kubectl --kubeconfig <root>/kubeconfig"
    istioctl = f"{TOOLS}/istioctl/1.10.6/istioctl"
    in_order(
        plan.commands,
        [
            f"{kubectl} version",
            f"{kubectl} -n istio-system get deployment istiod -o name",
            f"{istioctl} install -y -f <repo>/fixtures/mesh/base.yaml --set hub=docker.io/istio --set tag=1.10.6 "
            "--readiness-timeout 600s --kubeconfig <root>/kubeconfig",
            f"{kubectl} -n istio-system rollout status deploy/istiod --timeout=120s",
            f"{kubectl} {APPLY}",
            f"{kubectl} -n mic-mesh exec client-plan -c echo -- python3 /app/echo.py probe --batch ",
            f"{kubectl} delete namespace mic-baseline mic-mesh --wait=false",
        ],
    )
    assert not [c for c in plan.commands if "/kind " in c or c.startswith("docker ")]
    (manifest,) = plan.manifests
    images = {
        c["image"]
        for d in yaml.safe_load_all(manifest)
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"registry.example/echo:1"}


@pytest.mark.parametrize(
    "name", ["1.9.9", "1.10.6", "1.21.6", "1.31.1", "1.10.6-ipv6", "1.31.1-ipv6", "custom", "kubeconfig"]
)
def test_plan_prints_every_manifest_as_yaml_fed_to_server_side_apply(plans: dict[str, Plan], name: str) -> None:
    plan = plans[name]
    family = IpFamily.IPV6 if name.endswith("ipv6") else IpFamily.IPV4
    image = "registry.example/echo:1" if name == "kubeconfig" else ECHO_IMAGE
    (manifest,) = plan.manifests  # one apply, fed on stdin
    docs = list(yaml.safe_load_all(manifest))
    # Releases before 1.15 get the Sidecar forms they accept only (see test_plan_ipv6_uses_the_ipv6_kind_config...).
    version = {"1.10.6-ipv6": "1.10.6", "1.31.1-ipv6": "1.31.1", "custom": "1.31.1", "kubeconfig": "1.10.6"}.get(
        name, name
    )
    ambient = Version(version) >= Version("1.22")
    applied = APPLIED
    if ambient:
        applied = [
            *APPLIED[:2],
            ("Namespace", "mic-ambient"),
            ("Namespace", "mic-late"),
            ("PeerAuthentication", "mic-ambient/mic-permissive"),
            *APPLIED[2:],
            *AMBIENT_PROBE_APPLIED,
            *AMBIENT_APPLIED,
            *LATE_APPLIED,
        ]
    if Version(version) >= Version("1.15"):
        assert [
            (d["kind"], "/".join(filter(None, [d["metadata"].get("namespace"), d["metadata"]["name"]]))) for d in docs
        ] == applied
    world = dataclasses.replace(World.for_mesh(family, istio_capabilities(version)), image=image)
    expected = [dict(m) for m in world.manifests()]
    if ambient:  # the enrolled namespace is kept PERMISSIVE, by a policy applied before any of its pods
        expected[4:4] = [PERMISSIVE_MIC_AMBIENT]
    assert docs == expected
    # One server-side apply of every object, fed the manifest, shown with the kubectl command that repeats it.
    lines = plan.normalized().splitlines()
    at = lines.index("# stdin:")
    assert (
        lines[at - 2] == f"API PATCH (server-side apply, fieldManager=mesh-inbound-conformance) of {len(docs)} objects"
    )
    assert lines[at - 1].startswith(BY_HAND + "kubectl --kubeconfig ")
    assert lines[at - 1].endswith(f" {APPLY}")


@pytest.mark.parametrize("name", ["1.9.9", "1.10.6", "1.21.6", "1.31.1", "1.10.6-ipv6", "custom", "kubeconfig"])
def test_plan_creates_nothing(plans: dict[str, Plan], name: str) -> None:
    plan = plans[name]
    # No cache directory, nothing in the home, the temporary directory (no mic-kind-*) or the working directory.
    assert plan.created == []
    if name != "kubeconfig":
        assert f"{KC}" in plan.commands[1]  # the kubeconfig it names lives in the (untouched) temporary directory


# --- usage errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("emulated-plan", "ERROR: --plan is an option of --backend kind/kubeconfig, not of the emulated backend"),
        (
            "no-istio-version",
            "ERROR: --backend kind needs --istio-version X (the release to install, or the one a custom build claims)",
        ),
        (
            "unreleased-no-istioctl",
            "ERROR: Istio 1.32-dev is not a release, so there is no istioctl to download: pass --istioctl PATH "
            "or --istioctl-url URL (with --istioctl-sha256) with the build's own istioctl",
        ),
        (
            "out-of-range",
            "ERROR: --mesh-version/--istio-version: Istio 1.8.5 is older than 1.9: the suite has no facts for it "
            "(supported: >= 1.9)",
        ),
        (
            "variant-unknown",
            "ERROR: --istio-variant 'slim': expected default or distroless (HUB/NAME:TAG, or HUB/NAME:TAG-distroless)",
        ),
        (
            "variant-distroless-precheck",
            "ERROR: --istio-variant distroless: the localhost precheck of Istio 1.10.6 runs `ss` in istio-proxy, "
            "which a distroless proxy lacks (istioctl then skips the pod): use the default variant",
        ),
        (
            "1.16.7-dual",
            "ERROR: --ip-family dual: Istio 1.16.7 has no dual-stack support (experimental from 1.17.0, #41618)",
        ),
        (
            "versions-disagree",
            "ERROR: --istio-version 1.10.6 and --mesh-version 1.21.0 disagree: on --backend kind give "
            "--istio-version only (the release installed, or the one a custom build claims)",
        ),
    ],
)
def test_plan_usage_errors_are_one_line_and_exit_4(plans: dict[str, Plan], name: str, message: str) -> None:
    plan = plans[name]
    assert (plan.returncode, plan.stderr.strip(), plan.stdout) == (4, message, "")
    assert plan.created == []


def test_plan_tools_come_from_pinned_downloads_when_path_has_none(plans: dict[str, Plan]) -> None:
    """The child's PATH has no kind or istioctl, so the plan names the verified downloads a run would make, at the
    row's versions, under the cache. No kubectl is downloaded: the API calls are the Python client's."""
    notes = plans["1.10.6"].notes
    assert any(
        n.startswith("kind v0.17.0: https://github.com/kubernetes-sigs/kind/releases/download/v0.17.0/kind-")
        for n in notes
    )
    assert not any(n.startswith("kubectl") or "dl.k8s.io" in n for n in notes)
    assert any(
        n.startswith("istioctl 1.10.6: https://github.com/istio/istio/releases/download/1.10.6/istioctl-1.10.6-")
        for n in notes
    )
    assert not any("(PATH)" in n for n in notes)


# --- releases without a matrix row, unreleased custom builds -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "node", "overlays"),
    [
        (
            "1.15.1",
            "v0.21.0",
            "kindest/node:v1.25.16@sha256:9d0a62b55d4fe1e262953be8d406689b947668626a357b5f9d0cfbddbebbc727",
            (),
        ),
        ("1.20.8", "v0.27.0", NODE_1_29, ()),  # the matrix row istio-1.20-last-flag
        (
            "1.22.3",  # same minor as the row istio-1.22-localhost-mode
            "v0.27.0",
            NODE_1_29,
            ("ambient.yaml", "legacy-mesh-config.yaml"),  # ambient mode from 1.22: last, on the ambient profile
        ),
    ],
)
def test_plan_any_release_runs_on_the_newest_supported_kubernetes(
    plans: dict[str, Plan], name: str, kind: str, node: str, overlays: tuple[str, ...]
) -> None:
    """No --node-image: the Kubernetes, kind release and node image come from fixtures/kubernetes.yaml."""
    plan = plans[name]
    assert plan.returncode == 0, plan.stderr
    kind_bin, _, istioctl = tools(kind, name)
    later = [install(istioctl, name, *overlays)] if overlays else []
    in_order(plan.commands, [*create(kind_bin, node), install(istioctl, name), *later])
    assert ("ambient.yaml" in overlays) is any("ambient.yaml" in c for c in plan.commands)
    assert plan.created == []


@pytest.mark.parametrize("name", ["unreleased-with-istioctl", "unreleased-with-url"])
def test_plan_unreleased_custom_build_uses_its_own_istioctl(plans: dict[str, Plan], name: str) -> None:
    plan = plans[name]
    assert (plan.returncode, plan.stderr.strip()) == (0, "Exit: --plan: printed the plan; nothing was run")
    assert "Traceback" not in plan.stdout + plan.stderr
    assert "INTERNALERROR" not in plan.stdout + plan.stderr
    istioctl = (
        "<root>/istioctl-dev" if name == "unreleased-with-istioctl" else f"{TOOLS}/istioctl/custom-1.32-dev/istioctl"
    )
    installs = [c for c in plan.commands if " install -y " in c]
    assert installs
    assert all(c.startswith(f"{istioctl} install -y ") for c in installs)
    assert all(f"--set hub={CUSTOM_HUB} --set tag=1.32-dev.3" in c for c in installs)
    # Capabilities of the newest known release (1.31.1): the LOCALHOST switch, so a legacy install happens.
    assert any("legacy-mesh-config.yaml" in c for c in installs)
    if name == "unreleased-with-url":
        assert (
            "istioctl of the custom build: https://builds.example/istioctl-1.32-dev-linux-amd64.tar.gz "
            f"(sha256 {'ab' * 32})"
        ) in plan.notes
    assert plan.created == []


# --- images, installs per profile group, the run's order (issue 20, items 9, 11 and 16) ------------------------


def images_of(plan: Plan) -> dict[str, str]:
    """The plan's image notes, by the install they describe (`sidecar profiles` or `ambient`)."""
    out = {}
    for note in plan.notes:
        if note.startswith("images of the install for "):
            users = note.removeprefix("images of the install for ").split(" (", 1)[0]
            out[users] = note
    return out


def test_plan_of_a_custom_ambient_build_lists_the_distroless_images_it_needs(plans: dict[str, Plan]) -> None:
    """The ambient profile sets global.variant distroless (1.22-1.30): its install pulls HUB/NAME:TAG-distroless,
    which Istio's builder makes only when asked. The plan names every image of both installs."""
    plan = plans["custom-1.24"]
    assert plan.returncode == 0, plan.stderr
    hub, tag = "ghcr.io/you/istio", "1.24.0-fix.1"
    assert images_of(plan) == {
        "the sidecar profiles": "images of the install for the sidecar profiles (istioctl's minimal profile, variant "
        f"default from the install profile): {hub}/pilot:{tag}, {hub}/proxyv2:{tag}",
        "ambient": "images of the install for ambient (the ambient profile, variant distroless from the install "
        f"profile): {hub}/pilot:{tag}-distroless, {hub}/proxyv2:{tag}-distroless, "
        f"{hub}/install-cni:{tag}-distroless, {hub}/ztunnel:{tag}-distroless",
    }
    installs = [c for c in plan.commands if " install -y " in c]
    assert "ambient.yaml" in installs[-1]
    assert not [c for c in installs if "values.global.variant" in c]  # the profile's own choice: nothing set


def test_plan_of_a_build_that_chooses_the_default_variant(plans: dict[str, Plan]) -> None:
    """--istio-variant default: every install sets the variant empty, so the ambient profile pulls HUB/NAME:TAG."""
    plan = plans["custom-1.24-default-variant"]
    assert plan.returncode == 0, plan.stderr
    hub, tag = "ghcr.io/you/istio", "1.24.0-fix.1"
    ambient = images_of(plan)["ambient"]
    assert ambient == (
        "images of the install for ambient (the ambient profile, variant default from --istio-variant): "
        f"{hub}/pilot:{tag}, {hub}/proxyv2:{tag}, {hub}/install-cni:{tag}, {hub}/ztunnel:{tag}"
    )
    installs = [c for c in plan.commands if " install -y " in c]
    assert installs
    assert all(
        f"--set tag={tag} --set values.global.variant= --set values.global.imagePullPolicy" in c for c in installs
    )


def test_plan_of_releases_lists_their_images_too(plans: dict[str, Plan]) -> None:
    assert images_of(plans["1.10.6"]) == {
        "the sidecar profiles": "images of the install for the sidecar profiles (istioctl's minimal profile, variant "
        "default from the install profile): docker.io/istio/pilot:1.10.6, docker.io/istio/proxyv2:1.10.6"
    }
    assert images_of(plans["1.31.1"])["ambient"].endswith(
        "docker.io/istio/pilot:1.31.1-distroless, docker.io/istio/proxyv2:1.31.1-distroless, "
        "docker.io/istio/install-cni:1.31.1-distroless, docker.io/istio/ztunnel:1.31.1-distroless"
    )


def test_plan_of_ambient_alone_makes_only_the_ambient_install(plans: dict[str, Plan]) -> None:
    plan = plans["ambient-only"]
    assert plan.returncode == 0, plan.stderr
    istioctl = tools("v0.32.0", "1.31.1")[2]
    installs = [c for c in plan.commands if " install -y " in c]
    # Up in the default mode, then LOCALHOST for the ambient tests (as the run does): the same install, no other.
    assert installs == [
        install(istioctl, "1.31.1", "ambient.yaml"),
        install(istioctl, "1.31.1", "ambient.yaml", "legacy-mesh-config.yaml"),
    ]
    assert list(images_of(plan)) == ["ambient"]
    assert (
        "installs: the ambient profile only (-f base.yaml -f ambient.yaml): no sidecar profile selected" in plan.notes
    )


def test_plan_reads_an_enrolled_pod_s_record_through_ztunnel_under_permissive(plans: dict[str, Plan]) -> None:
    """Ambient capture ignores the control port's exclusion: the record crosses ztunnel's plaintext inbound, which
    PERMISSIVE lets through; the run keeps the enrolled namespace PERMISSIVE (issue 20, item 11)."""
    notes = plans["1.31.1"].notes
    assert (
        "request record of an enrolled pod: through the API server's pod proxy and ztunnel's plaintext inbound "
        "(ambient capture ignores the port exclusion; PERMISSIVE lets it through)"
    ) in notes
    assert (
        "ambient: mic-ambient kept PERMISSIVE by a namespace-wide PeerAuthentication: plain clients and the API "
        "server's pod proxy (the request record) reach enrolled pods in plaintext through ztunnel"
    ) in notes
    (manifest,) = plans["1.31.1"].manifests
    policies = [d for d in yaml.safe_load_all(manifest) if d["kind"] == "PeerAuthentication"]
    assert policies == [PERMISSIVE_MIC_AMBIENT]
    (manifest,) = plans["1.21.6"].manifests
    assert not [d for d in yaml.safe_load_all(manifest) if d["kind"] == "PeerAuthentication"]


def test_the_run_puts_ambient_last_after_the_legacy_round_trip(tmp_path: Path) -> None:
    """The order the plan shows is the run's: every ambient test after every sidecar test and the round trip."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PYTHONPATH": str(REPO), "LANG": "C.UTF-8"}
    args = ["--backend", "kind", "--istio-version", "1.31.1", "--collect-only", "-q"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--pyargs", "conformance.suite", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    assert ids, proc.stdout + proc.stderr
    ambient = [i for i, name in enumerate(ids) if name.endswith("[ambient]]")]
    sidecar = [i for i, name in enumerate(ids) if name.endswith(("[legacy]]", "[passthrough]]"))]
    switch = [i for i, name in enumerate(ids) if "test_legacy_switch" in name]
    assert ambient
    assert sidecar
    assert switch
    assert max(sidecar + switch) < min(ambient)


def test_plan_versions_that_agree_are_one_version(plans: dict[str, Plan]) -> None:
    assert plans["versions-agree"].returncode == 0


def test_plan_logs_why_each_tool_was_chosen(plans: dict[str, Plan]) -> None:
    notes = plans["1.10.6"].notes
    assert "kind: none on PATH, using the pinned kind v0.17.0" in notes
    assert "istioctl: none on PATH, using the pinned istioctl 1.10.6" in notes
    assert not [n for n in notes if n.startswith("kubectl")]  # kubectl is no tool of the run: nothing to choose


# --- API calls and kubectl --------------------------------------------------------------------------------------


def test_every_matrix_row_has_a_printed_plan(plans: dict[str, Plan]) -> None:
    for row in load_matrix():
        printed = [plans[name] for name in PRINTED if f", matrix row {row.name}" in (plans[name].notes or [""])[0]]
        assert any(plan.notes[0].startswith(f"kind backend: Istio {row.istio} ") for plan in printed), row.name


@pytest.mark.parametrize("name", PRINTED)
def test_plan_runs_no_kubectl_and_shows_each_api_call_with_its_kubectl_equivalent(
    plans: dict[str, Plan], name: str
) -> None:
    """kubectl is not a tool of the run: no command runs it. It appears only as the way to repeat an API call by
    hand (the line right after the call), or in a `# ---` note (prose, e.g. the teardown's diagnostics)."""
    plan = plans[name]
    assert plan.returncode == 0, plan.stderr
    lines = plan.normalized().splitlines()
    assert not [line for line in lines if line.startswith("$ ") and "kubectl" in line]
    stray = [
        (i, line)
        for i, line in enumerate(lines)
        if "kubectl" in line
        and not (line.startswith(BY_HAND) and i > 0 and lines[i - 1].startswith("API "))
        and not line.startswith("# --- ")
    ]
    assert stray == []
    api = [i for i, line in enumerate(lines) if line.startswith("API ")]
    assert api, "a plan makes API calls"
    kubeconfig = "<root>/kubeconfig" if name == "kubeconfig" else "<tmp>/mic-kind-mic/kubeconfig"
    for i in api:
        assert lines[i - 1].startswith("# ["), lines[i - 1]  # numbered like a command
        assert lines[i + 1].startswith(f"{BY_HAND}kubectl --kubeconfig {kubeconfig} "), (lines[i], lines[i + 1])
    assert [i + 1 for i in api] == [i for i, line in enumerate(lines) if line.startswith(BY_HAND)]


@pytest.mark.parametrize(
    ("spec", "family"),
    [
        ({"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]}, "ipv4"),
        ({"podCIDR": "fd00:10:244::/64"}, "ipv6"),
        ({"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24", "fd00:10:244::/64"]}, "dual"),
        ({}, "ipv4"),
    ],
)
def test_a_reused_cluster_s_family_is_read_from_its_nodes_pod_cidrs(spec: dict[str, object], family: str) -> None:
    from conformance.backends.kind.cluster import node_family

    assert node_family(spec) == family
