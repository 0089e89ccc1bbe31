"""bench_floor: it measures real connections both ways, checks every answer, and leaves no process behind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "bench_floor.py"


def test_a_small_measurement_prints_both_paths_and_ends_its_children() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--connections", "40", "--concurrency", "4", "--rounds", "2"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"^\| (direct|through one proxy \(relay\.py\)) \| (\d+) \((\d+)-(\d+)\) \|$", proc.stdout, re.M)
    assert [r[0] for r in rows] == ["direct", "through one proxy (relay.py)"]
    assert all(int(r[1]) > 0 for r in rows)
    left = subprocess.run(["pgrep", "-f", str(BENCH)], capture_output=True, text=True, check=False)
    assert left.stdout == ""


def test_a_count_below_one_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--concurrency", "0"], capture_output=True, text=True, check=False, timeout=30
    )
    assert proc.returncode == 2
    assert "--concurrency: expected a count of 1 or more" in proc.stderr
