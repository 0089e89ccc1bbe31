"""A full emulated conformance run, every profile, IPv4 then IPv6, timed from pytest start to report.

`python benchmarks/bench_suite.py` (root needed). Each family runs the suite as tox does, in a fresh
pytest process; the wall time is measured around the process, and the report's own timings say where the
time went (cluster setup, probing, profile switches, teardown; the rest is pytest start-up, collection and
report writing). Target: <= 5 s per family on 2 cores, health probes included.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_family(family: str, workdir: Path) -> dict[str, float]:
    """Run the suite for one family; wall time plus the report's timings, in seconds."""
    reports = workdir / family
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--pyargs",
        "conformance.suite",
        "--ip-family",
        family,
        "--report-dir",
        str(reports),
        "--artifacts-dir",
        str(workdir / "artifacts"),
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=workdir)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-2000:])
        raise SystemExit(f"the {family} run failed (exit {proc.returncode})")
    report = json.loads((reports / "conformance-report.json").read_text())
    timings = {k: float(v) for k, v in report["timings_s"].items()}
    cells = len(report["cells"]) + len(report.get("probe_cells", []))
    return {"wall": wall, "cells": cells, **timings}


def main() -> int:
    """Run both families and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--families", default="ipv4,ipv6")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="mic-bench-") as tmp:
        for family in args.families.split(","):
            rows[family] = run_family(family, Path(tmp))
    print("## Full emulated run, every profile (one run per family)\n")
    print(
        "| family | wall (pytest start to report) | cells (traffic + probe) | cluster setup | probes | "
        "health probes | profile switches | teardown | pytest start-up, collection, reports | target |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for family, t in rows.items():
        keys = ("setup", "probes", "health_probes", "profile_switches", "teardown")
        accounted = sum(t.get(k, 0.0) for k in keys)
        parts = [t.get(k, 0.0) for k in keys]
        cells = " | ".join(f"{v:.2f} s" for v in parts)
        print(f"| {family} | {t['wall']:.2f} s | {t['cells']:.0f} | {cells} | {t['wall'] - accounted:.2f} s | <= 5 s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
