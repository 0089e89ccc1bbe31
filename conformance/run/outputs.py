"""Where a run writes, what it may remove there, and how it knows what is its own.

By default a run writes into `reports/<family>/` and `artifacts/<family>/`, so an IPv6 run never overwrites the
IPv4 report or its diagnostics; `--report-dir`/`--artifacts-dir` name the folder itself (CI passes one per job).
Diagnostics of a failed test go to `<artifacts>/<profile>/<Case>/`: named from the case and
profile (not from pytest's node id, which carries the rootdir-relative path of the installed package and a
leading dot that `ls` and `actions/upload-artifact` hide).

Both folders are made, and written into, before anything runs: a permission check is not enough (root passes
every access check, yet `/sys` and `/proc` take no new folder and a read-only mount takes no file), and a
folder found unusable only when the first report is written turned the whole run into errors and an
INTERNALERROR. A bad path is one line and exit status 4 instead.

A user may point `--artifacts-dir` (or `--report-dir`) at a folder that already holds things: `.`, a project
folder, a CI workspace. A run removes the diagnostics an earlier run left, so that a folder present means this
run failed there; it must never remove, or overwrite, anything it did not write. Each folder the suite writes
into holds a record of the files it wrote there (`.mesh-inbound-conformance.json`, hidden like the marker it
is: `ls` and uploads skip it). A run removes only files that record lists; it refuses to start, in one line,
when something the record does not list sits where the suite would write.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

SETUP_FOLDER = "setup"
"""Under `<artifacts>/<family>/`: the backend's diagnostics when the cluster could not be set up."""

RECORD_NAME = ".mesh-inbound-conformance.json"
"""In each folder the suite writes into: the files it wrote there (paths relative to the folder)."""
RECORD_FORMAT = "mesh-inbound-conformance/outputs"


def output_dir(option: str | None, default: str, family: str) -> Path | None:
    """The folder an option names; unset, `<default>/<family>` (each family's run has its own); empty, none."""
    if option is None:
        return Path(default) / family
    return Path(option) if option else None


def check_writable_dir(option: str, path: Path) -> str | None:
    """Why `path` cannot serve as an output folder (one line), or None; creates nothing.

    The nearest existing ancestor must be a directory we may write into; an existing `path` must be a folder.
    Cheap and side-effect free, for every run; `make_output_dirs` then proves it by making the folders.
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


def make_output_dirs(folders: Sequence[tuple[str, Path]]) -> str | None:
    """Make each (option, folder) and write a file into it; why one cannot be used (one line), or None.

    Nothing is left behind when one fails: the folders made here are removed again (only those, and only if
    still empty).
    """
    made: list[Path] = []
    for option, path in folders:
        missing = [p for p in (path, *path.parents) if not p.exists()]
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            made += [p for p in missing if p.is_dir()]
            _remove_empty(made)
            where = Path(err.filename).parent if err.filename else path.parent
            return (
                f"{option} {path}: cannot be created, {where} takes no new folder ({err.strerror}); "
                "expected a folder the run can write into"
            )
        made += missing
        try:
            fd, probe = tempfile.mkstemp(dir=path, prefix=".mesh-inbound-conformance-write-test-")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            _remove_empty(made)
            return f"{option} {path}: folder not writable ({err.strerror}); expected a folder the run can write into"
    return None


def _remove_empty(folders: Iterable[Path]) -> None:
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()


def safe_name(text: str) -> str:
    """A file or folder name: no separators, no leading dot (hidden files are skipped by ls and uploads)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.")[:150] or "_"


def case_dir(artifacts: Path, profile: str, case: str) -> Path:
    """`<artifacts>/<profile>/<Case>/`."""
    return artifacts / safe_name(profile) / safe_name(case)


