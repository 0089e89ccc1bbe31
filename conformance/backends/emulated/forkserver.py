"""The emulated node's fork server: it starts the echo program and the reference sidecar by fork, not exec.

Why: a world of ~25 pods runs ~50 echo containers and ~10 sidecars (restarted at each mesh switch), each a
Python program. Most of a program's start is Python importing asyncio and the rest of the standard library
(~0.2 s of CPU each on a 2-core CI machine: ~15 s of CPU a run, the largest part of the suite's time). This
server imports them once, compiles each program once and makes its definitions once (load()); a container
is then a fork that enters the pod's network namespace and runs the program's code as `__main__`, with its
own argv, environment, session and log, like `python -I -S PROGRAM ARGS` would (the server itself runs with
`-I -S`). The programs' sockets, capture and bytes are theirs as before: only the interpreter's start is
shared. A replaced sidecar or ztunnel (`--emulator-sidecar`, `--emulator-ztunnel`) is always exec'd, as any
program.

`python -I -S forkserver.py FD PROGRAM...`: FD is a SOCK_SEQPACKET socket to the harness. Each request is a
JSON object {"argv": [python, -I, -S, PROGRAM, args...], "env": {...}} with two file descriptors (the
pod's network namespace and the log, or -1 for none); the answer is {"pid": N} or {"error": "..."}. When a
child exits the server says {"exit": N, "code": C} (C as subprocess's returncode: -signal when killed).
The server exits when the harness closes the socket; its children die with it (PR_SET_PDEATHSIG), as the
server dies with the harness. Standalone on purpose: it imports nothing of the suite.
"""

from __future__ import annotations

# Preloaded for the children: what the echo program and the sidecar import (asyncio is most of it).
import argparse
import ast
import asyncio  # noqa: F401
import builtins
import collections  # noqa: F401
import contextlib
import ctypes
import dataclasses  # noqa: F401
import errno  # noqa: F401
import gc
import importlib.util  # noqa: F401
import ipaddress  # noqa: F401
import itertools  # noqa: F401
import json
import math  # noqa: F401
import os
import re  # noqa: F401
import select
import signal
import socket
import struct  # noqa: F401
import sys
import time  # noqa: F401
import traceback
import types
import typing  # noqa: F401
import urllib.parse  # noqa: F401
import uuid  # noqa: F401

CLONE_NEWNET = 0x40000000
PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)


def _is_main_guard(node: ast.stmt | None) -> bool:
    """Whether `node` is `if __name__ == "__main__":` (without an else)."""
    if not isinstance(node, ast.If) or node.orelse or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    return (
        isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and len(test.ops) == 1
        and isinstance(test.ops[0], ast.Eq)
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def _main_module(path: str) -> types.ModuleType:
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__dict__["__builtins__"] = builtins
    return module


def load(path: str) -> tuple[types.ModuleType | None, types.CodeType]:
    """A program: its module with the definitions already made, and the code a child runs in it.

    A program that ends in `if __name__ == "__main__":` has everything above that guard run here once, as
    its `__main__` (the two programs served define constants, classes and functions there, and read nothing
    of their environment), and a child runs only the guard: ~3.5 ms less of an echo container's start (~90
    a run). A program without that guard, or whose definitions fail here, runs whole in each child (its
    error then in the child's log, as `python` would print it): (None, the whole program).
    """
    with open(path, "rb") as fh:
        source = fh.read()
    whole = compile(source, path, "exec", dont_inherit=True)
    tree = ast.parse(source, path)
    if not tree.body or not _is_main_guard(tree.body[-1]):
        return None, whole
    module = _main_module(path)
    saved = sys.modules["__main__"]
    sys.modules["__main__"] = module  # dataclasses look their module's names up there
    try:
        exec(compile(ast.Module(tree.body[:-1], type_ignores=[]), path, "exec", dont_inherit=True), module.__dict__)
    except Exception:  # the child reports it, running the program whole
        return None, whole
    finally:
        sys.modules["__main__"] = saved
    return module, compile(ast.Module(tree.body[-1:], type_ignores=[]), path, "exec", dont_inherit=True)


def _child(
    request: dict[str, object],
    fds: list[int],
    program: tuple[types.ModuleType | None, types.CodeType],
    keep: list[int],
) -> None:
    """In the forked child: become the container, run the program, exit with its status. Never returns."""
    status = 127
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in keep:
            os.close(fd)
        os.setsid()
        ns_fd, log_fd = fds
        if _libc.setns(ns_fd, CLONE_NEWNET) != 0:
            os._exit(126)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(log_fd if log_fd >= 0 else devnull, 1)
        os.dup2(log_fd if log_fd >= 0 else devnull, 2)
        for fd in {ns_fd, log_fd, devnull} - {-1, 0, 1, 2}:
            os.close(fd)
        argv = [str(a) for a in request["argv"]]  # type: ignore[attr-defined]
        path = argv[3]
        # `ps -o comm` names the program (the command line stays the server's: rewriting it needs privileges).
        _libc.prctl(PR_SET_NAME, os.path.basename(path).encode()[:15], 0, 0, 0)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != int(request["server"]):  # type: ignore[call-overload]
            os._exit(1)  # the server died between fork and prctl
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in request["env"].items()})  # type: ignore[attr-defined]
        sys.argv = argv[3:]
        preloaded, code = program
        main = preloaded or _main_module(path)
        sys.modules["__main__"] = main
        try:
            exec(code, main.__dict__)  # the program (or its main guard: load()), as `python -I -S PROGRAM` runs it
            status = 0
        except SystemExit as done:
            if done.code is None or isinstance(done.code, int):
                status = done.code or 0
            else:
                sys.stderr.write(f"{done.code}\n")
                status = 1
        except BaseException:  # printed as Python prints an uncaught exception
            traceback.print_exc()
            status = 1
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    finally:
        os._exit(status)


