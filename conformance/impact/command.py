"""`mesh-inbound-conformance impact`: options, the run, the output and the exit code.

Exit codes: 0 nothing found; 1 findings; 2 bad input (one line on stderr); 3 some pods could not be checked
(listed with the reason; this wins over 1, because the answer is incomplete).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from conformance.impact.output import FORMATS, istioctl_lines, render
from conformance.impact.sources import BadInput, ImpactReport, ImpactSource, check, stderr_progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `impact` subcommand's options."""
    parser.add_argument(
        "--backend",
        choices=("kubeconfig", "emulated"),
        default="kubeconfig",
        help="kubeconfig: an existing cluster; emulated: bring the suite's world up, check it, remove it",
    )
    parser.add_argument("--kubeconfig", help="path of the kubeconfig (default: KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NAMESPACE",
        help="repeatable; default: every namespace",
    )
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace (the default)")
    parser.add_argument("-l", "--selector", help="label selector for pods, as kubectl's -l")
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument(
        "--allow-debug-containers",
        action="store_true",
        help="add an ephemeral container to pods where no container can print a file",
    )
    parser.add_argument("--debug-image", help="image of that ephemeral container (it must have cat)")
    parser.add_argument("--parallel", type=int, default=8, help="pods read at the same time (default 8)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per API call or read (default 30)")
    parser.add_argument(
        "--ip-family",
        choices=("ipv4", "ipv6", "dual"),
        default="ipv4",
        help="emulated backend only (dual: every pod has both families, its ports judged per family)",
    )


def _validate(args: argparse.Namespace) -> None:
    if args.parallel < 1:
        raise BadInput(f"--parallel {args.parallel}: expected a number of pods >= 1")
    if args.allow_debug_containers and not args.debug_image:
        raise BadInput("--allow-debug-containers needs --debug-image IMAGE (an image with cat)")
    if args.all_namespaces and args.namespaces:
        raise BadInput("-A/--all-namespaces and -n/--namespace exclude each other")
    if args.backend == "emulated" and (args.kubeconfig or args.context):
        raise BadInput("--kubeconfig/--context apply to --backend kubeconfig, not emulated")


def _emit(report: ImpactReport, fmt: str) -> int:
    sys.stdout.write(render(report, fmt))
    if fmt == "istioctl":
        for result in report.unchecked:
            print(f"impact: not checked: {result.pod.key}: {result.unchecked}", file=sys.stderr)
    return report.exit_code


def run_with(source: ImpactSource, args: argparse.Namespace) -> ImpactReport:
    """Inventory then check, with progress on stderr."""
    stderr_progress(f"listing pods and Services ({source.description})")
    inventory = source.inventory(args.namespaces, args.selector)
    return check(source, inventory, args.selector, args.parallel, stderr_progress)


def _run_emulated(args: argparse.Namespace) -> ImpactReport:
    from conformance.backends.base import BackendError
    from conformance.backends.emulated.cluster import EmulatedCluster
    from conformance.impact.emulated_source import EmulatedSource
    from conformance.spec.capabilities import emulated_capabilities
    from conformance.spec.dimensions import IpFamily
    from conformance.world.layout import World

    # The suite's whole world for the emulated mesh, the enrolled (ambient) namespace included.
    world = World.for_mesh(IpFamily(args.ip_family), emulated_capabilities())
    manifests: list[dict[str, Any]] = [dict(m) for m in world.manifests()]
    cluster = EmulatedCluster(args.ip_family)
    stderr_progress(f"bringing the emulated world up ({args.ip_family})")
    try:
        cluster.up(manifests)
        return run_with(EmulatedSource(cluster, manifests), args)
    except BackendError as err:
        raise BadInput(f"emulated backend: {err}") from None
    finally:
        cluster.down()
        stderr_progress("emulated world removed")


def main(args: argparse.Namespace) -> int:
    """Run `impact`; one line and exit 2 on bad input."""
    try:
        _validate(args)
        if args.backend == "emulated":
            report = _run_emulated(args)
        else:
            from conformance.impact.kube_source import KubeSource

            source = KubeSource(
                args.kubeconfig,
                args.context,
                allow_debug_containers=args.allow_debug_containers,
                debug_image=args.debug_image,
                parallel=args.parallel,
                timeout=args.timeout,
            )
            report = run_with(source, args)
    except BadInput as err:
        print(f"mesh-inbound-conformance impact: {err}", file=sys.stderr)
        return 2
    return _emit(report, args.format)


__all__ = ["add_arguments", "istioctl_lines", "main"]
