"""Tests of the echo workload (workloads/echo/echo.py) with real processes and real sockets on loopback.

The program is started as the image and the emulated backend start it (`python3 -I -S echo.py serve ...`);
the probe code is imported by path, the way the harness imports it. 127.0.0.0/8 is entirely local on
Linux, so 127.0.0.2, .3 and .4 stand in for "some other address of the pod".
"""

import asyncio
import errno
import http.client
import importlib.util
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
ECHO_PY = REPO_ROOT / "workloads" / "echo" / "echo.py"
ECHO_PROBE_PY = ECHO_PY.with_name("echo_probe.py")


def load_echo(name: str = "echo_under_test", *, register: bool = True, path: Path = ECHO_PY) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


echo = load_echo()  # the command line; it imports its two halves from its own folder
serve = importlib.import_module("echo_serve")  # the server, as echo.py imported it
prober = load_echo("echo_probe_under_test", path=ECHO_PROBE_PY)  # the prober, by path, as the harness loads it


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HAVE_IPV6 = ipv6_loopback_available()
needs_ipv6 = pytest.mark.skipif(not HAVE_IPV6, reason="no IPv6 loopback (::1) on this host")


def free_ports(count: int) -> list[int]:
    """Ports free on the IPv4 wildcard (so on every 127.x address), and on ::1 when IPv6 is around."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            s.bind(("0.0.0.0", 0))
            port = s.getsockname()[1]
            if HAVE_IPV6:
                s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                held.append(s6)
                s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    s6.bind(("::", port))
                except OSError:
                    continue
            ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


# --------------------------------------------------------------------------------------------------------
# running echo.py as a subprocess
# --------------------------------------------------------------------------------------------------------


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "POD_NAME": "pod-a", "POD_NAMESPACE": "ns-a"}
    env.update(extra or {})
    return env


class EchoProcess:
    """A running `echo.py serve`, started and waited for until it printed `echo: ready`."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None, control_port: int) -> None:
        self.control_port = control_port
        self.control_host = "127.0.0.1"  # ::1 for a pod without IPv4, whose control port is [::] only
        cmd = [sys.executable, "-I", "-S", str(ECHO_PY), "serve", "--control-port", str(control_port), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=base_env(env))
        self.lines = self._wait_ready(time.monotonic() + 10)

    def _wait_ready(self, deadline: float) -> list[str]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = b""
        while b"echo: ready\n" not in buf:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(remaining, 0))
            if not ready:
                raise AssertionError(f"echo did not get ready; stdout so far: {buf!r}")
            chunk = os.read(fd, 65536)
            if not chunk:
                _, err = self.proc.communicate(timeout=5)
                raise AssertionError(f"echo exited with {self.proc.returncode}: {err.decode()!r}")
            buf += chunk
        return buf.decode().splitlines()

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        """Signal the process and return (exit status, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err.decode()

    def control(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        return http_request(self.control_host, self.control_port, method, path, body=body)

    def records(self, *ids: str) -> list[dict[str, Any]]:
        query = "&".join(f"id={quote(i, safe='')}" for i in ids)
        status, body = self.control("GET", f"/requests?{query}" if ids else "/requests")
        assert status == 200
        document = json.loads(body)
        assert document["pod"] == "pod-a"
        assert document["namespace"] == "ns-a"
        records: list[dict[str, Any]] = document["requests"]
        return records


class Spawner:
    """Starts echo processes and guarantees each is stopped, whatever the test did."""

    def __init__(self) -> None:
        self.running: list[EchoProcess] = []

    def __call__(self, *args: str, env: Mapping[str, str] | None = None) -> EchoProcess:
        process = EchoProcess(args, env, free_ports(1)[0])
        self.running.append(process)
        return process

    def close(self) -> None:
        for process in self.running:
            if process.proc.poll() is None:
                process.proc.kill()
            process.proc.communicate()


@pytest.fixture
def spawn() -> Iterator[Spawner]:
    spawner = Spawner()
    try:
        yield spawner
    finally:
        spawner.close()


class Shared:
    """One echo process shared by the read-only tests: an HTTP and a TCP port on loopback."""

    def __init__(self, process: EchoProcess, http_port: int, tcp_port: int) -> None:
        self.process = process
        self.http_port = http_port
        self.tcp_port = tcp_port


@pytest.fixture(scope="module")
def shared() -> Iterator[Shared]:
    spawner = Spawner()
    try:
        http_port, tcp_port = free_ports(2)
        process = spawner(f"{http_port}:loopback:http", f"{tcp_port}:loopback:tcp", env={"INSTANCE_IP": "127.0.0.1"})
        yield Shared(process, http_port, tcp_port)
    finally:
        spawner.close()


def run_echo(
    *args: str, env: Mapping[str, str] | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-S", str(ECHO_PY), *args],
        input=None if stdin is None else stdin.decode(),
        capture_output=True,
        text=True,
        env=base_env(env),
        timeout=10,
        check=False,
    )


# --------------------------------------------------------------------------------------------------------
# small clients and deliberately misbehaving servers
# --------------------------------------------------------------------------------------------------------


def http_request(
    host: str,
    port: int,
    method: str = "GET",
    path: str = "/",
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def http_echo(host: str, port: int, path: str = "/", headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    status, body = http_request(host, port, path=path, headers=headers)
    assert status == 200
    document: dict[str, Any] = json.loads(body)
    return document


def read_until_eof(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def assert_refused(host: str, port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=2).close()


class MisbehavingServer:
    """Accepts on 127.0.0.1 and treats every connection the same, wrong, way: `503`, `close` or `rst`."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        if self.behaviour == "rst":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, (1).to_bytes(4, "little") + bytes(4))
        elif self.behaviour == "503":
            conn.settimeout(2)
            data = b""
            while b"\r\n\r\n" not in data and (chunk := conn.recv(4096)):
                data += chunk
            body = b"no healthy upstream\nsecond line\n"
            head = f"HTTP/1.1 503 Service Unavailable\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            conn.sendall(head.encode() + body)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def misbehaving() -> Iterator[Callable[[str], MisbehavingServer]]:
    servers: list[MisbehavingServer] = []

    def make(behaviour: str) -> MisbehavingServer:
        server = MisbehavingServer(behaviour)
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose socket listens (so connects complete in the backlog) but never accepts or answers."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def target(protocol: str, port: int, request_id: str, address: str = "127.0.0.1") -> Any:
    return prober.ProbeTarget(protocol, address, port, request_id)


