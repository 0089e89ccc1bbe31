"""The site's pages, rendered with Jinja2 (autoescaped) from the templates of this package, into one folder.

Every page is a flat file at the folder's top (index.html, history.html, spec.html, one `<run>.html` per run),
so links are plain relative names that work from file:// and from any Pages path; each input report is copied
to data/ beside them, so a reader (or the next night's build) has the JSON the page was made from.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import jinja2

from conformance.results.site.model import PASSING, RESULT_SYMBOL, Run, Site
from conformance.results.site.tables import (
    FAILURE_TEXT,
    cell_view,
    expected_text,
    failed_tests,
    observed_text,
    rerun_command,
    tables,
    value_text,
)
from conformance.spec.cells import all_cells
from conformance.spec.dimensions import IpFamily, Profile
from conformance.spec.render import SPEC_FORMAT_VERSION, spec_document

FAILED_CELLS_SHOWN = 500
"""Failed cells listed on a run's page (its JSON, linked there, has every one)."""


def anchor(cell_id: str) -> str:
    """A cell's anchor on its page: its id with anything but letters, digits, `.`, `_` and `-` made `_`."""
    return "cell-" + re.sub(r"[^A-Za-z0-9._-]", "_", cell_id)


def environment() -> jinja2.Environment:
    """The templates, autoescaped, failing on an undefined name rather than printing nothing."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("conformance.results.site", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["anchor"] = anchor
    env.globals.update(symbols=RESULT_SYMBOL, passing=PASSING, value_text=value_text)
    return env


def _failed_cells(run: Run, rules: set[str]) -> list[dict[str, Any]]:
    """Each failed traffic or probe cell: what was expected and seen, why, which tests, how to rerun each."""
    family = run.family
    failed = [
        c
        for c in [*run.report.document.get("cells", []), *run.report.document.get("probe_cells", [])]
        if c.get("verdict") not in (None, "pass")
    ]
    return [
        {
            "id": str(c["id"]),
            "expected": expected_text(c.get("expected") or {}, family, c.get("client_family")),
            "observed": observed_text(c, family),
            "reasons": sorted({_words(str(r)) for r in (c.get("reasons") or {}).values()}),
            "reruns": [(test, rerun_command(test, family)) for test in failed_tests(c)],
            "because": [(b, b in rules) for b in cell_view(c, family).because],
            "voided_by": (c.get("observed") or {}).get("voided_by") or [],
        }
        for c in sorted(failed, key=lambda c: str(c["id"]))
    ]


def _words(reason: str) -> str:
    """A verdict's reason in the report's vocabulary: `503`, `reset/EOF`, not the labels `http_503`, `reset_or_eof`."""
    for label, text in FAILURE_TEXT.items():
        reason = reason.replace(label, text)
    return reason


def _timings(run: Run) -> list[tuple[str, float, int]]:
    """Where the time went: each phase, its seconds and its share of the total (percent)."""
    timings = {str(k): float(v) for k, v in (run.report.document.get("timings_s") or {}).items()}
    total = timings.get("total") or sum(timings.values()) or 1.0
    return [(name, seconds, round(100 * seconds / total)) for name, seconds in timings.items() if name != "total"]


def _spec(families: list[str]) -> dict[str, Any]:
    """The spec as this build has it, for the families the site's runs have: rules, then tables per profile."""
    known = [IpFamily(f) for f in families if f in {x.value for x in IpFamily}] or list(IpFamily)
    document = spec_document(all_cells(list(Profile), known))
    sections = []
    for family in known:
        cells = [c for c in document["cells"] if c["ip_family"] == family.value]  # type: ignore[attr-defined]
        probes = [c for c in document["probe_cells"] if c["ip_family"] == family.value]  # type: ignore[attr-defined]
        sections.append(
            {"family": family.value, "tables": tables(cells, family.value), "probes": tables(probes, family.value)}
        )
    return {
        "version": SPEC_FORMAT_VERSION,
        "rules": document["rules"],
        "probe_rules": document["probe_rules"],
        "sections": sections,
    }


def rule_ids() -> set[str]:
    """The ids of every rule the spec page shows (traffic and probe), which a failed cell's `because` links to."""
    document = spec_document(all_cells([Profile.BASELINE], [IpFamily.IPV4]))
    return {str(r["id"]) for key in ("rules", "probe_rules") for r in document[key]}  # type: ignore[attr-defined]


def write_site(site: Site, out: Path) -> list[Path]:
    """Render every page of `site` into `out` (created), copy the reports to out/data/; return the pages written."""
    env = environment()
    out.mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(exist_ok=True)
    written = []
    rules = rule_ids()

    def page(name: str, template: str, **context: Any) -> None:
        target = out / name
        target.write_text(env.get_template(template).render(site=site, **context), encoding="utf-8")
        written.append(target)

    page("index.html", "index.html", title="Inbound conformance: the matrix")
    page("history.html", "history.html", title="History of each row")
    page("spec.html", "spec.html", title="The expected semantics", spec=_spec(site.families))
    for row in site.rows:
        for runs in row.runs.values():
            for run in runs:
                shutil.copyfile(run.report.path, out / "data" / f"{run.slug}.json")
                document = run.report.document
                failed = _failed_cells(run, rules)
                page(
                    run.page,
                    "run.html",
                    title=f"{row.label}, {run.family}, {run.when}",
                    row=row,
                    run=run,
                    doc=document,
                    failed=failed[:FAILED_CELLS_SHOWN],
                    failed_total=len(failed),
                    timings=_timings(run),
                    tables=tables(document.get("cells", []), run.family),
                    probe_tables=tables(document.get("probe_cells", []), run.family),
                )
    return written