@dataclass(frozen=True)
class OutputFolder:
    """A folder the suite writes into: the names it writes there and the record of the files it wrote.

    `places` are the top-level names (files or folders) the suite writes under `root`; anything else in the
    folder is none of the suite's business and is never looked at. `earlier` says whether a file of a place
    that the record does not list was written by the suite anyway (its content proves it: a report written
    before the record existed); it defaults to no.
    """

    option: str
    root: Path
    places: tuple[str, ...]
    described: str
    """What the suite does there, for the refusal line: `writes <profile>/<Case>/ and setup/ there, ...`."""
    earlier: Callable[[str, Path], bool] | None = None

    @property
    def record_path(self) -> Path:
        """The record of what the suite wrote here."""
        return self.root / RECORD_NAME

    def _read(self) -> set[str]:
        """Every path the record lists (other roles' too, when two options name one folder)."""
        try:
            document = json.loads(self.record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return set()
        if not isinstance(document, dict) or document.get("format") != RECORD_FORMAT:
            return set()
        files = document.get("files")
        return {f for f in files if isinstance(f, str)} if isinstance(files, list) else set()

    def _write(self, files: set[str]) -> None:
        text = json.dumps(
            {
                "format": RECORD_FORMAT,
                "version": 1,
                "about": "the files mesh-inbound-conformance wrote in this folder; a run removes only these",
                "files": sorted(files),
            },
            indent=1,
        )
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f"{RECORD_NAME}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.record_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _relative(self, path: Path) -> str | None:
        """`path` as the record writes it, or None when it is not under one of the places."""
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:
            return None
        return "/".join(parts) if parts and parts[0] in self.places else None

    def _valid(self, entry: str) -> tuple[str, ...] | None:
        """A record entry's parts, or None when it points outside the places (a hand-edited record)."""
        parts = PurePosixPath(entry).parts
        if not parts or PurePosixPath(entry).is_absolute() or parts[0] not in self.places:
            return None
        if any(p in ("", ".", "..") for p in parts):
            return None
        return parts

    def _behind_a_link(self, parts: tuple[str, ...]) -> bool:
        """A folder on the way is a symbolic link: what lies behind it is not the suite's to touch."""
        return any((self.root.joinpath(*parts[:i])).is_symlink() for i in range(1, len(parts)))

    def foreign(self) -> list[str]:
        """What sits where the suite writes and was not written by it (paths relative to the folder)."""
        recorded = self._read()
        found = []
        for name in self.places:
            top = self.root / name
            if not os.path.lexists(top):
                continue
            if top.is_symlink() or not top.is_dir():
                if name not in recorded and not self._earlier(name, top):
                    found.append(name)
                continue
            for folder, dirs, files in os.walk(top):
                links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
                for entry in sorted([*files, *links]):
                    path = Path(folder) / entry
                    relative = "/".join(path.relative_to(self.root).parts)
                    if relative not in recorded and not self._earlier(relative, path):
                        found.append(relative)
        return found

    def _earlier(self, relative: str, path: Path) -> bool:
        return self.earlier is not None and path.is_file() and not path.is_symlink() and self.earlier(relative, path)

    def refusal(self) -> str | None:
        """One line when the folder holds, where the suite writes, something it did not write; else None."""
        found = self.foreign()
        if not found:
            return None
        if len(found) > 3:
            shown = ", ".join(found[:3]) + f" and {len(found) - 3} more"
        else:
            shown = ", ".join(found[:-1]) + f" and {found[-1]}" if len(found) > 1 else found[0]
        it = "it" if len(found) == 1 else "them"
        return (
            f"{self.option} {self.root}: {shown} {'is' if len(found) == 1 else 'are'} not from an earlier run of "
            f"this suite, which {self.described}; move {it} or choose another folder"
        )

    def claim(self, paths: Iterable[Path]) -> None:
        """Record files the suite is about to write (before writing: a run killed in between leaves no orphan)."""
        entries = {r for r in (self._relative(p) for p in paths) if r is not None}
        recorded = self._read()
        if not entries <= recorded:
            self._write(recorded | entries)

    def claim_present(self, names: Iterable[str]) -> None:
        """Record every file now under these places: written by this run, which found them holding nothing else."""
        paths = []
        for name in names:
            top = self.root / name
            if top.is_file() and not top.is_symlink():
                paths.append(top)
            elif top.is_dir() and not top.is_symlink():
                paths += [Path(folder) / f for folder, _, files in os.walk(top) for f in files]
        if paths:
            self.claim(paths)

    def clear(self, names: Iterable[str]) -> None:
        """Remove what the record lists under these places, then the folders that leaves empty; nothing else."""
        wanted = set(names)
        recorded = self._read()
        removed = set()
        for entry in sorted(recorded):
            parts = self._valid(entry)
            if parts is None or parts[0] not in wanted:
                continue
            removed.add(entry)
            if self._behind_a_link(parts):
                continue
            path = self.root.joinpath(*parts)
            if path.is_symlink() or path.is_file():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            parent = path.parent
            while parent != self.root:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent
        if removed:
            self._write(recorded - removed)


def artifacts_folder(root: Path, profiles: Sequence[str], backend: str) -> OutputFolder:
    """The artifacts folder: a folder per profile and `setup/`, and `kind-logs/` on the kind backend.

    The kind/kubeconfig commands log (`<backend>-commands.log`) is only ever appended to, and stays.
    """
    folders = [safe_name(p) for p in profiles]
    places = (*folders, SETUP_FOLDER, *(["kind-logs"] if backend == "kind" else []))
    written = "<profile>/<Case>/, setup/ and kind-logs/" if backend == "kind" else "<profile>/<Case>/ and setup/"
    described = f"writes {written} there, removing what an earlier run of it wrote"
    return OutputFolder("--artifacts-dir", root, places, described)


def report_folder(root: Path, names: Sequence[str], earlier: Callable[[str, Path], bool]) -> OutputFolder:
    """The report folder: the report files (and junit.xml when it goes there), overwritten by every run."""
    listed = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
    described = f"writes {listed} there, over what an earlier run of it wrote"
    return OutputFolder("--report-dir", root, tuple(names), described, earlier)


def earlier_report_file(relative: str, path: Path) -> bool:
    """A report file an earlier run wrote before the record existed: its content says it is the suite's.

    The JSON report names its format, the Markdown report opens with its title, the suite's junit.xml holds
    its test classes.
    """
    from conformance.report.json_document import JSON_NAME, REPORT_FORMAT
    from conformance.report.markdown import MD_NAME

    try:
        head = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    if relative == JSON_NAME:
        try:
            document = json.loads(head)
        except ValueError:
            return False
        return isinstance(document, dict) and document.get("format") == REPORT_FORMAT
    if relative == MD_NAME:
        return head.startswith("# Inbound conformance: ")
    if relative == "junit.xml":
        return 'classname="conformance.suite.' in head
    return False