# --------------------------------------------------------------------------------------------------------
# the module itself
# --------------------------------------------------------------------------------------------------------


def test_the_image_carries_every_file_of_the_program_and_nothing_else() -> None:
    """No Docker here: a file left out of the image would first show on the nightly kind run, as a crash."""
    from conformance.world.resources import ECHO_FILES

    folder = ECHO_PY.parent
    program = {p.name for p in folder.glob("*.py")}
    assert set(ECHO_FILES) == program
    dockerfile = (folder / "Dockerfile").read_text().splitlines()
    copies = [line.split()[1:-1] for line in dockerfile if line.startswith("COPY")]
    assert copies == [list(ECHO_FILES)]
    ignore = (folder / ".dockerignore").read_text().splitlines()
    assert "*" in ignore
    assert {line[1:] for line in ignore if line.startswith("!")} == program


def test_import_by_path_has_no_side_effects(capsys: pytest.CaptureFixture[str]) -> None:
    module = load_echo("echo_unregistered", register=False)  # a harness may not register it in sys.modules
    assert capsys.readouterr() == ("", "")
    assert callable(module.main)
    half = load_echo("echo_probe_unregistered", register=False, path=ECHO_PROBE_PY)
    assert capsys.readouterr() == ("", "")
    assert half.ProbeTarget("tcp", "[fd00::5]", 9081, "abc").address == "fd00::5"


