"""The IST0143 precheck: listener parsing, the istioctl rule, istioctl's output format, and reading it back.

Expected values are written out here from istioctl's own code and output (istioctl/cmd/precheck.go at 1.10.0,
the Istio 1.10 "upcoming networking changes" blog) and from the kernel's /proc/net/tcp format; none is
computed by the code under test. Fixtures live in tests/data.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.backends.precheck import (
    Finding,
    Listener,
    ParseError,
    check_pod,
    parse_istioctl,
    parse_proc_net_tcp,
    parse_ss,
    render_run,
)

DATA = Path(__file__).parent / "data"

BLOG_POD = "echo-local-849647c5bd-g9wxf"
BLOG_LINE_443 = (
    "Error [IST0143] (Pod echo-local-849647c5bd-g9wxf.default) Port 443 is exposed in a Service but listens on "
    "localhost. It will not be exposed to other pods."
)
BLOG_LINE_7070 = (
    "Error [IST0143] (Pod echo-local-849647c5bd-g9wxf.default) Port 7070 is exposed in a Service but listens on "
    "localhost. It will not be exposed to other pods."
)
ISSUES_STDERR = (
    "Error: Issues found when checking the cluster. Istio may not be safe to install or upgrade.\n"
    "See https://istio.io/latest/docs/reference/config/analysis for more information about causes and resolutions.\n"
)
NO_ISSUES_STDERR = (
    "✔ No issues found when checking the cluster. Istio is safe to install or upgrade!\n"
    "  To get started, check out https://istio.io/latest/docs/setup/getting-started/\n"
)


# --- ss -ltnH ----------------------------------------------------------------------------------------------


def test_parse_ss_fixture() -> None:
    listeners = parse_ss((DATA / "ss_ltnH.txt").read_text())
    assert listeners == [
        Listener("*", 15021),
        Listener("*", 15006),
        Listener("*", 15001),
        Listener("127.0.0.1", 15000),
        Listener("*", 15090),
        Listener("*", 8080),
        Listener("*", 8080),
        Listener("127.0.0.1", 8081),
        Listener("::1", 8081),
        Listener("10.244.0.12", 8082),
        Listener("fd00:10:244::c", 8082),
        Listener("127.0.0.1%lo", 53),
    ]


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("*:15090", Listener("*", 15090)),
        ("0.0.0.0:8080", Listener("*", 8080)),
        ("[::]:8080", Listener("*", 8080)),
        ("127.0.0.1:15000", Listener("127.0.0.1", 15000)),
        ("[::1]:8081", Listener("::1", 8081)),
        ("127.0.0.1%lo:53", Listener("127.0.0.1%lo", 53)),
        ("127.0.0.6:15020", Listener("127.0.0.6", 15020)),
        # Older iproute2 prints IPv6 without brackets.
        (":::9090", Listener("*", 9090)),
        ("::1:9091", Listener("::1", 9091)),
    ],
)
def test_parse_ss_local_address_forms(local: str, expected: Listener) -> None:
    assert parse_ss(f"LISTEN 0      128   {local}    0.0.0.0:*\n") == [expected]


def test_parse_ss_process_column_and_blank_lines() -> None:
    text = (
        "\n"
        'LISTEN 0      4096       127.0.0.1:15000      0.0.0.0:*    users:(("envoy",pid=22,fd=18))\n'
        "   \n"
        "\t\n"
        "LISTEN 0      128            [::1]:8081          [::]:*\n"
        "\n"
    )
    assert parse_ss(text) == [Listener("127.0.0.1", 15000), Listener("::1", 8081)]


def test_parse_ss_empty_output_is_no_listeners() -> None:
    assert parse_ss("") == []
    assert parse_ss("\n\n") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Too few columns (a truncated line).
        ("LISTEN 0 128 127.0.0.1:8081\n", "ss line 1: expected at least 5 columns"),
        # The header line `ss` prints without -H.
        (
            "State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process\n",
            "ss line 1: local address 'Local' is not HOST:PORT",
        ),
        # A service name where -n would print a number.
        ("LISTEN 0 128 127.0.0.1:http 0.0.0.0:*\n", "ss line 1: local address '127.0.0.1:http' is not HOST:PORT"),
        # The error names the offending line, counting blank lines.
        (
            "LISTEN 0 128 127.0.0.1:8081 0.0.0.0:*\n\nLISTEN 0 128 localhost 0.0.0.0:*\n",
            "ss line 3: local address 'localhost' is not HOST:PORT",
        ),
        ("LISTEN 0 128 [::1]: [::]:*\n", "ss line 1: local address '[::1]:' is not HOST:PORT"),
    ],
)
def test_parse_ss_rejects_malformed_input(text: str, message: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_ss(text)
    assert str(info.value).startswith(message)


def test_parse_error_is_a_value_error() -> None:
    assert issubclass(ParseError, ValueError)


def test_parse_ss_scoped_listeners_keep_their_scope_and_are_not_loopback() -> None:
    """istioctl cannot parse `127.0.0.1%lo` (netip rejects an IPv4 zone) nor `[::1]%lo:8081` (SplitHostPort)."""
    listeners = parse_ss("LISTEN 0 128 [::1]%lo:8081 [::]:*\nLISTEN 0 128 127.0.0.1%lo:53 0.0.0.0:*\n")
    assert listeners == [Listener("::1%lo", 8081), Listener("127.0.0.1%lo", 53)]
    assert [lst.loopback for lst in listeners] == [False, False]


# --- /proc/net/tcp and tcp6 ---------------------------------------------------------------------------------


def test_parse_proc_net_tcp_fixture() -> None:
    # 0100007F:1F91 = 127.0.0.1:8081, 00000000:4A38 = 0.0.0.0:19000, 0C00F40A:1F92 = 10.244.0.12:8082,
    # 0100007F:3A98 = 127.0.0.1:15000; the ESTABLISHED (01) and TIME_WAIT (06) rows are not listeners.
    listeners = parse_proc_net_tcp((DATA / "proc_net_tcp.txt").read_text(), ipv6=False)
    assert listeners == [
        Listener("127.0.0.1", 8081),
        Listener("*", 19000),
        Listener("10.244.0.12", 8082),
        Listener("127.0.0.1", 15000),
    ]


def test_parse_proc_net_tcp6_fixture() -> None:
    # Four host-order (little-endian) 32-bit words: ...01000000 = ::1, 100000FD 00004402 00000000 0C000000 =
    # fd00:10:244::c; 1F91 = 8081, 3A9E = 15006, 1F92 = 8082.
    listeners = parse_proc_net_tcp((DATA / "proc_net_tcp6.txt").read_text(), ipv6=True)
    assert listeners == [
        Listener("::1", 8081),
        Listener("*", 15006, ipv6=True),  # the family is kept; tcp6 does not show IPV6_V6ONLY (None)
        Listener("fd00:10:244::c", 8082),
    ]
    assert all(lst.ipv6 and lst.v6only is None for lst in listeners)


def test_parse_proc_net_tcp_header_only_and_trailing_blank() -> None:
    header = (DATA / "proc_net_tcp.txt").read_text().splitlines()[0]
    assert parse_proc_net_tcp(header + "\n", ipv6=False) == []
    assert parse_proc_net_tcp(header + "\n\n   \n", ipv6=False) == []


def test_parse_proc_net_tcp_first_line_is_always_the_header() -> None:
    # A listener row where the header belongs is skipped, as the kernel always prints the header first.
    row = "   0: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000 10001 0 1 1 0 100 0 0 10 0\n"
    assert parse_proc_net_tcp(row, ipv6=False) == []
    assert parse_proc_net_tcp("header\n" + row, ipv6=False) == [Listener("127.0.0.1", 8081)]


# --- the loopback test and check_pod ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.6", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("*", False),
        ("10.244.0.12", False),
        ("fd00:10:244::c", False),
        ("::6", False),
        ("0.0.0.0", False),
    ],
)
def test_listener_loopback(address: str, loopback: bool) -> None:
    # netip.Addr.IsLoopback: 127.0.0.0/8 and ::1 (::6 is not loopback, it is merely assigned to lo).
    assert Listener(address, 80).loopback is loopback


def test_check_pod_loopback_on_exposed_port() -> None:
    findings = check_pod("mic-mesh", "echo-none-0", [8081, 8083], [Listener("127.0.0.1", 8081), Listener("*", 8083)])
    assert findings == [Finding("mic-mesh", "echo-none-0", 8081)]


def test_check_pod_wildcard_only_is_fine() -> None:
    assert check_pod("ns", "pod", [8080], [Listener("*", 8080)]) == []


def test_check_pod_loopback_on_unexposed_port_is_fine() -> None:
    assert check_pod("ns", "pod", [8080], [Listener("127.0.0.1", 15000), Listener("127.0.0.1", 8181)]) == []


def test_check_pod_wildcard_and_loopback_on_same_port() -> None:
    # istioctl sets bindStatus.Lo for the loopback line whatever else listens on the port.
    findings = check_pod("ns", "pod", [8080], [Listener("*", 8080), Listener("127.0.0.1", 8080)])
    assert findings == [Finding("ns", "pod", 8080)]


@pytest.mark.parametrize("address", ["127.0.0.6", "::1", "127.0.0.1"])
def test_check_pod_other_loopback_addresses(address: str) -> None:
    assert check_pod("ns", "pod", [9081], [Listener(address, 9081)]) == [Finding("ns", "pod", 9081)]


@pytest.mark.parametrize("address", ["10.244.0.12", "fd00:10:244::c"])
def test_check_pod_pod_ip_listener_is_fine(address: str) -> None:
    assert check_pod("ns", "pod", [8082], [Listener(address, 8082)]) == []


def test_check_pod_one_finding_per_port_sorted() -> None:
    listeners = [
        Listener("::1", 9081),
        Listener("127.0.0.1", 9081),
        Listener("127.0.0.1", 8081),
        Listener("127.0.0.1", 7070),
    ]
    findings = check_pod("ns", "pod", iter([9081, 8081, 7070]), iter(listeners))
    assert findings == [Finding("ns", "pod", 7070), Finding("ns", "pod", 8081), Finding("ns", "pod", 9081)]


def test_check_pod_on_fixture_listeners() -> None:
    listeners = parse_ss((DATA / "ss_ltnH.txt").read_text())
    findings = check_pod("default", "app-0", [8080, 8081, 8082, 15000, 15090], listeners)
    assert [f.port for f in findings] == [8081, 15000]


def test_check_pod_ignores_the_family_and_v6only() -> None:
    # IST0143 has no family: a dual-stack pod's sockets, with their family and IPV6_V6ONLY, give the same findings.
    listeners = [
        Listener("*", 8080),
        Listener("*", 8080, ipv6=True, v6only=True),
        Listener("127.0.0.1", 8081),
        Listener("::1", 8081, v6only=True),
        Listener("*", 8082, ipv6=True, v6only=False),
    ]
    assert check_pod("ns", "pod", [8080, 8081, 8082], listeners) == [Finding("ns", "pod", 8081)]


def test_listener_family_order_and_mapped_addresses() -> None:
    assert Listener("::1", 80).ipv6  # a literal IPv6 address is IPv6 whatever the caller said
    assert not Listener("*", 80).ipv6
    # Known and unknown V6ONLY side by side sort (unknown first) instead of failing to compare None with a bool.
    mixed = [Listener("*", 80, ipv6=True, v6only=True), Listener("*", 80, ipv6=True), Listener("*", 80)]
    assert sorted(mixed) == [Listener("*", 80), Listener("*", 80, ipv6=True), mixed[0]]
    # A tcp6 row of an IPv4-mapped bind (::ffff:127.0.0.1:8083) reads as ss prints it.
    row = "   0: 0000000000000000FFFF00000100007F:1F93 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 1\n"
    assert parse_proc_net_tcp("header\n" + row, ipv6=True) == [Listener("::ffff:127.0.0.1", 8083, ipv6=True)]
    # How the emulated backend's diagnostics print them (as ss -ltne would).
    shown = [Listener("*", 80).shown, Listener("*", 80, ipv6=True, v6only=False).shown, Listener("::1", 81).shown]
    assert shown == ["*:80", "[::]:80 v6only:0", "[::1]:81"]


# --- istioctl's output --------------------------------------------------------------------------------------


def test_finding_line_matches_the_blog() -> None:
    assert Finding("default", BLOG_POD, 443).line() == BLOG_LINE_443


def test_finding_line_only_for_ist0143() -> None:
    with pytest.raises(ValueError, match="no template for IST0141"):
        Finding("default", "pod", 1, code="IST0141").line()


def test_finding_defaults() -> None:
    finding = Finding("ns", "pod", 1)
    assert (finding.code, finding.level) == ("IST0143", "Error")


def test_render_run_with_findings() -> None:
    findings = [Finding("default", BLOG_POD, 7070), Finding("default", BLOG_POD, 443)]
    run = render_run(findings, [f"{BLOG_POD}.default"])
    assert run.exit_code == 1
    assert run.stdout == BLOG_LINE_443 + "\n" + BLOG_LINE_7070 + "\n"
    assert run.stderr == ISSUES_STDERR
    assert run.findings == [Finding("default", BLOG_POD, 443), Finding("default", BLOG_POD, 7070)]
    assert run.checked_pods == [f"{BLOG_POD}.default"]
    assert run.warnings == []
    assert run.tool == "suite-checker"


def test_render_run_sorts_like_istioctl() -> None:
    """diag.Messages.Sort: level, code, the origin's FriendlyName (`Pod NAME.NAMESPACE`), then the text."""
    findings = [Finding("b", "a-0", 1), Finding("a", "z-0", 2), Finding("a", "b-0", 3), Finding("a", "b-0", 15000)]
    run = render_run(findings, [], tool="x")
    assert [line.split(" is exposed")[0] for line in run.stdout.splitlines()] == [
        "Error [IST0143] (Pod a-0.b) Port 1",
        "Error [IST0143] (Pod b-0.a) Port 15000",
        "Error [IST0143] (Pod b-0.a) Port 3",
        "Error [IST0143] (Pod z-0.a) Port 2",
    ]
    assert run.tool == "x"


