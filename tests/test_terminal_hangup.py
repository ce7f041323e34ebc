"""A closed terminal sends SIGHUP to the engine's whole process group. The engine takes it for a reload of its keys
and serves on; its local workers and its MILP process, which died of it (the workers started again, their models
loaded again and their images made over), serve on too."""

import json
import os
import signal
import urllib.request

from process_checks import milp_processes_of, process_running
from waiting import wait_for

from engine_process import start_engine


def generate(http: str) -> int:
    request = urllib.request.Request(
        http + "/v1/images/generations",
        data=json.dumps({"prompt": "a lighthouse at dusk", "size": "64x64"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status


def test_a_closed_terminals_sighup_to_the_group_ends_no_worker_nor_the_milp_process(tmp_path):
    engine = start_engine(tmp_path, "--time-scale", "0.01", workers=2, backend="sim")
    try:
        assert wait_for(lambda: milp_processes_of(engine.process.pid), 60)  # started at the first solve
        (milp,) = milp_processes_of(engine.process.pid)
        workers = {worker["pid"] for worker in engine.ready()["workers"]}
        os.killpg(engine.process.pid, signal.SIGHUP)  # the engine's own group (start_engine's session)
        assert wait_for(lambda: "SIGHUP: nothing to reload" in engine.log(), 30), engine.log()
        assert generate(engine.http) == 200  # served once the signal has reached every process of the group
        assert {worker["pid"] for worker in engine.ready()["workers"]} == workers, engine.log()
        assert all(process_running(pid) for pid in (*workers, milp)) and "SIGHUP;" not in engine.log(), engine.log()
        assert engine.stop() == 0, engine.log()
    finally:
        engine.stop()