def test_the_program_finds_its_halves_in_its_own_folder_only(tmp_path: Path) -> None:
    """Run isolated (`python3 -I -S`, as the emulated backend and a slim image run it), from any directory."""
    (tmp_path / "echo_probe.py").write_text("raise SystemExit('the wrong echo_probe.py')\n")
    proc = subprocess.run(
        [sys.executable, "-I", "-S", str(ECHO_PY), "probe", "--timeout", "1", "tcp://127.0.0.1:9"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["outcome"] in ("refused", "timeout")


# --------------------------------------------------------------------------------------------------------
# HTTP application ports
# --------------------------------------------------------------------------------------------------------


def test_http_answer_fields_with_id_from_query(shared: Shared) -> None:
    answer = http_echo("127.0.0.1", shared.http_port, "/any/path?x=1&id=q-1")
    assert answer["pod"] == "pod-a"
    assert answer["namespace"] == "ns-a"
    assert answer["port"] == shared.http_port
    assert answer["protocol"] == "http"
    assert answer["local"] == "127.0.0.1"
    assert answer["peer"] == "127.0.0.1"
    assert isinstance(answer["peer_port"], int)
    assert answer["peer_port"] > 0
    assert answer["request_id"] == "q-1"


def test_http_request_id_from_header_query_wins_and_generated(shared: Shared) -> None:
    assert http_echo("127.0.0.1", shared.http_port, "/", {"x-request-id": "h-1"})["request_id"] == "h-1"
    both = http_echo("127.0.0.1", shared.http_port, "/?id=q-2", {"X-Request-Id": "h-2"})
    assert both["request_id"] == "q-2"
    first = http_echo("127.0.0.1", shared.http_port)["request_id"]
    second = http_echo("127.0.0.1", shared.http_port)["request_id"]
    assert first.startswith("gen-")
    assert second.startswith("gen-")
    assert first != second


def test_http_any_method_answers_and_json_content_type(shared: Shared) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", shared.http_port, timeout=5)
    try:
        conn.request("DELETE", "/things/7?id=del-1")
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == "application/json"
        assert json.loads(response.read())["request_id"] == "del-1"
    finally:
        conn.close()


def test_http_keep_alive_two_requests_on_one_connection(shared: Shared) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", shared.http_port, timeout=5)
    try:
        answers = []
        for request_id in ("ka-1", "ka-2"):
            conn.request("POST", f"/?id={request_id}", body=b"x" * 5000)  # the body is read and discarded
            response = conn.getresponse()
            assert response.status == 200
            assert not response.will_close
            answers.append(json.loads(response.read()))
        assert [a["request_id"] for a in answers] == ["ka-1", "ka-2"]
        assert answers[0]["peer_port"] == answers[1]["peer_port"]  # the same client socket
    finally:
        conn.close()


def test_http_pipelined_requests_and_connection_close(shared: Shared) -> None:
    requests = (
        b"POST /?id=pipe-1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /?id=pipe-2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", shared.http_port)) as sock:
        sock.sendall(requests)
        data = read_until_eof(sock)  # the server closes after the second answer
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert b'"request_id": "pipe-1"' in data
    assert b'"request_id": "pipe-2"' in data
    assert data.rstrip().endswith(b"}")


def test_http_1_0_closes_after_the_answer(shared: Shared) -> None:
    with socket.create_connection(("127.0.0.1", shared.http_port)) as sock:
        sock.sendall(b"GET /?id=old-1 HTTP/1.0\r\n\r\n")
        data = read_until_eof(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: close" in head
    assert json.loads(body)["request_id"] == "old-1"


def test_http_chunked_body_is_discarded_and_connection_kept(shared: Shared) -> None:
    request = (
        b"PUT /?id=chunk-1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
        b"GET /?id=chunk-2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", shared.http_port)) as sock:
        sock.sendall(request)
        data = read_until_eof(sock)
    assert data.count(b"200 OK") == 2
    assert b'"chunk-2"' in data


@pytest.mark.parametrize(
    "garbage",
    [
        b"garbage\r\n\r\n",
        b"GET /\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
        b"GET http://[bad/ HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
    ],
)
def test_http_garbage_gets_400_and_close(shared: Shared, garbage: bytes) -> None:
    with socket.create_connection(("127.0.0.1", shared.http_port)) as sock:
        sock.sendall(garbage)
        data = read_until_eof(sock)
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close" in data


# --------------------------------------------------------------------------------------------------------
# TCP application ports
# --------------------------------------------------------------------------------------------------------


def test_tcp_one_json_line_per_line_then_close_on_eof(shared: Shared) -> None:
    with socket.create_connection(("127.0.0.1", shared.tcp_port)) as sock:
        sock.sendall(b"tcp-1\n  tcp-2 \r\n\n")
        sock.shutdown(socket.SHUT_WR)
        lines = read_until_eof(sock).decode().splitlines()
    answers = [json.loads(line) for line in lines]
    assert [a["request_id"] for a in answers[:2]] == ["tcp-1", "tcp-2"]
    assert answers[2]["request_id"].startswith("gen-")
    for answer in answers:
        assert answer["protocol"] == "tcp"
        assert answer["port"] == shared.tcp_port
        assert answer["pod"] == "pod-a"
        assert answer["namespace"] == "ns-a"
        assert answer["local"] == "127.0.0.1"
        assert answer["peer"] == "127.0.0.1"
    assert len({a["peer_port"] for a in answers}) == 1


def test_tcp_answers_line_by_line_on_an_open_connection(shared: Shared) -> None:
    with socket.create_connection(("127.0.0.1", shared.tcp_port), timeout=5) as sock:
        reader = sock.makefile("rb")
        for request_id in ("inter-1", "inter-2"):
            sock.sendall(request_id.encode() + b"\n")
            assert json.loads(reader.readline())["request_id"] == request_id


# --------------------------------------------------------------------------------------------------------
# the control port
# --------------------------------------------------------------------------------------------------------


def test_control_healthz(shared: Shared) -> None:
    assert shared.process.control("GET", "/healthz") == (200, b"ok")


def test_control_requests_records_and_filter(shared: Shared) -> None:
    http_echo("127.0.0.1", shared.http_port, "/?id=rec-http")
    with socket.create_connection(("127.0.0.1", shared.tcp_port)) as sock:
        sock.sendall(b"rec-tcp\n")
        sock.shutdown(socket.SHUT_WR)
        read_until_eof(sock)
    records = shared.process.records("rec-http", "rec-tcp")
    by_id = {r["request_id"]: r for r in records}
    assert set(by_id) == {"rec-http", "rec-tcp"}
    assert by_id["rec-http"]["port"] == shared.http_port
    assert by_id["rec-http"]["protocol"] == "http"
    assert by_id["rec-tcp"]["port"] == shared.tcp_port
    assert by_id["rec-tcp"]["protocol"] == "tcp"
    for record in records:
        assert set(record) == {"request_id", "port", "protocol", "local", "peer", "peer_port", "time"}
        assert record["local"] == "127.0.0.1"
        assert record["peer"] == "127.0.0.1"
        assert abs(record["time"] - time.time()) < 60
    assert shared.process.records("never-sent-id") == []
    assert len(shared.process.records()) >= 2  # unfiltered: everything


def test_control_requests_are_not_recorded(shared: Shared) -> None:
    status, _ = http_request(
        "127.0.0.1", shared.process.control_port, path="/healthz?id=ctl-1", headers={"x-request-id": "ctl-1"}
    )
    assert status == 200
    shared.process.control("GET", "/requests?id=ctl-1")
    assert all(not r["request_id"].startswith("ctl") for r in shared.process.records())


def test_control_unknown_path_and_wrong_method(shared: Shared) -> None:
    status, body = shared.process.control("GET", "/nope")
    assert status == 404
    assert "error" in json.loads(body)
    assert shared.process.control("GET", "/probe")[0] == 405


def test_control_post_probe(shared: Shared) -> None:
    batch = {
        "timeout": 1.0,
        "targets": [
            {"protocol": "http", "address": "127.0.0.1", "port": shared.http_port, "request_id": "ctlprobe-1"},
            {"protocol": "tcp", "address": "127.0.0.1", "port": shared.tcp_port, "request_id": "ctlprobe-2"},
            {"protocol": "tcp", "address": "127.0.0.1", "port": free_ports(1)[0]},
        ],
    }
    status, body = shared.process.control("POST", "/probe", json.dumps(batch).encode())
    assert status == 200
    results = [prober.ProbeResult.from_json(r) for r in json.loads(body)["results"]]
    assert [r.outcome for r in results] == ["ok", "ok", "refused"]
    assert [r.pod for r in results] == ["pod-a", "pod-a", None]
    assert results[2].target.request_id.startswith("probe-")
    assert {r["request_id"] for r in shared.process.records("ctlprobe-1", "ctlprobe-2")} == {"ctlprobe-1", "ctlprobe-2"}


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"targets": [{"protocol": "udp", "address": "x", "port": 1}]}'])
def test_control_post_probe_bad_batch_is_400(shared: Shared, body: bytes) -> None:
    status, answer = shared.process.control("POST", "/probe", body)
    assert status == 400
    assert answer.count(b"\n") == 0
    assert set(json.loads(answer)) == {"error"}


