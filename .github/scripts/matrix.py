"""The nightly workflow's matrix, read from fixtures/versions.yaml (the single source of the version rows).

    python .github/scripts/matrix.py rows [--ip-family F] [--hub H --tag T --istio-version V
                                          [--install-values YAML] [--image-archive URL] [--variant V]
                                          [--istioctl-url URL [--istioctl-sha256 SHA]]
                                          [--compare-upstream true|false]] [--github-output FILE]

prints `{"include": [row, ...]}` for `strategy.matrix`, one entry per row of fixtures/versions.yaml with the keys
`name`, `istio`, `kubernetes`, `kind`, `node_image`, `ip_family` and `custom`. A scheduled run (no --ip-family) runs
every row in IPv4 and the current row (the newest Istio minor) once more in dual-stack, named `<row>-dual`; a
dispatched `--ip-family dual` runs the rows from Istio 1.17 (the first with dual-stack support). With `--hub`, the
matrix is a single `custom` row: the build's claimed version, on the kind release and node image of that version's
row (the same row the kind backend picks: same minor, or the newest row for a newer minor). A version that is not a
release (1.32-dev) needs --istioctl-url: no istioctl can be downloaded for it. Every input is checked here, so a
mistyped dispatch fails in seconds, before a runner builds a cluster. `--github-output` appends `rows=<json>`, and
`upstream=ROW` and `upstream_istio=VERSION`: with `--compare-upstream true`, the scheduled row whose last report the
custom build is compared with, of the build's family (empty when not asked, or when no scheduled row runs the
claimed minor in that family: no IPv6 row is scheduled, and dual-stack only on the current row; then there is no
upstream report, and the `site` job's summary says so). Runs on the standard library and
PyYAML only (the workflow's matrix job has nothing else).

    python .github/scripts/matrix.py tools --istio-version V

(in the tox `conformance` env) prints `kind=PATH`: the kind release the row pins, downloaded and sha256-verified
by the suite itself (fixtures/tools.yaml), never the one preinstalled on the runner, whose version drifts. (No
kubectl: the suite talks to the API server with the official Python client.)

    python .github/scripts/matrix.py images --istio-version V --hub H --tag T [--variant V] [--install-values FILE]

(in the tox `conformance` env) prints every image the run's installs pull, one a line, as the suite computes them
(conformance/backends/kind/images.py): a release from 1.22 also installs the ambient profile, whose images are
`-distroless` unless the variant says otherwise. The custom-build job checks each is in the image archive or in
its registry before a cluster is made, rather than let the install time out.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
VERSIONS = REPO / "fixtures" / "versions.yaml"
SUPPORT = REPO / "fixtures" / "kubernetes.yaml"
VERSIONS_FORMAT = "mesh-inbound-conformance/versions"
ROW_KEYS = ("name", "istio", "kubernetes", "kind", "node_image")
OTHER_KEYS = ("istioctl_precheck",)
"""Read by the kind backend only (conformance/backends/kind/matrix.py); any other key is a mistake."""
VARIANTS = ("", "profile", "default", "distroless")
"""The dispatch's `variant` input: empty or `profile` (each install profile's own), or --istio-variant's value."""
IP_FAMILIES = ("ipv4", "ipv6", "dual")
DUAL_STACK_SINCE = (1, 17)
"""The first minor with dual-stack support (ISTIO_DUAL_STACK, experimental in 1.17.0: conformance/spec/capabilities.py
DUAL_STACK_SINCE); a dual run of an older release stops with one line, so the matrix never asks for one."""
DUAL_SUFFIX = "-dual"
"""The scheduled dual-stack entry's name: its row's name plus this (job, artifact, report folder and cluster apart)."""
BOOLEANS = ("", "true", "false")
"""A boolean dispatch input as the workflow hands it to a script: empty on a scheduled run."""
CUSTOM = "custom"

# A row name becomes a job name, an artifact name, a report directory and part of a kind cluster name.
NAME = re.compile(r"[a-z0-9][a-z0-9.-]{0,39}")
# The Istio versions the suite reads (1.10.6, v1.10.6, 1.22.0-beta.1, 1.23-dev): major and minor pick the row.
VERSION = re.compile(r"v?(?P<major>\d+)\.(?P<minor>\d+)(?:\.\d+)?(?:[-+.][0-9A-Za-z][0-9A-Za-z.+-]*)?")
# Docker's reference grammar: a lowercase repository (optionally with a registry host and port), a tag.
HUB = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
# A published release (one istioctl exists for it): X.Y.Z, nothing after.
RELEASE = re.compile(r"v?\d+\.\d+\.\d+")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class MatrixError(ValueError):
    """A problem with fixtures/versions.yaml or the dispatch inputs, in one line."""