def test_render_run_without_findings() -> None:
    run = render_run([], ["echo-none-0.mic-mesh", "client-0.mic-mesh"])
    assert run.exit_code == 0
    assert run.stdout == ""
    assert run.stderr == NO_ISSUES_STDERR
    assert run.findings == []
    assert run.checked_pods == ["echo-none-0.mic-mesh", "client-0.mic-mesh"]


# --- reading istioctl's output back -------------------------------------------------------------------------


def test_parse_istioctl_round_trip() -> None:
    findings = [Finding("mic-mesh", "echo-localhost-0", 9081), Finding("mic-mesh", "echo-none-0", 8081)]
    rendered = render_run(findings, [])
    parsed = parse_istioctl(rendered.stdout, rendered.stderr, rendered.exit_code)
    assert parsed.findings == [Finding("mic-mesh", "echo-localhost-0", 9081), Finding("mic-mesh", "echo-none-0", 8081)]
    assert parsed.warnings == []
    assert parsed.exit_code == 1
    assert parsed.tool == "istioctl"
    assert parsed.stdout == rendered.stdout
    assert parsed.stderr == rendered.stderr


def test_parse_istioctl_round_trip_clean() -> None:
    rendered = render_run([], ["a-0.ns"])
    parsed = parse_istioctl(rendered.stdout, rendered.stderr, rendered.exit_code)
    assert parsed.findings == []
    assert parsed.warnings == []
    assert parsed.exit_code == 0