# --------------------------------------------------------------------------------------------------------
# binding variants
# --------------------------------------------------------------------------------------------------------


def test_bind_loopback_literal_pod_ip_and_wildcard(spawn: Spawner) -> None:
    lo, literal, pod, wild = free_ports(4)
    process = spawn(
        f"{lo}:loopback:http",
        f"{literal}:127.0.0.2:http",
        f"{pod}:pod_ip:tcp",
        f"{wild}:wildcard:http",
        env={"INSTANCE_IPS": "127.0.0.3"},
    )
    assert process.lines == [
        f"echo: listening http 127.0.0.1:{lo}",
        f"echo: listening http 127.0.0.2:{literal}",
        f"echo: listening tcp 127.0.0.3:{pod}",
        f"echo: listening http 0.0.0.0:{wild}",
        f"echo: listening control 0.0.0.0:{process.control_port}",
        "echo: ready",
    ]
    assert http_echo("127.0.0.1", lo)["local"] == "127.0.0.1"
    assert_refused("127.0.0.2", lo)  # loopback-only: another local address is not served
    assert http_echo("127.0.0.2", literal)["local"] == "127.0.0.2"
    assert_refused("127.0.0.1", literal)
    assert_refused("127.0.0.1", pod)
    assert http_echo("127.0.0.4", wild)["local"] == "127.0.0.4"
    assert http_echo("127.0.0.1", wild)["local"] == "127.0.0.1"
    results = asyncio.run(prober.probe_batch([target("tcp", pod, "podip-1", "127.0.0.3")], timeout=2))
    assert results[0].outcome == "ok"
    record = process.records("podip-1")[0]
    assert record["local"] == "127.0.0.3"
    assert record["port"] == pod


@needs_ipv6
def test_dual_stack_binds_both_families(spawn: Spawner) -> None:
    lo, wild, literal = free_ports(3)
    process = spawn(
        f"{lo}:loopback:http",
        f"{wild}:wildcard:tcp",
        f"{literal}:[::1]:http",
        env={"INSTANCE_IPS": "127.0.0.1,::1"},
    )
    assert process.lines == [
        f"echo: listening http 127.0.0.1:{lo}",
        f"echo: listening http [::1]:{lo}",
        f"echo: listening tcp 0.0.0.0:{wild}",
        f"echo: listening tcp [::]:{wild}",
        f"echo: listening http [::1]:{literal}",
        f"echo: listening control 0.0.0.0:{process.control_port}",
        f"echo: listening control [::]:{process.control_port}",
        "echo: ready",
    ]
    v6 = http_echo("::1", lo, "/?id=v6-1")
    assert (v6["local"], v6["peer"]) == ("::1", "::1")
    assert http_echo("::1", literal)["local"] == "::1"
    assert_refused("127.0.0.1", literal)
    assert http_request("::1", process.control_port, path="/healthz") == (200, b"ok")
    results = asyncio.run(
        prober.probe_batch([target("tcp", wild, "v6-2", "::1"), target("tcp", wild, "v4-2", "127.0.0.1")], timeout=2)
    )
    assert [(r.outcome, r.peer) for r in results] == [("ok", "::1"), ("ok", "127.0.0.1")]


@needs_ipv6
def test_dual_wildcard_in_an_ipv6_pod_also_accepts_ipv4_unlike_wildcard(spawn: Spawner) -> None:
    """One `[::]` socket with IPV6_V6ONLY off (Go's `net.Listen("tcp", ":P")`): 127.0.0.1 reaches it, reported
    unmapped as Go prints it, where the IPv6-only `wildcard` of the same pod refuses 127.0.0.1."""
    dual_tcp, dual_http, wild = free_ports(3)
    process = spawn(
        f"{dual_tcp}:dual_wildcard:tcp",
        f"{dual_http}:dual_wildcard:http",
        f"{wild}:wildcard:http",
        env={"INSTANCE_IP": "::1"},
    )
    process.control_host = "::1"
    assert process.lines == [
        f"echo: listening tcp [::]:{dual_tcp} (IPV6_V6ONLY=0)",
        f"echo: listening http [::]:{dual_http} (IPV6_V6ONLY=0)",
        f"echo: listening http [::]:{wild}",
        f"echo: listening control [::]:{process.control_port}",
        "echo: ready",
    ]
    targets = [
        target(protocol, port, f"{protocol}-{name}", address)
        for protocol, port in (("tcp", dual_tcp), ("http", dual_http))
        for name, address in (("v4", "127.0.0.1"), ("v6", "::1"))
    ]
    results = asyncio.run(prober.probe_batch(targets, timeout=2))
    assert [(r.outcome, r.peer) for r in results] == [("ok", "127.0.0.1"), ("ok", "::1")] * 2
    records = {r["request_id"]: (r["port"], r["local"], r["peer"]) for r in process.records()}
    assert records == {
        "tcp-v4": (dual_tcp, "127.0.0.1", "127.0.0.1"),
        "tcp-v6": (dual_tcp, "::1", "::1"),
        "http-v4": (dual_http, "127.0.0.1", "127.0.0.1"),
        "http-v6": (dual_http, "::1", "::1"),
    }
    status, body = process.control("GET", f"/connections?port={dual_http}")
    assert status == 200
    assert sorted(c["peer"] for c in json.loads(body)["connections"]) == ["127.0.0.1", "::1"]
    assert http_echo("::1", wild)["local"] == "::1"
    assert_refused("127.0.0.1", wild)  # the difference the suite measures: an IPv4 path into an IPv6 pod


