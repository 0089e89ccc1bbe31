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
- the status port (15020) answers `/app-health/<container>/readyz` from HAProxy's own health checks of the
  app (one backend per prober, `check inter <period> rise 1 fall 1`, from 127.0.0.6 / ::6): the verdict is
  at most one period old, where pilot-agent probes the app on each request.
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
        "    timeout check 1s",
        "",
        "frontend inbound",
        "    mode tcp",
        f"    bind 0.0.0.0:{inbound['port']}",
        f"    bind [::]:{inbound['port']} v6only",
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
    """pilot-agent's part: the status port answers from one health-checked backend per app prober."""
    pod_ip = config["pod"]["ips"][0]
    ipv6 = ":" in pod_ip
    destination = ("::1" if ipv6 else "127.0.0.1") if status.get("legacy_localhost_destination") else pod_ip
    source = "::6" if ipv6 else "127.0.0.6"
    lines = [
        "frontend status",
        "    mode http",
        f"    bind 0.0.0.0:{status['port']}",
        f"    bind [::]:{status['port']} v6only",
    ]
    backends = []
    for index, (path, prober) in enumerate(sorted(status.get("app_probers", {}).items())):
        name = f"probe_{index}"
        period_ms = max(100, int(float(prober.get("periodSeconds", 1) or 1) * 1000))
        check_ms = max(100, int(float(prober.get("timeoutSeconds", 1) or 1) * 1000))
        if "tcpSocket" in prober:
            port, check = int(prober["tcpSocket"]["port"]), []
            mode = "tcp"
        else:
            port = int(prober["httpGet"]["port"])
            mode = "http"
            check = [
                f"    http-check send meth GET uri {prober['httpGet'].get('path', '/')}",
                "    http-check expect status 200-399",
            ]
        lines += [
            f"    http-request return status 200 content-type text/plain string ok if {{ path {path} }} "
            f"{{ nbsrv({name}) ge 1 }}",
            f"    http-request return status 500 content-type text/plain string failing if {{ path {path} }}",
        ]
        backends += [
            f"backend {name}",
            f"    mode {mode}",
            f"    timeout check {check_ms}ms",
            *(["    option httpchk"] if mode == "http" else []),
            *check,
            f"    server app {_addr(destination, port)} check inter {period_ms}ms rise 1 fall 1"
            f" source {_addr(source, None)}",
            "",
        ]
    lines += ["    http-request return status 404 content-type text/plain string unknown", ""]
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
    os.lseek(fd, 0, os.SEEK_SET)
    sys.stdout.flush()
    os.execv(haproxy, [haproxy, "-db", "-f", f"/proc/self/fd/{fd}"])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
