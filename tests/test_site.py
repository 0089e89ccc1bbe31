"""The `site` command without a browser: rows and their order, the matrix, history, tables, links, bad input.

tests/test_site_browser.py opens the same pages in headless Chromium; these check the builder fast.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from site_reports import unpack

from conformance.cli import main
from conformance.results.documents import SavedReport, load_report
from conformance.results.site.model import Row, build, sorted_rows
from conformance.results.site.pages import anchor, write_site
from conformance.results.site.tables import rerun_command, tables
from conformance.spec.render import spec_document

REPO = Path(__file__).resolve().parents[1]


class Page(HTMLParser):
    """The parts of a page the checks read: links, ids, tables' captions and header scopes, scripts, styles."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.links: list[str] = []
        self.sources: list[str] = []
        self.ids: set[str] = set()
        self.tables = 0
        self.captions = 0
        self.th_without_scope = 0
        self.meta: list[dict[str, str | None]] = []
        self.tags: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "a" and a.get("href") is not None:
            self.links.append(str(a["href"]))
        if tag in ("link", "img", "script", "iframe") and (a.get("href") or a.get("src")):
            self.sources.append(str(a.get("href") or a.get("src")))
        self.tables += tag == "table"
        self.captions += tag == "caption"
        self.th_without_scope += tag == "th" and "scope" not in a
        if tag == "meta":
            self.meta.append(a)


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return unpack(tmp_path_factory.mktemp("reports"))


