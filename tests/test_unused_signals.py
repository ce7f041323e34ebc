"""SIGUSR1 or SIGUSR2 sent to a serving engine (a log rotation's `kill -USR1`, written for nginx or gunicorn, which
reopen their logs on it): Python leaves them at their default, which ended the engine at once, without a drain, every
request in flight lost. The engine says it in one line and serves on. (Its workers stop on SIGUSR1: workers/main.py.)"""

import asyncio
import logging
import re
import signal
import urllib.request

import pytest
from waiting import eventually

from engine.server import Engine
from engine_process import in_process_config


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGUSR2], ids=lambda signum: signum.name)
async def test_a_sigusr_to_a_serving_engine_is_said_and_it_serves_on(tmp_path, caplog, signum):
    caplog.set_level(logging.INFO, logger="argus.engine")
    heard = []
    # in place before the engine's: it hears the signal if the engine does not take it (its default would end the run)
    found = signal.signal(signum, lambda number, _frame: heard.append(number))
    engine = Engine(in_process_config(tmp_path))
    running = asyncio.create_task(engine.run())
    try:
        listening = re.compile(r"HTTP API listening on (http://\S+) ")
        assert await eventually(lambda: listening.search(caplog.text), timeout_s=30), caplog.text
        signal.raise_signal(signum)
        said = f"{signum.name}: argus does not act on it, and serves on"
        assert await eventually(lambda: said in caplog.text, timeout_s=10), caplog.text
        assert heard == [] and engine.running
        url = listening.search(caplog.text).group(1) + "/health"
        status = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).status)
        assert status == 200
    finally:
        engine.request_stop()
        await asyncio.wait_for(running, 30)
        signal.signal(signum, found)
