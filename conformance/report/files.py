"""The report's two files, `conformance-report.json` and `conformance-report.md`, rewritten as results arrive.

Written after every test, so a run that fails, crashes or is interrupted still leaves a report of what it saw;
a setup failure (the cluster never came up) is the first thing both files say, with where the logs are.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from conformance.report.json_document import JSON_NAME, json_document
from conformance.report.markdown import MD_NAME, markdown
from conformance.report.record import RunRecord
from conformance.spec.capabilities import MeshCapabilities
from conformance.spec.dimensions import IpFamily, Profile

PROGRESS_INTERVAL = 1.0
"""Seconds between two progress writes of the report (see Report.write)."""
CELL_LISTS = ("cells", "probe_cells", "ztunnel_cells")
"""The report's lists of cells, one cell per line in the final JSON (final_json)."""


class Report(RunRecord):
    """A run's record that rewrites both files in its folder (None: nowhere) after each result."""

    def __init__(
        self,
        directory: Path | None,
        mesh: MeshCapabilities,
        mesh_info: dict[str, str],
        backend: str,
        family: IpFamily,
        profiles: Sequence[Profile],
    ) -> None:
        super().__init__(mesh, mesh_info, backend, family, profiles)
        self.directory = directory
        self._written_at: float | None = None
        """When the files were last written (time.monotonic()); progress writes are spaced by PROGRESS_INTERVAL."""

    def write(self, final: bool = False, progress: bool = False) -> None:
        """Rewrite both files atomically (a reader never sees half a report).

        The JSON is laid out for reading only in the final write (final_json): json's indenting encoder is pure
        Python, and rewriting an indented document of every cell after each test cost seconds per run (the C
        encoder is ~10x faster).
        A `progress` write (after a test) is skipped when the files were written less than PROGRESS_INTERVAL
        ago: a run killed outright still leaves a report at most that old, and the ~0.1 s that a report of
        every cell takes to render is paid a few times per run instead of after each of its tests (seconds).
        """
        if self.directory is None:
            return
        now = time.monotonic()
        if progress and self._written_at is not None and now - self._written_at < PROGRESS_INTERVAL:
            return
        self._written_at = now
        self.directory.mkdir(parents=True, exist_ok=True)
        document = json_document(self)
        text = final_json(document) if final else json.dumps(document)
        _atomic_write(self.directory / JSON_NAME, text + "\n")
        _atomic_write(self.directory / MD_NAME, markdown(self))


def final_json(document: dict[str, object]) -> str:
    """The report's JSON as a reader meets it: indented, but each cell of the cell lists on one line.

    A run has thousands of cells, each a nested object: indented whole, the file was ~55 lines per cell (2.8 MB)
    and json's pure-Python indenting encoder took ~0.1 s a run. One line per cell is what `grep ID` wants too.
    Only the layout differs from json.dumps(document, indent=2): a JSON parser reads the same document.
    """
    parts = []
    for key, value in document.items():
        if key in CELL_LISTS and isinstance(value, list) and value:
            items = ",\n".join("    " + json.dumps(v) for v in value)
            text = f"[\n{items}\n  ]"
        else:
            text = json.dumps(value, indent=2).replace("\n", "\n  ")
        parts.append(f"  {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(parts) + "\n}" if parts else "{}"


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
