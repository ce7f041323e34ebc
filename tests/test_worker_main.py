"""The `argus worker` process entry (workers/main.py) in this process: what it asks of its engine before loading,
which signals stop it, its exit codes, and what it gives the runtime. The model load, the probe and the serving are
stood in for: tests/test_worker_process.py runs the real thing."""

import inspect
import logging
import os
import signal
import sys
from types import SimpleNamespace

import pytest

from protocols.worker_messages import Refused
from workers import main
from workers.config import WorkerConfig
from workers.model_id import folder_model_id
from workers.runtime import EngineRefused, WorkerRuntime

SIGNALS = (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, main.ENGINE_STOP_SIGNAL)


@pytest.fixture(autouse=True)
def handlers_kept():
    """What the entry sets for the process's signals, given back to pytest's."""
    kept = {signum: signal.getsignal(signum) for signum in SIGNALS}
    yield
    for signum, handler in kept.items():
        signal.signal(signum, handler)


@pytest.fixture
def prctl(monkeypatch) -> list[tuple[int, int]]:
    """What exit_with_parent asks of Linux, asked of no one: the test's own process would get the signal."""
    asked = []

    class Libc:
        def prctl(self, option, signum):
            asked.append((option, signum))

    monkeypatch.setattr(main.ctypes, "CDLL", lambda *args, **kwargs: Libc())
    return asked


def handled_by_default() -> None:
    """As in a terminal: a process started in the background (`cmd &`, nohup) starts with SIGINT and SIGHUP ignored
    already, and what the entry should ignore could not be told from what it was given."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


class Runner:
    def __init__(self, serve=lambda: None):
        self.serve = serve
        self.stopped = False

    def stop(self):
        self.stopped = True


@pytest.fixture
def started(monkeypatch):
    """run_worker with its probe, load and serving stood in for: what each was given."""
    seen = {"probed": [], "runtime": None, "owned": None}

    def probe(connect, curve, probe):
        seen["probed"].append(probe)
        return seen.get("refusal")

    def runtime(*args, **kwargs):
        seen["runtime"] = inspect.signature(WorkerRuntime).bind(*args, **kwargs).arguments
        return Runner()

    def serve(runner, owned):
        seen["owned"] = owned
        return 0

    monkeypatch.setattr(main, "refusal_before_loading", probe)
    monkeypatch.setattr(main, "load_backend", lambda config: seen.get("load", lambda: "backend")())
    monkeypatch.setattr(main, "WorkerRuntime", runtime)
    monkeypatch.setattr(main, "serve_until_stopped", serve)
    return seen


def test_a_worker_started_by_hand_asks_its_engine_before_loading_and_exits_2_if_refused(started):
    started["refusal"] = "model differs"
    assert main.run_worker(WorkerConfig("tcp://127.0.0.1:1", "w", backend="tiny")) == main.CANNOT_SERVE_EXIT == 2
    assert started["runtime"] is None


def test_an_owned_or_sim_worker_loads_without_asking(started):
    main.run_worker(WorkerConfig("tcp://127.0.0.1:1", "w", backend="tiny", owned=True))
    main.run_worker(WorkerConfig("tcp://127.0.0.1:1", "w", backend="sim"))
    assert started["probed"] == []


def test_the_runtime_is_given_the_workers_settings(started):
    config = WorkerConfig("tcp://127.0.0.1:1", "w", owned=True, hello_retry_s=0.25, stall_timeout_s=7.0)
    assert main.run_worker(config) == 0
    given = started["runtime"]
    assert (given["hello_retry_s"], given["owned"], given["stall_timeout_s"]) == (0.25, True, 7.0)
    assert started["owned"] is True


def test_an_owned_worker_ignores_ctrl_c_and_a_closed_terminal_from_the_start(started):
    """Meant for its engine, which stops it once drained: they killed it as it loaded its model."""
    handled_by_default()
    main.run_worker(WorkerConfig("tcp://127.0.0.1:1", "w", backend="sim", owned=True))
    assert signal.getsignal(signal.SIGINT) == signal.getsignal(signal.SIGHUP) == signal.SIG_IGN


def test_ctrl_c_while_the_model_loads_exits_130(started):
    def interrupted():
        raise KeyboardInterrupt

    started["load"] = interrupted
    assert main.run_worker(WorkerConfig("tcp://127.0.0.1:1", "w", backend="sim")) == main.INTERRUPTED_EXIT == 130


def test_a_sim_worker_says_it_loads_on_no_device(started, caplog):
    with caplog.at_level(logging.INFO, logger="argus"):
        main.run_worker(WorkerConfig("tcp://127.0.0.1:1", "w", backend="sim"))
    assert "loading the sim backend on no device" in caplog.text


def test_die_with_parent_exits_when_the_engine_is_gone_already(started, prctl, monkeypatch):
    monkeypatch.setenv(main.PARENT_PID_ENV, str(os.getppid() + 1))
    with pytest.raises(SystemExit, match="is gone"):
        main.run_worker(WorkerConfig("tcp://127.0.0.1:1", "w", backend="sim", die_with_parent=True))
    monkeypatch.setenv(main.PARENT_PID_ENV, str(os.getppid()))
    assert main.run_worker(WorkerConfig("tcp://127.0.0.1:1", "w", backend="sim", die_with_parent=True)) == 0


def test_linux_sends_the_stop_signal_when_the_parent_dies(prctl, monkeypatch):
    """An engine's local worker starts with SIGTERM ignored: the parent's death must send what stops it."""
    monkeypatch.delenv(main.PARENT_PID_ENV, raising=False)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    main.exit_with_parent()
    assert prctl == [(1, main.ENGINE_STOP_SIGNAL)]


def test_the_stop_signal_is_sigterm_unless_sigterm_was_ignored_at_the_start():
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert main.stop_signal() == signal.SIGTERM
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    assert main.stop_signal() == main.ENGINE_STOP_SIGNAL


@pytest.mark.parametrize("ignored", [False, True], ids=["by hand", "SIGTERM ignored"])
def test_its_stop_signal_and_ctrl_c_stop_a_worker_started_by_hand(ignored):
    """An engine's local worker starts with SIGTERM ignored (a systemd stop sends it to the engine's every process),
    and keeps it so: its engine stops it with ENGINE_STOP_SIGNAL once drained."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN if ignored else signal.SIG_DFL)
    runner = Runner()
    assert main.serve_until_stopped(runner) == 0
    stop = main.ENGINE_STOP_SIGNAL if ignored else signal.SIGTERM
    signal.getsignal(stop)(stop, None)
    assert runner.stopped
    assert (signal.getsignal(signal.SIGTERM) == signal.SIG_IGN) == ignored
    runner.stopped = False
    signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
    assert runner.stopped


