"""Echo workload of the inbound-networking conformance suite: `echo.py serve` and `echo.py probe`.

Why stdlib only: the same program runs in a tiny container image (`python:3.12-alpine`, nothing installed) and
directly on a host with `python3 -I -S echo.py ...` (the emulated backend). It is four files, one idea each:
- this one, the command line: the arguments, the port specs (PORT:BIND:PROTO, resolved into the sockets to
  open: which address an application binds is the very thing Istio's inbound semantics change), exit statuses;
- echo_serve.py, the server: application ports that answer who was asked and by whom, the control port;
- echo_probe.py, the prober: dial targets and classify each outcome; the harness imports it by path, so an
  outcome is classified by the same code on every backend;
- echo_socket.py, the socket I/O of both halves: a connected socket read through a buffer, the dial, the
  accept loop (no asyncio streams: they cost more CPU than a probe's whole exchange).

A user mistake (bad arguments, bad JSON, an address already in use) is reported as one line on stderr with
exit status 2 (usage) or 1 (runtime); never as a traceback.
"""

import argparse
import asyncio
import ipaddress
import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, NoReturn

# The program's two halves live beside it: echo_serve.py (serve) and echo_probe.py (probe, which the harness
# also imports by path), and their socket I/O, echo_socket.py. Run as `python3 -I -S echo.py` (isolated: the
# script's folder is not on the path), it puts its own folder first, so that they are found, and found there only.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from echo_probe import (
    DEFAULT_CONCURRENCY,
    DEFAULT_TIMEOUT,
    PROTOCOLS,
    check_timeout,
    one_line,
    parse_batch,
    parse_port_number,
    parse_target,
    probe_batch,
    quoted,
)
from echo_serve import WILDCARD, EchoServer, Listener, StartupError, run_server

# NB: no `from __future__ import annotations` (see echo_probe.py).

BIND_KEYWORDS = ("loopback", "pod_ip", "wildcard", "dual_wildcard")
DEFAULT_CONTROL_PORT = 19000

_PORT_SPEC_HINT = f"expected PORT:BIND:PROTO with BIND {'|'.join(BIND_KEYWORDS)}|<address> and PROTO http|tcp"
_LOOPBACK = {4: "127.0.0.1", 6: "::1"}


class UsageError(Exception):
    """A mistake in the command line or input: reported as one line, exit status 2."""


# --------------------------------------------------------------------------------------------------------
# serve: configuration (the command line's port specs, resolved into sockets to open)
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortSpec:
    """One application port to serve: PORT:BIND:PROTO from the command line."""

    port: int
    bind: str  # a BIND keyword, or a normalised literal IP address
    protocol: str


def parse_port_spec(text: str) -> PortSpec:
    """Parse PORT:BIND:PROTO; BIND may itself contain colons (IPv6), so split at the first and last colon."""

    def bad(reason: str = "") -> UsageError:
        detail = f"{reason}; {_PORT_SPEC_HINT}" if reason else _PORT_SPEC_HINT
        return UsageError(f"bad port spec {quoted(text)}: {detail}")

    first, last = text.find(":"), text.rfind(":")
    if first < 0 or last == first:
        raise bad()
    port_text, bind, protocol = text[:first], text[first + 1 : last], text[last + 1 :]
    port = parse_port_number(port_text)
    if port is None:
        raise bad(f"PORT {quoted(port_text)} is not a number 1-65535")
    if protocol not in PROTOCOLS:
        raise bad(f"unknown PROTO {quoted(protocol)}")
    if not bind:
        raise bad("empty BIND")
    if bind not in BIND_KEYWORDS:
        literal = bind[1:-1] if bind.startswith("[") and bind.endswith("]") else bind
        try:
            address = ipaddress.ip_address(literal)
        except ValueError:
            raise bad(f"BIND {quoted(bind)} is neither a keyword nor an IP address") from None
        if literal != bind and address.version != 6:
            raise bad("only IPv6 addresses may be bracketed")
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        bind = f"::ffff:{mapped}" if mapped else str(address)  # Python 3.11 would print ::ffff:7f00:1
    return PortSpec(port, bind, protocol)


