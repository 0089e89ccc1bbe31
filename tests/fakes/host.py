"""A fake host for the kind backend's preflight: /proc, /sys/fs/cgroup and /sys/module trees and a `docker`.

Defaults describe a machine that is ready (Docker answers, cgroup v1, nat modules loaded, forwarding on, inotify at
kind's documented minimum, plenty of memory); each keyword makes one thing wrong.
"""

from __future__ import annotations

from pathlib import Path

from conformance.backends.kind.preflight import Host

DOCKER_UP = '#!/bin/sh\n[ "$1" = info ] && echo 28.0.4\n'
DOCKER_DOWN = (
    "#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
    "Is the docker daemon running?' >&2\nexit 1\n"
)


def fake_host(
    root: Path,
    *,
    docker: str | None = DOCKER_UP,
    cgroup_v2: bool = False,
    modules: tuple[str, ...] = ("iptable_nat", "ip6table_nat"),
    forwarding: str = "1",
    watches: int = 524288,
    instances: int = 512,
    mem_available_kb: int = 16 * 1024 * 1024,
) -> Host:
    """Write the trees under `root` and return the Host reading them."""
    proc, cgroup, sys_module, bin_dir = root / "proc", root / "cgroup", root / "module", root / "bin"
    for directory in (proc / "sys" / "fs" / "inotify", proc / "sys" / "net" / "ipv6" / "conf" / "all", cgroup):
        directory.mkdir(parents=True, exist_ok=True)
    (proc / "sys" / "net" / "ipv4").mkdir(parents=True, exist_ok=True)
    bin_dir.mkdir(parents=True, exist_ok=True)
    sys_module.mkdir(parents=True, exist_ok=True)
    (proc / "sys" / "fs" / "inotify" / "max_user_watches").write_text(f"{watches}\n")
    (proc / "sys" / "fs" / "inotify" / "max_user_instances").write_text(f"{instances}\n")
    (proc / "sys" / "net" / "ipv6" / "conf" / "all" / "forwarding").write_text(f"{forwarding}\n")
    (proc / "sys" / "net" / "ipv4" / "ip_forward").write_text(f"{forwarding}\n")
    (proc / "meminfo").write_text(f"MemTotal:       {mem_available_kb * 2} kB\nMemAvailable:   {mem_available_kb} kB\n")
    if cgroup_v2:
        (cgroup / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    for module in modules:
        (sys_module / module).mkdir(exist_ok=True)
    docker_bin = bin_dir / "docker"
    if docker is not None:
        docker_bin.write_text(docker)
        docker_bin.chmod(0o755)
    return Host(proc=proc, cgroup=cgroup, sys_module=sys_module, docker=str(docker_bin), disk=root)
