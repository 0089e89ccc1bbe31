"""`mesh-inbound-conformance site REPORT.json... --out DIR`: the options, the checks of the input, the exit code.

Exit codes: 0 the site was written; 2 bad input (a file that is not a report, an --out that is not a folder),
one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conformance.results.documents import ReportError, load_report
from conformance.results.site.model import build
from conformance.results.site.pages import write_site

PROG = "mesh-inbound-conformance site"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `site` subcommand's arguments."""
    parser.add_argument("reports", nargs="+", type=Path, metavar="REPORT.json", help="conformance-report.json files")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="the folder the site is written to")


def main(args: argparse.Namespace) -> int:
    """Read every report, then write the site; a bad input stops before anything is written."""
    out: Path = args.out
    if out.exists() and not out.is_dir():
        print(f"{PROG}: --out {out}: exists and is not a folder", file=sys.stderr)
        return 2
    try:
        reports = [load_report(path) for path in args.reports]
    except ReportError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    site = build(reports)
    try:
        pages = write_site(site, out)
    except OSError as err:
        print(f"{PROG}: --out {out}: cannot write the site ({err.strerror or err})", file=sys.stderr)
        return 2
    print(f"{len(pages)} pages ({len(site.runs)} runs, {len(site.rows)} rows) in {out}/index.html")
    return 0