def test_parse_istioctl_blog_output() -> None:
    parsed = parse_istioctl(BLOG_LINE_443 + "\n" + BLOG_LINE_7070 + "\n", ISSUES_STDERR, 1)
    assert parsed.findings == [
        Finding("default", "echo-local-849647c5bd-g9wxf", 443, "IST0143", "Error"),
        Finding("default", "echo-local-849647c5bd-g9wxf", 7070, "IST0143", "Error"),
    ]
    assert parsed.warnings == []


def test_parse_istioctl_findings_come_back_sorted() -> None:
    parsed = parse_istioctl(BLOG_LINE_7070 + "\n" + BLOG_LINE_443 + "\n", ISSUES_STDERR, 1)
    assert [f.port for f in parsed.findings] == [443, 7070]


@pytest.mark.parametrize(
    "failure",
    [
        'failed to get config dump:  failure running port forward process: pods "echo-0" not found',
        "failed to get listener state:  error execing into echo-0/mic-mesh istio-proxy container: "
        'container not found ("istio-proxy")',
        "failed to get ports:  unknown field",
    ],
)
def test_parse_istioctl_exit_0_having_checked_nothing(failure: str) -> None:
    parsed = parse_istioctl(failure + "\n", NO_ISSUES_STDERR, 0)
    assert parsed.findings == []
    assert parsed.warnings == [failure]
    assert parsed.exit_code == 0