def _reap(conn: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn.send(json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}).encode())


def serve(conn: socket.socket, programs: dict[str, tuple[types.ModuleType | None, types.CodeType]]) -> None:
    """Start a child per request until the harness closes the socket."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    while True:
        ready, _, _ = select.select([conn.fileno(), wake_r], [], [])
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
        _reap(conn)
        if conn.fileno() not in ready:
            continue
        data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 2)
        if not data:
            return
        try:
            request = json.loads(data)
            program = str(request["argv"][3])
            if program not in programs or len(fds) != 2:
                answer: dict[str, object] = {"error": f"not a program this server runs: {program}"}
            else:
                request["server"] = os.getpid()
                pid = os.fork()
                if pid == 0:
                    _child(request, fds, programs[program], [conn.fileno(), wake_r, wake_w])
                answer = {"pid": pid}
        except (ValueError, KeyError, IndexError, OSError) as err:
            answer = {"error": f"{type(err).__name__}: {err}"}
        finally:
            for fd in fds:
                os.close(fd)
        conn.send(json.dumps(answer).encode())


def _warm_argparse() -> None:
    """Parse a command line once, so that every child finds argparse's patterns compiled (re's cache).

    argparse compiles its patterns on first use: ~2.4 ms of each echo container's start (of ~12 ms), ~90
    starts a run.
    """
    parser = argparse.ArgumentParser(prog="warm", allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("serve", allow_abbrev=False)
    command.add_argument("--port", type=int, default=1)
    command.add_argument("--flag", action="store_true")
    command.add_argument("items", nargs="*")
    parser.parse_args(["serve", "--port", "2", "--flag", "a", "b"])


def main() -> int:
    """`forkserver.py FD PROGRAM...`: compile the programs, then serve until the harness goes away."""
    if len(sys.argv) < 3 or not sys.argv[1].isdigit():
        sys.stderr.write("forkserver: usage: forkserver.py FD PROGRAM...\n")
        return 2
    _libc.prctl(PR_SET_NAME, b"mic-forkserver", 0, 0, 0)
    programs = {path: load(path) for path in sys.argv[2:]}
    _warm_argparse()
    # What the server has loaded is every child's too: frozen, it is out of the children's garbage collections
    # (their passes skip it, and leave its copy-on-write pages unwritten).
    gc.freeze()
    conn = socket.socket(fileno=int(sys.argv[1]))
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        serve(conn, programs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
