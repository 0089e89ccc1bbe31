"""Reading saved reports back: a bad file is one line (ReportError), a good one is indexed by cell id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance.report.json_document import REPORT_FORMAT, REPORT_VERSION
from conformance.results.documents import ReportError, load_report


def _write(tmp_path: Path, document: object, name: str = "r.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def _report(**extra: object) -> dict[str, object]:
    cell = {"id": "passthrough/none/wildcard/declared/http/pod_ip/plain/ipv4", "verdict": "pass"}
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "ip_family": "ipv4",
        "mesh": {"name": "istio", "version": "1.21.6", "build": ""},
        "profiles": [{"name": "passthrough", "result": "success"}],
        "cells": [cell],
        "probe_cells": [],
        **extra,
    }


def test_a_report_is_indexed_by_cell_id(tmp_path: Path) -> None:
    saved = load_report(_write(tmp_path, _report()))
    assert list(saved.cells) == ["passthrough/none/wildcard/declared/http/pod_ip/plain/ipv4"]
    assert saved.profiles["passthrough"]["result"] == "success"
    assert (saved.family, saved.label) == ("ipv4", "istio 1.21.6")


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"format": "something/else", "version": 4}), "not a conformance report"),
        (json.dumps([1, 2]), "not a conformance report"),
        (json.dumps({**_report(), "version": 99}), "report version 99 is not one this build reads"),
        (json.dumps({**_report(), "cells": None}), "has no 'cells' list"),
    ],
)
def test_a_bad_file_is_one_line(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ReportError) as err:
        load_report(path)
    message = str(err.value)
    assert says in message
    assert str(path) in message
    assert "\n" not in message


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="cannot read it"):
        load_report(tmp_path / "absent.json")