def test_an_owned_worker_serves_on_through_ctrl_c():
    handled_by_default()
    main.serve_until_stopped(Runner(), owned=True)
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_a_refusal_while_serving_exits_2():
    def refused():
        raise EngineRefused(Refused("protocol 3 not supported"))

    assert main.serve_until_stopped(Runner(refused)) == 2


def test_the_probe_names_an_sdxl_folders_model_as_far_as_it_reads(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    for folder, index in ((good, '{"unet": ["diffusers", "UNet2DConditionModel"]}'), (bad, "not json")):
        folder.mkdir()
        (folder / "model_index.json").write_text(index)
    probe = main.probe_of(WorkerConfig("tcp://127.0.0.1:1", "w", backend="sdxl", model=str(good)))
    assert (probe.model, probe.pid, probe.backend) == (folder_model_id(str(good)), os.getpid(), "sdxl")
    # the load says what is wrong with the folder; tiny builds its own model, whatever --model says
    assert main.probe_of(WorkerConfig("tcp://127.0.0.1:1", "w", backend="sdxl", model=str(bad))).model == ""
    assert main.probe_of(WorkerConfig("tcp://127.0.0.1:1", "w", backend="tiny", model=str(good))).model == ""


def test_a_sim_backend_takes_the_workers_time_scale_latents_and_batch():
    config = WorkerConfig("tcp://127.0.0.1:1", "w", backend="sim", time_scale=0.5, sim_latents="sdxl", max_batch=3)
    info = main.load_backend(config).describe()
    default = main.load_backend(WorkerConfig("tcp://127.0.0.1:1", "w", backend="sim")).describe()
    assert (info.time_scale, info.max_batch) == (0.5, 3) and info.max_batch != default.max_batch
    assert info.model_id != default.model_id  # the latents' shape is part of it


@pytest.fixture
def loaders(monkeypatch) -> list[tuple]:
    """torch and the diffusion backends stood in for (importing them takes seconds): what each was asked."""
    asked = []

    def loader(name):
        return lambda *args, **kwargs: asked.append((name, args, kwargs)) or name

    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(set_num_threads=loader("threads")))
    diffusion = SimpleNamespace(load_tiny=loader("tiny"), load_sdxl=loader("sdxl"))
    monkeypatch.setitem(sys.modules, "workers.diffusion_backend", diffusion)
    return asked


def test_the_sdxl_backend_needs_a_model_folder(loaders):
    with pytest.raises(SystemExit, match="needs --model DIR"):
        main.load_backend(WorkerConfig("tcp://127.0.0.1:1", "w", backend="sdxl"))
    assert loaders == []


def test_threads_are_set_for_a_model_on_the_cpu_only(loaders):
    main.load_backend(WorkerConfig("tcp://127.0.0.1:1", "w", backend="tiny", device="cuda:0", threads=2))
    main.load_backend(WorkerConfig("tcp://127.0.0.1:1", "w", backend="tiny", threads=3, max_batch=2))
    assert loaders == [
        ("tiny", (), {"device": "cuda:0"}),
        ("threads", (3,), {}),
        ("tiny", (), {"device": "cpu", "max_batch": 2}),
    ]
