"""The engine's allocation MILP, solved in a process of its own: CBC's SIGINT handler never replaces the engine's,
a Ctrl-C never reaches the solves, and a process that dies, fails or is left behind by its engine is dealt with."""

import ctypes
import fcntl
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from process_checks import milp_processes_of, process_running
from test_controller_allocation import LEVELS, OPTIONS
from test_controller_allocation import problem as per_class_problem
from waiting import wait_for

from controller.allocation import allocate
from controller.flow_model import FlowProblem, SolverOptions
from engine.control.milp_process import ANSWER_MARGIN_S, MilpProcess, MilpProcessError
from engine.system.proc_reads import read_command
from engine_process import ROOT

# enough solves for CBC's handler to show (it is in place for part of each solve only)
SOLVES = 200


def problem(i: int) -> FlowProblem:
    """Demand mixes that differ from one solve to the next, some beyond what 64 workers serve."""
    return per_class_problem({k: (i * 7 + k * 3) % 11 * (1 + i % 5) for k in LEVELS})


@pytest.fixture
def milp():
    process = MilpProcess()
    yield process
    process.close()


def solver_pid() -> int:
    """The pid of this test's MILP process (it is this process's only child)."""
    (pid,) = milp_processes_of(os.getpid())
    return pid


class _Sigaction(ctypes.Structure):
    # struct sigaction on Linux (x86-64 and arm64): the handler first
    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16), ("flags", ctypes.c_int),
                ("restorer", ctypes.c_void_p)]  # fmt: skip


def _sigint_handler() -> int:
    """The address of this process's SIGINT handler, as the kernel has it (Python's view is its own)."""
    action = _Sigaction()
    assert ctypes.CDLL(None, use_errno=True).sigaction(signal.SIGINT, None, ctypes.byref(action)) == 0
    return action.handler


def handlers_seen_while(solve: Callable[[int], object], until_one: bool = False) -> set[int]:
    """SIGINT handlers other than this process's own in place at any moment of SOLVES solves (with `until_one`, of
    those up to the first that shows one: to find one there, the rest add nothing)."""
    own, others, done = _sigint_handler(), set(), threading.Event()

    def watch():
        while not done.is_set():
            handler = _sigint_handler()
            if handler != own:
                others.add(handler)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(SOLVES):
            solve(i)
            if until_one and others:
                break
    finally:
        done.set()
        watcher.join()
    return others


def test_cbc_solving_in_a_process_replaces_its_sigint_handler_meanwhile():
    """Why the engine solves elsewhere: a Ctrl-C that comes while CBC's handler is in place goes to CBC. Should this
    fail, OR-Tools' CBC no longer takes SIGINT, and the process of its own is no longer needed."""
    assert handlers_seen_while(lambda i: allocate(problem(i), 64, {}, OPTIONS), until_one=True)


def test_the_engine_s_sigint_handler_stays_in_place_while_the_milp_process_solves(milp):
    assert handlers_seen_while(lambda i: milp.allocate(problem(i), 64, {}, OPTIONS)) == set()


def test_it_solves_as_allocate_does(milp):
    for i, current in enumerate(({}, {0: 64}, {25: 30, 10: 34})):
        here, there = allocate(problem(i), 64, current, OPTIONS), milp.allocate(problem(i), 64, current, OPTIONS)
        assert (there.workers_per_level, there.flows, there.status) == (here.workers_per_level, here.flows, "optimal")


def test_it_solves_once_the_engines_working_directory_is_gone(milp, tmp_path, monkeypatch):
    """CBC aborts a process whose working directory was removed (std::bad_alloc) at its next solve: an engine started
    in a folder removed since (an old release a deploy cleaned up) planned no more, each MILP process dying."""
    release = tmp_path / "release"
    release.mkdir()
    monkeypatch.chdir(release)
    expected = allocate(problem(1), 64, {}, OPTIONS)  # here, before: in this process, CBC would abort pytest's
    milp.allocate(problem(0), 64, {}, OPTIONS)  # its process started in the folder
    release.rmdir()
    solved = milp.allocate(problem(1), 64, {}, OPTIONS)
    assert (solved.workers_per_level, solved.status) == (expected.workers_per_level, "optimal")