@needs_ipv6
def test_dual_wildcard_in_a_dual_stack_pod_is_one_socket(spawn: Spawner) -> None:
    dual, wild = free_ports(2)
    process = spawn(f"{dual}:dual_wildcard:http", f"{wild}:wildcard:http", env={"INSTANCE_IPS": "127.0.0.1,::1"})
    assert process.lines[:3] == [
        f"echo: listening http [::]:{dual} (IPV6_V6ONLY=0)",
        f"echo: listening http 0.0.0.0:{wild}",
        f"echo: listening http [::]:{wild}",
    ]
    v4, v6 = http_echo("127.0.0.4", dual), http_echo("::1", dual)
    assert (v4["local"], v4["peer"], v6["local"], v6["peer"]) == ("127.0.0.4", "127.0.0.1", "::1", "::1")


@pytest.mark.parametrize("env", [{"INSTANCE_IP": "127.0.0.1"}, {}], ids=["ipv4-pod", "no-pod-ips"])
def test_dual_wildcard_without_ipv6_is_the_ipv4_wildcard(spawn: Spawner, env: dict[str, str]) -> None:
    (port,) = free_ports(1)
    process = spawn(f"{port}:dual_wildcard:tcp", env=env)
    assert process.lines == [
        f"echo: listening tcp 0.0.0.0:{port}",
        f"echo: listening control 0.0.0.0:{process.control_port}",
        "echo: ready",
    ]
    results = asyncio.run(prober.probe_batch([target("tcp", port, "v4-only", "127.0.0.2")], timeout=2))
    assert [(r.outcome, r.peer) for r in results] == [("ok", "127.0.0.1")]
    if HAVE_IPV6:
        assert_refused("::1", port)


def test_dual_wildcard_plan_sets_v6only_explicitly() -> None:
    """The socket option comes from the BIND, not from the address: `[::]` is v6-only for one keyword only."""
    specs = [echo.parse_port_spec(t) for t in ("81:wildcard:tcp", "82:dual_wildcard:tcp", "83:[::ffff:127.0.0.1]:tcp")]
    plan = [(item.port, item.address, item.v6only) for item in echo._plan(specs, 9000, ["fd00::5"])]
    assert plan == [(81, "::", True), (82, "::", False), (83, "::ffff:127.0.0.1", False), (9000, "::", True)]
    ipv4_plan = [(item.address, item.v6only) for item in echo._plan(specs[1:2], 9000, ["10.0.0.5"])]
    assert ipv4_plan == [("0.0.0.0", True), ("0.0.0.0", True)]


@needs_ipv6
def test_ipv4_mapped_addresses_are_reported_as_ipv4(spawn: Spawner) -> None:
    (port,) = free_ports(1)
    process = spawn(f"{port}:[::ffff:127.0.0.1]:http")
    assert process.lines[0] == f"echo: listening http [::ffff:127.0.0.1]:{port} (IPV6_V6ONLY=0)"
    answer = http_echo("127.0.0.1", port)
    assert (answer["local"], answer["peer"]) == ("127.0.0.1", "127.0.0.1")


def test_pod_name_falls_back_to_hostname(spawn: Spawner) -> None:
    (port,) = free_ports(1)
    process = EchoProcess([f"{port}:loopback:http"], {"POD_NAME": "", "POD_NAMESPACE": ""}, free_ports(1)[0])
    spawn.running.append(process)
    answer = http_echo("127.0.0.1", port)
    assert answer["pod"] == socket.gethostname()
    assert answer["namespace"] == ""


def test_records_keep_only_the_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    assert serve.MAX_RECORDS == 100_000
    monkeypatch.setattr(serve, "MAX_RECORDS", 3)  # the cap is read when the server state is created
    server = serve.EchoServer("pod-x", "ns-x")
    for n in range(5):
        server._echo(80, "tcp", ("127.0.0.1", "127.0.0.1", 1000 + n), f"cap-{n}")
    assert [r.request_id for r in server.records] == ["cap-2", "cap-3", "cap-4"]


def test_only_the_control_port(spawn: Spawner) -> None:
    process = spawn()
    assert process.lines == [f"echo: listening control 0.0.0.0:{process.control_port}", "echo: ready"]
    assert process.control("GET", "/healthz") == (200, b"ok")


