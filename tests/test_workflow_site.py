"""The nightly's `site` and `deploy` jobs and the `compare_upstream` input, run offline with stand-ins.

The `site` job's shell steps run for real (tests/test_workflows.py's Runner): `gh` is a stand-in serving the runs
and artifacts a test gives it, the `compare` the job runs is this checkout's, and `site` is a stand-in recording the
reports it was handed (the arguments are checked against the real command's parser where this checkout has it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from test_workflows import CUSTOM_INPUTS, Context, Runner, run_matrix_job, steps_of, workflow

from conformance.backends.kind.matrix import load_matrix

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "tests" / "data" / "compare" / "base.json"
CANDIDATE = REPO / "tests" / "data" / "compare" / "candidate.json"
ROWS = [r.name for r in load_matrix()]
SCHEDULE = {"event_name": "schedule", "ref_name": "main"}
ON_DEFAULT_BRANCH = "github.event_name == 'schedule' && github.ref_name == github.event.repository.default_branch"
MATRIX_DONE = {"matrix": {"result": "success", "outputs": {"upstream": "", "upstream_istio": ""}}}


def put(root: Path, relative: str, source: Path = BASE) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, path)


def sited(runner: Runner) -> list[str]:
    """The reports the job handed to `site`, in order."""
    (call,) = [c for c in runner.calls() if c[:2] == ["mesh-inbound-conformance", "site"]]
    assert call[-2] == "--out"
    return call[2:-2]


def run_site(runner: Runner, inputs: dict[str, Any], **kwargs: Any) -> Any:
    kwargs.setdefault("needs", MATRIX_DONE)
    return runner.run_job("nightly.yml", "site", {}, inputs, **kwargs)


# --- the site: every row's report, and the previous nights' -----------------------------------------------------


def test_a_scheduled_run_publishes_every_row_with_the_previous_nights(tmp_path: Path) -> None:
    runner = Runner(tmp_path / "job")
    for row in ROWS[:2]:  # the downloaded artifacts; ROWS[2] stopped before its report
        put(runner.workdir, f"reports/conformance-report-{row}/conformance-report.json")
    (runner.workdir / f"reports/conformance-report-{ROWS[2]}").mkdir()
    # Run 900 (last night) has no history (its site job failed); run 800's is the newest there is.
    artifacts = tmp_path / "artifacts"
    put(artifacts, f"800/nightly-history/2026-12-03T0317Z-run-800/{ROWS[0]}/conformance-report.json")
    put(artifacts, f"800/nightly-history/2026-12-03T0317Z-run-800/{ROWS[1]}/conformance-report.json", CANDIDATE)
    stubs = {"STUB_GH_RUNS": "900 800 700", "STUB_GH_ARTIFACTS": str(artifacts)}
    job = run_site(runner, {}, github=SCHEDULE, stub_env=stubs)
    assert set(job.ran.values()) == {0}, job.logs
    downloads = [c for c in runner.calls() if c[:3] == ["gh", "run", "download"]]
    assert [c[3] for c in downloads] == ["900", "800"]  # newest first, stopping at the first history found
    assert downloads[0][4:6] == ["--name", "nightly-history"]
    listed = next(c for c in runner.calls() if c[:3] == ["gh", "run", "list"])
    assert listed[3:] == [
        "--workflow", "nightly.yml", "--event", "schedule", "--branch", "main", "--status", "completed",
        "--limit", "10", "--json", "databaseId", "--jq", ".[].databaseId",
    ]  # fmt: skip
    reports = sited(runner)
    assert len(reports) == 4
    assert reports[:2] == [
        f"history/2026-12-03T0317Z-run-800/{row}/conformance-report.json" for row in sorted(ROWS[:2])
    ]
    tonight = reports[2].split("/")[1]
    assert tonight.endswith("Z-run-1000")
    assert reports[2:] == [f"history/{tonight}/{row}/conformance-report.json" for row in sorted(ROWS[:2])]
    assert (runner.workdir / "site" / "index.html").is_file()
    # Scheduled on the default branch: the history is kept for the next night and the site goes to Pages.
    for step in ("Upload the site", "Upload the history for the next night", "Upload the site for GitHub Pages"):
        assert step in job.ran, step
    assert "Compare the custom build with upstream (step summary)" in job.skipped


def test_only_the_newest_nights_are_kept(tmp_path: Path) -> None:
    runner = Runner(tmp_path / "job")
    put(runner.workdir, f"reports/conformance-report-{ROWS[0]}/conformance-report.json")
    artifacts = tmp_path / "artifacts"
    nights = [f"2026-11-{day:02d}T0317Z-run-{day}" for day in range(1, 21)]
    for night in nights:
        put(artifacts, f"5/nightly-history/{night}/{ROWS[0]}/conformance-report.json")
    job = run_site(runner, {}, github=SCHEDULE, stub_env={"STUB_GH_RUNS": "5", "STUB_GH_ARTIFACTS": str(artifacts)})
    assert set(job.ran.values()) == {0}, job.logs
    kept = sorted(p.name for p in (runner.workdir / "history").iterdir())
    nights_kept = int(workflow("nightly.yml")["jobs"]["site"]["env"]["NIGHTS"])
    assert len(kept) == nights_kept == 14
    assert kept[:-1] == nights[-(nights_kept - 1) :]  # the oldest dropped, tonight's added
    assert len(sited(runner)) == nights_kept


def test_without_earlier_nights_the_site_shows_this_run(tmp_path: Path) -> None:
    runner = Runner(tmp_path / "job")
    put(runner.workdir, "reports/conformance-report-custom/conformance-report.json", CANDIDATE)
    job = run_site(runner, {**CUSTOM_INPUTS}, stub_env={"STUB_GH_RUNS": "", "STUB_GH_ARTIFACTS": str(tmp_path)})
    assert set(job.ran.values()) == {0}, job.logs
    assert "::notice title=site::no earlier nightly-history artifact" in job.logs
    (report,) = sited(runner)
    assert report.endswith("/custom/conformance-report.json")
    # A dispatched run gets the site as an artifact; the history and Pages are the schedule's.
    assert "Upload the site" in job.ran
    assert "Upload the history for the next night" in job.skipped
    assert "Upload the site for GitHub Pages" in job.skipped


def test_a_run_without_any_report_fails_the_site_job_in_one_line(tmp_path: Path) -> None:
    runner = Runner(tmp_path / "job")
    job = run_site(runner, {}, github=SCHEDULE, stub_env={"STUB_GH_RUNS": ""})
    assert job.ran["Build the site"] == 1
    assert "::error title=site::no report to publish" in job.logs
    assert "Upload the site for GitHub Pages" in job.skipped


def test_the_site_job_runs_after_every_row_even_failed_ones_but_not_after_a_bad_input(tmp_path: Path) -> None:
    site = workflow("nightly.yml")["jobs"]["site"]
    assert site["needs"] == ["matrix", "kind"]
    assert site["if"] == "${{ !cancelled() && needs.matrix.result == 'success' }}"
    job = Runner(tmp_path / "job").run_job("nightly.yml", "site", {}, {}, needs={"matrix": {"result": "failure"}})
    assert job.ran == {}
    download = next(s for s in steps_of("nightly.yml", "site") if s.get("name") == "Download every row's report")
    assert download["uses"] == "actions/download-artifact@v4"
    assert download["with"] == {"pattern": "conformance-report-*", "path": "reports"}
    # What the rows upload is what the pattern fetches.
    upload = next(s for s in steps_of("nightly.yml", "kind") if s.get("name") == "Upload the report and JUnit XML")
    assert upload["with"]["name"] == "conformance-report-${{ matrix.name }}"


def test_the_site_command_the_job_runs_is_the_real_one(tmp_path: Path) -> None:
    """`site REPORT.json... --out DIR`, as the `site` command takes it (where this checkout has the command)."""
    from conformance.cli import _parser

    parser = _parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices  # type: ignore[attr-defined]
    if "site" not in commands:
        pytest.skip("the site command is not in this checkout (issue 24, item 2)")
    runner = Runner(tmp_path / "job")
    put(runner.workdir, f"reports/conformance-report-{ROWS[0]}/conformance-report.json")
    run_site(runner, {}, stub_env={"STUB_GH_RUNS": ""})
    args = parser.parse_args(["site", *sited(runner), "--out", "site"])
    assert args.command == "site"


# --- Pages: the scheduled run on the default branch, with the permissions it needs -------------------------------


def test_pages_are_deployed_by_the_scheduled_run_on_the_default_branch_only() -> None:
    jobs = workflow("nightly.yml")["jobs"]
    deploy = jobs["deploy"]
    assert deploy["needs"] == "site"
    assert deploy["if"] == ON_DEFAULT_BRANCH
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert deploy["environment"]["url"] == "${{ steps.deployment.outputs.page_url }}"
    assert [s["uses"] for s in deploy["steps"]] == ["actions/configure-pages@v5", "actions/deploy-pages@v4"]
    pages = next(s for s in jobs["site"]["steps"] if str(s.get("uses", "")).startswith("actions/upload-pages"))
    assert pages == {
        "name": "Upload the site for GitHub Pages",
        "if": ON_DEFAULT_BRANCH,
        "uses": "actions/upload-pages-artifact@v3",
        "with": {"path": "site/"},
    }
    history = next(s for s in jobs["site"]["steps"] if s.get("name") == "Upload the history for the next night")
    assert (history["if"], history["with"]) == (ON_DEFAULT_BRANCH, {"name": "nightly-history", "path": "history/"})
    for event, ref, deployed in (
        ("schedule", "main", True),
        ("schedule", "dev", False),
        ("workflow_dispatch", "main", False),
    ):
        context = Context(github={"event_name": event, "ref_name": ref, "event.repository.default_branch": "main"})
        assert context.condition(deploy["if"], failed=False) is deployed


# --- compare_upstream: your build vs upstream -------------------------------------------------------------------


def matrix_outputs(tmp_path: Path, inputs: dict[str, Any]) -> dict[str, Any]:
    """The `needs.matrix` the site job sees, from the matrix job run for real."""
    job, value = run_matrix_job(tmp_path / "matrix", inputs)
    assert value is not None, job.logs
    return {"matrix": {"result": "success", "outputs": job.outputs["rows"]}}


def compare_run(tmp_path: Path, inputs: dict[str, Any], artifacts: dict[str, Path]) -> tuple[Runner, Any]:
    runner = Runner(tmp_path / "job")
    put(runner.workdir, "reports/conformance-report-custom/conformance-report.json", CANDIDATE)
    for relative, source in artifacts.items():
        put(tmp_path / "artifacts", relative, source)
    stubs = {"STUB_GH_RUNS": "42 41", "STUB_GH_ARTIFACTS": str(tmp_path / "artifacts")}
    job = run_site(runner, inputs, needs=matrix_outputs(tmp_path, inputs), stub_env=stubs)
    return runner, job


STEP = "Compare the custom build with upstream (step summary)"


def test_a_custom_build_is_compared_with_its_release_s_last_scheduled_report(tmp_path: Path) -> None:
    inputs = {**CUSTOM_INPUTS, "ip_family": "ipv4", "istio_version": "1.21.2", "compare_upstream": True}
    row = "istio-1.21-no-switch"
    runner, job = compare_run(tmp_path, inputs, {f"41/conformance-report-{row}/conformance-report.json": BASE})
    assert job.ran[STEP] == 0, job.logs  # regressions are in the summary; the custom row's job fails for them
    downloads = [c[3:] for c in runner.calls() if c[:3] == ["gh", "run", "download"]]
    assert downloads[:2] == [
        ["42", "--name", f"conformance-report-{row}", "--dir", "upstream"],
        ["41", "--name", f"conformance-report-{row}", "--dir", "upstream"],
    ]
    summary = job.summary.splitlines()
    assert summary[0] == "## Your build vs upstream 1.21.6"
    assert f"BASE: the row `{row}` of the scheduled run" in job.summary
    assert "/you/mesh-inbound-conformance/actions/runs/41; CANDIDATE: ghcr.io/you/istio:1.21.6-fix.1" in job.summary
    headline = next(line for line in summary if line.startswith("❌ **"))
    assert headline.startswith("❌ **3 regressions, 1 fix, 3 changed observations")
    compared = next(c for c in runner.calls() if c[:2] == ["mesh-inbound-conformance", "compare"])
    assert compared[2:] == [
        "upstream/conformance-report.json",
        "reports/conformance-report-custom/conformance-report.json",
        "--format",
        "markdown",
    ]


def test_no_upstream_report_is_said_and_fails_nothing(tmp_path: Path) -> None:
    inputs = {**CUSTOM_INPUTS, "ip_family": "ipv4", "istio_version": "1.21.6", "compare_upstream": True}
    runner, job = compare_run(tmp_path, inputs, {})
    assert job.ran[STEP] == 0, job.logs
    assert "No report of the matrix row `istio-1.21-no-switch` (Istio 1.21.6) in the last scheduled runs" in job.summary
    assert not any(c[:2] == ["mesh-inbound-conformance", "compare"] for c in runner.calls())
    assert set(job.ran.values()) == {0}


def test_a_minor_without_a_row_has_no_upstream(tmp_path: Path) -> None:
    inputs = {**CUSTOM_INPUTS, "istio_version": "1.25.1", "tag": "1.25.1-fix.1", "compare_upstream": True}
    runner, job = compare_run(tmp_path, inputs, {})
    assert job.ran[STEP] == 0, job.logs
    assert (
        "No scheduled row of the nightly matrix (fixtures/versions.yaml) runs Istio 1.25.1's minor in ipv6"
    ) in job.summary
    assert not any(c[:3] == ["gh", "run", "download"] and "upstream" in c for c in runner.calls())


def test_an_unreadable_upstream_report_fails_the_step(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"format": "something else"}))
    inputs = {**CUSTOM_INPUTS, "ip_family": "ipv4", "istio_version": "1.21.6", "compare_upstream": True}
    _, job = compare_run(
        tmp_path, inputs, {"42/conformance-report-istio-1.21-no-switch/conformance-report.json": broken}
    )
    assert job.ran[STEP] == 2
    assert "not a conformance report" in job.logs


def test_a_custom_build_is_compared_with_the_scheduled_report_of_its_family(tmp_path: Path) -> None:
    """A report of another family has other cells: a dual build meets the current row's dual report, IPv6 none."""
    current = max(load_matrix(), key=lambda r: tuple(int(x) for x in r.istio.split(".")[:2]))
    minor = ".".join(current.istio.split(".")[:2])
    dual = f"{current.name}-dual"
    inputs = {**CUSTOM_INPUTS, "ip_family": "dual", "istio_version": f"{minor}.0", "compare_upstream": True}
    inputs["tag"] = f"{minor}.0-fix.1"
    runner, job = compare_run(
        tmp_path / "dual", inputs, {f"42/conformance-report-{dual}/conformance-report.json": BASE}
    )
    assert job.ran[STEP] == 0, job.logs
    downloads = [c[3:] for c in runner.calls() if c[:3] == ["gh", "run", "download"]]
    assert downloads[0] == ["42", "--name", f"conformance-report-{dual}", "--dir", "upstream"]
    assert f"BASE: the row `{dual}` of the scheduled run" in job.summary
    # An older minor has a scheduled IPv4 report only; IPv6 is never scheduled: nothing to compare, said.
    for family, version in (("dual", "1.21.6"), ("ipv6", f"{minor}.0")):
        inputs = {**CUSTOM_INPUTS, "ip_family": family, "istio_version": version, "compare_upstream": True}
        runner, job = compare_run(tmp_path / f"none-{family}", inputs, {})
        assert job.ran[STEP] == 0, job.logs
        assert (
            f"No scheduled row of the nightly matrix (fixtures/versions.yaml) runs Istio {version}'s minor in {family}"
            in (job.summary)
        )
        assert not any(c[:3] == ["gh", "run", "download"] and "upstream" in c for c in runner.calls())


