"""The sample reports of tests/data/site/ (see its README), unpacked for `site` to read."""

from __future__ import annotations

import gzip
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "site"
NAMES = ("release-ipv4", "release-ipv6", "custom-ipv4", "custom-ipv4-night-before", "interrupted-ipv4")


def unpack(folder: Path) -> dict[str, Path]:
    """Each sample as a plain JSON file in `folder`, by name."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in NAMES:
        target = folder / f"{name}.json"
        target.write_bytes(gzip.decompress((DATA / f"{name}.json.gz").read_bytes()))
        paths[name] = target
    return paths
