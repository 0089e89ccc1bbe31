"""Every command the kind backend runs goes through a Runner: real runs keep a transcript, plan runs only print.

One code path builds the command sequence for both, so `--plan` shows exactly what a real run would do.
A failing command is one line that names it, its exit status and the tail of its stderr (kind and istioctl
explain themselves there).
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

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

    kind: str  # "command" | "manifest" | "note"
    text: str
    detail: str = ""


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

    def popen(self, argv: Sequence[str], *, what: str, stdin: str | None = None) -> Pending:
        """Start a command now, its stdin fed and its output read by a thread, for commands run side by side."""
        self._record(argv, what, stdin, manifest=False)
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=self.env,
            )
        except FileNotFoundError:
            raise CommandError(f"{what}: {argv[0]} not found") from None
        return _RunningCommand(proc, tuple(argv), what, stdin)


class Pending(Protocol):
    """A command started by `Runner.popen`."""

    def wait(self, timeout: float) -> Result:
        """Its result; CommandError if it failed or took longer than `timeout`."""

    def cancel(self) -> None:
        """Kill it (when a sibling failed and its answer is no longer wanted)."""


class _RunningCommand:
    def __init__(self, proc: subprocess.Popen[str], argv: tuple[str, ...], what: str, stdin: str | None) -> None:
        self.proc, self.argv, self.what = proc, argv, what
        self._output: tuple[str, str] = ("", "")
        # communicate() in a thread: the stdin of every command is written at once, so they really run together.
        self._thread = threading.Thread(target=self._communicate, args=(stdin,), daemon=True)
        self._thread.start()

    def _communicate(self, stdin: str | None) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._output = self.proc.communicate(stdin)

    def wait(self, timeout: float) -> Result:
        self._thread.join(timeout)
        command = shlex.join(self.argv)
        if self._thread.is_alive():
            self.cancel()
            raise CommandError(f"{self.what}: `{command}` did not finish within {timeout:.0f} s")
        out, err = self._output
        if self.proc.returncode != 0:
            raise CommandError(f"{self.what}: `{command}` exited {self.proc.returncode}: {_tail(err or out)}")
        return Result(self.argv, self.proc.returncode, out, err)

    def cancel(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self._thread.join(5)


@dataclass(frozen=True)
class _Done:
    result: Result

    def wait(self, timeout: float) -> Result:
        return self.result

    def cancel(self) -> None:
        return None


Responder = Callable[[Sequence[str]], str]


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
        return Result(tuple(argv), 0, out, "")

    def popen(self, argv: Sequence[str], *, what: str, stdin: str | None = None) -> Pending:
        """Record the command; its wait returns the stand-in output."""
        return _Done(self.run(argv, what=what, stdin=stdin))


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
        else:
            lines.append("# stdin:")
            lines += [f"    {line}" for line in step.text.rstrip().splitlines()]
    return "\n".join(lines).lstrip() + "\n"
