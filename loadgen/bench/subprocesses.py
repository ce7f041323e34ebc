"""The processes a benchmark starts: each in a session of its own, logging to a file, stopped with its whole group;
and a benchmark ended by SIGTERM stops them as a Ctrl-C does.

Nothing heavy is imported at module level: `argus` imports this module at every start (loadgen/bench/commands.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.system.process_ends import how_it_ended

ROOT = Path(__file__).resolve().parents[2]


class ChildDied(Exception):
    """A process a command drives died under it (a kill -9, the OOM killer, a crash): the command says so in one line
    and exits 1 (engine/cli.py), not in a traceback of wherever it noticed."""


class RunFailed(Exception):
    """A benchmark ran and has no figures to give (the scale bench's engine kept up with none of its steps): said in
    one line, exit 1 (engine/cli.py), as ChildDied is, not in a RuntimeError traceback."""


@dataclass
class Child:
    """A subprocess in its own process group, logging to a file."""

    process: subprocess.Popen
    log_path: Path
    name: str
    log_kept: bool = False  # in a folder the user named (compare's --log-dir), not one removed as the command ends
    death_said: bool = field(default=False, init=False)  # by died(): not said again as its benchmark stops it

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def check_alive(self, what: str | None = None) -> None:
        """ChildDied if it exited, naming it `what` (as the command's user knows it; default: its NAME process): a
        benchmark whose engine, fleet or load process died ended in a RuntimeError traceback of wherever it noticed,
        the log's tail pasted under it. Its log is kept whole instead."""
        if not self.alive():
            raise self._died(what or f"its {self.name} process")

    def _died(self, what: str) -> ChildDied:
        """It said dead in one line: its pid, how it ended and where its log is, copied out of the temporary folder
        its command removes as it ends, when it logged anything."""
        self.death_said = True
        ended = how_it_ended(self.process.returncode)
        return ChildDied(f"{what} (pid {self.process.pid}) {ended}; {self._kept_log()}")

    def _kept_log(self) -> str:
        try:
            if not self.log_path.stat().st_size:
                return "it logged nothing"
            if self.log_kept:
                return f"its log is {self.log_path}"
            handle, kept = tempfile.mkstemp(prefix=f"argus-{self.name}-", suffix=".log")
            with os.fdopen(handle, "wb") as copy, open(self.log_path, "rb") as log:
                shutil.copyfileobj(log, copy)
        except OSError as error:
            return f"its log could not be kept ({error.strerror or error})"
        return f"its log is {kept}"

    async def while_alive(self, awaitable, every_s: float = 0.2):
        """Awaits `awaitable`, failing as check_alive does as soon as this process exits (the awaitable cancelled):
        a dead server's requests are never answered, and a run against one waited out their timeouts, then failed
        naming anything but its death (the chaos bench its /metrics refused, the checkpoint bench a bare
        TimeoutError after 2 minutes)."""
        import asyncio

        task = asyncio.ensure_future(awaitable)
        try:
            while not (await asyncio.wait({task}, timeout=every_s))[0]:
                self.check_alive()
            if not task.cancelled() and task.exception() is not None:
                self.check_alive()  # what it failed on (a refused connection) came of the exit: said as such
            return task.result()
        finally:
            if not task.done():  # its own finally blocks close what it opened
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM, then SIGKILL to its whole group (its own children too) if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # whatever of the group is left
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        return self.process.returncode


# a SIGTERM came, and was handed to Ctrl-C's handling (unwind_on_sigterm): the command ends on it as on a Ctrl-C, but
# says so and exits 143
_terminated = False


def unwind_on_sigterm() -> None:
    """A SIGTERM (a timeout, a cancelled job) unwinds the benchmark as a Ctrl-C does, through the code that stops
    its children: they run in sessions of their own (out of a Ctrl-C's reach), and would outlive it."""
    signal.signal(signal.SIGTERM, _stop_as_ctrl_c_does)


def ended_by_sigterm() -> bool:
    """Whether the KeyboardInterrupt a command ends on came of a SIGTERM (unwind_on_sigterm)."""
    return _terminated


def _stop_as_ctrl_c_does(signum: int, frame) -> None:
    """Hands the SIGTERM to SIGINT's handler of the moment. Under asyncio.run that handler cancels the run's main
    task, which then unwinds through its own finally blocks and ends in a KeyboardInterrupt; elsewhere Python's raises
    KeyboardInterrupt. A SystemExit raised wherever the signal landed (in a task the run did not await) left that
    task's exception unretrieved and the run's aiohttp session unclosed, both printed as the bench ended. Being
    Python's handler of SIGTERM, this runs between two bytecodes of the main thread however busy its loop is, as the
    cancelling of a Ctrl-C does; a second signal raises at once, as a second Ctrl-C does."""
    global _terminated
    _terminated = True
    on_ctrl_c = signal.getsignal(signal.SIGINT)
    if not callable(on_ctrl_c):  # ignored, or a handler not set from Python
        raise KeyboardInterrupt
    on_ctrl_c(signal.SIGINT, frame)


def spawn(
    command: Sequence[str],
    log_dir: Path,
    name: str,
    env: dict[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    log_kept: bool = False,
) -> Child:
    log_path = Path(log_dir) / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            list(command),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            pass_fds=pass_fds,
        )
    return Child(process, log_path, name, log_kept)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_http(child: Child, url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        child.check_alive()
        try:
            http_get(url, timeout_s=2.0)
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.1)
    raise TimeoutError(f"{child.name} did not answer {url}:\n{child.log_tail()}")