def test_without_the_input_nothing_is_compared(tmp_path: Path) -> None:
    _, job = compare_run(tmp_path, {**CUSTOM_INPUTS}, {})
    assert STEP in job.skipped
    assert "upstream" not in job.summary


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--compare-upstream=true"], "compare_upstream given without hub"),
        (["--hub=ghcr.io/you/istio", "--tag=t", "--istio-version=1.21.6", "--compare-upstream=yes"], "true or false"),
    ],
)
def test_compare_upstream_is_checked_by_the_matrix_job(
    capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    from test_workflows import matrix_module

    assert matrix_module().main(["rows", *argv]) == 1
    assert says in capsys.readouterr().err


def test_the_matrix_job_names_the_upstream_row_only_when_asked(tmp_path: Path) -> None:
    ipv4 = {**CUSTOM_INPUTS, "ip_family": "ipv4"}
    asked = matrix_outputs(tmp_path / "a", {**ipv4, "istio_version": "1.21.2", "compare_upstream": True})
    assert asked["matrix"]["outputs"]["upstream"] == "istio-1.21-no-switch"
    assert asked["matrix"]["outputs"]["upstream_istio"] == "1.21.6"
    not_asked = matrix_outputs(tmp_path / "b", {**CUSTOM_INPUTS, "compare_upstream": False})
    assert not_asked["matrix"]["outputs"]["upstream"] == ""
    scheduled = matrix_outputs(tmp_path / "c", {})
    assert scheduled["matrix"]["outputs"]["upstream"] == ""
    outputs = workflow("nightly.yml")["jobs"]["matrix"]["outputs"]
    assert outputs["upstream"] == "${{ steps.rows.outputs.upstream }}"
    assert outputs["upstream_istio"] == "${{ steps.rows.outputs.upstream_istio }}"