def pod_ips_from_env(env: Mapping[str, str]) -> list[str]:
    """Read the pod IPs the downward API gives ($INSTANCE_IPS from status.podIPs, $INSTANCE_IP from podIP)."""
    found: list[str] = []
    for name in ("INSTANCE_IPS", "INSTANCE_IP"):
        for raw in env.get(name, "").split(","):
            item = raw.strip()
            if not item:
                continue
            try:
                address = str(ipaddress.ip_address(item))
            except ValueError:
                raise UsageError(f"bad ${name} entry {quoted(item)}: not an IP address") from None
            if address not in found:
                found.append(address)
    return found


def _families(pod_ips: Sequence[str]) -> list[int]:
    """The IP families the pod has; a pod that does not tell us its IPs is taken to be IPv4-only."""
    versions = {ipaddress.ip_address(ip).version for ip in pod_ips}
    return sorted(versions) if versions else [4]


class ListenAddress(NamedTuple):
    """One socket a BIND resolves to: its address, and for an IPv6 one whether IPV6_V6ONLY is on.

    `v6only` is decided by the BIND keyword, not read off the address: `[::]` is IPv6-only for `wildcard` and
    IPv4-too for `dual_wildcard`. A literal IPv4-mapped BIND (::ffff:a.b.c.d) needs it off (it is IPv4 traffic).
    An IPv4 socket has no such option; its `v6only` is True and means nothing.
    """

    address: str
    v6only: bool = True


def listen_addresses(spec: PortSpec, pod_ips: Sequence[str]) -> list[ListenAddress]:
    """Resolve a PortSpec's BIND into concrete sockets, one per served family where that applies.

    `dual_wildcard` is one socket whatever the families: `[::]` with IPV6_V6ONLY off in a pod with IPv6 (it
    serves both, as Go's `net.Listen("tcp", ":P")` does), and 0.0.0.0, as `wildcard`, in a pod without IPv6.
    """
    families = _families(pod_ips)
    if spec.bind == "loopback":
        return [ListenAddress(_LOOPBACK[f]) for f in families]
    if spec.bind == "wildcard":
        return [ListenAddress(WILDCARD[f]) for f in families]
    if spec.bind == "dual_wildcard":
        return [ListenAddress(WILDCARD[6], v6only=False) if 6 in families else ListenAddress(WILDCARD[4])]
    if spec.bind == "pod_ip":
        if not pod_ips:
            needs = "needs $INSTANCE_IP or $INSTANCE_IPS (the pod IPs from the downward API)"
            raise UsageError(f"bind pod_ip on port {spec.port} {needs}")
        return [ListenAddress(ip) for ip in pod_ips]
    literal = ipaddress.ip_address(spec.bind)
    mapped = isinstance(literal, ipaddress.IPv6Address) and literal.ipv4_mapped is not None
    return [ListenAddress(spec.bind, v6only=not mapped)]


def _plan(specs: Sequence[PortSpec], control_port: int, pod_ips: Sequence[str]) -> list[Listener]:
    """Every socket to open, application ports first, so that all checks happen before anything binds."""
    seen: set[int] = set()
    plan: list[Listener] = []
    for spec in specs:
        if spec.port == control_port:
            raise UsageError(f"duplicate port {spec.port}: it is the control port (change it with --control-port)")
        if spec.port in seen:
            raise UsageError(f"duplicate port {spec.port}: each application port may appear once")
        seen.add(spec.port)
        plan.extend(Listener(spec.protocol, a.address, spec.port, a.v6only) for a in listen_addresses(spec, pod_ips))
    plan.extend(Listener("control", WILDCARD[f], control_port) for f in _families(pod_ips))
    return plan


