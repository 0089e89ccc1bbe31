"""Every command and API call of the kind backend goes through a Runner: real runs keep a transcript, plans print.

One code path builds the sequence for both, so `--plan` shows exactly what a real run would do.
A failing command is one line that names it, its exit status and the tail of its stderr (kind and istioctl
explain themselves there). An API call (the official client, conformance/backends/kind/api.py) is recorded with
the request it makes and the kubectl command a person could paste to repeat it; its failure is one line too.
"""

from __future__ import annotations

import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from conformance.backends.base import BackendError


@dataclass(frozen=True)
class Result:
    """What a command printed and returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Step:
    """One entry of the transcript: a command (with the manifest it was fed, if any), or a note."""

    kind: str  # "command" | "api" | "manifest" | "note"
    text: str
    """The command line; for an API call, the kubectl command that repeats it by hand."""
    detail: str = ""
    request: str = ""
    """For an API call: the HTTP request(s) the client makes."""


class CommandError(BackendError):
    """A command failed."""


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


@dataclass
class Runner:
    """Runs commands with a timeout, records them, and turns failures into one-line errors."""

    env: dict[str, str] | None = None
    default_timeout: float = 120.0
    transcript: list[Step] = field(default_factory=list)
    log: Path | None = None

    def note(self, text: str) -> None:
        """A line of explanation in the transcript (and the plan)."""
        self.transcript.append(Step("note", text))

    def _record(self, argv: Sequence[str], what: str, stdin: str | None, manifest: bool) -> str:
        """Put a command (and the manifest it is fed) in the transcript; return it as a shell line."""
        command = shlex.join(argv)
        self.transcript.append(Step("command", command, what))
        if stdin is not None and manifest:
            self.transcript.append(Step("manifest", stdin))
        return command

    def run(
        self,
        argv: Sequence[str],
        *,
        what: str,
        stdin: str | None = None,
        timeout: float | None = None,
        check: bool = True,
        manifest: bool = False,
    ) -> Result:
        """Run `argv`; `what` says in words what it is for (it heads the error message)."""
        command = self._record(argv, what, stdin, manifest)
        started = time.monotonic()
        try:
            proc = subprocess.run(
                list(argv),
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout or self.default_timeout,
                env=self.env,
                check=False,
            )
        except FileNotFoundError:
            raise CommandError(f"{what}: {argv[0]} not found") from None
        except subprocess.TimeoutExpired:
            raise CommandError(
                f"{what}: `{command}` did not finish within {timeout or self.default_timeout:.0f} s"
            ) from None
        self._log(command, proc.returncode, time.monotonic() - started, proc.stderr)
        result = Result(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise CommandError(f"{what}: `{command}` exited {proc.returncode}: {_tail(proc.stderr or proc.stdout)}")
        return result

    def _log(self, command: str, returncode: int, seconds: float, stderr: str) -> None:
        if self.log is None:
            return
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("a", encoding="utf-8") as fh:
            fh.write(f"$ {command}\n# exit {returncode} in {seconds:.1f}s\n")
            if returncode != 0 and stderr:
                fh.write("".join(f"# {line}\n" for line in stderr.strip().splitlines()[-20:]))

    def _record_call(self, kubectl: Sequence[str], what: str, request: str, stdin: str | None) -> str:
        command = shlex.join(kubectl)
        self.transcript.append(Step("api", command, what, request))
        if stdin is not None:
            self.transcript.append(Step("manifest", stdin))
        return command

    def call(
        self,
        fn: Callable[[], Any],
        *,
        what: str,
        kubectl: Sequence[str],
        request: str,
        stdin: str | None = None,
    ) -> Any:
        """Make an API call (`fn`, which raises BackendError with one line on failure) and log it."""
        command = self._record_call(kubectl, what, request, stdin)
        started = time.monotonic()
        try:
            value = fn()
        except BackendError as err:
            self._log_call(request, command, time.monotonic() - started, str(err))
            raise
        self._log_call(request, command, time.monotonic() - started, None)
        return value

    def start_call(self, fn: Callable[[], Any], *, what: str, kubectl: Sequence[str], request: str) -> Pending:
        """Start an API call in a thread now (calls run side by side); its wait returns fn's value."""
        command = self._record_call(kubectl, what, request, None)
        return _RunningCall(fn, lambda seconds, problem: self._log_call(request, command, seconds, problem), what)

    def _log_call(self, request: str, command: str, seconds: float, problem: str | None) -> None:
        if self.log is None:
            return
        self.log.parent.mkdir(parents=True, exist_ok=True)
        outcome = f"failed in {seconds:.1f}s: {problem}" if problem else f"ok in {seconds:.1f}s"
        with self.log.open("a", encoding="utf-8") as fh:
            fh.write(f"API {request}\n# by hand: {command}\n# {outcome}\n")


