"""A local worker slot given up (its worker said it cannot serve as configured before its hello, GIVE_UP_AFTER starts in
a row) is tried again every given_up_retry_s: once its cause is fixed it serves again by itself. Before, it stayed
empty until the engine's restart, the cause fixed or not. Through a real engine loop and real sdxl worker processes,
the model a tiny pipeline saved as a diffusers folder, broken by moving its vae/ away and mended by moving it back."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil

import pytest
from waiting import eventually

from engine.client import AsyncArgusClient
from engine.config import LaunchConfig
from engine.fleet.restart_backoff import GIVE_UP_AFTER
from engine.http.readiness import readiness
from engine.server import Engine
from engine_process import in_process_config, stop_in_process
from protocols.client_messages import Images

# seconds between the starts of a slot given up: the default is minutes
RETRY_S = 0.5


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from workers.tiny_pipeline import build_tiny_sdxl

    folder = tmp_path_factory.mktemp("sdxl") / "model"
    build_tiny_sdxl(seed=0).save_pretrained(folder)
    return folder


def failed_slots(engine: Engine) -> float:
    return engine.metrics.registry.get_sample_value("argus_workers", {"state": "failed"}) or 0.0


async def test_a_slot_given_up_on_a_broken_model_folder_serves_again_once_the_folder_is_mended(saved, tmp_path, caplog):
    caplog.set_level(logging.INFO, "argus.launcher")
    model = str(shutil.copytree(saved, tmp_path / "model"))
    aside = tmp_path / "vae-moved-away"
    launch = LaunchConfig(count=1, backend="sdxl", model=model, restart_backoff_s=0.1, given_up_retry_s=RETRY_S)
    engine = Engine(in_process_config(tmp_path, launch=launch))
    running = asyncio.create_task(engine.run())
    try:
        assert await eventually(lambda: engine.registry.registered(), timeout_s=240)
        os.rename(os.path.join(model, "vae"), aside)  # removed by mistake
        assert engine.launcher.kill("local-0")  # its worker ends (a crash, a failing GPU): its restarts cannot load
        assert await eventually(lambda: failed_slots(engine) == 1, timeout_s=120)
        assert f"exited with 2 before its hello {GIVE_UP_AFTER} times in a row" in caplog.text
        assert f"given up; trying it again every {RETRY_S:g} s" in caplog.text
        # still given up, said as such, in /ready and in one line for each start tried again
        said = f"restarting in {RETRY_S:g} s (given up: it still cannot serve as configured)"
        assert await eventually(lambda: caplog.text.count(said) >= 2, timeout_s=120)
        reason = readiness(engine)["reason"]
        assert reason.startswith("no worker is connected; none is on its way: the engine's own worker is given up")
        assert reason.endswith(f"tried again every {RETRY_S:g} s"), reason
        assert caplog.text.count("lacks vae/") == 1  # why, once: not at each start tried again
        os.rename(aside, os.path.join(model, "vae"))  # put back
        assert await eventually(lambda: engine.registry.registered(), timeout_s=240)
        assert await eventually(lambda: failed_slots(engine) == 0)  # counted until its start sees the hello
        assert "worker local-0 said hello: its slot, given up, serves again" in caplog.text
        # one step: served is what counts, and a step of an SD-XL-sized image is a second of the test's cores
        async with AsyncArgusClient(engine.config.client_listen[0]) as client:
            reply = await asyncio.wait_for(client.generate("a lighthouse", width=512, height=512, steps=1), 240)
        assert isinstance(reply, Images), reply
    finally:
        await stop_in_process(engine, running)