@pytest.fixture(scope="module")
def site_dir(samples: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    assert main(["site", *map(str, samples.values()), "--out", str(out)]) == 0
    return out


def _report(document: dict[str, Any], name: str = "r.json") -> SavedReport:
    return SavedReport(Path(name), document)


def _doc(samples: dict[str, Path], name: str) -> dict[str, Any]:
    return json.loads(samples[name].read_text())


def test_rows_are_builds_newest_release_first_and_history_marks_the_regression(samples: dict[str, Path]) -> None:
    site = build([load_report(p) for p in samples.values()])
    assert [r.label for r in site.rows] == [
        "istio 1.24.2 (release)",
        "istio 1.24.2 (custom build)",
        "istio 1.23.4 (release)",
    ]
    assert site.columns == [(f, p) for f in ("ipv4", "ipv6") for p in ("baseline", "legacy", "passthrough", "ambient")]
    release, custom, old = site.rows
    assert sorted(release.runs) == ["ipv4", "ipv6"]
    assert sorted(custom.runs) == ["ipv4"]
    # The custom build's two nights: oldest first; the latest fails legacy and passthrough, which passed before.
    before, latest = custom.runs["ipv4"]
    assert before.started < latest.started
    assert custom.latest("ipv4") is latest
    assert {p: o.result for p, o in latest.outcomes.items()} == {
        "baseline": "success",
        "legacy": "failure",
        "passthrough": "failure",
        "ambient": "success",
    }
    assert {p for p, o in latest.outcomes.items() if o.regressed_since} == {"legacy", "passthrough"}
    assert latest.outcomes["legacy"].regressed_since == before.when == "2026-12-04 18:18 UTC"
    assert custom.regressed
    assert not release.regressed
    assert not old.regressed
    # Counts come from the profile statistics: cells and probe cells.
    stats = latest.report.profiles["passthrough"]["statistics"]
    outcome = latest.outcomes["passthrough"]
    assert outcome.failed == stats["cells_failed"] + stats["probe_cells_failed"] == 183
    assert outcome.passed == stats["cells_passed"] + stats["probe_cells"] - stats["probe_cells_failed"] == 357
    assert old.latest("ipv4") is not None
    assert old.latest("ipv4").outcomes["legacy"].result == "interrupted"  # type: ignore[union-attr]


def test_the_same_report_given_twice_is_one_run(samples: dict[str, Path]) -> None:
    report = load_report(samples["release-ipv4"])
    site = build([report, load_report(samples["release-ipv4"])])
    assert len(site.runs) == 1


def test_versions_sort_as_versions_custom_builds_after_their_release_the_emulated_mesh_last(
    samples: dict[str, Path],
) -> None:
    base = _doc(samples, "release-ipv4")

    def row(version: str, build: str = "release", name: str = "istio", tag: str = "") -> Row:
        doc = copy.deepcopy(base)
        doc["mesh"] = {"name": name, "version": version, "build": build, "hub": "h" if tag else "", "tag": tag}
        return build_rows([_report(doc)])[0]

    def build_rows(reports: list[SavedReport]) -> list[Row]:
        return build(reports).rows

    rows = [
        row("reference", "reference sidecar", "emulated"),
        row("1.9.9"),
        row("1.24.2", "custom build", tag="acme"),
        row("1.10.6"),
        row("1.25.0-alpha.1"),
        row("1.24.2"),
        row("1.25-dev", "custom build", tag="dev"),
    ]
    assert [r.label for r in sorted_rows(rows)] == [
        "istio 1.25.0-alpha.1 (release)",
        "istio 1.25-dev (custom build)",
        "istio 1.24.2 (release)",
        "istio 1.24.2 (custom build)",
        "istio 1.10.6 (release)",
        "istio 1.9.9 (release)",
        "emulated reference (reference sidecar)",
    ]


def test_tables_take_the_keys_the_cells_have_not_todays_enums() -> None:
    cells = [
        {
            "id": f"passthrough/x/{bind}/{mode}",
            "profile": "passthrough",
            "bind": bind,
            "ip_family": "ipv4",
            "port": "declared",
            "interception": mode,  # a key a newer report adds
            "expected": {"reachable": True, "source": "inbound_passthrough", "failure": [], "because": ["r"]},
            "observed": {"outcome": "refused", "outcome_text": "refused", "converged": False},
            "verdict": "fail" if bind == "all_interfaces" else "pass",
        }
        for bind in ("wildcard", "all_interfaces", "loopback")
        for mode in ("redirect", "tproxy")
    ]
    (table,) = tables(cells, "ipv4")
    assert table.row_keys == ("interception",)  # `port` is `declared` throughout: no column
    assert table.binds == ("loopback", "wildcard", "all_interfaces")  # known first, in the spec's order
    assert [labels for labels, _ in table.rows] == [("redirect",), ("tproxy",)]
    first = table.rows[0][1]
    assert [c.expected if c else None for c in first] == ["✓ 127.0.0.6"] * 3
    assert [c.failed if c else None for c in first] == [False, False, True]
    assert first[2] is not None
    assert first[2].observed == "✗ refused (unstable)"


def test_spec_cells_render_in_the_same_tables() -> None:
    document = spec_document([])
    assert document["rules"]
    from conformance.spec.cells import all_cells
    from conformance.spec.dimensions import IpFamily, Profile

    cells = spec_document(all_cells([Profile.LEGACY], [IpFamily.IPV6]))["cells"]
    assert isinstance(cells, list)
    (table,) = tables(cells, "ipv6")
    # Every legacy cell is REDIRECT: `interception` has no column; `capture` has (the servers left out of capture).
    assert table.row_keys == ("default_endpoint", "port", "protocol", "path", "client", "capture")
    assert sum(1 for _, row in table.rows for c in row if c is not None) == len(cells)
    texts = {c.expected for _, row in table.rows for c in row if c}
    assert "✓ ::6" in texts
    assert "✗ 503" in texts


def test_rerun_command_is_the_markdown_reports() -> None:
    assert rerun_command("PodIPFromPlainClient[passthrough]", "ipv4") == (
        '.venv/bin/tox -e conformance -- -k "PodIPFromPlainClient and passthrough"'
    )
    assert rerun_command("LocalhostInPod[ambient]", "ipv6").endswith('-k "LocalhostInPod and ambient" --ip-family ipv6')


def test_every_page_is_self_contained_accessible_and_links_inside_the_site(site_dir: Path) -> None:
    pages = sorted(site_dir.glob("*.html"))
    assert {p.name for p in pages} >= {"index.html", "history.html", "spec.html"}
    assert len(pages) == 3 + 5
    ids = {p.name: Page(p.read_text()).ids for p in pages}
    for path in pages:
        text = path.read_text()
        page = Page(text)
        assert "script" not in page.tags, path.name
        assert page.sources == ["data:,"], path.name  # the empty favicon: nothing is fetched
        assert "@import" not in text, path.name
        assert "url(" not in text, path.name
        assert {"name": "viewport", "content": "width=device-width, initial-scale=1"} in page.meta
        assert page.tables, path.name
        assert page.tables == page.captions, path.name
        assert page.th_without_scope == 0, path.name
        for link in page.links:
            assert "://" not in link, (path.name, link)
            assert not link.startswith("/"), (path.name, link)
            target, _, fragment = link.partition("#")
            name = target or path.name
            assert (site_dir / name).exists(), (path.name, link)
            if fragment and name.endswith(".html"):
                assert fragment in ids[name], (path.name, link)


def test_the_run_page_shows_a_failed_cells_reason_rules_and_rerun(site_dir: Path, samples: dict[str, Path]) -> None:
    site = build([load_report(p) for p in samples.values()])
    run = site.rows[1].latest("ipv4")
    assert run is not None
    text = (site_dir / run.page).read_text()
    cell = "passthrough/none/wildcard/remapped/tcp/service/plain/ipv4"
    assert f'id="{anchor(cell)}"' in text
    entry = text.split(f'id="{anchor(cell)}"', 1)[1].split("</li>", 1)[0]
    assert "expected the app to see inbound_passthrough, it saw 127.0.0.1 (localhost)" in entry
    assert 'href="spec.html#rule-passthrough-original-dst"' in entry
    assert ".venv/bin/tox -e conformance -- -k &#34;SourceAddressFromOtherPods and passthrough&#34;" in entry
    assert "Failed cells (311)" in text  # 304 traffic cells and 7 probe cells
    assert "expected 503, got ok from 127.0.0.1" in text  # labels in the report's words, not http_503
    for section in ('id="prechecks"', 'id="timings"', 'id="table-passthrough"', 'id="probes-passthrough"'):
        assert section in text
    assert (site_dir / "data" / f"{run.slug}.json").read_bytes() == run.report.path.read_bytes()


def test_the_interrupted_run_says_so(site_dir: Path) -> None:
    (page,) = site_dir.glob("istio-1.23.4-*.html")
    assert "The run was interrupted" in page.read_text()


def test_text_from_a_report_is_escaped(samples: dict[str, Path], tmp_path: Path) -> None:
    doc = _doc(samples, "interrupted-ipv4")
    doc["mesh"]["name"] = "<script>alert(1)</script>"
    (tmp_path / "evil.json").write_text(json.dumps(doc))
    write_site(build([load_report(tmp_path / "evil.json")]), tmp_path / "out")
    for page in (tmp_path / "out").glob("*.html"):
        assert "<script>" not in page.read_text()
    assert "&lt;script&gt;" in (tmp_path / "out" / "index.html").read_text()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conformance", "site", *args], capture_output=True, text=True, cwd=REPO, check=False
    )


