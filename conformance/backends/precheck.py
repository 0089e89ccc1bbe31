"""The localhost precheck (IST0143), backend-independent: listeners in, istioctl-format findings out.

istioctl 1.10-1.20 `x precheck` (istioctl/cmd/precheck.go checkListeners) takes, for every injected pod, the
ports of its inbound clusters (`inbound|PORT||` in Envoy's config dump: "exposed in a Service") and the
pod's listeners (`ss -ltnH`, column 4, the local address); a loopback listener on such a port is IST0143.
This module does the same from any source of listeners (`ss` output on kind, /proc/net/tcp in the emulated
cluster), prints what istioctl prints, and reads istioctl's own output back, so both can be compared.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

IST0143_TEMPLATE = (
    "Error [IST0143] (Pod {origin}) Port {port} is exposed in a Service but listens on localhost. "
    "It will not be exposed to other pods."
)
ISSUES_FOUND = (
    "Error: Issues found when checking the cluster. Istio may not be safe to install or upgrade.\n"
    "See https://istio.io/latest/docs/reference/config/analysis for more information about causes and resolutions."
)
NO_ISSUES = (
    "✔ No issues found when checking the cluster. Istio is safe to install or upgrade!\n"
    "  To get started, check out https://istio.io/latest/docs/setup/getting-started/"
)
# istioctl 1.10-1.11 print the origin as `(Pod NAME.NAMESPACE)`; from 1.12 (istio/istio#35406, the kube
# origin's FriendlyName) as `(Pod NAMESPACE/NAME)`.
_FINDING = re.compile(
    r"^(?P<level>Error|Warning|Info) \[(?P<code>IST\d{4})\] \((?P<kind>Pod) "
    r"(?:(?P<ns_slash>[^ /)]+)/(?P<pod_slash>[^ )]+)|(?P<pod_dot>[^ )]+)\.(?P<ns_dot>[^ .)]+))\) "
    r"(?P<message>.*)$"
)
_PORT = re.compile(r"^Port (\d+) is exposed in a Service but listens on localhost")
_SILENT_FAILURES = ("failed to get config dump", "failed to get ports", "failed to get listener state")
# istioctl skips an `ss` line it cannot parse and says only this: the pod was checked in part.
_PARTIAL = "failed to get parse state:"
TCP_LISTEN = "0A"


class ParseError(ValueError):
    """Input that is not in the format it claims to be."""


@functools.total_ordering
@dataclass(frozen=True)
class Listener:
    """A listening TCP socket: its local address (`*` for 0.0.0.0 and ::, or an IP), port, family and V6ONLY.

    The wildcard stays `*` in both families, so the precheck (which has no family: IST0143 is about loopback
    only) and single-stack `impact` read it as before; `ipv6` and `v6only` are what dual-stack `impact` needs to
    tell which family a socket serves (settings-dualstack.md section 5). A literal IPv6 address sets `ipv6`
    itself. `v6only` is IPV6_V6ONLY of an IPv6 socket where the source shows it (sock_diag does, as `ss -e`'s
    v6only:1), None where it does not (/proc/net/tcp6) or for an IPv4 socket.
    """

    address: str
    port: int
    ipv6: bool = False
    v6only: bool | None = None

    def __post_init__(self) -> None:
        if ":" in self.address and not self.ipv6:
            object.__setattr__(self, "ipv6", True)

    def _key(self) -> tuple[str, int, bool, int]:
        return (self.address, self.port, self.ipv6, -1 if self.v6only is None else int(self.v6only))

    def __lt__(self, other: object) -> bool:
        """Address, port, then family and V6ONLY (unknown first): as the address-and-port order was."""
        if not isinstance(other, Listener):
            return NotImplemented
        return self._key() < other._key()

    @property
    def shown(self) -> str:
        """As `ss -ltne` would show it: `*:P` for 0.0.0.0, `[::]:P` for an IPv6 wildcard, `v6only:0/1` when known."""
        if not self.ipv6:
            return f"{self.address}:{self.port}"
        host = "::" if self.address == "*" else self.address
        return f"[{host}]:{self.port}" + ("" if self.v6only is None else f" v6only:{int(self.v6only)}")

    @property
    def loopback(self) -> bool:
        """The test istioctl applies: netip.Addr.IsLoopback (127.0.0.0/8 and ::1).

        A scoped address (`127.0.0.1%lo`) is not: istioctl's netip.ParseAddr rejects a zone on IPv4 and its
        net.SplitHostPort rejects `[::1]%lo:PORT`, so it never flags such a listener.
        """
        if "%" in self.address:
            return False
        try:
            return ipaddress.ip_address(self.address).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True, order=True)
class Finding:
    """One message of the precheck."""

    namespace: str
    pod: str
    port: int
    code: str = "IST0143"
    level: str = "Error"

    def line(self, origin_style: str = "name.namespace") -> str:
        """The line istioctl prints for it: `name.namespace` origins up to 1.11, `namespace/name` from 1.12."""
        if self.code != "IST0143":
            raise ValueError(f"no template for {self.code}")
        if origin_style == "namespace/name":
            origin = f"{self.namespace}/{self.pod}"
        elif origin_style == "name.namespace":
            origin = f"{self.pod}.{self.namespace}"
        else:
            raise ValueError(f"origin style {origin_style!r}: expected name.namespace or namespace/name")
        return IST0143_TEMPLATE.format(origin=origin, port=self.port)

    def printed_as(self, line: str) -> bool:
        """Whether `line` is this finding in either of istioctl's origin styles."""
        return line in (self.line("name.namespace"), self.line("namespace/name"))


