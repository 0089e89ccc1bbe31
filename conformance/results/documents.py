"""A saved JSON report read back, checked for its format and version first, as docs/running.md asks of tools.

`compare` and `site` read reports other machines wrote (the nightly's artifacts, a builder's run): a file that is
not a report, or a report of a version this build does not know, is one line (ReportError), never a traceback.
Cells are kept as the JSON has them (dicts keyed by `id`): the spec's dimensions grow between versions, and a
reader of old reports must not need today's enums to show them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.report.json_document import REPORT_FORMAT, REPORT_VERSION

READABLE_VERSIONS = frozenset({REPORT_VERSION})
"""Report versions this build reads (the cells' keys and the profiles' statistics as version 4 has them)."""


class ReportError(ValueError):
    """A file that cannot be read as a report: the message is the one line the user sees."""


@dataclass(frozen=True)
class SavedReport:
    """One run's report as saved, with its cells indexed by id."""

    path: Path
    document: dict[str, Any]

    @property
    def cells(self) -> dict[str, dict[str, Any]]:
        """Traffic cells by id."""
        return {str(c["id"]): c for c in self.document.get("cells", [])}

    @property
    def probe_cells(self) -> dict[str, dict[str, Any]]:
        """Health-probe cells by id."""
        return {str(c["id"]): c for c in self.document.get("probe_cells", [])}

    @property
    def profiles(self) -> dict[str, dict[str, Any]]:
        """Profile results (`result`, `statistics`, `failed_tests`...) by profile name."""
        return {str(p["name"]): p for p in self.document.get("profiles", [])}

    @property
    def family(self) -> str:
        """The run's IP family (`ipv4`, `ipv6`)."""
        return str(self.document.get("ip_family", ""))

    @property
    def mesh(self) -> dict[str, Any]:
        """What the run verified: `name`, `version`, `build`, `hub`, `tag`, capabilities..."""
        mesh = self.document.get("mesh")
        return mesh if isinstance(mesh, dict) else {}

    @property
    def label(self) -> str:
        """How a person names the run: the mesh and its version, the build where it is not a release."""
        mesh = self.mesh
        name = f"{mesh.get('name', '?')} {mesh.get('version', '?')}"
        build = mesh.get("build")
        return f"{name} ({build})" if build else name


def load_report(path: Path) -> SavedReport:
    """Read a report, or raise ReportError naming the file and what is wrong with it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ReportError(f"{path}: cannot read it ({err.strerror or err})") from None
    try:
        document = json.loads(text)
    except ValueError as err:
        raise ReportError(f"{path}: not JSON ({err}); expected a conformance-report.json") from None
    if not isinstance(document, dict) or document.get("format") != REPORT_FORMAT:
        raise ReportError(f"{path}: not a conformance report (expected format {REPORT_FORMAT!r})")
    version = document.get("version")
    if version not in READABLE_VERSIONS:
        known = ", ".join(str(v) for v in sorted(READABLE_VERSIONS))
        raise ReportError(f"{path}: report version {version!r} is not one this build reads ({known})")
    for key in ("cells", "profiles"):
        if not isinstance(document.get(key), list):
            raise ReportError(f"{path}: the report has no {key!r} list; is it truncated?")
    return SavedReport(path, document)
