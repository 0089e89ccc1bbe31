"""Command line: `python -m conformance spec|capabilities|impact|compare|site ...`.

The suite itself runs under pytest (`tox -e conformance`); this entry point prints what the suite expects,
so a reader can see the oracle without running anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import NoReturn

from conformance.impact import command as impact_command
from conformance.results import compare_command
from conformance.results.site import command as site_command
from conformance.spec.capabilities import istio_capabilities
from conformance.spec.cells import all_cells
from conformance.spec.dimensions import IpFamily, Profile
from conformance.spec.render import spec_json, spec_markdown
from conformance.spec.semantics import traffic_behaviour


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus an error; a user mistake here gets one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="python -m conformance", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    spec = sub.add_parser("spec", help="print the expected semantics of every cell")
    spec.add_argument("--format", choices=("json", "markdown"), default="markdown")
    spec.add_argument("--profile", action="append", choices=[p.value for p in Profile], help="repeatable")
    spec.add_argument("--ip-family", action="append", choices=[f.value for f in IpFamily], help="repeatable")
    caps = sub.add_parser("capabilities", help="print what an Istio version can do, as the suite sees it")
    caps.add_argument("--istio-version", required=True)
    caps.add_argument(
        "--ip-family",
        choices=[f.value for f in IpFamily],
        default=IpFamily.IPV4.value,
        help="the family of the run (default ipv4); ambient runs on IPv6 from 1.23.0; dual: dual-stack pods, 1.17.0+",
    )
    caps.add_argument("--istioctl-version", help="when precheck runs with another istioctl (upgrade check)")
    caps.add_argument(
        "--proxy-image",
        help="the istio-proxy image the run deploys (HUB/proxyv2:TAG); istioctl 1.15.1-1.20 reads its tag",
    )
    impact = sub.add_parser("impact", help="find apps the inbound change or the move to ambient breaks, in a cluster")
    impact_command.add_arguments(impact)
    compare = sub.add_parser("compare", help="what changed between two runs' reports (exit 1 on a regression)")
    compare_command.add_arguments(compare)
    site_command.add_arguments(sub.add_parser("site", help="publish reports as a static site (matrix, runs, spec)"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; exit 2 with one line on bad input."""
    args = _parser().parse_args(argv)
    if args.command == "spec":
        profiles = [Profile(p) for p in args.profile] if args.profile else list(Profile)
        families = [IpFamily(f) for f in args.ip_family] if args.ip_family else list(IpFamily)
        if args.format == "json":
            sys.stdout.write(spec_json(all_cells(profiles, families)))
        else:
            sys.stdout.write(spec_markdown(profiles, families))
        return 0
    if args.command == "impact":
        return impact_command.main(args)
    if args.command == "compare":
        return compare_command.main(args)
    if args.command == "site":
        return site_command.main(args)
    from conformance.backends.kind.matrix import row_for
    from conformance.backends.kind.support import is_release, load_support

    try:
        # An unreleased build (1.32-dev) is judged by the newest known release of its minor.
        judged = args.istio_version if is_release(args.istio_version) else None
        judged = judged or load_support().newest_known_release(args.istio_version)
        mesh = istio_capabilities(judged, args.istioctl_version, args.proxy_image, IpFamily(args.ip_family))
    except ValueError as err:
        print(f"python -m conformance capabilities: {err}", file=sys.stderr)
        return 2
    cluster: dict[str, str | None]
    try:
        row = row_for(args.istio_version)
        cluster = {"kubernetes": row.kubernetes, "kind": row.kind, "node_image": row.node_image, "row": row.name}
    except ValueError as err:
        # The capabilities still hold; only the kind backend cannot pick a cluster for this version.
        cluster = {"kubernetes": None, "kind": None, "node_image": None, "problem": str(err)}
    behaviour = traffic_behaviour(args.istio_version)
    doc = mesh.to_json() | {
        "version": args.istio_version,
        "capabilities_of": judged,
        "ip_family": args.ip_family,
        "profiles": [p.value for p in mesh.profiles()],
        "missing": {c.value: why for c, why in mesh.reasons.items()},
        # Where releases differ in the spec: how this release's cells are judged (semantics.traffic_behaviour).
        "traffic_behaviour": {
            "instance_without_ipv4": behaviour.instance_without_ipv4.value,
            "empty_endpoint": behaviour.empty_endpoint.value,
            # What `[::1]:P` dials on a dual-stack pod (#47440): printed for dual runs only.
            **({"dual_localhost_v6": behaviour.dual_localhost_v6.value} if args.ip_family == IpFamily.DUAL else {}),
        },
        "kind_cluster": cluster,
    }
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    return 0
