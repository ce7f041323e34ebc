"""The engine's allocation MILP, solved in a process of its own (`python -m engine.control.milp_process REQUESTS ANSWERS
LEVEL FORMAT`: its pipes' descriptors, and the engine's `argus --log-level` and `--log-format`, which it logs with too).

CBC, the MILP's solver, puts a SIGINT handler of its own in place for each solve, and puts the process's back after
it: solved in the engine's process, a Ctrl-C that came meanwhile stopped the solve, and the engine served on
(docs/reliability.md). In a process of its own, CBC's handler is that process's alone.

That process starts with SIGINT, SIGTERM and SIGHUP blocked (the thread that starts it blocks them for the start; the
mask is inherited) and keeps them blocked: Ctrl-C in a terminal signals the engine's whole process group, a closed
terminal SIGHUP (a reload to the engine, which serves on), and systemd's stop its whole cgroup, and a signal delivered
there would stop a solve early or end the process, the engine's next solve failing. It ends when its requests pipe
closes: when the engine closes it as it stops, or the kernel as the engine dies, however it dies.

It shares the engine's stderr: under `--log-format json`, a warning a library gives there (numpy's, OR-Tools') or an
exception it did not catch is a JSON line too, as the engine's are (engine/logs/setup.py).

Requests and answers cross the pipes as msgpack, decoded strictly into the controller's own dataclasses.

Calls come from one thread at a time (the engine's controller thread). A process that died or failed to answer is
replaced at the next solve; the solve that found it gone raises, and the plan in force is kept meanwhile.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Mapping
from multiprocessing.connection import Connection

import msgspec

from controller.allocation import allocate
from controller.flow_model import FlowProblem, FlowSolution, SolverOptions
from engine.config import environment_for_children
from engine.logs.setup import configure_logging
from engine.system.stop_signals import HELD_SIGNALS

log = logging.getLogger("argus.controller")

# beyond the solver's own time limit, the time a process has to answer: its first answer comes after its imports
# (OR-Tools, numpy: seconds on a loaded host); a later one only builds the model (milliseconds, 1,024 workers
# included: docs/scaling.md), so one that has not come in seconds is a stalled process. Given 30 s too, a stall kept
# the controller blind that long (the control loop awaits the solve: no worker placed, no pace followed)
FIRST_ANSWER_MARGIN_S = 30.0
ANSWER_MARGIN_S = 5.0
_EXIT_WAIT_S = 5.0
_REQUEST = tuple[FlowProblem, int, dict[int, int], SolverOptions]
_ANSWER = FlowSolution | str  # a solution, or the traceback of a solve that raised


class MilpProcessError(RuntimeError):
    """The process died or did not answer in time (the next solve starts another), or the solve raised in it."""


class MilpProcess:
    """`allocate` (controller/allocation.py) with the same arguments and result, solved in the child process."""

    def __init__(
        self,
        answer_margin_s: float = ANSWER_MARGIN_S,
        first_answer_margin_s: float = FIRST_ANSWER_MARGIN_S,
        log_level: str = "INFO",
        log_format: str = "text",
    ) -> None:
        self._answer_margin_s = answer_margin_s
        self._first_answer_margin_s = first_answer_margin_s
        self._logging = [log_level, log_format]  # the process's, as its engine's
        self._answered = False  # whether the process running has answered a solve yet
        # taken now, on the loop's thread: a Ray launcher takes the API key out of os.environ for a moment, from
        # another thread, while the first solve may start the process
        self._environment = environment_for_children()
        self._lock = threading.Lock()  # a start against close() from another thread
        self._closed = False
        self._process: subprocess.Popen | None = None
        self._requests: Connection | None = None
        self._answers: Connection | None = None
        self._decode_answer = msgspec.msgpack.Decoder(_ANSWER).decode

    def allocate(
        self, problem: FlowProblem, workers: int, current: Mapping[int, int], options: SolverOptions
    ) -> FlowSolution:
        requests, answers = self._running()
        margin_s = self._answer_margin_s if self._answered else self._first_answer_margin_s
        wait_s = options.time_limit_ms / 1000.0 + margin_s
        try:
            requests.send_bytes(msgspec.msgpack.encode((problem, workers, dict(current), options)))
            answered = answers.poll(wait_s)
            answer = self._decode_answer(answers.recv_bytes()) if answered else None
        except (OSError, EOFError) as exc:
            raise MilpProcessError(f"the MILP process ended ({self._ended()}) before it answered: {exc!r}") from exc
        except msgspec.DecodeError as exc:
            raise MilpProcessError(
                f"the MILP process answered what is not a solution ({self._ended()}): {exc}"
            ) from exc
        if not answered:
            raise MilpProcessError(f"the MILP process did not answer in {wait_s:.0f} s ({self._ended()})")
        self._answered = True
        if isinstance(answer, str):
            raise MilpProcessError(f"the MILP process failed the solve:\n{answer}")
        return answer

    def close(self) -> None:
        """Ends the process: closing its requests lets it exit after the solve it runs."""
        with self._lock:
            self._closed = True
            self._end(kill=False)

    def _ended(self) -> str:
        """Kills a process that failed to answer (one already dead keeps its exit code) and says how it ended. It is
        forgotten: kept, the next solve took it for one that ended between solves, and warned of a second end."""
        with self._lock:
            self._end(kill=True)
            words = self._ended_words()
            self._process = None
            return words

    def _ended_words(self) -> str:
        process = self._process
        return f"pid {process.pid}, exit code {process.returncode}" if process is not None else "closed"

    def _running(self) -> tuple[Connection, Connection]:
        with self._lock:
            if self._closed:
                raise MilpProcessError("the MILP process is closed: the engine is stopping")
            if self._process is None or self._process.poll() is not None:
                if self._process is not None:
                    # between solves: nothing failed, so nothing else would say it (an OOM killer taking it each time)
                    log.warning("the MILP process ended between solves (%s): starting another", self._ended_words())
                self._end(kill=True)
                self._start()
            assert self._requests is not None and self._answers is not None
            return self._requests, self._answers

    def _start(self) -> None:
        request_reader, request_writer = os.pipe()
        answer_reader, answer_writer = os.pipe()
        held = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
        try:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "engine.control.milp_process",
                    str(request_reader),
                    str(answer_writer),
                    *self._logging,
                ],
                stdin=subprocess.DEVNULL,
                env=self._environment,
                pass_fds=(request_reader, answer_writer),
            )
        except OSError as exc:
            os.close(request_writer)
            os.close(answer_reader)
            raise MilpProcessError(f"the MILP process cannot start: {exc}") from exc
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            os.close(request_reader)
            os.close(answer_writer)
        self._requests = Connection(request_writer, readable=False)
        self._answers = Connection(answer_reader, writable=False)
        self._answered = False
        log.debug("the MILP process started (pid %d)", self._process.pid)

    def _end(self, kill: bool) -> None:
        for channel in (self._requests, self._answers):
            if channel is not None:
                channel.close()
        self._requests = self._answers = None
        process = self._process
        if process is None:
            return
        if kill:
            process.kill()
        try:
            process.wait(_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve(requests: Connection, answers: Connection) -> None:
    """Solves what comes in until the engine closes the pipe (or is gone when the answer is sent)."""
    decode_request = msgspec.msgpack.Decoder(_REQUEST).decode
    while True:
        try:
            request = requests.recv_bytes()
        except EOFError:
            return
        try:
            answer: _ANSWER = allocate(*decode_request(request))
        except Exception:  # the engine raises it as its own solve's error
            answer = traceback.format_exc()
        try:
            answers.send_bytes(msgspec.msgpack.encode(answer))
        except OSError:  # BrokenPipeError: the engine died during the solve
            return


if __name__ == "__main__":
    # CBC aborts the process (std::bad_alloc) at a solve once its working directory has been removed: an engine
    # started in a folder removed since (an old release a deploy cleaned up) planned no more, each of its MILP
    # processes dying at its first solve. This one reads no path
    os.chdir("/")
    configure_logging(sys.argv[3], sys.argv[4])
    serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))
