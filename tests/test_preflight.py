"""Preflight of the kind backend: one line per thing a machine lacks, with its fix, before anything is created.

Offline: a fake `docker` and fake /proc, /sys/fs/cgroup and /sys/module trees (tests/fakes/host.py); and once as a
user would, `--preflight` on this machine, whose Docker does not answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakes.host import DOCKER_DOWN, fake_host

from conformance.backends.kind.preflight import check

REPO = Path(__file__).resolve().parents[1]


def problems(
    tmp_path: Path,
    kubernetes: str = "1.20",
    istio: str = "1.10.6",
    family: str = "ipv4",
    ambient: bool = False,
    **kw: object,
) -> list[str]:
    host = fake_host(tmp_path, **kw)  # type: ignore[arg-type]
    return check(host, kubernetes=kubernetes, istio_version=istio, family=family, ambient=ambient)


def test_a_ready_machine_has_no_problem(tmp_path: Path) -> None:
    assert problems(tmp_path, family="ipv6") == []


def test_docker_unreachable_is_the_one_line(tmp_path: Path) -> None:
    # Everything else is wrong too, but it is about the host Docker runs on: Docker comes first and alone.
    found = problems(tmp_path, docker=DOCKER_DOWN, cgroup_v2=True, modules=(), watches=8192)
    assert found == [
        "Docker: the daemon is unreachable (Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
        "Is the docker daemon running?): start it (`sudo systemctl start docker`) or point DOCKER_HOST at one"
    ]


def test_no_docker_command(tmp_path: Path) -> None:
    found = problems(tmp_path, docker=None)
    assert len(found) == 1
    assert found[0].startswith("Docker: no `")
    assert "install Docker Engine" in found[0]


def test_cgroup_v2_with_kubernetes_before_1_19(tmp_path: Path) -> None:
    assert problems(tmp_path / "a", kubernetes="1.18", cgroup_v2=True) == [
        "cgroup v2 host: Kubernetes 1.18 does not run on it (needs >= 1.19, kind#2925): pick a row with Kubernetes "
        ">= 1.19, or boot with systemd.unified_cgroup_hierarchy=0"
    ]
    assert problems(tmp_path / "b", kubernetes="1.20", cgroup_v2=True) == []


def test_nat_modules_only_for_istio_init_with_legacy_iptables(tmp_path: Path) -> None:
    (line,) = problems(tmp_path / "a", istio="1.9.9", modules=("iptable_nat",))
    assert line.startswith("kernel modules ip6table_nat not loaded")
    assert "`sudo modprobe -a iptable_nat ip6table_nat`" in line
    assert problems(tmp_path / "b", istio="1.21.6", kubernetes="1.29", modules=()) == []


def test_nat_modules_built_into_the_kernel_or_only_in_proc_modules_are_there(tmp_path: Path) -> None:
    """/sys/module lists a built-in module only when it has parameters: modules.builtin and /proc/modules count."""
    assert problems(tmp_path / "a", istio="1.9.9", modules=(), builtin=("iptable_nat", "ip6table_nat")) == []
    assert problems(tmp_path / "b", istio="1.9.9", modules=(), proc_modules=("iptable_nat", "ip6table_nat")) == []


AMBIENT_22 = dict(istio="1.22.8", kubernetes="1.29", ambient=True)


def test_ambient_on_1_22_and_1_23_needs_the_tproxy_modules_and_ip_set(tmp_path: Path) -> None:
    """1.22-1.23 capture with TPROXY (xt_TPROXY, xt_socket, connmark); every ambient release needs ip_set."""
    assert problems(tmp_path / "a", modules=("iptable_nat",), **AMBIENT_22) == [  # type: ignore[arg-type]
        "kernel modules xt_TPROXY, xt_socket, xt_connmark, ip_set not loaded: Istio 1.22's ambient capture "
        "(istio-cni) uses TPROXY, the socket match and connmark, and keeps its probe addresses in an ipset: run "
        "`sudo modprobe -a xt_TPROXY xt_socket xt_connmark ip_set`"
    ]
    (line,) = problems(tmp_path / "b", istio="1.23.5", kubernetes="1.29", ambient=True, modules=("xt_TPROXY",))
    assert line.startswith("kernel modules xt_socket, xt_connmark, ip_set not loaded: Istio 1.23's ")
    assert line.endswith("run `sudo modprobe -a xt_socket xt_connmark ip_set`")


def test_ambient_from_1_24_needs_ip_set_only(tmp_path: Path) -> None:
    assert problems(tmp_path / "a", istio="1.24.0", kubernetes="1.31", ambient=True, modules=()) == [
        "kernel modules ip_set not loaded: Istio's ambient capture (istio-cni) keeps its probe addresses in an "
        "ipset: run `sudo modprobe -a ip_set`"
    ]
    assert problems(tmp_path / "b", istio="1.31.1", kubernetes="1.36", ambient=True, modules=("ip_set",)) == []


def test_ambient_modules_are_read_from_every_place_a_kernel_lists_them(tmp_path: Path) -> None:
    loaded = ("xt_TPROXY", "xt_socket")
    assert (
        problems(tmp_path / "a", modules=(), proc_modules=loaded, builtin=("xt_connmark", "ip_set"), **AMBIENT_22) == []
    )  # type: ignore[arg-type]


def test_no_ambient_modules_without_the_ambient_profile(tmp_path: Path) -> None:
    assert problems(tmp_path, istio="1.22.8", kubernetes="1.29", ambient=False, modules=()) == []


@pytest.mark.parametrize("family", ["ipv6", "dual"])
def test_ipv6_forwarding_for_an_ipv6_or_dual_stack_run(tmp_path: Path, family: str) -> None:
    assert problems(tmp_path / "a", family=family, forwarding="0") == [
        "net.ipv6.conf.all.forwarding is not 1: an IPv6 or dual-stack kind cluster needs forwarding: run "
        "`sudo sysctl -w net.ipv6.conf.all.forwarding=1`",
        "net.ipv4.ip_forward is not 1: an IPv6 or dual-stack kind cluster needs forwarding: run "
        "`sudo sysctl -w net.ipv4.ip_forward=1`",
    ]
    assert problems(tmp_path / "b", family="ipv4", forwarding="0") == []


def test_inotify_below_kind_s_documented_minimum(tmp_path: Path) -> None:
    assert problems(tmp_path, watches=8192, instances=128) == [
        "fs.inotify.max_user_watches is 8192, below kind's documented 524288 (pods fail with too many open files): "
        "run `sudo sysctl -w fs.inotify.max_user_watches=524288`",
        "fs.inotify.max_user_instances is 128, below kind's documented 512 (pods fail with too many open files): "
        "run `sudo sysctl -w fs.inotify.max_user_instances=512`",
    ]


def test_too_little_memory(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, mem_available_kb=1024 * 1024)
    assert line.startswith("1.0 GiB of memory available, a row needs about 4 GiB")


def test_preflight_option_on_this_machine_names_docker_and_exits_1(tmp_path: Path) -> None:
    """As a user would: this machine has no Docker daemon (CI and the project's machines alike)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    proc = subprocess.run(
        [
            sys.executable,
            *("-m", "pytest", "-p", "no:cacheprovider", "--pyargs", "conformance.suite"),
            *("--backend", "kind", "--istio-version", "1.10.6", "--preflight"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode == 0:
        pytest.skip("a Docker daemon answers here")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, proc.stdout
    assert lines[0] == (
        "preflight: images of the install for the sidecar profiles (istioctl's minimal profile, variant default from "
        "the install profile): docker.io/istio/pilot:1.10.6, docker.io/istio/proxyv2:1.10.6"
    )
    assert lines[1].startswith("preflight: Docker: ")
    assert proc.stderr.strip() == "Exit: --preflight: 1 problem(s)"
    assert list(tmp_path.iterdir()) == []


def test_preflight_lists_every_image_a_custom_ambient_build_must_have(tmp_path: Path) -> None:
    """Issue 20, item 9: the ambient install pulls HUB/{pilot,proxyv2,install-cni,ztunnel}:TAG-distroless."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    build = ("--istio-version", "1.24.0", "--istio-hub", "ghcr.io/you/istio", "--istio-tag", "1.24.0-fix.1")
    proc = subprocess.run(
        [
            sys.executable,
            *("-m", "pytest", "-p", "no:cacheprovider", "--pyargs", "conformance.suite"),
            *("--backend", "kind", *build, "--preflight"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    images = [line for line in proc.stdout.splitlines() if line.startswith("preflight: images of the install")]
    tag = "ghcr.io/you/istio/{}:1.24.0-fix.1"
    assert images == [
        "preflight: images of the install for the sidecar profiles (istioctl's minimal profile, variant default from "
        f"the install profile): {tag.format('pilot')}, {tag.format('proxyv2')}",
        "preflight: images of the install for ambient (the ambient profile, variant distroless from the install "
        f"profile): {tag.format('pilot')}-distroless, {tag.format('proxyv2')}-distroless, "
        f"{tag.format('install-cni')}-distroless, {tag.format('ztunnel')}-distroless",
    ]