def minor_of(version: str) -> tuple[int, int]:
    """(major, minor) of an Istio version; MatrixError if it is not one."""
    match = VERSION.fullmatch(version.strip())
    if not match:
        raise MatrixError(f"{version!r} is not an Istio version (like 1.21.6 or 1.22.0-beta.1)")
    return int(match["major"]), int(match["minor"])


def load_rows(path: Path = VERSIONS) -> list[dict[str, str]]:
    """The rows of the version matrix, with the keys the workflow uses."""
    data: Any = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or data.get("format") != VERSIONS_FORMAT or data.get("version") != 1:
        raise MatrixError(f"{path}: expected format {VERSIONS_FORMAT} version 1")
    rows: list[dict[str, str]] = []
    for item in data.get("rows") or []:
        missing = [key for key in ROW_KEYS if not item.get(key)]
        if missing:
            raise MatrixError(f"{path}: row {item.get('name', '?')} lacks {', '.join(missing)}")
        unknown = sorted(set(item) - set(ROW_KEYS) - set(OTHER_KEYS))
        if unknown:
            raise MatrixError(
                f"{path}: row {item.get('name', '?')}: no reader uses {', '.join(unknown)} (a row's profiles are "
                "its Istio version's capabilities)"
            )
        row = {key: str(item[key]) for key in ROW_KEYS}
        if not NAME.fullmatch(row["name"]) or row["name"] == CUSTOM:
            raise MatrixError(
                f"{path}: row name {row['name']!r} must be lowercase letters, digits, '.' and '-' (at most 40), "
                f"and not {CUSTOM!r}"
            )
        if any(r["name"] == row["name"] for r in rows):
            raise MatrixError(f"{path}: row name {row['name']!r} is used twice")
        minor_of(row["istio"])
        rows.append(row)
    if not rows:
        raise MatrixError(f"{path}: no rows")
    return rows


def row_for(version: str, rows: list[dict[str, str]], support: Path = SUPPORT) -> dict[str, str]:
    """The row of a version, picked as the kind backend picks it.

    The row of the same Istio minor, else the newest Kubernetes the minor supports with a pinned node image
    (fixtures/kubernetes.yaml), else the newest row for a minor newer than every row.
    """
    wanted = minor_of(version)
    for row in rows:
        if minor_of(row["istio"]) == wanted:
            return row
    data: Any = yaml.safe_load(support.read_text())
    ranges = data.get("istio") or {}
    images = data.get("node_images") or {}
    entry = ranges.get(f"{wanted[0]}.{wanted[1]}")
    if entry is not None:
        first, last = (tuple(int(x) for x in str(k).split(".")) for k in entry["kubernetes"])
        usable = [k for k in images if first <= tuple(int(x) for x in str(k).split(".")) <= last]
        if usable:
            k8s = max(usable, key=lambda k: tuple(int(x) for x in str(k).split(".")))
            image = images[k8s]
            return {
                "name": f"istio-{wanted[0]}.{wanted[1]}-k8s-{k8s}",
                "istio": version,
                "kubernetes": str(k8s),
                "kind": str(image["kind"]),
                "node_image": str(image["image"]),
            }
    newest = max(rows, key=lambda r: minor_of(r["istio"]))
    if wanted > minor_of(newest["istio"]):
        return newest
    known = ", ".join(f"{m} (k8s {e['kubernetes'][0]}-{e['kubernetes'][1]})" for m, e in ranges.items())
    raise MatrixError(
        f"Istio {version}: no row in fixtures/versions.yaml and no known Kubernetes range with a pinned node image "
        f"in fixtures/kubernetes.yaml (known: {known})"
    )


