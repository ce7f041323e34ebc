"""The local launcher keeps each slot served: a worker that hangs before its hello is killed and restarted, and a
spawn the OS refuses is tried again, without ending the engine. A worker it spawned never outlives it."""

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from process_checks import process_running
from waiting import eventually, wait_for

from controller.profile_latency import worker_command as profile_worker_command
from engine.cli import build_parser, engine_config
from engine.config import LaunchConfig
from engine.fleet import launcher
from engine.fleet.restart_backoff import GIVE_UP_AFTER
from engine.http.readiness import readiness
from engine.metrics import EngineMetrics
from engine.server import Engine
from engine.system import proc_reads
from engine.system.proc_reads import local_workers_of, read_command
from engine_process import ROOT, in_process_config, start_engine, start_worker, stop_in_process
from workers import config as worker_config
from workers.cannot_serve import REASON_FD_ENV
from workers.config import WorkerConfig, usable_cpus

# the tests marked own_engine find theirs started while the tests before them ran (tests/engines_ahead.py)
pytestmark = pytest.mark.usefixtures("engines_ahead")


def sample(engine: Engine, name: str, **labels: str) -> float:
    return engine.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_a_worker_that_hangs_before_its_hello_is_killed_and_restarted(monkeypatch, tmp_path, caplog):
    spawned = spawns_recorded(monkeypatch, first_stopped=True)  # stuck loading its model: it never says hello
    launch = LaunchConfig(count=1, backend="sim", time_scale=0, startup_timeout_s=3.0)
    engine = Engine(in_process_config(tmp_path, launch=launch))
    running = asyncio.create_task(engine.run())
    starting = {"state": "starting"}
    try:
        # the slot's capacity is on its way, not missing: an operator sees it starting
        assert await eventually(lambda: spawned and sample(engine, "argus_workers", **starting) == 1, timeout_s=30)
        said = "no worker is connected: of its own, 1 starting (loading the model); one of its own is on its way"
        assert readiness(engine)["reason"] == said
        assert await eventually(lambda: engine.registry.registered(), timeout_s=60), "the slot was never served"
        # the slot's supervisor sees the hello at its next turn of the loop, not with the registration
        assert await eventually(lambda: sample(engine, "argus_workers", **starting) == 0)
        hung = spawned[0]
        assert [w.hello.pid for w in engine.registry.registered()] != [hung.pid]
        assert hung.returncode == -signal.SIGKILL
        # the flag that gives a slow model load longer: the line named none, and the worker was killed for ever
        assert "said no hello within 3 s (--startup-timeout); killing it" in caplog.text
        # its SIGKILL is the engine's, said as such: "exited with -9" read as the OOM killer's
        assert f"worker local-0 (pid {hung.pid}) was killed by the engine (why is above); restarting" in caplog.text
        assert sample(engine, "argus_worker_restarts_total") >= 1
    finally:
        await stop_in_process(engine, running, spawned)


@contextlib.asynccontextmanager
async def _sim_worker_killed_from_outside(monkeypatch, tmp_path):
    """An engine in this process with one sim worker, SIGKILLed once registered (the loop has not run since): yields
    the engine and the process killed, and stops the engine after."""
    spawned = spawns_recorded(monkeypatch)
    engine = Engine(in_process_config(tmp_path, launch=LaunchConfig(count=1, backend="sim", time_scale=0)))
    running = asyncio.create_task(engine.run())
    try:
        assert await eventually(lambda: engine.registry.registered(), timeout_s=60)
        killed = spawned[0]
        os.kill(killed.pid, signal.SIGKILL)
        yield engine, killed
    finally:
        await stop_in_process(engine, running, spawned)


async def test_a_worker_killed_from_outside_is_logged_as_killed_by_its_signal(monkeypatch, tmp_path, caplog):
    """An operator reads the kernel's log for a SIGKILL (the out-of-memory killer's): "exited with -9" read as an exit
    code the worker chose."""
    async with _sim_worker_killed_from_outside(monkeypatch, tmp_path) as (_, killed):
        said = (
            f"worker local-0 (pid {killed.pid}) was killed by SIGKILL (a kill -9, or the kernel's out-of-memory killer)"
        )
        assert await eventually(lambda: f"{said}; restarting" in caplog.text, timeout_s=60)


