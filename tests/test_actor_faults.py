"""The engine's periodic actors outlive a failing step, a request whose routing fails is still answered, and the
launcher leaves no worker behind at stop.

An exception escaping one of the actors under the engine's TaskGroup would end
the engine at once, without a drain: every request in flight would go
unanswered. So each periodic step logs its failure and the actor goes on.
"""

import asyncio
import contextlib
from types import SimpleNamespace

import zmq
from dispatcher_harness import Harness
from waiting import eventually

from engine.config import CacheConfig, LaunchConfig
from engine.fleet.launcher import LocalLauncher
from engine.fleet.link import WorkerLink
from engine.housekeeping import reload_keys_on_hangup
from engine.metrics import EngineMetrics
from engine.server import Engine
from engine.zmq.curve_gate import CurveGate
from engine_process import in_process_config
from protocols.client_messages import Error, Generate
from protocols.curve import create_key_files
from workers.main import ENGINE_STOP_SIGNAL


def failing_first(calls: list, step):
    """`step`, except that its first call raises (a stand-in for a bug in it)."""

    def wrapped(*args):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return step(*args)

    return wrapped


async def test_the_heartbeat_watch_handles_every_silent_worker_when_one_loss_fails(tmp_path, caplog):
    h = Harness()
    first, second = h.add_worker("a"), h.add_worker("b")
    first.last_seen = second.last_seen = 0.0  # both silent for ages
    calls = []
    h.dispatcher.worker_lost = failing_first(calls, h.dispatcher.worker_lost)
    link = WorkerLink(
        zmq.Context.instance(), [f"ipc://{tmp_path}/workers"], h.registry, h.metrics, 0.02, 0.01, backend="sim"
    )
    link.bind_dispatcher(h.dispatcher)
    watch = asyncio.create_task(link.run())
    try:
        assert await eventually(lambda: not h.registry.registered()), "a silent worker was never let go"
        assert not watch.done()
        assert [worker.name for worker, _ in calls][:2] == ["a", "b"]
        assert "handling the loss of worker a failed" in caplog.text
    finally:
        watch.cancel()
        link.close()


async def test_the_engine_keeps_serving_after_a_sweep_fails(tmp_path, caplog):
    """(A failing read of the cache's statistics, made at each scrape: tests/test_cache_metrics_now.py.)"""
    engine = Engine(in_process_config(tmp_path))
    sweeps = []
    engine.dispatcher.sweep = failing_first(sweeps, engine.dispatcher.sweep)
    running = asyncio.create_task(engine.run())
    try:
        assert await eventually(lambda: len(sweeps) > 2)
        assert not running.done()
    finally:
        engine.request_stop()
        await asyncio.wait_for(running, 30)  # the drain ran, and the engine stopped without an error
    assert "sweeping the queues failed" in caplog.text


async def test_the_key_reload_on_sighup_outlives_a_key_file_its_reader_fails_on(tmp_path, caplog):
    """pyzmq's key reader raises IndexError for a `public-key` line without `=` (a key file half edited): escaping the
    reload, it ended the engine's TaskGroup, and the engine with it, without a drain."""
    allowed = tmp_path / "allowed"
    _, secret = create_key_files(tmp_path, "engine")
    create_key_files(allowed, "client")
    gate = CurveGate(zmq.Context.instance(), str(secret), str(allowed))
    (allowed / "edited.key").write_text("public-key\n")
    hangup, reloads = asyncio.Event(), []
    link = SimpleNamespace(drop_revoked=lambda: reloads.append(()))
    reloading = asyncio.create_task(reload_keys_on_hangup(hangup, gate, link, None))
    try:
        hangup.set()
        assert await eventually(lambda: reloading.done() or "SIGHUP: CURVE keys not reloaded" in caplog.text)
        assert not reloading.done(), "the failed reload ended the task"
        (allowed / "edited.key").unlink()
        hangup.set()  # the next SIGHUP reloads
        assert await eventually(lambda: reloads)
    finally:
        reloading.cancel()


@contextlib.asynccontextmanager
async def engine_not_running(config):
    """An Engine that is given requests by submit() alone, its actors never started; closed with its cache."""
    engine = Engine(config)
    try:
        yield engine
    finally:
        engine.dispatcher.cancel_all()
        await engine.cache.close(save_to=None)
        engine.close()


async def assert_answered_with_an_internal_error(engine, request_id: str) -> None:
    request = engine.submit(Generate(request_id, "a fox", width=64, height=64))
    reply = await asyncio.wait_for(request.future, 30)
    assert isinstance(reply, Error) and reply.code == "internal_error"


async def test_a_request_whose_routing_fails_is_answered_and_the_next_one_served(tmp_path, caplog):
    async with engine_not_running(in_process_config(tmp_path)) as engine:
        routed = []
        engine.dispatcher.route = failing_first(routed, engine.dispatcher.route)
        await assert_answered_with_an_internal_error(engine, "first")
        second = engine.submit(Generate("second", "a fox", width=64, height=64))
        assert await eventually(lambda: len(routed) == 2) and not second.done  # routed: it waits for a worker
        assert "routing request 'first' failed" in caplog.text


async def test_a_request_whose_level_choice_fails_without_a_cache_is_answered_and_lets_its_room_go(tmp_path, caplog):
    """Before, the failure left submit() unanswered: the request stayed admitted, its images held --max-queue room
    for good, and a ZeroMQ client got no reply (over HTTP, a 500 with the request still counted)."""
    async with engine_not_running(in_process_config(tmp_path, cache=CacheConfig(enabled=False))) as engine:
        chosen = []
        engine.cache._preparer._choose = failing_first(chosen, engine.cache._preparer._choose)
        await assert_answered_with_an_internal_error(engine, "first")
        assert await eventually(lambda: engine.dispatcher.outstanding_images == 0)
        second = engine.submit(Generate("second", "a fox", width=64, height=64))
        assert len(chosen) == 2 and not second.done  # its level chosen: it waits for a worker
        assert "preparing request 'first' failed" in caplog.text


async def test_a_worker_started_while_the_launcher_stops_is_stopped_too(monkeypatch, tmp_path):
    spawning, spawned = asyncio.Event(), asyncio.Event()
    processes = []
    create = asyncio.create_subprocess_exec

    async def slow_spawn(*args, **kwargs):
        spawning.set()
        await spawned.wait()  # still starting when stop() signals the workers it knows
        processes.append(await create(*args, **kwargs))
        return processes[-1]

    monkeypatch.setattr(asyncio, "create_subprocess_exec", slow_spawn)
    launcher = LocalLauncher(
        LaunchConfig(count=1, backend="sim"), f"ipc://{tmp_path}/nobody", EngineMetrics(), on_exit=lambda *_: None
    )
    running = asyncio.create_task(launcher.run())
    try:
        await asyncio.wait_for(spawning.wait(), 10)
        await launcher.stop(timeout_s=5.0)
        spawned.set()
        assert await eventually(lambda: processes)
        # a worker with no engine to answer keeps saying hello until it is told to stop
        assert await asyncio.wait_for(processes[0].wait(), 30) in (0, -ENGINE_STOP_SIGNAL)
        await asyncio.wait_for(running, 30)
    finally:
        running.cancel()
        for process in processes:
            if process.returncode is None:
                process.kill()
