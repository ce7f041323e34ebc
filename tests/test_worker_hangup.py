"""`argus worker` started by hand in a terminal whose session ends (an SSH connection that drops) is sent SIGHUP: it
leaves as on SIGTERM, saying Leaving and giving back what it held, so the engine routes that work to the other
workers at once, counting no try. It died of SIGHUP's default (exit -1, no line in its log, its Leaving unsaid): the
engine found it gone only as its connection closed, counted each image it held a try of three (`worker_lost`), and
on a link that dies without a word (the host's network gone with the session) only after --heartbeat-timeout.
Under `nohup`, which ignores SIGHUP, it serves on."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import urllib.error
import urllib.request

import pytest
from waiting import wait_for

from engine_process import start_engine, start_worker


def _generate(http: str, answers: list[int]) -> None:
    request = urllib.request.Request(
        http + "/v1/images/generations",
        data=json.dumps({"prompt": "a lighthouse at dusk", "size": "1024x1024"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            answers.append(response.status)
    except urllib.error.HTTPError as error:  # the 503 of a drain with no worker left to serve it
        answers.append(error.code)


@pytest.mark.parametrize("nohup", [False, True])
def test_a_hand_started_worker_leaves_on_its_terminals_hangup(tmp_path, nohup):
    # a short drain: with the worker gone, the image waits for none, and the stop waited out the default 30 s
    engine = start_engine(tmp_path, "--shutdown-timeout", "2", workers=0, backend="sim")
    ignore_hangup = (lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if nohup else None
    # slow enough (about 5 s an image) that the hangup lands while the image runs
    worker = start_worker(
        engine.worker_address, "sim", "--time-scale", "1", stderr=subprocess.PIPE, text=True, preexec_fn=ignore_hangup
    )
    try:
        engine.wait_ready(1)
        answers: list[int] = []
        threading.Thread(target=_generate, args=(engine.http, answers), daemon=True).start()
        assert wait_for(lambda: any(w["load"] for w in engine.ready()["workers"]), 60)
        worker.send_signal(signal.SIGHUP)
        if nohup:
            assert wait_for(lambda: answers == [200], 120)  # served through the hangup
            assert worker.poll() is None
            return
        assert worker.wait(60) == 0, worker.stderr.read()
        assert wait_for(lambda: engine.metric("argus_worker_losses_total", cause="left") == 1, 30), engine.log()
        assert engine.metric("argus_worker_losses_total", cause="unreachable") == 0
        assert engine.metric("argus_worker_losses_total", cause="exited") == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        engine.stop()