async def test_a_worker_killed_from_outside_and_then_found_gone_is_not_said_killed_by_the_engine(
    monkeypatch, tmp_path, caplog
):
    """The engine finds a worker gone (its batch bounced, its beats unanswered) and kills it, often before its loop has
    handled the worker's end: a kill -9 from outside, under load, was said to be the engine's (8 of 15)."""
    async with _sim_worker_killed_from_outside(monkeypatch, tmp_path) as (engine, killed):
        with contextlib.suppress(ChildProcessError):  # reaped by a watcher thread, its returncode not yet set
            os.waitid(os.P_PID, killed.pid, os.WEXITED | os.WNOWAIT)  # ended; the loop has not run since
        assert killed.returncode is None
        engine.launcher.kill("local-0")  # as the worker link does for one found gone
        said = f"worker local-0 (pid {killed.pid}) was killed by SIGKILL"
        assert await eventually(lambda: "; restarting" in caplog.text, timeout_s=60)
        assert said in caplog.text
        assert "killed by the engine" not in caplog.text


@pytest.mark.parametrize(("flags", "ending"), [(0x404044, True), (0x404040, False)])
def test_a_worker_that_has_begun_to_exit_is_ending(monkeypatch, flags, ending):
    """A process killed from outside closes its connection before it is a zombie (the kernel closes its files first,
    its PF_EXITING set): found gone by that, it is ending by itself, not the engine's to kill (5 of 63 kill -9s under
    load were still said to be the engine's while only a zombie counted)."""
    stat = ["S", "1", "1", "1", "0", "-1", str(flags)]
    monkeypatch.setattr(proc_reads, "stat_fields", lambda pid: stat)
    assert proc_reads.ending(os.getpid()) is ending


@pytest.mark.parametrize(("count", "said"), [(1, "1 worker did not stop"), (2, "2 workers did not stop")])
async def test_a_worker_that_does_not_stop_when_asked_is_killed_and_the_log_says_so(tmp_path, caplog, count, said):
    """The engine waited its 5 s and killed it without a word: the log showed a pause, and nothing of why."""
    launch = LaunchConfig(count=count, backend="sim", time_scale=0)
    engine = Engine(in_process_config(tmp_path, launch=launch))
    running = asyncio.create_task(engine.run())
    try:
        assert await eventually(lambda: len(engine.registry.registered()) == count, timeout_s=60)
        named = sorted((worker.hello.worker_id, worker.hello.pid) for worker in engine.registry.registered())
        pids = [pid for _, pid in named]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)  # it cannot see the signal asking it to stop
        await engine.launcher.stop(timeout_s=0.5)
        (line,) = [record.getMessage() for record in caplog.records if "did not stop" in record.getMessage()]
        killing = "it" if count == 1 else "them"
        assert line.startswith(said) and "within 0.5 s of being asked to (" in line and line.endswith(killing), line
        # each by its id, as the launcher's other lines name it, and its pid: "local-1 (pid N)" (it was "pid N" alone)
        said_each = sorted((worker_id, int(pid)) for worker_id, pid in re.findall(r"(local-\d+) \(pid (\d+)\)", line))
        assert said_each == named, line
        assert [worker_id for worker_id, _ in named] == [f"local-{i}" for i in range(count)]
        assert not any(process_running(pid) for pid in pids)
    finally:
        await stop_in_process(engine, running)


async def test_a_refused_spawn_is_retried_and_the_engine_goes_on(monkeypatch, tmp_path, caplog):
    spawned = []
    create = asyncio.create_subprocess_exec

    async def second_one_refused(*args, **kwargs):
        spawned.append(None)
        if len(spawned) == 2:  # the restart of the killed worker
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        spawned[-1] = await create(*args, **kwargs)
        return spawned[-1]

    monkeypatch.setattr(asyncio, "create_subprocess_exec", second_one_refused)
    launch = LaunchConfig(count=1, backend="sim", time_scale=0, restart_backoff_s=0.1)
    engine = Engine(in_process_config(tmp_path, launch=launch))
    running = asyncio.create_task(engine.run())
    try:
        assert await eventually(lambda: engine.registry.registered(), timeout_s=60)
        engine.launcher.kill("local-0")
        assert await eventually(
            lambda: running.done() or (len(spawned) == 3 and engine.registry.registered()), timeout_s=60
        )
        assert not running.done()
        assert [w.hello.pid for w in engine.registry.registered()] == [spawned[2].pid]
        assert "could not start worker local-0" in caplog.text
    finally:
        await stop_in_process(engine, running, spawned)