class Pending(Protocol):
    """An API call started by `Runner.start_call` (execs in several pods run side by side)."""

    def wait(self, timeout: float) -> Any:
        """Its result; BackendError if it failed or took longer than `timeout`."""

    def cancel(self) -> None:
        """Give up on it (when a sibling failed and its answer is no longer wanted)."""


class _RunningCall:
    """An API call in a thread of its own (the client blocks; exec streams of several pods run together)."""

    def __init__(self, fn: Callable[[], Any], log: Callable[[float, str | None], None], what: str) -> None:
        self.what = what
        self._value: Any = None
        self._error: BackendError | None = None
        self._log = log
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._started = time.monotonic()
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._value = fn()
        except BackendError as err:
            self._error = err
        except Exception as err:  # a bug in a thread must still reach the caller, as one line
            self._error = BackendError(f"{self.what}: {type(err).__name__}: {err}")
        self._log(time.monotonic() - self._started, str(self._error) if self._error else None)

    def wait(self, timeout: float) -> Any:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise CommandError(f"{self.what}: no answer within {timeout:.0f} s")
        if self._error is not None:
            raise self._error
        return self._value

    def cancel(self) -> None:
        # A blocked client call cannot be interrupted from outside; its own request timeout ends it (daemon thread).
        return None


@dataclass(frozen=True)
class _Done:
    result: Any

    def wait(self, timeout: float) -> Any:
        return self.result

    def cancel(self) -> None:
        return None


Responder = Callable[[Sequence[str]], Any]
"""A plan's stand-in answers: a command's stdout (str), or an API call's value, keyed by the (kubectl) argv."""


@dataclass
class PlanRunner(Runner):
    """Records instead of running: what `--plan` prints. Commands whose output the run reads get a stand-in."""

    responder: Responder | None = None

    def run(
        self,
        argv: Sequence[str],
        *,
        what: str,
        stdin: str | None = None,
        timeout: float | None = None,
        check: bool = True,
        manifest: bool = False,
    ) -> Result:
        """Record the command; answer with the responder's stand-in output."""
        self._record(argv, what, stdin, manifest)
        out = self.responder(argv) if self.responder else ""
        return Result(tuple(argv), 0, out if isinstance(out, str) else "", "")

    def call(
        self,
        fn: Callable[[], Any],
        *,
        what: str,
        kubectl: Sequence[str],
        request: str,
        stdin: str | None = None,
    ) -> Any:
        """Record the API call without making it; answer with the responder's stand-in value (None by default)."""
        self._record_call(kubectl, what, request, stdin)
        return self.responder(kubectl) if self.responder else None

    def start_call(self, fn: Callable[[], Any], *, what: str, kubectl: Sequence[str], request: str) -> Pending:
        """Record the API call; its wait returns the stand-in value."""
        return _Done(self.call(fn, what=what, kubectl=kubectl, request=request))


def render_plan(steps: Sequence[Step]) -> str:
    """The transcript as a reviewable script: notes as comments, commands with `$`, manifests as YAML."""
    lines: list[str] = []
    number = 0
    for step in steps:
        if step.kind == "note":
            lines += ["", f"# --- {step.text}"]
        elif step.kind == "command":
            number += 1
            lines.append(f"# [{number}] {step.detail}")
            lines.append(f"$ {step.text}")
        elif step.kind == "api":
            # Made by the official client: kubectl is not needed, the line after says how to repeat it by hand.
            number += 1
            lines.append(f"# [{number}] {step.detail}")
            lines.append(f"API {step.request}")
            lines.append(f"#   by hand: {step.text}")
        else:
            lines.append("# stdin:")
            lines += [f"    {line}" for line in step.text.rstrip().splitlines()]
    return "\n".join(lines).lstrip() + "\n"
