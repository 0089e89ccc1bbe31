"""`mesh-inbound-conformance compare BASE.json CANDIDATE.json [--format text|markdown|json]`: arguments, exit status.

Exit 0 no regression, 1 regressions (cells or profiles: conformance.results.compare), 2 bad input: a file that is
not a report, of a version this build does not read, or unreadable (one line, ReportError), or a wrong option.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conformance.results.compare import check_entries, compare
from conformance.results.compare_render import FORMATS, render
from conformance.results.documents import ReportError, load_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `compare` subcommand's arguments."""
    parser.add_argument("base", type=Path, metavar="BASE.json", help="the report compared against (upstream)")
    parser.add_argument("candidate", type=Path, metavar="CANDIDATE.json", help="the report of the run to judge")
    parser.add_argument("--format", choices=FORMATS, default="text", help="default text")


def main(args: argparse.Namespace) -> int:
    """Run `compare`: the comparison on stdout; exit 0 no regression, 1 regressions, 2 a file that is no report."""
    try:
        result = compare(check_entries(load_report(args.base)), check_entries(load_report(args.candidate)))
    except ReportError as err:
        print(f"mesh-inbound-conformance compare: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(render(result, args.format))
    return result.exit_status