async def test_a_restart_while_the_engine_is_out_of_open_files_is_retried_and_the_engine_goes_on(tmp_path, caplog):
    """The pipe a worker says why it cannot serve on is made before its spawn: out of files (its clients' connections
    holding them all), the pipe's EMFILE ended the launcher's task group, and the engine with it, without a drain."""
    caplog.set_level(logging.INFO, "argus.launcher")
    engine = Engine(in_process_config(tmp_path, launch=LaunchConfig(count=1, backend="sim", time_scale=0)))
    running = asyncio.create_task(engine.run())
    try:
        assert await eventually(lambda: engine.registry.registered(), timeout_s=60)
        engine.launcher.kill("local-0")
        # its exit seen (the files it held let go of), the slot waits out its backoff: the restart meets no file
        assert await eventually(lambda: "restarting" in caplog.text, timeout_s=60)
        with out_of_open_files():
            assert await eventually(lambda: running.done() or "could not start worker" in caplog.text, timeout_s=60)
        assert not running.done()
        assert "could not start worker local-0: [Errno 24] Too many open files; retrying" in caplog.text
        assert await eventually(lambda: engine.registry.registered(), timeout_s=60), "the slot was never served again"
    finally:
        await stop_in_process(engine, running)


@contextlib.contextmanager
def out_of_open_files() -> Iterator[None]:
    """This process can open no file: its soft limit just past its highest descriptor, every one below it taken."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
    taken = []
    try:
        with contextlib.suppress(OSError):
            while True:
                taken.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("failing", [GIVE_UP_AFTER - 1, GIVE_UP_AFTER])
async def test_a_worker_that_cannot_serve_as_configured_is_started_again_until_it_failed_too_often(
    monkeypatch, tmp_path, caplog, failing
):
    """A worker that exits 2 before its hello cannot serve as configured (a model whose scheduler the backend
    refuses; test_diffusion_backend checks such a worker exits 2). Before, the launcher started it again for as long
    as the engine ran (5 times in 45 s, then every 30 s). Fewer failed starts in a row than GIVE_UP_AFTER (an
    out-of-memory while the model loads may pass): the slot is started again and served; GIVE_UP_AFTER: it is
    given up."""
    spawned = spawns_recorded(monkeypatch, failing=failing)
    launch = LaunchConfig(count=1, backend="sim", time_scale=0, restart_backoff_s=0.1)
    engine = Engine(in_process_config(tmp_path, launch=launch))
    running = asyncio.create_task(engine.run())
    given_up = failing == GIVE_UP_AFTER
    try:
        assert await eventually(
            lambda: engine.registry.registered() or sample(engine, "argus_workers", state="failed") == 1, timeout_s=60
        )
        assert [process.returncode for process in spawned] == [2] * failing + [None] * (GIVE_UP_AFTER - failing)
        assert sample(engine, "argus_workers", state="failed") == int(given_up)
        assert bool(engine.registry.registered()) != given_up
        assert (f"exited with 2 before its hello {GIVE_UP_AFTER} times in a row" in caplog.text) == given_up
        assert not running.done()  # the engine serves on: remote workers may still join
    finally:
        await stop_in_process(engine, running)


async def test_a_worker_command_argparse_refuses_is_said_once_as_why_the_slots_cannot_serve(
    monkeypatch, tmp_path, caplog, capfd
):
    """A usage error in the command the engine built fails every start alike. Before, each start of each slot printed
    argparse's usage block (7 lines), and the engine said only "(why is above)"."""
    built = launcher.worker_command
    monkeypatch.setattr(launcher, "worker_command", lambda config: [*built(config), "--model"])
    launch = LaunchConfig(count=2, backend="sim", time_scale=0, restart_backoff_s=0.1)
    engine = Engine(in_process_config(tmp_path, launch=launch))
    running = asyncio.create_task(engine.run())
    try:
        assert await eventually(lambda: sample(engine, "argus_workers", state="failed") == 2, timeout_s=120)
        assert not running.done()
    finally:
        await stop_in_process(engine, running)
    reason = "argus worker refused the command it was started with: argument --model: expected one argument"
    assert caplog.text.count(reason) == 1, caplog.text
    assert f"cannot serve as configured: {reason}" in caplog.text
    assert caplog.text.count(f"before its hello {GIVE_UP_AFTER} times in a row") == 2
    assert "usage:" not in capfd.readouterr().err


