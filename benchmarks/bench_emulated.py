"""Speed of the emulated backend, measured in one run (root needed): `python benchmarks/bench_emulated.py`.

1. Pod lifecycle: create a meshed pod (namespace, veth, addresses, capture rules, app and sidecar
   processes, readiness) and delete it again. Target: <= 150 ms.
2. Probe engine: probes per second through a sidecar (plain client -> meshed server, HTTP, in-process
   sockets created inside the client's namespace, one event loop). Target: >= 1,000/s.
3. The naive approach in the same run: one `ip netns exec ... echo.py probe` subprocess per probe.
   Reported as the ratio engine / naive. Target: >= 20x.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from conformance.backends.base import ProbeRequest
from conformance.backends.emulated import kube
from conformance.backends.emulated.cluster import EmulatedCluster
from conformance.spec.dimensions import Bind, IpFamily, PortKind, Protocol
from conformance.world.layout import World
from conformance.world.namespaces import NS_BASELINE, NS_MESH
from conformance.world.pods import PodRef
from conformance.world.ports import port_for
from conformance.world.resources import echo_program


def pod_lifecycle(cluster: EmulatedCluster, world: World, rounds: int) -> list[float]:
    """Milliseconds to create and delete one meshed echo pod with its sidecar."""
    objects = kube.read([*world.manifests()[:2], world.deployment(PodRef(NS_MESH, "bench"), world.server_ports)])
    template = objects.pods[0]
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        pod = cluster.add_pod(template)
        cluster.remove_pod(pod.ref)
        times.append((time.perf_counter() - start) * 1000)
    return times


def engine_rate(cluster: EmulatedCluster, address: str, port: int, total: int, batch: int) -> tuple[float, int]:
    """Probes per second through the server's sidecar, and how many were `ok`."""
    source = PodRef(NS_BASELINE, "client")
    ok = 0
    start = time.perf_counter()
    for offset in range(0, total, batch):
        requests = [ProbeRequest(source, "http", address, port, f"bench-{offset + i}") for i in range(batch)]
        ok += sum(r["outcome"] == "ok" for r in cluster.probe(requests, 5.0))
    return total / (time.perf_counter() - start), ok


def naive_rate(cluster: EmulatedCluster, address: str, port: int, total: int) -> tuple[float, int]:
    """Probes per second with one `ip netns exec` subprocess per probe."""
    ns = cluster.pods[PodRef(NS_BASELINE, "client")].netns
    host = f"[{address}]" if ":" in address else address
    ok = 0
    start = time.perf_counter()
    for i in range(total):
        out = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                "-I",
                "-S",
                str(echo_program()),
                "probe",
                f"http://{host}:{port}#naive-{i}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        ok += json.loads(out)["results"][0]["outcome"] == "ok"
    return total / (time.perf_counter() - start), ok


def main() -> int:
    """Run the three measurements and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ip-family", default="ipv4", choices=["ipv4", "ipv6"])
    parser.add_argument("--lifecycle-rounds", type=int, default=20)
    parser.add_argument("--probes", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=400)
    parser.add_argument("--naive-probes", type=int, default=100)
    args = parser.parse_args()

    world = World(IpFamily(args.ip_family))
    cluster = EmulatedCluster(args.ip_family)
    try:
        start = time.perf_counter()
        cluster.up(world.manifests())
        up = time.perf_counter() - start
        server = PodRef(NS_MESH, "echo-none")
        address = cluster.pod_ip(server)
        port = port_for(Bind.WILDCARD, Protocol.HTTP, PortKind.DECLARED).number
        lifecycle = pod_lifecycle(cluster, world, args.lifecycle_rounds)
        engine_rate(cluster, address, port, args.batch, args.batch)  # warm-up
        engine, engine_ok = engine_rate(cluster, address, port, args.probes, args.batch)
        naive, naive_ok = naive_rate(cluster, address, port, args.naive_probes)
    finally:
        cluster.down()
    print(f"## Emulated backend ({args.ip_family}, one run)\n")
    print("| measurement | result | target |")
    print("|---|---|---|")
    print(f"| cluster up (node + 7 pods, 5 sidecars) | {up * 1000:.0f} ms | - |")
    print(
        f"| pod create + delete, with sidecar (median of {len(lifecycle)}) | {statistics.median(lifecycle):.0f} ms "
        f"(min {min(lifecycle):.0f}, max {max(lifecycle):.0f}) | <= 150 ms |"
    )
    print(f"| probe engine through a sidecar | {engine:,.0f} probes/s ({engine_ok}/{args.probes} ok) | >= 1,000/s |")
    print(f"| naive: `ip netns exec` per probe | {naive:,.1f} probes/s ({naive_ok}/{args.naive_probes} ok) | - |")
    print(f"| ratio engine / naive | {engine / naive:,.0f}x | >= 20x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
