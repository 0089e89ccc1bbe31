"""The three ways `impact` prints: a table for people, IST0143 lines for grep, versioned JSON for programs."""

from __future__ import annotations

import json
from typing import Any

from conformance.backends.precheck import Finding
from conformance.impact.analysis import BEHAVIOURS, LOOPBACK_ONLY, PortFinding
from conformance.impact.sources import ImpactReport

FORMAT = "mesh-inbound-conformance/impact"
VERSION = 1
FORMATS = ("table", "istioctl", "json")


def _summary(report: ImpactReport) -> dict[str, int]:
    findings = report.findings
    return {
        "pods_listed": report.pods_seen,
        "pods_selected_by_services": len(report.results),
        "pods_checked": len(report.results) - len(report.unchecked),
        "pods_unchecked": len(report.unchecked),
        "loopback_only_ports": sum(f.kind == LOOPBACK_ONLY for f in findings),
        "pod_ip_only_ports": sum(f.kind != LOOPBACK_ONLY for f in findings),
    }


def _finding(f: PortFinding) -> dict[str, Any]:
    doc: dict[str, Any] = {"namespace": f.namespace, "pod": f.pod, "mode": f.mode, "port": f.port}
    if f.family is not None:  # dual-stack pods only: a single-stack report reads as before
        doc["family"] = f.family
    return doc | {
        "kind": f.kind,
        "listeners": list(f.addresses),
        "services": list(f.services),
        "consequences": dict(f.consequences),
        "breaks_by_default": f.breaks_by_default,
    }


def to_json(report: ImpactReport) -> str:
    """`format`/`version` first, so a reader can refuse a version it does not know.

    A finding of a dual-stack pod has a `family` key (`ipv4`/`ipv6`): each family is a finding of its own, and the
    summary counts findings, so a port loopback-only in both families counts twice.
    """
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "source": report.source,
        "namespaces": list(report.namespaces),
        "selector": report.selector,
        "exit_code": report.exit_code,
        "summary": _summary(report),
        "findings": [_finding(f) for f in report.findings],
        "pods": [
            {
                "namespace": r.pod.namespace,
                "pod": r.pod.name,
                "mode": r.mode,
                "targeted_ports": list(r.targeted),
                "checked": r.unchecked is None,
                "reason": r.unchecked,
                "via": r.via or None,
            }
            for r in report.results
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


def istioctl_lines(report: ImpactReport, origin_style: str = "namespace/name") -> str:
    """IST0143 lines, as istioctl >= 1.12 prints them (sorted as text), for every loopback-only port.

    Unlike istioctl, every pod is looked at (not only sidecar pods with an inbound cluster), and a pod that could
    not be checked is said so, on stderr, by the caller: the lines alone keep istioctl's grep-able format. A port of
    a dual-stack pod loopback-only in both families is one line, as IST0143 has no family.
    """
    lines = sorted(
        {Finding(f.namespace, f.pod, f.port).line(origin_style) for f in report.findings if f.kind == LOOPBACK_ONLY}
    )
    return "".join(line + "\n" for line in lines)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n" for row in rows
    )


def table(report: ImpactReport) -> str:
    """Findings, then unchecked pods with the reason, then the counts."""
    out = []
    findings = report.findings
    # The FAMILY column only where a dual-stack pod has findings: a single-stack report reads as before.
    families = any(f.family is not None for f in findings)
    if findings:
        rows = [
            [
                "NAMESPACE",
                "POD",
                "MODE",
                "PORT",
                *(["FAMILY"] if families else []),
                "LISTENS ON",
                "FINDING",
                *(b.upper() for b in BEHAVIOURS),
                "SERVICES",
            ]
        ]
        for f in findings:
            consequences = [f.short[b] for b in BEHAVIOURS]
            rows.append(
                [
                    f.namespace,
                    f.pod,
                    f.mode,
                    str(f.port),
                    *([f.family or "-"] if families else []),
                    ",".join(f.addresses),
                    f.kind,
                    *consequences,
                    ",".join(f.services),
                ]
            )
        out.append(_table(rows))
    else:
        out.append("No targeted port listens on loopback only or on the pod address only.\n")
    if report.unchecked:
        out.append("\nNOT CHECKED:\n")
        out.append(
            _table(
                [
                    ["NAMESPACE", "POD", "REASON"],
                    *([r.pod.namespace, r.pod.name, r.unchecked or ""] for r in report.unchecked),
                ]
            )
        )
    s = _summary(report)
    out.append(
        f"\n{s['pods_selected_by_services']} pods selected by a Service ({s['pods_listed']} listed), "
        f"{s['pods_checked']} checked, {s['pods_unchecked']} not checked; "
        f"{s['loopback_only_ports']} loopback-only ports, {s['pod_ip_only_ports']} pod-IP-only ports.\n"
    )
    out.append(
        "passthrough: a sidecar in Istio >= 1.10 (default); legacy: Istio <= 1.9, LOCALHOST mode or a Sidecar "
        "127.0.0.1 defaultEndpoint; ambient: ztunnel (no override).\n"
    )
    if families:
        out.append(
            "FAMILY: a dual-stack pod's port is judged for each family's clients (a port is counted once per family); "
            "legacy sends every client, IPv6 too, to 127.0.0.1, so the IPv4 listeners decide it.\n"
        )
    return "".join(out)


def render(report: ImpactReport, fmt: str) -> str:
    """The report in `fmt` (one of FORMATS)."""
    if fmt == "json":
        return to_json(report)
    if fmt == "istioctl":
        return istioctl_lines(report)
    return table(report)
