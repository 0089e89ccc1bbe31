"""The version istioctl 1.15.1-1.20 reads from a proxy image's tag (precheck.go fromLegacyNetworkingVersion).

Apart from capabilities.py because it is Go's parsing rather than a fact about a release: go-version's grammar,
not PEP 440, decides which tags give a version at all.
"""

from __future__ import annotations

import re

from packaging.version import Version

_GO_SEMVER = re.compile(
    r"v?(?P<segments>[0-9]+(?:\.[0-9]+)*?)"
    r"(?:-(?:[0-9]+[0-9A-Za-z\-~]*(?:\.[0-9A-Za-z\-~]+)*|[A-Za-z\-~]+[0-9A-Za-z\-~]*(?:\.[0-9A-Za-z\-~]+)*))?"
    r"(?:\+[0-9A-Za-z\-~]+(?:\.[0-9A-Za-z\-~]+)*)?"
)
"""hashicorp/go-version's SemverRegexpRaw (what istioctl's TagToVersionString parses with), matched whole (`^...$`)."""

_GO_INT64_MAX = 2**63 - 1


def istioctl_tag_version(tag: str) -> Version | None:
    """A proxy image tag as istioctl 1.15.1-1.20 reads it, or None where it reads none.

    operator/pkg/version.TagToVersionString: a `release-` prefix is stripped, the rest parsed by go-version's
    NewSemver, and only its numeric segments kept (padded to three): the pre-release and build parts are
    dropped, so `1.10.0-rc.1` and `1.10.0-dev` are 1.10.0 and `1.20.0-distroless` is 1.20.0. Not PEP 440:
    `1.9.9_1` or `latest` do not parse.
    """
    match = _GO_SEMVER.fullmatch(tag.removeprefix("release-"))
    if match is None:
        return None
    segments = [int(part) for part in match.group("segments").split(".")]
    if any(part > _GO_INT64_MAX for part in segments):
        return None  # strconv.ParseInt fails: not a version
    segments += [0] * (3 - len(segments))
    return Version(".".join(str(part) for part in segments))


def image_tag_version(image: str) -> Version | None:
    """The version istioctl 1.15.1-1.20 reads from a proxy image, or None where it reads none.

    istioctl cuts the reference at its FIRST `:` (strings.Cut) and reads the rest as `istioctl_tag_version`
    does, so a registry with a port (`localhost:5000/istio/proxyv2:1.9.0`), `latest` and a digest
    (`...@sha256:...`) give no version; such a pod is checked (tools-versions-ci.md, the precheck table;
    precheck.go fromLegacyNetworkingVersion).
    """
    _, sep, tag = image.partition(":")
    if not sep:
        return None
    return istioctl_tag_version(tag)