def test_parse_istioctl_silent_failure_beside_findings() -> None:
    stdout = "failed to get config dump:  context deadline exceeded\n" + BLOG_LINE_443 + "\n"
    parsed = parse_istioctl(stdout, ISSUES_STDERR, 1)
    assert parsed.findings == [Finding("default", BLOG_POD, 443)]
    assert parsed.warnings == ["failed to get config dump:  context deadline exceeded"]


def test_parse_istioctl_non_ist0143_issue() -> None:
    stdout = (
        'Error [IST0141] (Cluster) Missing required permission to create resource "Namespace" (permission denied)\n'
    )
    parsed = parse_istioctl(stdout, ISSUES_STDERR, 1)
    assert parsed.findings == []
    assert parsed.warnings == ["istioctl reported issues that are not IST0143 (control-plane checks?)"]


def test_parse_istioctl_non_ist0143_pod_message_is_not_a_finding() -> None:
    stdout = "Error [IST0144] (Pod app-0.ns) Port 8080 is exposed in a Service but listens on localhost.\n"
    parsed = parse_istioctl(stdout, ISSUES_STDERR, 1)
    assert parsed.findings == []
    assert parsed.warnings == ["istioctl reported issues that are not IST0143 (control-plane checks?)"]


def test_parse_istioctl_failure_unrelated_to_checks() -> None:
    stderr = (
        "2021-05-18T10:00:00.000000Z\twarn\tsome log line\n"
        'Error: failed to get the Kubernetes version: Get "https://127.0.0.1:6443/version?timeout=32s": '
        "dial tcp 127.0.0.1:6443: connect: connection refused\n"
    )
    parsed = parse_istioctl("", stderr, 1)
    assert parsed.findings == []
    assert parsed.warnings == [
        'istioctl failed (exit 1): Error: failed to get the Kubernetes version: Get "https://127.0.0.1:6443/'
        'version?timeout=32s": dial tcp 127.0.0.1:6443: connect: connection refused'
    ]