def _signals(pid: int, field: str) -> int:
    """A mask from /proc/PID/status (SigBlk: blocked, SigIgn: ignored) as an int."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no {field} for {pid}")


def test_a_stop_signal_is_never_delivered_to_it(milp):
    """A terminal's Ctrl-C signals the engine's whole process group: the MILP process holds SIGINT and SIGTERM
    blocked, from its first instruction (the engine's thread blocks them as it starts the process), so that neither
    stops a solve early nor ends the process; the engine ends it as it stops."""
    milp.allocate(problem(0), 8, {}, OPTIONS)
    pid = solver_pid()
    blocked = _signals(pid, "SigBlk")
    assert blocked & 1 << (signal.SIGINT - 1) and blocked & 1 << (signal.SIGTERM - 1)
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGTERM)  # systemd's stop signals the engine's whole cgroup
    assert milp.allocate(problem(1), 8, {}, OPTIONS).status == "optimal"
    assert solver_pid() == pid
    # the thread that started it has them back as they were
    assert not {signal.SIGINT, signal.SIGTERM} & signal.pthread_sigmask(signal.SIG_BLOCK, set())


def test_a_process_killed_between_solves_is_replaced_at_the_next_and_the_log_says_so(milp, caplog):
    milp.allocate(problem(0), 8, {}, OPTIONS)
    first = solver_pid()
    os.kill(first, signal.SIGKILL)
    assert wait_for(lambda: not process_running(first))
    assert milp.allocate(problem(1), 8, {}, OPTIONS).status == "optimal"
    assert solver_pid() != first
    # it was replaced without a word above DEBUG: a solver the OOM killer took at every window went unseen (soak test)
    said = f"the MILP process ended between solves (pid {first}, exit code -9): starting another"
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [said]


def test_a_process_that_dies_during_a_solve_fails_that_solve_and_the_next_starts_another(milp, caplog):
    milp.allocate(problem(0), 8, {}, OPTIONS)
    first = solver_pid()
    os.kill(first, signal.SIGSTOP)  # it takes the next solve and never answers
    failed = []
    solving = threading.Thread(target=lambda: failed.append(_raised(lambda: milp.allocate(problem(1), 8, {}, OPTIONS))))
    solving.start()
    assert wait_for(lambda: _unread_request_bytes(first) > 0)  # sent: the kill comes during the solve
    os.kill(first, signal.SIGKILL)
    solving.join(timeout=60)
    assert not solving.is_alive()
    assert f"the MILP process ended (pid {first}, exit code -9) before it answered" in str(failed[0])
    assert milp.allocate(problem(1), 8, {}, OPTIONS).status == "optimal"
    assert solver_pid() != first
    # its end was the failed solve's error: the next one, warning that it "ended between solves", told of a second
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_process_that_does_not_answer_in_time_is_killed_and_the_next_solve_starts_another(caplog):
    milp = MilpProcess(answer_margin_s=0.5, first_answer_margin_s=30.0)
    try:
        milp.allocate(problem(0), 8, {}, OPTIONS)
        first = solver_pid()
        os.kill(first, signal.SIGSTOP)
        with pytest.raises(MilpProcessError) as raised:
            milp.allocate(problem(1), 8, {}, SolverOptions(time_limit_ms=100))
        assert f"did not answer in 1 s (pid {first}, exit code -9)" in str(raised.value)
        assert milp.allocate(problem(1), 8, {}, OPTIONS).status == "optimal"
        assert solver_pid() != first
        # the engine killed it, as the error said: not a process that "ended between solves" (exit code -9, an OOM
        # killer's mark)
        assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        milp.close()


def test_a_process_that_answered_before_is_given_seconds_not_its_first_answer_s_30(milp):
    """A stalled process was waited for 30 s beyond the time limit at every solve, a margin its first answer needs for
    its imports alone: the controller, awaiting it, placed no worker meanwhile."""
    milp.allocate(problem(0), 8, {}, OPTIONS)
    os.kill(solver_pid(), signal.SIGSTOP)
    with pytest.raises(MilpProcessError, match=f"did not answer in {ANSWER_MARGIN_S + 0.1:.0f} s"):
        milp.allocate(problem(1), 8, {}, SolverOptions(time_limit_ms=100))


def _unread_request_bytes(pid: int) -> int:
    """Bytes in the MILP process's requests pipe (its first argument names the descriptor) it has not read."""
    reader = int(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[3])
    with open(f"/proc/{pid}/fd/{reader}", "rb", buffering=0) as pipe:
        return struct.unpack("i", fcntl.ioctl(pipe, termios.FIONREAD, b"\0\0\0\0"))[0]


def test_a_solve_that_raises_is_raised_with_its_traceback_and_the_process_serves_on(milp):
    milp.allocate(problem(0), 8, {}, OPTIONS)
    pid = solver_pid()
    unknown_level = FlowProblem((0, 5), {0: 1.0}, {0: 1.0}, {0: {0: 100.0, 5: 90.0}}, {0: {0: 0.0, 5: 10.0}})
    # no capacity for level 5
    with pytest.raises(MilpProcessError) as raised:
        milp.allocate(unknown_level, 8, {}, OPTIONS)
    assert "the MILP process failed the solve" in str(raised.value) and "KeyError: 5" in str(raised.value)
    assert milp.allocate(problem(1), 8, {}, OPTIONS).status == "optimal"
    assert solver_pid() == pid


def test_closed_it_ends_and_solves_no_more():
    milp = MilpProcess()
    milp.allocate(problem(0), 8, {}, OPTIONS)
    pid = solver_pid()
    milp.close()
    assert not process_running(pid)
    with pytest.raises(MilpProcessError) as raised:
        milp.allocate(problem(1), 8, {}, OPTIONS)
    assert "closed" in str(raised.value)


# an engine's stand-in: starts a MILP process, solves once, says its pid and dies without closing it
_ABANDONED = """
import os, signal, sys
sys.path.insert(0, "tests")  # run from the repository's root, beside the tests' helpers
from controller.flow_model import FlowProblem, SolverOptions
from engine.control.milp_process import MilpProcess
from process_checks import milp_processes_of
milp = MilpProcess()
milp.allocate(FlowProblem((0,), {0: 1.0}, {0: 1.0}, {0: {0: 100.0}}, {0: {0: 0.0}}), 1, {}, SolverOptions())
print(*milp_processes_of(os.getpid()), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_it_ends_when_its_engine_is_killed():
    done = subprocess.run([sys.executable, "-c", _ABANDONED], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert wait_for(lambda: not process_running(int(done.stdout)))


def test_it_logs_as_its_engine_does_a_crash_under_json_a_json_line():
    """It writes to the engine's stderr: under `--log-format json` a traceback of its own, over plain lines, was one a
    log collector could not parse. Its command, as the engine starts it, is run here with a requests descriptor it
    cannot read from, an exception it does not catch."""
    milp = MilpProcess(log_level="DEBUG", log_format="json")
    try:
        milp.allocate(problem(0), 8, {}, OPTIONS)
        command = read_command(solver_pid()).split("\0")[:-1]
    finally:
        milp.close()
    requests, answers = os.open(os.devnull, os.O_WRONLY), os.open(os.devnull, os.O_WRONLY)
    try:
        command[3:5] = [str(requests), str(answers)]
        ran = subprocess.run(
            command, pass_fds=(requests, answers), cwd=ROOT, capture_output=True, text=True, timeout=60
        )
    finally:
        os.close(requests)
        os.close(answers)
    assert ran.returncode == 1
    records = [json.loads(line) for line in ran.stderr.splitlines()]
    assert [(r["level"], r["logger"], r["message"]) for r in records] == [("CRITICAL", "argus", "uncaught exception")]
    assert "OSError: [Errno 9] Bad file descriptor" in records[0]["exc_info"]


def _raised(call: Callable[[], object]) -> BaseException | None:
    try:
        call()
    except Exception as exc:
        return exc
    return None