@dataclass
class PrecheckRun:
    """The result of one precheck, from istioctl or from the suite's own checker."""

    tool: str
    exit_code: int
    stdout: str
    stderr: str
    findings: list[Finding] = field(default_factory=list)
    checked_pods: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Signs that the run checked less than it says (istioctl prints these and still exits 0)."""
    ignored: list[Finding] = field(default_factory=list)
    """Findings about pods that are not the run's current pods (a Terminating pod of an earlier profile)."""
    notes: list[str] = field(default_factory=list)
    """What the run left out on purpose, and why (shown in the report's precheck section)."""


def parse_ss(text: str) -> list[Listener]:
    """Parse `ss -ltnH` (State Recv-Q Send-Q Local:Port Peer:Port [Process]) into listeners.

    Only the precheck reads `ss`, and IST0143 has no family: a wildcard's family is not kept (`*` is a dual
    `[::]` socket in current iproute2 and 0.0.0.0 in old ones), while a literal IPv6 address is IPv6.
    """
    listeners = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        columns = line.split()
        if len(columns) < 5:
            raise ParseError(f"ss line {number}: expected at least 5 columns, got {line!r}")
        local = columns[3]
        host, sep, port = local.rpartition(":")
        if not sep or not port.isdigit():
            raise ParseError(f"ss line {number}: local address {local!r} is not HOST:PORT")
        # ss prints a device-bound listener with its scope: 127.0.0.1%lo:53, [::1]%lo:8081. The scope stays in
        # the address, because istioctl cannot parse such an address as loopback either (see Listener.loopback).
        host, _, scope = host.partition("%")
        host = host.strip("[]") + (f"%{scope}" if scope else "")
        listeners.append(Listener("*" if host in ("*", "0.0.0.0", "::") else host, int(port)))
    return listeners


def _decode_v4(hex_address: str) -> str:
    return str(ipaddress.IPv4Address(bytes.fromhex(hex_address)[::-1]))


def format_ipv6(raw: bytes) -> str:
    """An IPv6 address as text, an IPv4-mapped one as `::ffff:a.b.c.d` (as ss prints it; Python 3.11 does not)."""
    address = ipaddress.IPv6Address(raw)
    mapped = address.ipv4_mapped
    return f"::ffff:{mapped}" if mapped is not None else str(address)