def test_bad_input_is_one_line_and_exit_2(samples: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a report\n")
    proc = _cli(str(tmp_path / "notes.txt"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "not JSON" in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing written before every input is read
    (tmp_path / "afile").write_text("")
    proc = _cli(str(samples["release-ipv4"]), "--out", str(tmp_path / "afile"))
    assert (proc.returncode, proc.stderr) == (
        2,
        f"mesh-inbound-conformance site: --out {tmp_path}/afile: exists and is not a folder\n",
    )
    proc = _cli("--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1


def test_the_templates_are_package_data() -> None:
    """The wheel takes every file under conformance/ (pyproject: hatch's `packages`); no ignore rule drops these."""
    templates = REPO / "conformance" / "results" / "site" / "templates"
    names = {p.name for p in templates.iterdir()}
    assert {"base.html", "index.html", "run.html", "history.html", "spec.html", "macros.html"} <= names
    ignored = subprocess.run(
        ["git", "check-ignore", *[str(templates / n) for n in names]],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert ignored.stdout == ""


def test_a_run_that_could_not_start_or_lost_a_proxy_says_so_first(samples: dict[str, Path], tmp_path: Path) -> None:
    doc = _doc(samples, "interrupted-ipv4")
    doc.update(cells=[], probe_cells=[], prechecks=[], timings_s={}, interrupted=False)
    doc["setup_error"] = {"message": "kind create cluster failed", "logs": "artifacts/setup/"}
    doc["process_deaths"] = [
        {"process": "sidecar of echo-0", "status": "exit 1", "pods": ["mic-mesh/echo-0"], "log_tail": ["boom <b>"]}
    ]
    for profile in doc["profiles"]:
        profile["result"] = "not selected"
    (tmp_path / "setup.json").write_text(json.dumps(doc))
    run = build([load_report(tmp_path / "setup.json")]).runs[0]
    assert run.failing
    write_site(build([load_report(tmp_path / "setup.json")]), tmp_path / "out")
    text = (tmp_path / "out" / run.page).read_text()
    assert text.index("Setup failed, no test ran:") < text.index("sidecar of echo-0: exit 1") < text.index("Profiles")
    assert "boom &lt;b&gt;" in text
    assert 'id="failed"' not in text
    assert "– not selected" in (tmp_path / "out" / "index.html").read_text()
