"""The fork server: a forked program is a container like an exec'd one (argv, env, namespace, log, exit status).

The cluster forks the echo program and the reference sidecar instead of exec'ing Python for each (see
conformance/backends/emulated/forkserver.py); these tests hold it to what `python -I -S PROGRAM` gives.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.backends.emulated import netns
from conformance.backends.emulated.processes import ForkServer, ForkServerError
from conformance.world.resources import ECHO_FILES, echo_program

PROGRAM = """
import json, os, sys, time
mode = sys.argv[1]
if mode == "report":
    print(json.dumps({
        "argv": sys.argv, "env": dict(os.environ), "name": __name__, "file": __file__,
        "netns": os.readlink("/proc/self/ns/net"), "session_leader": os.getsid(0) == os.getpid(),
        "comm": open("/proc/self/comm").read().strip(), "stdin": os.read(0, 10).decode(),
    }))
    sys.exit(int(sys.argv[2]))
if mode == "raise":
    raise RuntimeError("boom")
if mode == "sleep":
    time.sleep(60)
"""

pytestmark = pytest.mark.netns


@pytest.fixture
def program(tmp_path: Path) -> Path:
    path = tmp_path / "program.py"
    path.write_text(PROGRAM)
    return path


@pytest.fixture
def server(tmp_path: Path, program: Path) -> Iterator[ForkServer]:
    fork_server = ForkServer([program], tmp_path / "forkserver.log", netns.dies_with_harness)
    yield fork_server
    fork_server.close()


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"fstest-{secrets.token_hex(3)}"
    netns.create(name)
    yield name
    netns.kill_all(netns.pids_in(name), grace=0.5)
    netns.remove(name)


def argv(program: Path, *args: str) -> list[str]:
    return [sys.executable, "-I", "-S", str(program), *args]


def test_a_forked_program_gets_its_argv_env_namespace_session_and_log(
    server: ForkServer, program: Path, namespace: str, tmp_path: Path
) -> None:
    log = tmp_path / "container.log"
    proc = server.start(argv(program, "report", "3"), {"POD_IP": "10.1.0.7"}, netns.ns_path(namespace), log)
    assert proc.wait(10) == 3
    seen = json.loads(log.read_text())
    assert seen["argv"] == [str(program), "report", "3"]
    assert seen["env"] == {"POD_IP": "10.1.0.7"}
    assert (seen["name"], seen["file"]) == ("__main__", str(program))
    assert seen["netns"] == f"net:[{os.stat(netns.ns_path(namespace)).st_ino}]"
    assert seen["session_leader"] is True
    assert seen["comm"] == "program.py"
    assert seen["stdin"] == ""  # /dev/null, as the cluster gives exec'd containers


def test_exit_statuses_are_those_popen_would_report(
    server: ForkServer, program: Path, namespace: str, tmp_path: Path
) -> None:
    log = tmp_path / "container.log"
    raised = server.start(argv(program, "raise"), {}, netns.ns_path(namespace), log)
    assert raised.wait(10) == 1
    assert "RuntimeError: boom" in log.read_text()
    sleeping = server.start(argv(program, "sleep"), {}, netns.ns_path(namespace), None)
    assert sleeping.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        sleeping.wait(0.1)
    sleeping.terminate()
    assert sleeping.wait(10) == -15
    sleeping.kill()  # after the exit: nothing happens (its pid may belong to another process by now)
    assert sleeping.returncode == -15


def test_only_preloaded_programs_are_forked(server: ForkServer, program: Path, namespace: str, tmp_path: Path) -> None:
    assert server.serves(argv(program, "x"))
    assert not server.serves(["python3", "-I", "-S", str(program)])
    assert not server.serves(argv(tmp_path / "other.py"))
    # Like an exec that fails: a container that exits at once, the reason in its log.
    log = tmp_path / "other.log"
    refused = server.start(argv(tmp_path / "other.py"), {}, netns.ns_path(namespace), log)
    assert refused.wait(5) == 127
    assert refused.pid == 0
    assert f"not a program this server runs: {tmp_path / 'other.py'}" in log.read_text()


def test_the_server_leaves_a_terminals_ctrl_c_to_the_harness(server: ForkServer) -> None:
    """In the harness's process group it would die of the terminal's SIGINT (and tox's second one), and every
    container with it, before the harness's cleanup could stop them in order."""
    assert os.getsid(server.pid) == server.pid
    assert os.getpgid(server.pid) != os.getpgid(0)


def test_the_servers_children_die_with_it(program: Path, namespace: str, tmp_path: Path) -> None:
    fork_server = ForkServer([program], tmp_path / "forkserver.log", netns.dies_with_harness)
    proc = fork_server.start(argv(program, "sleep"), {}, netns.ns_path(namespace), None)
    fork_server.close()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{proc.pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not Path(f"/proc/{proc.pid}").exists()
    assert proc.poll() == -9  # the server is gone; the child is not in /proc: it was killed with it


def _imports(path: Path) -> set[str]:
    """What a file imports when it runs (an `if TYPE_CHECKING:` block never does)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found - {"__future__"}


def _program_files() -> list[Path]:
    """The files the server runs or preloads: each program, and the halves the echo program imports."""
    emulated = Path(netns.__file__).parent
    echo = [echo_program().with_name(name) for name in ECHO_FILES]
    return [*echo, *(emulated / f"{n}.py" for n in ("sidecar", "original_src", "relay", "status_agent"))]


def test_the_server_preloads_everything_the_forked_programs_import() -> None:
    """A module it lacks would be imported by every container again: the start it exists to save."""
    preloaded = _imports(Path(netns.__file__).parent / "forkserver.py")
    for program in _program_files():
        local = {p.stem for p in program.parent.glob("*.py")}  # a program's own halves, preloaded with it
        imported = _imports(program) - local
        missing = {m for m in imported if m not in preloaded and m.split(".")[0] not in preloaded}
        assert not missing, (program.name, missing)


_CONTAINER_FACTS = {"environ", "argv", "getenv", "getpid", "getppid", "gethostname", "getcwd", "getuid"}
"""What differs between the fork server and a container: read at import, a program would see the server's."""


def _read_at_import(path: Path) -> set[str]:
    """The container facts a program's module body reads: all but function bodies and the final main guard."""
    tree = ast.parse(path.read_text())
    body = tree.body[:-1] if tree.body and isinstance(tree.body[-1], ast.If) else tree.body
    found: set[str] = set()
    pending: list[ast.AST] = list(body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            # Decorators and default values run at import; the body when called.
            pending += [*node.decorator_list, *node.args.defaults, *(d for d in node.args.kw_defaults if d)]
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Attribute) and node.attr in _CONTAINER_FACTS:
            found.add(node.attr)
        if isinstance(node, ast.Name) and node.id in _CONTAINER_FACTS:
            found.add(node.id)
        pending += list(ast.iter_child_nodes(node))
    return found


def test_the_preloaded_programs_read_nothing_of_their_container_at_import(tmp_path: Path) -> None:
    """The server makes the programs' definitions once, in its own process (forkserver.load).

    A module body that read its environment, argv, pid or host name would see the server's, not the container's.
    """
    for program in _program_files():
        assert _read_at_import(program) == set(), program.name
    planted = tmp_path / "planted.py"
    planted.write_text(
        "import os, sys\nPOD_IP = os.environ.get('POD_IP')\n"
        "def main() -> int:\n    return os.getpid()\nif __name__ == '__main__':\n    sys.exit(main())\n"
    )
    assert _read_at_import(planted) == {"environ"}


def test_a_server_that_died_says_why_in_one_line(program: Path, namespace: str, tmp_path: Path) -> None:
    fork_server = ForkServer([program], tmp_path / "forkserver.log", netns.dies_with_harness)
    running = fork_server.start(argv(program, "sleep"), {}, netns.ns_path(namespace), None)
    (tmp_path / "forkserver.log").write_text("Traceback (most recent call last):\nMemoryError: out of memory\n")
    os.kill(fork_server.pid, 9)
    log = tmp_path / "late.log"
    try:  # the request may still fit in the socket's buffer: then the answer never comes
        late = fork_server.start(argv(program, "sleep"), {}, netns.ns_path(namespace), log)
    except ForkServerError as err:
        message = str(err)
    else:
        assert late.wait(5) == -9
        message = log.read_text().strip()
    assert message.startswith("the fork server exited (MemoryError: out of memory); its log: ")
    assert running.wait(5) == -9  # killed with the server (PR_SET_PDEATHSIG)
    fork_server.close()


def test_a_process_spawned_as_another_user_still_dies_with_the_harness(namespace: str, tmp_path: Path) -> None:
    """Linux clears PR_SET_PDEATHSIG when a process changes its uid: set before dropping to 1337, it was lost,
    and a replaced sidecar outlived a killed harness."""
    harness = (
        "import sys, time\n"
        "from conformance.backends.emulated import netns\n"
        f"proc = netns.spawn({namespace!r}, ['sleep', '60'], credentials=netns.Credentials(1337, 1337))\n"
        "print(proc.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(netns.__file__).parents[3])}
    parent = subprocess.Popen([sys.executable, "-c", harness], stdout=subprocess.PIPE, text=True, env=env)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert Path(f"/proc/{child}/status").read_text().count("\t1337\t") >= 2  # runs as 1337
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not Path(f"/proc/{child}").exists()


GUARDED_PROGRAM = """
from __future__ import annotations
import dataclasses, json, os, sys
from typing import ClassVar

DEFINED_BY = os.getpid()
{fail}

@dataclasses.dataclass
class Seen:
    shared: ClassVar[int] = 1
    argv: list[str]

def main() -> int:
    print(json.dumps({{
        "argv": Seen(sys.argv).argv, "fields": [f.name for f in dataclasses.fields(Seen)],
        "defined_here": DEFINED_BY == os.getpid(), "name": __name__, "env": dict(os.environ),
    }}))
    return 4

if __name__ == "__main__":
    sys.exit(main())
"""


@pytest.mark.parametrize("fail", [False, True], ids=["definitions-made-once", "definitions-failing"])
def test_a_guarded_programs_definitions_are_made_once_in_the_server(fail: bool, namespace: str, tmp_path: Path) -> None:
    """A program ending in the main guard has its definitions made in the server, and runs as a whole one does.

    Its dataclass sees `ClassVar` in its own module (dataclasses look there), and argv, env, name and exit status
    are the child's. When the definitions fail in the server, the child runs the program whole and its log says why.
    """
    program = tmp_path / "guarded.py"
    program.write_text(GUARDED_PROGRAM.format(fail="import fail_here_no_such_module" if fail else ""))
    server = ForkServer([program], tmp_path / "forkserver.log", netns.dies_with_harness)
    try:
        log = tmp_path / "container.log"
        proc = server.start(argv(program, "a", "b"), {"POD_IP": "10.1.0.9"}, netns.ns_path(namespace), log)
        if fail:
            assert proc.wait(10) == 1
            assert "ModuleNotFoundError: No module named 'fail_here_no_such_module'" in log.read_text()
            return
        assert proc.wait(10) == 4
        seen = json.loads(log.read_text())
    finally:
        server.close()
    assert seen == {
        "argv": [str(program), "a", "b"],
        "fields": ["argv"],
        "defined_here": False,
        "name": "__main__",
        "env": {"POD_IP": "10.1.0.9"},
    }
