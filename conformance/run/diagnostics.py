"""Failure context: what the backend knows about the pods a failed test involved.

Each pod's diagnostics (listeners, capture rules, sidecar config and logs) are shown once per run's output, with
the first test that involved it; later failures name the pods and the folder instead (a run with twenty failed
tests printed the same logs twenty times). Every failed test still gets its own copy under
`<artifacts>/<family>/<profile>/<Case>/`, taken when it failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from conformance.backends.base import Cluster
from conformance.run.outputs import SETUP_FOLDER, safe_name
from conformance.world.pods import PodRef


def collect(cluster: Cluster, pods: Sequence[PodRef]) -> dict[str, str]:
    """The backend's diagnostics, or one section saying why there are none (they must never hide the failure)."""
    try:
        return cluster.diagnostics(pods)
    except Exception as err:
        return {"diagnostics": f"could not collect diagnostics: {err}"}


Claim = Callable[[Iterable[Path]], None]
"""Records files in the artifacts folder's record before they are written (outputs.OutputFolder.claim)."""


def save(sections: dict[str, str], target: Path, claim: Claim | None = None) -> None:
    """One text file per section under `target`, each recorded as the suite's (`claim`) before it is written."""
    files = {title: target / f"{safe_name(title)}.txt" for title in sections}
    if claim is not None:
        claim(files.values())
    target.mkdir(parents=True, exist_ok=True)
    for title, text in sections.items():
        files[title].write_text(text + "\n")


def to_show(sections: dict[str, str], pods: Sequence[PodRef], shown: set[str], target: Path | None) -> dict[str, str]:
    """The sections of pods not yet shown in this run's output, plus one line naming the rest."""
    names = [str(p) for p in pods]
    earlier = [n for n in names if n in shown]
    out = {title: text for title, text in sections.items() if not _pod(title, earlier)}
    if earlier:
        where = f"; this test's copy: {target}" if target is not None else ""
        out["diagnostics of pods shown above"] = (
            f"{', '.join(earlier)}: shown with an earlier failure of this run{where}"
        )
    shown.update(names)
    return out


def _pod(title: str, pods: Sequence[str]) -> bool:
    return any(title.startswith(p + " ") for p in pods)


def save_setup(cluster: Cluster, pods: Sequence[PodRef], artifacts: Path | None, claim: Claim | None = None) -> str:
    """When the cluster could not be set up: the pods' diagnostics under `<artifacts>/setup/`; where they are.

    Taken before teardown removes the pods' logs; the returned line goes into the report.
    """
    if artifacts is None:
        return "no --artifacts-dir: the logs are in the test output above"
    sections = {title: text for title, text in collect(cluster, pods).items() if text.strip()}
    if not sections:
        return f"the backend had no logs to save ({artifacts} holds anything it wrote itself)"
    target = artifacts / SETUP_FOLDER
    save(sections, target, claim)
    return f"logs: {target}/"