# --------------------------------------------------------------------------------------------------------
# lifecycle and user mistakes
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_cleanly_even_with_an_open_connection(spawn: Spawner, sig: int) -> None:
    port, tcp = free_ports(2)
    process = spawn(f"{port}:loopback:http", f"{tcp}:loopback:tcp")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    idle = socket.create_connection(("127.0.0.1", tcp))
    try:
        conn.request("GET", "/")
        conn.getresponse().read()  # keep-alive connection left open
        assert process.stop(sig) == (0, "")
    finally:
        conn.close()
        idle.close()


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("echo: ")
    assert "echo: ready" not in result.stdout
    return lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "80:lo"],
        ["serve", "80"],
        ["serve", "0:loopback:http"],
        ["serve", "70000:loopback:http"],
        ["serve", "+80:loopback:http"],
        ["serve", "x:loopback:http"],
        ["serve", "80:loopback:udp"],
        ["serve", "80::http"],
        ["serve", "80:nowhere:http"],
        ["serve", "80:dual-wildcard:http"],
        ["serve", "8080:dual_wildcard:http", "8080:wildcard:tcp"],
        ["serve", "80:[127.0.0.1]:http"],
        ["serve", "80:999.1.1.1:tcp"],
        ["serve", "8080:loopback:http", "8080:wildcard:tcp"],
        ["serve", "--control-port", "8080", "8080:loopback:http"],
        ["serve", "--control-port", "0"],
        ["serve", "--control-port", "abc"],
        ["serve", "--bogus"],
        ["serve", "--verb", "8080:loopback:http"],
        ["bogus"],
        [],
        ["probe"],
        ["probe", "udp://127.0.0.1:80"],
        ["probe", "http://127.0.0.1"],
        ["probe", "tcp://fd00::5:80"],
        ["probe", "tcp://127.0.0.1:80#"],
        ["probe", "tcp://127.0.0.1:0"],
        ["probe", "--timeout", "-1", "tcp://127.0.0.1:80"],
        ["probe", "--concurrency", "0", "tcp://127.0.0.1:80"],
        ["probe", "--batch", "{"],
        ["probe", "--batch", "[]"],
        ["probe", "--batch", '{"targets": [{"protocol": "tcp"}]}'],
        ["probe", "--batch", '{"targets": [{"protocol": "tcp", "address": "a", "port": "80"}]}'],
        ["probe", "--batch", '{"targets": [], "timeout": 0}'],
        ["probe", "--batch", '{"targets": []}', "tcp://127.0.0.1:80"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv: list[str]) -> None:
    assert_one_line_error(run_echo(*argv), 2)


def test_bad_port_spec_message() -> None:
    line = assert_one_line_error(run_echo("serve", "80:lo"), 2)
    assert line == (
        'echo: bad port spec "80:lo": expected PORT:BIND:PROTO with BIND loopback|pod_ip|wildcard|dual_wildcard|'
        "<address> and PROTO http|tcp"
    )


def test_pod_ip_without_downward_api_env() -> None:
    line = assert_one_line_error(run_echo("serve", "8082:pod_ip:http"), 2)
    assert line == (
        "echo: bind pod_ip on port 8082 needs $INSTANCE_IP or $INSTANCE_IPS (the pod IPs from the downward API)"
    )


def test_bad_instance_ips_env() -> None:
    assert_one_line_error(run_echo("serve", "8082:pod_ip:http", env={"INSTANCE_IPS": "10.0.0.1,nonsense"}), 2)


def test_bad_batch_on_stdin() -> None:
    assert_one_line_error(run_echo("probe", "--stdin", stdin=b"not json"), 2)


def test_bind_failure_address_in_use_exits_1(spawn: Spawner) -> None:
    port, control = free_ports(2)
    with socket.create_server(("127.0.0.1", port)):
        result = run_echo("serve", "--control-port", str(control), f"{port}:loopback:http")
    line = assert_one_line_error(result, 1)
    assert line == f"echo: cannot listen on 127.0.0.1:{port}: [Errno 98] Address already in use"
    assert result.stdout == ""


def test_bind_failure_address_not_available_exits_1() -> None:
    port, control = free_ports(2)
    result = run_echo("serve", "--control-port", str(control), f"{port}:192.0.2.1:tcp")
    line = assert_one_line_error(result, 1)
    assert line == f"echo: cannot listen on 192.0.2.1:{port}: [Errno 99] Cannot assign requested address"


# --------------------------------------------------------------------------------------------------------
# probing: every outcome, against real sockets
# --------------------------------------------------------------------------------------------------------


def test_probe_batch_every_outcome(
    shared: Shared, misbehaving: Callable[[str], MisbehavingServer], silent_port: int
) -> None:
    (closed,) = free_ports(1)
    targets = [
        target("http", shared.http_port, "out-http"),
        target("tcp", shared.tcp_port, "out-tcp"),
        target("http", misbehaving("503").port, "out-503"),
        target("tcp", closed, "out-refused"),
        target("http", silent_port, "out-timeout"),
        target("tcp", silent_port, "out-timeout-tcp"),
        target("http", misbehaving("close").port, "out-close"),
        target("tcp", misbehaving("close").port, "out-close-tcp"),
        target("http", misbehaving("rst").port, "out-rst"),
        target("tcp", misbehaving("rst").port, "out-rst-tcp"),
        target("http", shared.tcp_port, "out-garbage"),  # an HTTP request to a TCP echo port: not HTTP back
    ]
    started = time.perf_counter()
    results = asyncio.run(prober.probe_batch(targets, timeout=0.4, concurrency=4))
    elapsed = time.perf_counter() - started
    assert [r.target for r in results] == targets
    outcomes = {r.target.request_id: r for r in results}
    expected = {
        "out-http": "ok",
        "out-tcp": "ok",
        "out-503": "http_status",
        "out-refused": "refused",
        "out-timeout": "timeout",
        "out-timeout-tcp": "timeout",
        "out-close": "reset_or_eof",
        "out-close-tcp": "reset_or_eof",
        "out-rst": "reset_or_eof",
        "out-rst-tcp": "reset_or_eof",
        "out-garbage": "error",
    }
    assert {k: r.outcome for k, r in outcomes.items()} == expected, [r.to_json() for r in results]
    ok = outcomes["out-http"]
    assert (ok.status, ok.peer, ok.pod, ok.detail) == (200, "127.0.0.1", "pod-a", "")
    assert (outcomes["out-tcp"].status, outcomes["out-tcp"].pod) == (None, "pod-a")
    assert outcomes["out-503"].status == 503
    assert outcomes["out-503"].detail == "no healthy upstream"
    assert outcomes["out-503"].pod is None
    assert 390 <= outcomes["out-timeout"].latency_ms < 1500
    assert all(r.latency_ms >= 0 for r in results)
    assert all(r.status is None for r in results if r.outcome not in ("ok", "http_status"))
    assert elapsed < 3
    records = shared.process.records("out-http", "out-tcp")
    assert {r["request_id"] for r in records} == {"out-http", "out-tcp"}


