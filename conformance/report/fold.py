"""The Markdown report's folds: a long section in a `<details>` block whose `<summary>` is its one-line verdict.

A reader of a passing run sees the summary and one line per section; a section with a failure is rendered open,
so a failing run shows the problem without a click. GitHub-flavoured Markdown (and so `$GITHUB_STEP_SUMMARY`)
renders the tables and headings inside a `<details>` block only when a blank line follows `<summary>` and
precedes `</details>`: fold() puts both. The summary's text is HTML-escaped (`<`, `>`, `&`: it is an element's
text, not an attribute, so quotes stay as they are), whatever it is built from.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

PASS_MARK = "✅"
FAIL_MARK = "❌"


def fold(summary: str, body: Sequence[str], failed: bool) -> list[str]:
    """Markdown lines of `body` folded under `summary`, open when `failed`."""
    return [
        "",
        "<details open>" if failed else "<details>",
        f"<summary>{html.escape(summary, quote=False)}</summary>",
        *([] if body and body[0] == "" else [""]),
        *body,
        "",
        "</details>",
    ]


def cells_verdict(name: str, total: int, failed: int, unit: str = "cells") -> str:
    """`passthrough: 792/792 cells as expected ✅`, or `passthrough: 3 of 792 cells differ ❌`."""
    if failed:
        return f"{name}: {failed} of {total} {unit} differ {FAIL_MARK}"
    return f"{name}: {total}/{total} {unit} as expected {PASS_MARK}"
