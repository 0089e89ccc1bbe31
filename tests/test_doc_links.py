"""Every relative link and #anchor in README.md and docs/*.md leads somewhere, and every docs page is reachable.

The README keeps to what a newcomer needs and links to the reference in docs/; a page renamed, a heading
reworded or a file moved must not leave a link that leads nowhere. Anchors are computed as GitHub renders
them: the heading's text lowercased, punctuation other than `-` and `_` dropped, spaces made hyphens, and
`-1`, `-2` ... appended to repeats.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^ {0,3}(```|~~~)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The text outside fenced code blocks, with inline code spans blanked (links there are not links)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return re.sub(r"`[^`]*`", "``", "\n".join(lines))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a page's headings make (code spans keep their text: only the backticks are dropped)."""
    seen: Counter[str] = Counter()
    found = set()
    fenced = False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        heading = re.match(r"#{1,6} (.*)", line)
        if fenced or heading is None:
            continue
        base = slug(heading[1])
        found.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
        seen[base] += 1
    return found


def links(page: Path) -> list[str]:
    """Every link's target; a link's text may run over a line break."""
    return LINK.findall(_prose(page.read_text()))


def test_the_slug_is_githubs() -> None:
    assert slug("For platform teams: `impact`, which of my apps does the change break?") == (
        "for-platform-teams-impact-which-of-my-apps-does-the-change-break"
    )
    assert slug("Putting another proxy under the harness: `--emulator-sidecar`") == (
        "putting-another-proxy-under-the-harness---emulator-sidecar"
    )
    assert slug("What a run writes, and removes") == "what-a-run-writes-and-removes"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not ours to check offline
            continue
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (destination.suffix != ".md" or anchor not in anchors(destination)):
            broken.append(f"{target}: no heading makes #{anchor}")
    assert broken == []


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {target.partition("#")[0] for target in links(REPO / "README.md")}
    assert {f"docs/{page.name}" for page in PAGES[1:]} <= linked


def test_the_docs_pages_link_back_to_the_readme() -> None:
    for page in PAGES[1:]:
        assert any(target.partition("#")[0] == "../README.md" for target in links(page)), page.name


# Paths the pages name that other branches of the same change create: accepted while missing, and to be dropped
# from here once they exist (the test below says so), so the set stays empty between changes.
PENDING: set[str] = set()
REPO_PATH = re.compile(
    r"(?:\.github|conformance|tests|workloads|fixtures|benchmarks|docs"
    r"|backends|spec|world|engine|report|run|suite|impact)/[\w./*-]*"
)


def named_paths(page: Path) -> set[str]:
    """The repository paths a page names in code spans (placeholders such as `<name>` or `test_x` left out)."""
    spans = re.findall(r"`([^`\n]+)`", page.read_text())
    return {span for span in spans if REPO_PATH.fullmatch(span) and "test_x" not in span}


def _exists(path: str) -> bool:
    # `backends/emulated/kubelet.py` is named from inside the package; `conformance/suite/test_*.py` is a glob.
    return any(any(root.glob(path.rstrip("/"))) for root in (REPO, REPO / "conformance"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_path_a_page_names_exists(page: Path) -> None:
    missing = sorted(path for path in named_paths(page) if not _exists(path) and path not in PENDING)
    assert missing == []


def test_pending_paths_are_still_pending() -> None:
    arrived = sorted(path for path in PENDING if _exists(path))
    assert arrived == [], "these paths exist now: drop them from PENDING"
