"""What a runner or laptop lacks for `--backend kind`, found before anything is created.

Each problem is one line naming what is missing and the command that fixes it. `--preflight` runs only this and
exits 0 or 1; `--backend kind` runs it before creating a cluster. The host is read through roots that tests point
at fake trees (`proc`: /proc, `cgroup`: /sys/fs/cgroup, `sys_module`: /sys/module, `lib_modules`: /lib/modules) and
a `docker` command that tests replace with a fake. Facts: shared/reference/tools-versions-ci.md ("Versions",
"Hazards on real runners", and its last section for ambient's kernel modules).

A kind node shares the host's kernel: the iptables rules istio-init and istio-cni write in a pod need the host's
netfilter modules. A module counts as there when it is loaded (/proc/modules, /sys/module/NAME) or built into the
kernel (/lib/modules/$(uname -r)/modules.builtin).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import Version

from conformance.spec.capabilities import parse_version

# kind's known issues, "Pod errors due to too many open files": fs.inotify.max_user_watches = 524288 and
# fs.inotify.max_user_instances = 512 (https://kind.sigs.k8s.io/docs/user/known-issues/).
INOTIFY_MINIMUM = {"max_user_watches": 524288, "max_user_instances": 512}
# Istio 1.9/1.10 proxyv2 is FROM ubuntu:bionic: istio-init runs legacy iptables 1.6.1, which needs the host's nat
# tables (istio#23009, #42262, #57380).
NAT_MODULES = ("iptable_nat", "ip6table_nat")
LEGACY_IPTABLES_BEFORE = Version("1.11")
# Ambient: istio-cni's in-pod rules capture with TPROXY on 1.22-1.23 (the TPROXY target, the socket match, connmark;
# REDIRECT from 1.24, #52622), and every ambient release keeps its kubelet-probe addresses in an ipset.
TPROXY_MODULES = ("xt_TPROXY", "xt_socket", "xt_connmark")
TPROXY_MINORS = (Version("1.22"), Version("1.23"))
AMBIENT_MODULES = ("ip_set",)
# Kubernetes < 1.19 does not run on cgroup v2 hosts (kind#2925).
CGROUP_V2_SINCE = Version("1.19")
# Estimates for one row (one kind node, istiod with lowered requests, eight echo pods with sidecars, the node image
# and Istio's images); not measured on a runner.
MEMORY_MINIMUM_BYTES = 4 * 1024**3
DISK_MINIMUM_BYTES = 6 * 1000**3
DOCKER_TIMEOUT = 20.0


@dataclass
class Host:
    """Where the host is read from (the real one by default)."""

    proc: Path = Path("/proc")
    cgroup: Path = Path("/sys/fs/cgroup")
    sys_module: Path = Path("/sys/module")
    lib_modules: Path = Path("/lib/modules")
    kernel_release: str = field(default_factory=lambda: os.uname().release)
    docker: str = "docker"
    disk: Path = field(
        default_factory=lambda: Path("/var/lib/docker") if Path("/var/lib/docker").is_dir() else Path("/")
    )


def check(host: Host, *, kubernetes: str, istio_version: str, family: str, ambient: bool = False) -> list[str]:
    """One line per problem, each with its fix (`ambient`: the run installs the ambient profile).

    An unreachable Docker is the only line: the other checks are about the host Docker runs on.
    """
    docker = _docker(host)
    if docker:
        return [docker]
    problems: list[str] = []
    if (host.cgroup / "cgroup.controllers").is_file() and Version(kubernetes) < CGROUP_V2_SINCE:
        problems.append(
            f"cgroup v2 host: Kubernetes {kubernetes} does not run on it (needs >= 1.19, kind#2925): pick a row "
            "with Kubernetes >= 1.19, or boot with systemd.unified_cgroup_hierarchy=0"
        )
    istio = parse_version(istio_version)
    minor = Version(f"{istio.major}.{istio.minor}")
    present = kernel_modules(host)
    if minor < LEGACY_IPTABLES_BEFORE:
        missing = [m for m in NAT_MODULES if m not in present]
        if missing:
            problems.append(
                f"kernel modules {', '.join(missing)} not loaded: Istio {istio_version}'s istio-init (legacy "
                "iptables) fails with `unable to initialize table 'nat'`: run `sudo modprobe -a iptable_nat "
                "ip6table_nat`"
            )
    if ambient:
        needed = (*TPROXY_MODULES, *AMBIENT_MODULES) if minor in TPROXY_MINORS else AMBIENT_MODULES
        missing = [m for m in needed if m not in present]
        if missing:
            why = (
                f"Istio {istio.major}.{istio.minor}'s ambient capture (istio-cni) uses TPROXY, the socket match and "
                "connmark, and keeps its probe addresses in an ipset"
                if minor in TPROXY_MINORS
                else "Istio's ambient capture (istio-cni) keeps its probe addresses in an ipset"
            )
            problems.append(
                f"kernel modules {', '.join(missing)} not loaded: {why}: run `sudo modprobe -a {' '.join(missing)}`"
            )
    if family in ("ipv6", "dual"):
        for key, name in (
            ("net/ipv6/conf/all/forwarding", "net.ipv6.conf.all.forwarding"),
            ("net/ipv4/ip_forward", "net.ipv4.ip_forward"),
        ):
            if _read(host.proc / "sys" / key) != "1":
                problems.append(
                    f"{name} is not 1: an IPv6 or dual-stack kind cluster needs forwarding: run "
                    f"`sudo sysctl -w {name}=1`"
                )
    for name, minimum in INOTIFY_MINIMUM.items():
        value = _read(host.proc / "sys" / "fs" / "inotify" / name)
        if value is not None and value.isdigit() and int(value) < minimum:
            problems.append(
                f"fs.inotify.{name} is {value}, below kind's documented {minimum} (pods fail with too many open "
                f"files): run `sudo sysctl -w fs.inotify.{name}={minimum}`"
            )
    available = _mem_available(host.proc / "meminfo")
    if available is not None and available < MEMORY_MINIMUM_BYTES:
        problems.append(
            f"{available / 1024**3:.1f} GiB of memory available, a row needs about "
            f"{MEMORY_MINIMUM_BYTES / 1024**3:.0f} GiB: stop other workloads or use a larger machine"
        )
    try:
        free = shutil.disk_usage(host.disk).free
    except OSError:
        free = None
    if free is not None and free < DISK_MINIMUM_BYTES:
        problems.append(
            f"{free / 1000**3:.1f} GB free on {host.disk}, a row needs about {DISK_MINIMUM_BYTES / 1000**3:.0f} GB: "
            "run `docker system prune` or free space"
        )
    return problems


def _docker(host: Host) -> str | None:
    """None when the Docker daemon answers, else the one line saying why not and what to do."""
    if shutil.which(host.docker) is None:
        return f"Docker: no `{host.docker}` command on PATH: install Docker Engine (https://docs.docker.com/engine/install/)"
    try:
        result = subprocess.run(
            [host.docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=DOCKER_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        why = " ".join(str(exc).split())
        return f"Docker: `docker info` did not answer ({why}): start the daemon (`sudo systemctl start docker`)"
    if result.returncode != 0 or not result.stdout.strip():
        why = next((line.strip() for line in result.stderr.splitlines() if line.strip()), f"exit {result.returncode}")
        return (
            f"Docker: the daemon is unreachable ({why}): start it (`sudo systemctl start docker`) or point DOCKER_HOST "
            "at one"
        )
    return None


def kernel_modules(host: Host) -> set[str]:
    """The modules the host's kernel has: loaded (/proc/modules, /sys/module) or built in (modules.builtin)."""
    names: set[str] = set()
    for line in (_read(host.proc / "modules") or "").splitlines():
        if line.split():
            names.add(line.split()[0])
    with contextlib.suppress(OSError):
        names |= {entry.name for entry in host.sys_module.iterdir()}
    builtin = _read(host.lib_modules / host.kernel_release / "modules.builtin") or ""
    for line in builtin.splitlines():
        # kernel/net/netfilter/xt_TPROXY.ko: the kernel names a module after its file, with '-' read as '_'.
        name = line.strip().rsplit("/", 1)[-1]
        if name.endswith(".ko"):
            names.add(name[: -len(".ko")].replace("-", "_"))
    return names


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _mem_available(meminfo: Path) -> int | None:
    text = _read(meminfo)
    for line in (text or "").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None