# --------------------------------------------------------------------------------------------------------
# serve and probe
# --------------------------------------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    specs = [parse_port_spec(text) for text in args.portspecs]
    pod_ips = pod_ips_from_env(os.environ)
    control_port: int = args.control_port
    plan = _plan(specs, control_port, pod_ips)
    server = EchoServer(
        os.environ.get("POD_NAME") or socket.gethostname(), os.environ.get("POD_NAMESPACE", ""), args.verbose
    )
    try:
        return asyncio.run(run_server(server, plan))
    except KeyboardInterrupt:  # SIGINT before the handler was installed: still a clean stop
        return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    given = [args.batch is not None, bool(args.stdin), bool(args.targets)]
    if sum(given) != 1:
        raise UsageError("probe needs exactly one of --batch JSON, --stdin or TARGET...")
    batch_timeout: float | None = None
    batch_concurrency: int | None = None
    if args.targets:
        try:
            targets = [parse_target(text) for text in args.targets]
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    else:
        raw: str | bytes = args.batch if args.batch is not None else sys.stdin.buffer.read()
        try:
            document = json.loads(raw)
        except ValueError as exc:
            raise UsageError(f"bad batch JSON: {exc}") from None
        try:
            targets, batch_timeout, batch_concurrency = parse_batch(document)
        except ValueError as exc:
            raise UsageError(f"bad batch: {exc}") from None
    # Explicit flags win over the batch's own values, which win over the defaults.
    timeout = args.timeout if args.timeout is not None else batch_timeout
    concurrency = args.concurrency if args.concurrency is not None else batch_concurrency
    results = asyncio.run(
        probe_batch(
            targets,
            DEFAULT_TIMEOUT if timeout is None else timeout,
            DEFAULT_CONCURRENCY if concurrency is None else concurrency,
        )
    )
    try:
        sys.stdout.write(json.dumps({"results": [r.to_json() for r in results]}) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into `head`; the reader has what it wanted
        return 0
    return 0


# --------------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one exception (one line in main) instead of usage text and sys.exit."""

    def error(self, message: str) -> NoReturn:
        """Raise instead of printing the two-line usage and exiting."""
        raise UsageError(message)


def _port_arg(text: str) -> int:
    port = parse_port_number(text)
    if port is None:
        raise argparse.ArgumentTypeError(f"{quoted(text)} is not a port number 1-65535")
    return port


def _timeout_arg(text: str) -> float:
    try:
        return check_timeout(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{quoted(text)} is not a number of seconds in (0, 3600]") from None


def _concurrency_arg(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{quoted(text)} is not a positive integer")
    return int(text)


_SERVE_BINDS = """\
Serve application ports and the control port. BIND is one of:
  loopback       127.0.0.1 and/or ::1, one socket per family of the pod
  pod_ip         each pod IP ($INSTANCE_IPS, $INSTANCE_IP)
  wildcard       0.0.0.0 and/or [::] (IPV6_V6ONLY on), one socket per family of the pod
  dual_wildcard  one socket [::] with IPV6_V6ONLY off, IPv4 too (Go's net.Listen("tcp", ":P"));
                 in a pod without IPv6 (IPv4-only, or no pod IPs told) the same as wildcard: 0.0.0.0
  <address>      a literal IP address (IPv6 optionally in brackets)
The pod's families come from $INSTANCE_IPS / $INSTANCE_IP; none told means IPv4 only."""


def _build_parser() -> _Parser:
    parser = _Parser(
        prog="echo", description="Echo workload and prober for inbound-networking tests.", allow_abbrev=False
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{serve,probe}")

    serve = commands.add_parser(
        "serve",
        help="serve application ports and the control port",
        description=_SERVE_BINDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    serve.add_argument("--control-port", type=_port_arg, default=DEFAULT_CONTROL_PORT, metavar="N")
    serve.add_argument("--verbose", action="store_true", help="log every request to stderr")
    serve.add_argument("portspecs", nargs="*", metavar="PORTSPEC", help="PORT:BIND:PROTO, PROTO http or tcp")

    probe = commands.add_parser("probe", help="dial targets and print one JSON document", allow_abbrev=False)
    probe.add_argument("--timeout", type=_timeout_arg, default=None, metavar="SECONDS")
    probe.add_argument("--concurrency", type=_concurrency_arg, default=None, metavar="N")
    probe.add_argument("--batch", default=None, metavar="JSON", help="a JSON probe batch")
    probe.add_argument("--stdin", action="store_true", help="read a JSON probe batch from stdin")
    probe.add_argument("targets", nargs="*", metavar="TARGET", help="http://, tcp:// or connect://HOST:PORT[#ID]")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; return the exit status (2 usage error, 1 runtime error, 0 otherwise)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _build_parser().parse_args(arguments)
        if args.command == "serve":
            return _cmd_serve(args)
        return _cmd_probe(args)
    except UsageError as exc:
        print(one_line(f"echo: {exc}"), file=sys.stderr)
        return 2
    except StartupError as exc:
        print(one_line(f"echo: {exc}"), file=sys.stderr)
        return 1
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