def test_probe_results_round_trip_through_json(shared: Shared) -> None:
    results = asyncio.run(prober.probe_batch([target("http", shared.http_port, "rt-1")], timeout=1))
    document = json.loads(json.dumps(results[0].to_json()))
    assert set(document) == {"target", "outcome", "status", "peer", "pod", "latency_ms", "detail"}
    assert document["target"] == {
        "protocol": "http",
        "address": "127.0.0.1",
        "port": shared.http_port,
        "request_id": "rt-1",
    }
    assert prober.ProbeResult.from_json(document).to_json() == document


def test_probe_request_ids_survive_url_encoding(shared: Shared) -> None:
    request_id = "odd&id=x#y%20z+/?"
    results = asyncio.run(prober.probe_batch([target("http", shared.http_port, request_id)], timeout=1))
    assert (results[0].outcome, results[0].detail) == ("ok", "")
    assert [r["request_id"] for r in shared.process.records(request_id)] == [request_id]


class ConnectorError(Exception):
    pass


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "refused"),
        (OSError(errno.ECONNREFUSED, "Connection refused"), "refused"),  # Python maps the errno itself
        (TimeoutError("connect timed out"), "timeout"),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), "reset_or_eof"),
        (BrokenPipeError(errno.EPIPE, "Broken pipe"), "reset_or_eof"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), "error"),
        (ConnectorError("namespace gone"), "error"),
    ],
)
def test_custom_connector_exceptions_are_classified(exc: Exception, outcome: str) -> None:
    async def connector(_target: Any) -> socket.socket:
        raise exc

    result = asyncio.run(prober.probe_one(target("tcp", 9, "conn-1"), 1.0, connect=connector))
    assert result.outcome == outcome
    assert result.detail
    assert (result.status, result.peer, result.pod) == (None, None, None)


def test_custom_connector_that_hangs_times_out() -> None:
    async def connector(_target: Any) -> socket.socket:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    result = asyncio.run(prober.probe_one(target("http", 9, "hang-1"), 0.2, connect=connector))
    assert result.outcome == "timeout"
    assert 190 <= result.latency_ms < 1000


def test_custom_connector_with_own_socket_like_the_harness(shared: Shared) -> None:
    """The harness creates the socket itself (inside another netns), connects it, and hands it to the prober."""
    used: list[Any] = []

    async def connector(t: Any) -> socket.socket:
        used.append(t)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (t.address, t.port))
        except BaseException:
            sock.close()
            raise
        return sock

    targets = [target("http", shared.http_port, "own-1"), target("tcp", shared.tcp_port, "own-2")]
    targets.append(target("tcp", free_ports(1)[0], "own-3"))
    results = asyncio.run(prober.probe_batch(targets, timeout=1, connect=connector))
    assert [r.outcome for r in results] == ["ok", "ok", "refused"]
    assert used == targets


def test_probe_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        asyncio.run(prober.probe_batch([], timeout=0))
    with pytest.raises(ValueError):
        asyncio.run(prober.probe_batch([], timeout=1, concurrency=0))
    assert asyncio.run(prober.probe_batch([], timeout=1)) == []


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {},
        {"protocol": "udp", "address": "10.0.0.1", "port": 1},
        {"protocol": "tcp", "address": "10.0.0.1", "port": 0},
        {"protocol": "tcp", "address": "10.0.0.1", "port": True},
        {"protocol": "tcp", "address": "", "port": 80},
        {"protocol": "tcp", "address": "10.0.0.1", "port": 80, "request_id": "has space"},
        {"protocol": "tcp", "address": "10.0.0.1", "port": 80, "request_id": "line\nbreak"},
        {"protocol": "tcp", "address": "10.0.0.1", "port": 80, "extra": 1},
    ],
)
def test_probe_target_from_json_rejects_bad_input(data: object) -> None:
    with pytest.raises(ValueError):
        prober.ProbeTarget.from_json(data)


def test_probe_target_from_json_generates_missing_request_id() -> None:
    parsed = prober.ProbeTarget.from_json({"protocol": "tcp", "address": "[fd00::5]", "port": 9081})
    assert parsed.address == "fd00::5"
    assert parsed.request_id.startswith("probe-")
    assert len(parsed.request_id) == len("probe-") + 12