def test_a_worker_started_by_hand_with_a_bad_flag_gets_argparses_usage_error():
    """Only a starter that asks why a worker cannot serve is told: its user reads argparse's usage, exit 2."""
    environment = {name: value for name, value in os.environ.items() if name != REASON_FD_ENV}
    command = [sys.executable, "-m", "engine", "worker", "--connect", "ipc:///nowhere", "--model"]
    worker = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)
    assert worker.returncode == 2
    assert worker.stderr.startswith("usage: argus worker")
    assert worker.stderr.endswith("argus worker: error: argument --model: expected one argument\n")


@pytest.mark.parametrize("model", ["-m", "--model"])
def test_a_model_folder_named_like_a_flag_reaches_the_worker(tmp_path, model):
    """`argus serve --model=-m` (or profile latency's) started workers whose command read `--model -m`: argparse
    took the folder for a flag, and every start failed 'argument --model: expected one argument'."""
    config = WorkerConfig("ipc://x", "local-0", backend="sdxl", model=model)
    command = launcher.worker_command(config)
    assert build_parser().parse_args(command[command.index("engine.cli") + 1 :]).model == model
    args = build_parser().parse_args(["profile", "latency", "--backend", "sdxl", f"--model={model}", "--out", "x"])
    command = profile_worker_command(args, "ipc://x", 1)
    assert build_parser().parse_args(command[command.index("engine.cli") + 1 :]).model == model


def spawns_recorded(monkeypatch, failing: int = 0, first_stopped: bool = False) -> list:
    """The worker processes the launcher starts, the first `failing` of them exiting 2 at once, as a worker that
    cannot serve as configured does; `first_stopped`: the first of them stopped (SIGSTOP), as one stuck loading its
    model is, alive and saying no hello."""
    spawned = []
    create = asyncio.create_subprocess_exec

    async def recorded(*args, **kwargs):
        if len(spawned) < failing:
            args = (sys.executable, "-c", "raise SystemExit(2)")
        spawned.append(await create(*args, **kwargs))
        if first_stopped and len(spawned) == 1:
            os.kill(spawned[0].pid, signal.SIGSTOP)
        return spawned[-1]

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recorded)
    return spawned


def test_the_startup_timeout_is_set_from_the_command_line():
    args = build_parser().parse_args(["serve", "--startup-timeout", "2.5"])
    assert engine_config(args).launch.startup_timeout_s == 2.5


# stands for an engine that dies just after it spawned a worker (the OOM killer, a crash): before the worker's
# start-up reached PR_SET_PDEATHSIG
SPAWN_AND_DIE = """
import os, subprocess, sys
from engine.fleet.launcher import worker_command
from workers.cannot_serve import REASON_FD_ENV
from workers.config import WorkerConfig
from workers.main import PARENT_PID_ENV
config = WorkerConfig(sys.argv[1], "local-0", backend="sim", die_with_parent=True)
environment = {**os.environ, PARENT_PID_ENV: str(os.getpid())}
worker = subprocess.Popen(worker_command(config), stdin=subprocess.DEVNULL, env=environment)
print(worker.pid, flush=True)
os._exit(0)
"""


