"""HAProxy as the sidecar: a real proxy nobody here wrote, under the `--emulator-sidecar` contract.

Run it the way the harness runs any sidecar: `python3 haproxy_sidecar.py CONFIG` as uid 1337 in the pod's
namespace. It turns the sidecar configuration (format mesh-inbound-conformance/sidecar-config, version 1)
into an `haproxy.cfg` and execs Debian's HAProxy (`haproxy -db -f CFG`), so that the process the harness
watches is HAProxy itself. It proves the contract can be met by a proxy built elsewhere, and shows where
such a proxy differs from Envoy:

- the inbound port (15006) reads the client's original destination with SO_ORIGINAL_DST, which HAProxy
  (USE_NETFILTER) does for IPv4 only: on IPv6 it sees the address REDIRECT rewrote to (port 15006), so it
  cannot tell which port the client dialled, and the adapter refuses such connections rather than loop
  back into itself;
- a declared `http` port dials its upstream (the original destination, localhost or a pod IP) from the
  `bind` address; when the dial fails HAProxy answers 503, like Envoy, but an upstream that accepts and
  closes before any response byte gets HAProxy's 502, where Envoy's "reset before headers" is a 503;
- the passthrough sniffs as Envoy's http_inspector does (`req.proto_http` under `tcp-request
  inspect-delay`, `detection_timeout_s` or, for null, a day) and sends HTTP to an HTTP backend;
- TPROXY pods (`interception.mode`): HAProxy accepts the TPROXY'd connections (`bind ... transparent`; on
  IPv6 it then reads the original destination from the socket's own address, so IPv6 works there) but cannot
  do Envoy's original_src: it can bind the client's address (`usesrc clientip`), yet HAProxy 2.6 has no way to
  put SO_MARK 1337 on its server-side connections (its `set-mark` marks the client side), and an unmarked dial
  from the client's address is TPROXY'd back into 15006 by the capture rules. So the adapter dials from `bind`
  (127.0.0.6 / ::6) as in REDIRECT mode, and the app sees that address where Envoy shows it the client's;
- the status port (15020) answers `/app-health/<container>/readyz` as pilot-agent does, by probing the app
  on each request from 127.0.0.6 / ::6 (see `_status`; HAProxy's own health checks answer from the last
  check, which the kubelet's first probe after a restart outruns, and their layer-4 check answers the
  SYN-ACK with a reset, so the app never accepts it);
"""

import json
import os
import shutil
import sys

DAY_MS = 86_400_000


def _addr(address: str, port: int | None) -> str:
    """HAProxy's address form: an IPv6 address in brackets, so that its last group is not read as a port."""
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{port}" if port is not None else host


def _server(route: dict, name: str) -> str:
    """A server line for a route: where to dial, and from which source address."""
    upstream = route["upstream"]
    port = upstream.get("port")
    # 0.0.0.0 is HAProxy's "the address the client connected to" (its original destination); no port: the same
    # port the client dialled.
    target = "0.0.0.0" if upstream["address"] == "original_dst" else upstream["address"]
    line = f"    server {name} {_addr(target, port)}"
    if route.get("bind"):
        line += f" source {_addr(route['bind'], None)}"
    return line


def render(config: dict) -> str:
    """The haproxy.cfg for one pod's sidecar configuration."""
    inbound, outbound, status = config["inbound"], config["outbound"], config.get("status") or {}
    # The TPROXY target hands connections only to transparent listeners; original_src itself is not possible.
    tproxy = " transparent" if (config.get("interception") or {}).get("mode") == "TPROXY" else ""
    listeners = inbound["listeners"]
    passthrough = inbound["passthrough"]
    timeout = passthrough.get("detection_timeout_s")
    inspect_ms = DAY_MS if timeout is None else max(1, int(float(timeout) * 1000))
    lines = [
        "global",
        "    maxconn 1024",
        "    nbthread 1",
        "defaults",
        "    retries 0",
        "    timeout connect 2s",
        "    timeout client 60s",
        "    timeout server 60s",
        "",
        "frontend inbound",
        "    mode tcp",
        f"    bind 0.0.0.0:{inbound['port']}{tproxy}",
        f"    bind [::]:{inbound['port']} v6only{tproxy}",
        # IPv6: HAProxy reads no original destination, so the port is the listener's own. Refuse, not loop.
        f"    tcp-request connection reject if {{ dst_port {inbound['port']} }}",
        f"    tcp-request inspect-delay {inspect_ms}ms",
    ]
    declared = " ".join(str(item["port"]) for item in listeners)
    if declared:
        lines.append(f"    tcp-request content accept if {{ dst_port {declared} }}")
    lines += [
        "    tcp-request content accept if HTTP",
        "    tcp-request content accept if !HTTP",
    ]
    for item in listeners:
        lines.append(f"    use_backend in_{item['port']} if {{ dst_port {item['port']} }}")
    lines += ["    use_backend in_passthrough_http if HTTP", "    default_backend in_passthrough_tcp", ""]
    for item in listeners:
        mode = "http" if item["protocol"] == "http" else "tcp"
        lines += [f"backend in_{item['port']}", f"    mode {mode}", _server(item, "app"), ""]
    for mode in ("http", "tcp"):
        lines += [f"backend in_passthrough_{mode}", f"    mode {mode}", _server(passthrough, "app"), ""]

    http_ports = " ".join(str(p) for p in outbound["http_ports"])
    lines += [
        "frontend outbound",
        "    mode tcp",
        f"    bind 0.0.0.0:{outbound['port']}",
        f"    bind [::]:{outbound['port']} v6only",
        f"    tcp-request connection reject if {{ dst_port {outbound['port']} }}",
    ]
    if http_ports:
        lines.append(f"    use_backend out_http if {{ dst_port {http_ports} }}")
    lines += ["    default_backend out_tcp", ""]
    for mode in ("http", "tcp"):
        lines += [f"backend out_{mode}", f"    mode {mode}", "    server dst 0.0.0.0", ""]

    if status.get("port"):
        lines += _status(config, status)
    return "\n".join(lines) + "\n"