def test_probe_subcommand_targets(shared: Shared, misbehaving: Callable[[str], MisbehavingServer]) -> None:
    (closed,) = free_ports(1)
    result = run_echo(
        "probe",
        "--timeout",
        "0.5",
        f"http://127.0.0.1:{shared.http_port}#cli-http",
        f"tcp://127.0.0.1:{shared.tcp_port}#cli-tcp",
        f"tcp://127.0.0.1:{closed}",
        f"http://127.0.0.1:{misbehaving('503').port}/#cli-503",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.count("\n") == 1
    results = json.loads(result.stdout)["results"]
    assert [r["outcome"] for r in results] == ["ok", "ok", "refused", "http_status"]
    assert [r["target"]["request_id"] for r in results[:2]] == ["cli-http", "cli-tcp"]
    assert results[2]["target"]["request_id"].startswith("probe-")
    assert results[3]["status"] == 503
    assert results[0]["pod"] == "pod-a"
    assert isinstance(results[0]["latency_ms"], float)
    records = shared.process.records("cli-http", "cli-tcp", "never-sent-id")
    assert sorted((r["request_id"], r["port"], r["protocol"]) for r in records) == [
        ("cli-http", shared.http_port, "http"),
        ("cli-tcp", shared.tcp_port, "tcp"),
    ]


def test_probe_subcommand_batch_and_stdin(shared: Shared, silent_port: int) -> None:
    batch = {
        "timeout": 0.3,
        "concurrency": 2,
        "targets": [
            {"protocol": "tcp", "address": "127.0.0.1", "port": shared.tcp_port, "request_id": "batch-1"},
            {"protocol": "tcp", "address": "127.0.0.1", "port": silent_port},
        ],
    }
    for result in (
        run_echo("probe", "--batch", json.dumps(batch)),
        run_echo("probe", "--stdin", stdin=json.dumps(batch).encode()),
    ):
        assert result.returncode == 0, result.stderr
        outcomes = [r["outcome"] for r in json.loads(result.stdout)["results"]]
        assert outcomes == ["ok", "timeout"]


@needs_ipv6
def test_probe_subcommand_bracketed_ipv6_target() -> None:
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as listener:
        port = listener.getsockname()[1]
    result = run_echo("probe", "--timeout", "0.5", f"tcp://[::1]:{port}#v6-target")
    assert result.returncode == 0, result.stderr
    (only,) = json.loads(result.stdout)["results"]
    assert only["target"] == {"protocol": "tcp", "address": "::1", "port": port, "request_id": "v6-target"}
    assert only["outcome"] == "refused"


def test_probe_by_host_name_dials_each_address_in_turn(shared: Shared, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host name is resolved off the loop and its addresses dialled in turn, as asyncio.open_connection did."""
    closed = free_ports(1)[0]
    answers = {
        "two.example": [("::1", closed), ("127.0.0.1", shared.tcp_port)],  # the first refuses, the second answers
        "none.example": [("127.0.0.1", closed), ("127.0.0.2", closed)],
    }

    async def getaddrinfo(self: Any, host: str, port: int, **_kwargs: Any) -> list[tuple[Any, ...]]:
        families = {True: socket.AF_INET6, False: socket.AF_INET}
        return [(families[":" in a], socket.SOCK_STREAM, 6, "", (a, p)) for a, p in answers[host]]

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", getaddrinfo)
    ok, refused = asyncio.run(
        prober.probe_batch([target("tcp", 1, "name-1", "two.example"), target("tcp", 1, "name-2", "none.example")], 1)
    )
    assert (ok.outcome, ok.pod, ok.peer) == ("ok", "pod-a", "127.0.0.1"), ok.to_json()
    assert refused.outcome == "refused", refused.to_json()


def test_control_connections_record_silent_probe_connections(spawn: Spawner) -> None:
    """A kubelet TCP probe connects and hangs up without a byte: only the connection record shows who probed."""
    http_port, tcp_port = free_ports(2)
    process = spawn(f"{http_port}:loopback:http", f"{tcp_port}:loopback:tcp", env={"INSTANCE_IP": "127.0.0.1"})
    with socket.create_connection(("127.0.0.1", tcp_port)):
        pass
    http_echo("127.0.0.1", http_port, "/readyz")
    deadline = time.monotonic() + 5
    conns: list[dict[str, Any]] = []
    while len(conns) < 2 and time.monotonic() < deadline:
        status, body = process.control("GET", "/connections")
        assert status == 200
        conns = json.loads(body)["connections"]
    assert [(c["port"], c["protocol"], c["peer"]) for c in conns] == [
        (tcp_port, "tcp", "127.0.0.1"),
        (http_port, "http", "127.0.0.1"),
    ]
    assert set(conns[0]) == {"seq", "port", "protocol", "local", "peer", "peer_port", "time"}
    # Filters: by port, and only what came after a sequence number; the control port is never recorded.
    status, body = process.control("GET", f"/connections?port={http_port}&after={conns[0]['seq']}")
    assert [c["seq"] for c in json.loads(body)["connections"]] == [conns[1]["seq"]]
    status, body = process.control("GET", "/connections?after=x")
    assert status == 400


@pytest.mark.parametrize("reset_before_accept", [False, True], ids=["reset-after-accept", "reset-before-accept"])
def test_a_probe_that_resets_right_after_connecting_is_recorded_with_its_peer(
    spawn: Spawner, reset_before_accept: bool
) -> None:
    """Many health checkers end a TCP check with a reset (SO_LINGER 0): a connection the app still accepted.

    The record must name the peer accept() returned, not one read from the socket afterwards (getpeername
    fails once the connection is reset). Stopping the server first makes every reset land before accept().
    """
    tcp_port, http_port = free_ports(2)
    hosts = ["127.0.0.1", *(["::1"] if HAVE_IPV6 else [])]
    process = spawn(f"{tcp_port}:loopback:tcp", f"{http_port}:loopback:http", env={"INSTANCE_IPS": ",".join(hosts)})
    if reset_before_accept:
        process.proc.send_signal(signal.SIGSTOP)
    sent = []
    try:
        for host in hosts:
            for port in (tcp_port, http_port):
                with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as client:
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    client.connect((host, port))
                    sent.append((port, host, client.getsockname()[1]))
                # Closed with linger 0: a reset, no FIN.
    finally:
        if reset_before_accept:
            process.proc.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 5
    conns: list[dict[str, Any]] = []
    while len(conns) < len(sent) and time.monotonic() < deadline:
        status, body = process.control("GET", "/connections")
        assert status == 200
        conns = json.loads(body)["connections"]
    assert sorted((c["port"], c["peer"], c["peer_port"]) for c in conns) == sorted(sent)
    assert {c["local"] for c in conns} == set(hosts)