def test_a_worker_whose_engine_died_while_it_started_exits(tmp_path):
    engine = subprocess.run(
        [sys.executable, "-c", SPAWN_AND_DIE, f"ipc://{tmp_path}/nobody"], cwd=ROOT, capture_output=True, text=True
    )
    worker = int(engine.stdout)
    try:
        deadline = time.monotonic() + 60
        while process_running(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not process_running(worker), "the worker outlived its engine"
    finally:
        if process_running(worker):
            os.kill(worker, signal.SIGKILL)


async def test_a_worker_started_by_hand_under_a_slots_id_is_refused(monkeypatch, tmp_path):
    """Before, one that said hello while the slot's process was down took the id; the slot's next process was refused
    (the id in use) and its exit, taken for the namesake's, dropped the namesake as exited: 11 times in 15 s."""
    spawned = spawns_recorded(monkeypatch, first_stopped=True)  # the slot's process, still loading its model
    engine = Engine(in_process_config(tmp_path, launch=LaunchConfig(count=1, backend="sim", time_scale=0)))
    running = asyncio.create_task(engine.run())
    namesake = None
    try:
        assert await eventually(lambda: spawned, timeout_s=30)
        namesake = start_worker(engine.link.endpoints[-1], "sim", "--worker-id", "local-0", "--time-scale", "0")
        assert await eventually(lambda: namesake.poll() is not None, timeout_s=60), "the namesake was welcomed"
        assert namesake.returncode == 2
        os.kill(spawned[0].pid, signal.SIGCONT)
        assert await eventually(lambda: [w.hello.pid for w in engine.registry.registered()] == [spawned[0].pid], 60)
        assert sample(engine, "argus_worker_losses_total", cause="exited") == 0
        assert len(spawned) == 1  # the slot's process was never refused, nor restarted
    finally:
        engine.request_stop()
        await asyncio.wait_for(running, 60)
        if namesake is not None and namesake.poll() is None:
            namesake.kill()
        for process in spawned:
            if process.returncode is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()


def test_a_hello_under_a_slots_id_is_refused_before_the_launcher_has_started_the_slot():
    """The engine reads its worker socket before the launcher's first turn: a worker started by hand as local-0, whose
    hellos queued while the engine started, was welcomed under the slot's id, and the slot's own process then refused
    as a second worker of that id."""
    slots = launcher.LocalLauncher(LaunchConfig(count=2, backend="sim"), "ipc://x", EngineMetrics(), lambda *_: None)
    assert "local worker slot" in slots.refusal("local-1", os.getpid())
    assert slots.refusal("remote-0", os.getpid()) is None


@pytest.mark.own_engine("--time-scale", "0", workers=1, backend="sim", argus_options=("--log-level", "WARNING"))
def test_the_workers_an_engine_starts_log_at_its_log_level(own_engine):
    """`argus --log-level WARNING serve` left its workers at INFO: their lines ('loading the sim backend', 'ready')
    filled the log it was told to quiet."""
    engine = own_engine
    assert engine.stop() == 0  # its worker said hello first (start_engine waits for it)
    assert " INFO " not in engine.log_path.read_text(), engine.log()


@pytest.mark.own_engine("--time-scale", "0", workers=1, backend="sim", argus_options=("--log-format", "json"))
def test_an_engine_and_its_workers_log_json_lines_with_log_format_json(own_engine):
    """For a log collector: every line one record, its fields by name (a traceback's lines inside its record)."""
    engine = own_engine
    assert engine.stop() == 0
    records = [json.loads(line) for line in engine.log_path.read_text().splitlines()]
    assert all({"timestamp", "level", "logger", "pid", "message"} <= set(record) for record in records), records
    said = {(record["logger"], record["message"].split(" (")[0]) for record in records}
    assert ("argus.worker", "loading the sim backend on no device") in said, said
    assert ("argus.engine", "engine stopped") in said, said
    assert len({record["pid"] for record in records}) == 2  # the engine's and its worker's
    # each of its worker's records names it, by the id the engine started it as; none of the engine's names a worker
    assert {record.get("worker") for record in records if record["pid"] != engine.process.pid} == {"local-0"}, records
    assert not any("worker" in record for record in records if record["pid"] == engine.process.pid), records


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_an_engine_bound_to_fewer_cpus_than_the_host_has_gives_its_workers_threads_they_take(tmp_path, monkeypatch):
    """A worker refuses more --threads than the CPUs it may run on: the engine shares those among its workers (under
    taskset or a container's cpuset, not the host's count), or its worker would refuse the threads it was given."""
    cpus = os.sched_getaffinity(0)
    if (os.cpu_count() or 1) < 2:
        pytest.skip("a host of one CPU: its count is the affinity's, and the test could not fail")
    # the suite's OMP_NUM_THREADS=1 (conftest.py) caps the threads given at one: the test could not fail under it
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    os.sched_setaffinity(0, {min(cpus)})  # the engine inherits it, as from `taskset -c`
    try:
        engine = start_engine(tmp_path, workers=1, wait=False)
    finally:
        os.sched_setaffinity(0, cpus)
    try:
        # past its argparse, which refuses the threads: not ready, which takes a tiny worker's torch 5 to 10 s more
        assert wait_for(lambda: "loading the tiny backend" in engine.log()), engine.log()
    finally:
        assert engine.stop() == 0


@pytest.mark.parametrize(
    ("omp", "each"), [(None, 2), ("1", 1), ("1,1", 1), ("1,4", 1), ("3", 2), ("8", 2), ("0", 2), ("two", 2), ("", 2)]
)
def test_omp_num_threads_caps_the_threads_each_local_worker_is_given(monkeypatch, omp, each):
    """Its share of 4 CPUs among 2 workers, or fewer when $OMP_NUM_THREADS says so (its first level's count; one
    that is no count, as OpenMP's runtime ignores it). Given more, a worker ran on more threads than the user asked
    every process for (the test suite's one: 2 threads of a tiny UNet on 2 shared cores, each step several times
    slower)."""
    monkeypatch.setattr(worker_config, "usable_cpus", lambda: 4)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert worker_config.threads_each(2) == each


def test_more_local_workers_than_cpus_run_on_one_thread_each(monkeypatch):
    """Not none: 3 workers on 2 CPUs would be given --threads 0, which a worker refuses."""
    monkeypatch.setattr(worker_config, "usable_cpus", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert worker_config.threads_each(3) == 1


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_the_cpus_shared_among_workers_are_those_this_process_may_run_on():
    """Under `taskset -c 0` (or a container's cpuset) one, whatever the host has: in process, not by an engine."""
    cpus = os.sched_getaffinity(0)
    if (os.cpu_count() or 1) < 2:
        pytest.skip("a host of one CPU: its count is the affinity's, and the test could not fail")
    os.sched_setaffinity(0, {min(cpus)})
    try:
        assert usable_cpus() == 1
    finally:
        os.sched_setaffinity(0, cpus)


@pytest.mark.parametrize(
    ("backend", "device", "on_threads"),
    [
        ("tiny", None, True),
        ("sdxl", "cpu", True),
        ("sdxl", "cuda:0", False),
        ("sim", None, False),
        ("sim", "cpu", False),
    ],
)
def test_threads_are_given_to_a_model_on_the_cpu_only(backend, device, on_threads):
    """No --device is the CPU; the sim backend runs no model, and one on a GPU no CPU threads that --threads sets."""
    assert worker_config.runs_on_cpu_threads(backend, device) is on_threads


def test_an_engine_under_omp_num_threads_gives_its_workers_that_many_threads(tmp_path, monkeypatch):
    """A real engine and its tiny worker's command line: --threads was its share of the CPUs whatever OMP_NUM_THREADS
    said. Unset, a worker still gets its share (test above)."""
    if usable_cpus() < 2:
        pytest.skip("one CPU: its share is one thread already, and the test could not fail")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    engine = start_engine(tmp_path, workers=1, wait=False)
    try:

        def worker_command() -> str | None:
            return next(map(read_command, local_workers_of(engine.process.pid)), None)

        assert wait_for(worker_command, timeout_s=60), engine.log()
        command = worker_command().split("\0")
        assert command[command.index("--threads") + 1] == "1", command
    finally:
        assert engine.stop() == 0
