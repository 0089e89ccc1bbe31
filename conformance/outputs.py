"""Where a run writes: the report folder and the diagnostics folders, one per IP family.

By default a run writes into `reports/<family>/` and `artifacts/<family>/`, so an IPv6 run never overwrites the
IPv4 report or its diagnostics; `--report-dir`/`--artifacts-dir` name the folder itself (CI passes one per job).
Diagnostics of a failed test go to `<artifacts>/<profile>/<Case>/`: named from the case and
profile (not from pytest's node id, which carries the rootdir-relative path of the installed package and a
leading dot that `ls` and `actions/upload-artifact` hide). Both are checked before anything is created, so a bad
path is one line instead of an INTERNALERROR after the whole run.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

SETUP_FOLDER = "setup"
"""Under `<artifacts>/<family>/`: the backend's diagnostics when the cluster could not be set up."""


def output_dir(option: str | None, default: str, family: str) -> Path | None:
    """The folder an option names; unset, `<default>/<family>` (each family's run has its own); empty, none."""
    if option is None:
        return Path(default) / family
    return Path(option) if option else None


def check_writable_dir(option: str, path: Path) -> str | None:
    """Why `path` cannot serve as an output folder (one line), or None; creates nothing.

    The nearest existing ancestor must be a directory we may write into; an existing `path` must be a folder.
    """
    if path.exists():
        if not path.is_dir():
            return f"{option} {path}: is a file, expected a folder (or a path where one can be created)"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{option} {path}: folder not writable"
        return None
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{option} {path}: cannot be created, {parent} is a file"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{option} {path}: cannot be created, {parent} is not writable"
    return None


def safe_name(text: str) -> str:
    """A file or folder name: no separators, no leading dot (hidden files are skipped by ls and uploads)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.")[:150] or "_"


def case_dir(artifacts: Path, profile: str, case: str) -> Path:
    """`<artifacts>/<profile>/<Case>/`."""
    return artifacts / safe_name(profile) / safe_name(case)


def clear_previous(artifacts: Path, profiles: list[str]) -> None:
    """Remove the folders a previous run left, so a folder present means this run failed there.

    Only the folders the suite names (a profile's, `setup`): a backend's own files (kind-commands.log) stay.
    """
    for name in [*profiles, SETUP_FOLDER]:
        folder = artifacts / safe_name(name)
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
