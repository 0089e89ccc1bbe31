"""bench_suite's side-by-side mode: REV's tree is the commit's, and a bad REV is one line (no timing here)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_suite", REPO / "benchmarks" / "bench_suite.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_unknown_rev_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"^--against no-such-rev: not a commit of "):
        _bench().extract("no-such-rev", tmp_path)


def test_rev_is_extracted_as_committed(tmp_path: Path) -> None:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    tree = _bench().extract(head.stdout.strip(), tmp_path)
    committed = subprocess.run(
        ["git", "-C", str(REPO), "show", "HEAD:benchmarks/bench_suite.py"], capture_output=True, check=True
    ).stdout
    assert (tree / "benchmarks" / "bench_suite.py").read_bytes() == committed
    assert (tree / "conformance" / "__init__.py").exists()


def test_rounds_below_one_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_suite.py"), "--against", "HEAD", "--rounds", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "--rounds: expected a count of 1 or more" in proc.stderr


def test_probes_sent_are_the_attempts_of_every_cell_list() -> None:
    report = {
        "cells": [{"observed": {"attempts": 3}}, {"observed": {"attempts": 5}}, {"observed": None}],
        "probe_cells": [{"observed": {"restarts": 2}}],
        "ztunnel_cells": [{"observed": {"attempts": 4}}],
    }
    assert _bench().probes_sent(report) == 12
    assert _bench().probes_sent({"cells": []}) == 0


def test_the_budget_is_what_the_target_leaves_after_the_rest_of_the_run() -> None:
    # This side: 6 s, of which 3 s probing 6,000 probes (2,000/s); the older one: 4 s. 1.25 x 4 = 5 s, less the
    # 3 s rest: 2 s for 6,000 probes, 3,000/s, 1.5x this side's rate.
    budget = _bench().probe_budget({"wall": 6.0, "probes": 3.0, "probes_sent": 6000}, {"wall": 4.0, "probes": 1.0})
    assert budget == {"phase": 2.0, "rate": 3000.0, "times": 1.5}
    # A rest of the run already over the target leaves no time at all.
    over = _bench().probe_budget({"wall": 9.0, "probes": 3.0, "probes_sent": 6000}, {"wall": 4.0, "probes": 1.0})
    assert over["phase"] == -1.0
    assert over["rate"] == float("inf")