def matrix(
    rows: list[dict[str, str]],
    *,
    ip_family: str = "",
    hub: str = "",
    tag: str = "",
    istio_version: str = "",
    install_values: str = "",
    image_archive: str = "",
    istioctl_url: str = "",
    istioctl_sha256: str = "",
    variant: str = "",
    compare_upstream: str = "",
) -> dict[str, list[dict[str, Any]]]:
    """The `strategy.matrix` value: every row, or the single custom row of a dispatched build."""
    scheduled = not ip_family.strip()
    family = ip_family.strip() or "ipv4"
    if family not in IP_FAMILIES:
        raise MatrixError(f"ip_family {ip_family!r}: expected ipv4, ipv6 or dual")
    if variant.strip() not in VARIANTS:
        raise MatrixError(f"variant {variant.strip()!r}: expected profile, default or distroless")
    if compare_upstream.strip() not in BOOLEANS:
        raise MatrixError(f"compare_upstream {compare_upstream.strip()!r}: expected true or false")
    if not hub.strip():
        custom_inputs = {
            "tag": tag,
            "istio_version": istio_version,
            "install_values": install_values,
            "image_archive": image_archive,
            "istioctl_url": istioctl_url,
            "istioctl_sha256": istioctl_sha256,
            "variant": "" if variant.strip() == "profile" else variant,
            "compare_upstream": "" if compare_upstream.strip() == "false" else compare_upstream,
        }
        given = [name for name, value in custom_inputs.items() if value.strip()]
        if given:
            raise MatrixError(f"{', '.join(given)} given without hub: a custom build needs hub, tag and istio_version")
        if family == "dual":
            rows = [r for r in rows if minor_of(r["istio"]) >= DUAL_STACK_SINCE]
            if not rows:
                raise MatrixError("ip_family dual: no row runs Istio 1.17 or newer (the first with dual-stack support)")
        include = [{**row, "ip_family": family, "custom": False} for row in rows]
        if scheduled:
            current = max(rows, key=lambda r: minor_of(r["istio"]))
            name = current["name"] + DUAL_SUFFIX
            if not NAME.fullmatch(name):
                raise MatrixError(f"row name {current['name']!r} is too long for its dual-stack entry {name!r}")
            dual = {**current, "name": name, "ip_family": "dual", "custom": False}
            include.append(dual)
        return {"include": include}
    hub, tag, version = hub.strip(), tag.strip(), istio_version.strip()
    if not HUB.fullmatch(hub):
        raise MatrixError(f"hub {hub!r}: expected an image repository such as ghcr.io/you/istio (lowercase)")
    if not TAG.fullmatch(tag):
        raise MatrixError(f"tag {tag!r}: expected the image tag of the build (letters, digits, '_', '.', '-')")
    if not version:
        raise MatrixError("istio_version: give the Istio version the build claims to be (like 1.21.6)")
    if install_values.strip():
        try:
            overlay = yaml.safe_load(install_values)
        except yaml.YAMLError as err:
            raise MatrixError(f"install_values is not YAML: {' '.join(str(err).split())}") from None
        if not isinstance(overlay, dict):
            raise MatrixError(
                "install_values: expected an IstioOperator overlay (a YAML mapping), not a path or a scalar"
            )
    if image_archive.strip() and not image_archive.strip().startswith("https://"):
        raise MatrixError(
            f"image_archive {image_archive.strip()!r}: expected an https:// URL of a `docker save` tarball"
        )
    url, sha = istioctl_url.strip(), istioctl_sha256.strip()
    if url and not url.startswith("https://"):
        raise MatrixError(f"istioctl_url {url!r}: expected an https:// URL of the build's istioctl (binary or .tar.gz)")
    if sha and not url:
        raise MatrixError("istioctl_sha256 given without istioctl_url: it verifies that download")
    if sha and not re.fullmatch(r"[0-9a-fA-F]{64}", sha):
        raise MatrixError(f"istioctl_sha256 {sha!r}: expected 64 hex digits")
    minor_of(version)
    if not RELEASE.fullmatch(version) and not url:
        raise MatrixError(
            f"istio_version {version!r} is not a release, so no istioctl can be downloaded for it: "
            "give istioctl_url (the build's own istioctl)"
        )
    if family == "dual" and minor_of(version) < DUAL_STACK_SINCE:
        raise MatrixError(f"ip_family dual: Istio {version} has no dual-stack support (experimental from 1.17.0)")
    row = row_for(version, rows)
    custom = {**row, "name": CUSTOM, "istio": version, "ip_family": family, "custom": True}
    return {"include": [custom]}


def upstream(
    rows: list[dict[str, str]], istio_version: str, compare_upstream: str, ip_family: str = ""
) -> dict[str, str]:
    """The nightly row a custom build is compared with: the scheduled row of its claimed minor and its family.

    Only the schedule's rows have reports to compare with: every row of fixtures/versions.yaml in IPv4, and the
    current row (the newest minor) once more in dual-stack (`<row>-dual`); no row runs IPv6 on the schedule. A
    report of another family has other cells (their ids carry the family), so it is never the upstream. A minor
    without a row (run on a cluster that row_for makes up) has no upstream, and a minor newer than every row is
    not the newest row's.
    """
    if compare_upstream.strip() != "true":
        return {"upstream": "", "upstream_istio": ""}
    family = ip_family.strip() or "ipv4"
    wanted = minor_of(istio_version)
    row = next((r for r in rows if minor_of(r["istio"]) == wanted), None)
    if row is None or family == "ipv6":
        return {"upstream": "", "upstream_istio": ""}
    if family == "dual":
        current = max(rows, key=lambda r: minor_of(r["istio"]))
        if row["name"] != current["name"]:
            return {"upstream": "", "upstream_istio": ""}
        return {"upstream": row["name"] + DUAL_SUFFIX, "upstream_istio": row["istio"]}
    return {"upstream": row["name"], "upstream_istio": row["istio"]}