def _decode_v6(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    # Four host-order 32-bit words.
    ordered = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return format_ipv6(ordered)


def parse_proc_net_tcp(text: str, ipv6: bool) -> list[Listener]:
    """Parse /proc/net/tcp or tcp6 into the listening sockets (state 0A)."""
    listeners = []
    for line in text.splitlines()[1:]:
        columns = line.split()
        if len(columns) < 4:
            continue
        if columns[3] != TCP_LISTEN:
            continue
        address, port = columns[1].split(":")
        host = _decode_v6(address) if ipv6 else _decode_v4(address)
        # /proc/net/tcp6 does not show IPV6_V6ONLY: v6only stays unknown (None).
        listeners.append(Listener("*" if host in ("0.0.0.0", "::") else host, int(port, 16), ipv6))
    return listeners


CAT_COMMAND = ["cat", "/proc/net/tcp", "/proc/net/tcp6"]
"""What reads a pod's listeners where no `ss` is (a distroless proxy, the kind echo container, `impact`)."""


def split_proc_net(text: str) -> list[Listener]:
    """Listeners from `cat /proc/net/tcp /proc/net/tcp6` output: each file has a header; the address width tells.

    tcp6 is absent when IPv6 is disabled in the pod: cat then fails on it after printing tcp, which is enough.
    """
    v4, v6 = ["header"], ["header"]
    for line in text.splitlines():
        columns = line.split()
        if len(columns) < 4 or columns[0] == "sl" or ":" not in columns[1]:
            continue
        address = columns[1].split(":")[0]
        (v6 if len(address) == 32 else v4).append(line)
    return sorted(set(parse_proc_net_tcp("\n".join(v4), False) + parse_proc_net_tcp("\n".join(v6), True)))


def check_pod(namespace: str, pod: str, exposed_ports: Iterable[int], listeners: Iterable[Listener]) -> list[Finding]:
    """IST0143 for each exposed port with a loopback listener (even beside a wildcard one, as istioctl does)."""
    exposed = set(exposed_ports)
    ports = sorted({lst.port for lst in listeners if lst.port in exposed and lst.loopback})
    return [Finding(namespace, pod, port) for port in ports]


def render_run(findings: Sequence[Finding], checked_pods: Sequence[str], tool: str = "suite-checker") -> PrecheckRun:
    """What istioctl would print and return for these findings (every IST0143 is an Error: exit 1)."""
    # istioctl prints its messages sorted as text (diag.Messages.SortedDedupedCopy), so Port 15000 precedes 9081.
    ordered = sorted(findings, key=lambda f: f.line())
    if ordered:
        return PrecheckRun(
            tool, 1, "\n".join(f.line() for f in ordered) + "\n", ISSUES_FOUND + "\n", list(ordered), list(checked_pods)
        )
    return PrecheckRun(tool, 0, "", NO_ISSUES + "\n", [], list(checked_pods))


def parse_istioctl(stdout: str, stderr: str, exit_code: int) -> PrecheckRun:
    """Read `istioctl x precheck` output back into findings; note the ways it can check nothing and exit 0."""
    findings = []
    warnings = []
    for raw in stdout.splitlines():
        line = raw.strip()
        if not line:
            continue
        if _PARTIAL in line:
            warnings.append(f"partial check: istioctl skipped a listener it could not parse ({line})")
            continue
        if any(marker in line for marker in _SILENT_FAILURES):
            warnings.append(line)
            continue
        match = _FINDING.match(line)
        if not match:
            continue
        port = _PORT.match(match["message"])
        namespace = match["ns_slash"] or match["ns_dot"]
        pod = match["pod_slash"] or match["pod_dot"]
        if match["code"] == "IST0143" and port:
            findings.append(Finding(namespace, pod, int(port[1]), "IST0143", match["level"]))
    if exit_code == 0 and findings:
        warnings.append("istioctl exited 0 although it printed IST0143 findings")
    if exit_code != 0 and not findings and "Issues found" in stderr:
        warnings.append("istioctl reported issues that are not IST0143 (control-plane checks?)")
    if exit_code != 0 and "Issues found" not in stderr and not findings:
        warnings.append(
            f"istioctl failed (exit {exit_code}): {stderr.strip().splitlines()[-1] if stderr.strip() else ''}"
        )
    return PrecheckRun("istioctl", exit_code, stdout, stderr, sorted(findings), [], warnings)