def _status(config: dict, status: dict) -> list[str]:
    """pilot-agent's part: each `/app-health/...` request runs its app prober there and then, through HAProxy.

    An httpGet prober is the request itself, proxied to the app with the prober's path from 127.0.0.6 / ::6: the
    app's status comes back (2xx/3xx pass), a refused dial is HAProxy's 503. A tcpSocket prober is a connection
    to the app's port: HAProxy sends it the request, and anything it answers (not HTTP: 502) or a silence until
    the prober's timeout (504) means it accepted, so both become 200; a refused dial stays 503. Health checks
    would answer from the last check, up to a period late, where the kubelet's probe after a restart asks now.
    """
    pod_ip = config["pod"]["ips"][0]
    ipv6 = ":" in pod_ip
    destination = ("::1" if ipv6 else "127.0.0.1") if status.get("legacy_localhost_destination") else pod_ip
    source = "::6" if ipv6 else "127.0.0.6"
    probers = sorted(status.get("app_probers", {}).items())
    lines = [
        "frontend status",
        "    mode http",
        f"    bind 0.0.0.0:{status['port']}",
        f"    bind [::]:{status['port']} v6only",
    ]
    backends = []
    for index, (path, prober) in enumerate(probers):
        name = f"probe_{index}"
        timeout_ms = max(100, int(float(prober.get("timeoutSeconds", 1) or 1) * 1000))
        lines.append(f"    use_backend {name} if {{ path {path} }}")
        backends += [f"backend {name}", "    mode http", f"    timeout server {timeout_ms}ms"]
        if "tcpSocket" in prober:
            port = int(prober["tcpSocket"]["port"])
            backends.append("    http-after-response set-status 200 if { status 502 } || { status 504 }")
        else:
            port = int(prober["httpGet"]["port"])
            backends += [
                f"    http-request set-path {prober['httpGet'].get('path', '/')}",
                f"    http-request set-header Host {_addr(destination, port)}",
            ]
        backends += [f"    server app {_addr(destination, port)} source {_addr(source, None)}", ""]
    lines += ["    default_backend unknown", ""]
    backends += [
        "backend unknown",
        "    mode http",
        "    http-request return status 404 content-type text/plain string unknown",
        "",
    ]
    return lines + backends


def main() -> int:
    """Write haproxy.cfg beside a copy of the configuration and become HAProxy."""
    if len(sys.argv) < 2:
        print("usage: haproxy_sidecar.py CONFIG", file=sys.stderr)
        return 2
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(haproxy, os.X_OK):
        print("haproxy_sidecar: no haproxy (Debian: apt-get install haproxy; setup.sh installs it)", file=sys.stderr)
        return 2
    try:
        with open(sys.argv[-1], encoding="utf-8") as fh:
            config = json.load(fh)
        if config.get("format") != "mesh-inbound-conformance/sidecar-config" or config.get("version") != 1:
            print(f"haproxy_sidecar: {sys.argv[-1]}: not a sidecar-config version 1", file=sys.stderr)
            return 2
        text = render(config)
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"haproxy_sidecar: {sys.argv[-1]}: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    # The configuration lives in a memfd: nothing is left on disk when HAProxy exits, and the path names it.
    fd = os.memfd_create("haproxy.cfg", 0)
    os.write(fd, text.encode())
    sys.stdout.flush()
    # HAProxy returns to its starting folder after reading the configuration; the harness may start it in one
    # that uid 1337 cannot enter (a test's private temporary folder).
    os.chdir("/")
    os.execv(haproxy, [haproxy, "-db", "-f", f"/proc/self/fd/{fd}"])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
