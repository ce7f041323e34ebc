"""The local launcher keeps each slot served: a worker that hangs before its hello is killed and restarted, and a
spawn the OS refuses is tried again, without ending the engine."""

import asyncio
import errno
import os
import signal

from waiting import eventually

from engine.cli import build_parser, engine_config
from engine.config import LaunchConfig
from engine.server import Engine
from engine_process import in_process_config


def sample(engine: Engine, name: str) -> float:
    return engine.metrics.registry.get_sample_value(name) or 0.0


async def test_a_worker_that_hangs_before_its_hello_is_killed_and_restarted(monkeypatch, tmp_path, caplog):
    spawned = []
    create = asyncio.create_subprocess_exec

    async def first_one_hangs(*args, **kwargs):
        spawned.append(await create(*args, **kwargs))
        if len(spawned) == 1:
            os.kill(spawned[0].pid, signal.SIGSTOP)  # stuck loading its model: alive, and it never says hello
        return spawned[-1]

    monkeypatch.setattr(asyncio, "create_subprocess_exec", first_one_hangs)
    launch = LaunchConfig(count=1, backend="sim", time_scale=0, startup_timeout_s=5.0)
    engine = Engine(in_process_config(tmp_path, launch=launch))
    running = asyncio.create_task(engine.run())
    try:
        assert await eventually(lambda: engine.registry.ready(), timeout_s=60), "the slot was never served"
        hung = spawned[0]
        assert [w.hello.pid for w in engine.registry.ready()] != [hung.pid]
        assert hung.returncode == -signal.SIGKILL
        assert "said no hello within 5 s; killing it" in caplog.text
        assert sample(engine, "argus_worker_restarts_total") >= 1
    finally:
        engine.request_stop()
        await asyncio.wait_for(running, 60)
        for process in spawned:
            if process.returncode is None:
                process.kill()


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
    engine = Engine(in_process_config(tmp_path, launch=LaunchConfig(count=1, backend="sim", time_scale=0)))
    running = asyncio.create_task(engine.run())
    try:
        assert await eventually(lambda: engine.registry.ready(), timeout_s=60)
        engine.launcher.kill("local-0")
        assert await eventually(lambda: running.done() or (len(spawned) == 3 and engine.registry.ready()), timeout_s=60)
        assert not running.done()
        assert [w.hello.pid for w in engine.registry.ready()] == [spawned[2].pid]
        assert "could not start worker local-0" in caplog.text
    finally:
        engine.request_stop()
        await asyncio.wait_for(running, 60)  # the engine drains and stops as usual
        for process in spawned:
            if process is not None and process.returncode is None:
                process.kill()


def test_the_startup_timeout_is_set_from_the_command_line():
    args = build_parser().parse_args(["serve", "--startup-timeout", "2.5"])
    assert engine_config(args).launch.startup_timeout_s == 2.5
