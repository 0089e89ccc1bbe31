"""A fake host for the kind backend's preflight: /proc, /sys/fs/cgroup, /sys/module, /lib/modules and a `docker`.

Defaults describe a machine that is ready (Docker answers, cgroup v1, the nat and ambient modules loaded, forwarding
on, inotify at kind's documented minimum, plenty of memory); each keyword makes one thing wrong. A module can also
be listed in /proc/modules only (`proc_modules`) or be built into the kernel (`builtin`, modules.builtin).
"""

from __future__ import annotations

from pathlib import Path

from conformance.backends.kind.preflight import Host

KERNEL_RELEASE = "6.8.0-1017-azure"  # as on a GitHub ubuntu-24.04 runner (its form; the number is an example)
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
    modules: tuple[str, ...] = ("iptable_nat", "ip6table_nat", "xt_TPROXY", "xt_socket", "xt_connmark", "ip_set"),
    proc_modules: tuple[str, ...] = (),
    builtin: tuple[str, ...] = (),
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
    # /proc/modules: name size refcount users state address
    (proc / "modules").write_text("".join(f"{m} 16384 0 - Live 0x0000000000000000\n" for m in proc_modules))
    lib_modules = root / "lib-modules"
    (lib_modules / KERNEL_RELEASE).mkdir(parents=True, exist_ok=True)
    (lib_modules / KERNEL_RELEASE / "modules.builtin").write_text(
        "".join(f"kernel/net/netfilter/{m}.ko\n" for m in builtin)
    )
    docker_bin = bin_dir / "docker"
    if docker is not None:
        docker_bin.write_text(docker)
        docker_bin.chmod(0o755)
    return Host(
        proc=proc,
        cgroup=cgroup,
        sys_module=sys_module,
        lib_modules=lib_modules,
        kernel_release=KERNEL_RELEASE,
        docker=str(docker_bin),
        disk=root,
    )