def run_images(istio_version: str, hub: str, tag: str, variant: str = "", install_values: str = "") -> list[str]:
    """Every image a custom build's run pulls, as the kind backend computes it (both installs of an ambient release)."""
    from conformance.backends.kind import images

    options = {
        "istio_version": istio_version,
        "istio_hub": hub,
        "istio_tag": tag,
        "istio_variant": None if variant in ("", "profile") else variant,
        "install_values": install_values or None,
    }
    return images.pulled(images.run_installs(options))


def resolve_tools(istio_version: str) -> dict[str, str]:
    """The row's pinned kind, downloaded and verified by the suite (never PATH)."""
    from conformance.backends.kind import matrix as suite_matrix
    from conformance.backends.kind import tools

    row = suite_matrix.row_for(istio_version)
    return {"kind": str(tools.resolve_tool("kind", None, row.kind, use_path=False))}


def main(argv: list[str] | None = None) -> int:
    """The command line; one line on stderr (and a GitHub annotation) for a problem, exit status 1."""
    parser = argparse.ArgumentParser(prog="matrix.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rows = commands.add_parser("rows", help="the strategy.matrix JSON")
    rows.add_argument("--versions", type=Path, default=VERSIONS, help="the version matrix file")
    options = ("ip-family", "hub", "tag", "istio-version", "install-values", "image-archive", "istioctl-url")
    for option in (*options, "istioctl-sha256", "variant", "compare-upstream"):
        rows.add_argument(f"--{option}", default="")
    rows.add_argument("--github-output", type=Path, default=None, help="append rows=<json> to this file")
    tools = commands.add_parser("tools", help="kind=PATH for a row (needs the suite installed)")
    tools.add_argument("--istio-version", required=True)
    pulled = commands.add_parser("images", help="the images the run pulls, one a line (needs the suite installed)")
    for option in ("istio-version", "hub", "tag"):
        pulled.add_argument(f"--{option}", required=True)
    pulled.add_argument("--variant", default="")
    pulled.add_argument("--install-values", default="", help="the install values file, if any")
    args = parser.parse_args(argv)
    try:
        if args.command == "images":
            if args.variant not in VARIANTS:
                raise MatrixError(f"variant {args.variant!r}: expected profile, default or distroless")
            for image in run_images(args.istio_version, args.hub, args.tag, args.variant, args.install_values):
                print(image)
            return 0
        if args.command == "tools":
            from conformance.backends.base import BackendError

            try:
                resolved = resolve_tools(args.istio_version)
            except BackendError as err:
                raise MatrixError(str(err)) from None
            for tool, path in resolved.items():
                print(f"{tool}={path}")
            return 0
        rows_read = load_rows(args.versions)
        value = matrix(
            rows_read,
            ip_family=args.ip_family,
            hub=args.hub,
            tag=args.tag,
            istio_version=args.istio_version,
            install_values=args.install_values,
            image_archive=args.image_archive,
            istioctl_url=args.istioctl_url,
            istioctl_sha256=args.istioctl_sha256,
            variant=args.variant,
            compare_upstream=args.compare_upstream,
        )
        compared = upstream(rows_read, args.istio_version, args.compare_upstream, args.ip_family)
    except (MatrixError, ValueError) as err:
        # One line, whatever the inputs held: a newline in them must not start a workflow command of its own.
        message = " ".join(str(err).split())
        print(f"matrix.py: {message}", file=sys.stderr)
        if os.environ.get("GITHUB_ACTIONS") == "true":
            print(f"::error title=nightly matrix::{message.replace('%', '%25')}")
        return 1
    text = json.dumps(value, separators=(",", ":"))
    print(json.dumps(value, indent=2))
    if args.github_output is not None:
        with args.github_output.open("a") as out:
            out.write(f"rows={text}\n")
            out.writelines(f"{key}={value}\n" for key, value in compared.items())
    return 0


if __name__ == "__main__":
    sys.exit(main())