def test_parse_istioctl_failure_without_stderr() -> None:
    parsed = parse_istioctl("", "", 137)
    assert parsed.warnings == ["istioctl failed (exit 137): "]


def test_parse_istioctl_exit_0_with_findings_is_suspicious() -> None:
    parsed = parse_istioctl(BLOG_LINE_443 + "\n", NO_ISSUES_STDERR, 0)
    assert parsed.findings == [Finding("default", BLOG_POD, 443)]
    assert parsed.warnings == ["istioctl exited 0 although it printed IST0143 findings"]


def test_parse_istioctl_warning_level_ist0143() -> None:
    line = (
        "Warning [IST0143] (Pod echo-local-849647c5bd-g9wxf.default) Port 443 is exposed in a Service but listens "
        "on localhost. It will not be exposed to other pods."
    )
    parsed = parse_istioctl(line + "\n", ISSUES_STDERR, 1)
    assert parsed.findings == [Finding("default", BLOG_POD, 443, "IST0143", "Warning")]
    assert parsed.warnings == []


def test_parse_istioctl_ignores_surrounding_noise() -> None:
    stdout = "\n  " + BLOG_LINE_443 + "  \nsome unrelated line\n\n"
    parsed = parse_istioctl(stdout, ISSUES_STDERR, 1)
    assert parsed.findings == [Finding("default", BLOG_POD, 443)]


def test_parse_istioctl_namespace_slash_name_origin() -> None:
    line = (
        "Error [IST0143] (Pod mic-mesh/echo-localhost-7d9c8b7f6-x2x9q) Port 8081 is exposed in a Service but "
        "listens on localhost. It will not be exposed to other pods."
    )
    parsed = parse_istioctl(line + "\n", ISSUES_STDERR, 1)
    assert parsed.findings == [Finding("mic-mesh", "echo-localhost-7d9c8b7f6-x2x9q", 8081)]


def test_the_report_s_precheck_section_says_which_findings_were_ignored() -> None:
    """A finding about a pod that is not the run's current pod is left out on purpose: the report says so."""
    from conformance.backends.precheck import Finding, PrecheckRun
    from conformance.report.markdown import markdown
    from conformance.report.record import RunRecord
    from conformance.spec.capabilities import istio_capabilities
    from conformance.spec.dimensions import IpFamily, Profile

    note = "ignored 1 istioctl finding(s) for pods that are not this run's current pods: mic-mesh/echo-none-old"
    run = PrecheckRun("istioctl", 0, "", "", [], [], [], [Finding("mic-mesh", "echo-none-old", 8081)], [note])
    report = RunRecord(istio_capabilities("1.10.6"), {}, "kind", IpFamily.IPV4, [Profile.PASSTHROUGH])
    report.record_precheck("test_precheck", "passthrough", run, [], [])
    assert f"- ℹ️ {note}" in markdown(report)
