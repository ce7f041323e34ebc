"""A worker process's log records name it by its worker id, as its pid alone did not: the engine's local workers log
to the engine's stderr, each restart under another pid, and an operator mapped pids to ids through the engine's
`started worker local-1 (pid N)` lines. The engine's own records name no worker."""

import json
import re
import signal
import subprocess
import sys
import time

from fake_engine import FakeEngine

from engine_process import ROOT, start_engine
from protocols.worker_messages import PROTOCOL_VERSION, Hello, Welcome

# `TIME LEVEL LOGGER[PID]: ...` for the engine, `TIME LEVEL LOGGER[PID worker=ID]: ...` for a worker
_PREFIX = re.compile(r"^\S+ \S+ [A-Z]+ [\w.]+\[(\d+)(?: worker=([^\]]+))?\]: ")
_STARTED = re.compile(r"started worker (\S+) \(pid (\d+)")


def test_each_local_worker_names_its_id_in_the_engines_text_log(tmp_path):
    engine = start_engine(tmp_path, "--time-scale", "0", workers=2, backend="sim")
    assert engine.stop() == 0
    log = engine.log_path.read_text()
    started = {int(pid): worker_id for worker_id, pid in _STARTED.findall(log)}
    assert sorted(started.values()) == ["local-0", "local-1"], log
    named = {}
    for line in log.splitlines():
        if prefix := _PREFIX.match(line):
            pid, worker = int(prefix[1]), prefix[2]
            assert worker == started.get(pid), line  # None: the engine's line names no worker
            named.setdefault(worker, []).append(line)
    for worker_id in started.values():
        assert any("loading the sim backend" in line for line in named[worker_id]), log


def test_a_fleets_lines_name_the_fleet_and_one_about_one_of_its_workers_names_it():
    """The process-wide records of `argus worker --count 2 --worker-id pair` carry the fleet's ids (pair-0..1); a line
    about one of its workers, a message from the engine it could not decode, says which."""
    engine = FakeEngine()
    command = [sys.executable, "-m", "engine.cli", "--log-format", "json", "worker", "--connect", engine.address]
    command += ["--backend", "sim", "--count", "2", "--worker-id", "pair", "--time-scale", "0"]
    fleet = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        identities = {}
        while len(identities) < 2:
            hello = engine.receive(Hello)
            identities[hello.worker_id] = engine.identity
            engine.send(Welcome(PROTOCOL_VERSION, heartbeat_interval_s=0.5, engine_timeout_s=600, level=0))
        engine.socket.send_multipart([identities["pair-1"], b"\xc1"])  # msgpack's one byte that is never valid
        time.sleep(1)  # the fleet's loop reads it at once; its line is out long before
    finally:
        fleet.send_signal(signal.SIGTERM)
        said = fleet.communicate(timeout=30)[1]
        engine.close()
    assert fleet.returncode == 0, said
    records = [json.loads(line) for line in said.splitlines()]
    assert {record["worker"] for record in records} == {"pair-0..1"}, said
    messages = [record["message"] for record in records]
    assert any(m.startswith("fleet of 2 SIMULATED workers ready") for m in messages), said
    assert any(re.match(r"worker pair-1/\w+: undecodable message from engine", m) for m in messages), said
