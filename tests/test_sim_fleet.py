"""`argus worker --backend sim --count N`: many simulated workers in one process, each its own peer of a real engine."""

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import zmq
from fake_engine import FakeEngine
from waiting import wait_for

from engine.client import ArgusClient
from engine_process import ROOT, start_engine, start_worker
from protocols.client_messages import Error, Generate, Images, client_side_codec
from protocols.worker_messages import (
    PROTOCOL_VERSION,
    BatchDone,
    GenerateItem,
    Hello,
    ItemDone,
    Leaving,
    Refused,
    Welcome,
)
from protocols.worker_messages import Generate as WorkerGenerate

# the tests marked own_engine find theirs started while the tests before them ran (tests/engines_ahead.py)
pytestmark = pytest.mark.usefixtures("engines_ahead")

FLEET = 50
SPARE = 10


def start_fleet(tmp_path, connect: str, count: int, name: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "engine.cli", "worker", "--connect", connect, "--backend", "sim"]
    command += ["--count", str(count), "--time-scale", "0.1", "--worker-id", name]
    with open(tmp_path / f"{name}.log", "wb") as log:
        return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


class Client:
    def __init__(self, address: str):
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(address)
        self.codec = client_side_codec()

    def send(self, count: int) -> list[str]:
        ids = [uuid.uuid4().hex for _ in range(count)]
        for request_id in ids:
            request = Generate(request_id, f"a harbour {request_id}", width=64, height=64)
            self.socket.send_multipart(self.codec.encode(request))
        return ids

    def replies(self, ids: list[str], timeout_s: float = 60.0) -> dict[str, list]:
        """Every reply to `ids`, read until all are in and a while longer, to catch duplicates."""
        got: dict[str, list] = {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (len(got) < len(ids) or self.socket.poll(1500)):
            if self.socket.poll(500):
                reply = self.codec.decode(self.socket.recv_multipart())
                got.setdefault(reply.request_id, []).append(reply)
        return got

    def close(self):
        self.socket.close()
        self.context.term()


def test_a_fleet_process_is_many_workers_and_its_death_loses_nothing(tmp_path):
    engine = start_engine(tmp_path, "--heartbeat-timeout", "3", workers=0, backend="sim", wait=False)
    fleet = start_fleet(tmp_path, engine.worker_address, FLEET, "fleet")
    spare = start_fleet(tmp_path, engine.worker_address, SPARE, "spare")
    client = Client(engine.client_address)
    try:
        workers = engine.wait_ready(FLEET + SPARE, timeout_s=120)["workers"]
        ours = [w for w in workers if w["pid"] == fleet.pid]
        assert len({w["name"] for w in ours}) == FLEET
        assert {w["name"].split("/")[0] for w in ours} == {f"fleet-{i}" for i in range(FLEET)}
        assert all(w["simulated"] for w in workers)

        ids = client.send(3 * (FLEET + SPARE))
        replies = client.replies(ids)
        assert set(replies) == set(ids) and all(len(r) == 1 for r in replies.values())
        assert all(isinstance(r, Images) for (r,) in replies.values())
        served_by = Counter(r.images[0].worker for (r,) in replies.values())
        assert len(served_by) >= FLEET // 2
        with open(f"/proc/{fleet.pid}/maps") as maps:
            assert "/torch/" not in maps.read()  # a laptop's thousand workers: no torch in their processes

        # the fleet holds work, then its process dies at once: every one of its workers with it (a request a worker:
        # what the spare fleet then serves again, in one batch a worker)
        ids = client.send(FLEET + SPARE)
        deadline = time.monotonic() + 30
        while not sum(w["load"] for w in engine.ready()["workers"] if w["pid"] == fleet.pid):
            assert time.monotonic() < deadline, "the fleet never held work"
            time.sleep(0.05)
        os.kill(fleet.pid, signal.SIGKILL)
        fleet.wait()

        replies = client.replies(ids)
        assert set(replies) == set(ids)
        assert all(len(r) == 1 for r in replies.values()), "a request was answered twice"
        outcomes = Counter(type(r).__name__ if not isinstance(r, Error) else r.code for (r,) in replies.values())
        assert set(outcomes) <= {"Images", "worker_lost"}, outcomes
        assert engine.metric("argus_redispatched_images_total") >= 1
        left = engine.wait_ready(SPARE)["workers"]
        assert len(left) == SPARE and all(w["pid"] == spare.pid for w in left)
        # the workers lost together are said together (a line for those found gone at once): a line each made a
        # thousand for a fleet of a thousand
        losses = [line for line in engine.log_path.read_text().splitlines() if " lost " in line]
        assert len(losses) < FLEET // 2, losses
    finally:
        client.close()
        if fleet.poll() is None:
            fleet.kill()
        assert engine.stop() == 0
        # a fleet started by hand outlives its engine; SIGTERM ends it, every worker with it
        spare.send_signal(signal.SIGTERM)
        assert spare.wait(timeout=30) == 0


def test_a_batch_no_profile_can_time_is_answered_and_the_fleet_lives_on():
    """A lone sim worker answers an empty batch with an empty BatchDone; a fleet must not let one worker's odd
    message end the loop that serves them all."""
    engine = FakeEngine()
    # its images in a hundredth of their time (50 ms, not 5 s): what is checked is that they are answered
    fleet = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "worker", "--connect", engine.address, "--backend", "sim",
         "--count", "2", "--worker-id", "pair", "--time-scale", "0.01"],
        cwd=ROOT,
    )  # fmt: skip
    try:
        identities = set()
        while len(identities) < 2:
            engine.receive(Hello)
            identities.add(engine.identity)
            engine.send(Welcome(PROTOCOL_VERSION, heartbeat_interval_s=0.5, engine_timeout_s=600, level=0))
        engine.send(WorkerGenerate(1, 0, 50, 64, 64, 5.0, "png", []))
        assert engine.receive(BatchDone) == BatchDone(1, [])
        engine.send(WorkerGenerate(2, 0, 50, 64, 64, 5.0, "png", [GenerateItem("r", "a kite", 1)]))
        (done,) = engine.receive(BatchDone).outcomes
        assert isinstance(done, ItemDone) and fleet.poll() is None
    finally:
        fleet.send_signal(signal.SIGTERM)
        assert fleet.wait(timeout=30) == 0
        engine.close()


def serves_on_without_one(engine, fleet, log: Path, names: list[str], refusal: str) -> None:
    """Of a fleet of 3 beside one other worker, the workers under `names` are ready, its log says `refusal` of the
    third, and it runs on."""
    workers = engine.wait_ready(3, timeout_s=60)["workers"]
    assert sorted(w["name"].split("/")[0] for w in workers if w["pid"] == fleet.pid) == names
    deadline = time.monotonic() + 30
    while refusal not in log.read_text():
        assert time.monotonic() < deadline, "the fleet logged no refusal"
        time.sleep(0.1)
    assert fleet.poll() is None


def assert_all_stop_cleanly(engine, *workers: subprocess.Popen | None) -> None:
    """SIGTERMs the worker processes started (None: not yet), stops the engine, and checks every one exited 0. Every
    process is stopped before any exit code is checked: a failed check leaves none behind."""
    started = [worker for worker in workers if worker is not None]
    for worker in started:
        worker.send_signal(signal.SIGTERM)
    codes = [engine.stop(), *(worker.wait(timeout=30) for worker in started)]
    assert codes == [0] * len(codes)


def test_a_worker_whose_id_is_in_use_stops_alone_and_the_fleet_serves_on(tmp_path):
    """Before, the one refusal ended the process: the fleet's welcomed workers with it, unannounced."""
    engine = start_engine(tmp_path, workers=0, backend="sim", wait=False)
    lone = start_worker(engine.worker_address, "sim", "--time-scale", "0.01", "--worker-id", "gpu-1")
    fleet = None
    try:
        engine.wait_ready(1, timeout_s=60)
        fleet = start_fleet(tmp_path, engine.worker_address, 3, "gpu")
        serves_on_without_one(engine, fleet, tmp_path / "gpu.log", ["gpu-0", "gpu-2"], "worker id 'gpu-1' is in use")
        # before, "1 of its worker ids are in use, those workers refused"
        assert wait_for(lambda: "SIMULATED workers ready" in (tmp_path / "gpu.log").read_text())
        # the process's lines name the fleet, by its ids
        ready = "fleet of 2 SIMULATED workers ready (1 of its worker ids is in use, that worker refused)"
        ready = f"[{fleet.pid} worker=gpu-0..2]: {ready}"
        assert ready in (tmp_path / "gpu.log").read_text()
        with ArgusClient(engine.client_address, timeout_s=30) as client:
            assert isinstance(client.generate("a mill by a river", width=64, height=64), Images)
    finally:
        assert_all_stop_cleanly(engine, fleet, lone)


@pytest.mark.own_engine(workers=1, backend="sim")
def test_a_worker_under_a_local_slots_id_stops_alone_and_the_fleet_serves_on(tmp_path, own_engine):
    """The engine refuses its local slots' ids to any other process: a fleet named `local` lost every worker to the
    refusal of local-0, exit 2, its workers under ids of their own never served."""
    engine = own_engine
    fleet = start_fleet(tmp_path, engine.worker_address, 3, "local")
    try:
        refusal = "'local-0' is this engine's own local worker slot"
        serves_on_without_one(engine, fleet, tmp_path / "local.log", ["local-1", "local-2"], refusal)
    finally:
        assert_all_stop_cleanly(engine, fleet)


def test_a_refused_hello_stops_the_whole_fleet_and_its_welcomed_workers_say_leaving():
    """Its workers send one hello but for their ids: what refuses one refuses them all, so the process ends (exit 2)
    at the first such refusal, once its workers the engine welcomed have said they are leaving."""
    engine = FakeEngine()
    fleet = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "worker", "--connect", engine.address, "--backend", "sim",
         "--count", "2", "--worker-id", "pair"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        welcomed = None
        leaving = False
        while not leaving and engine.socket.poll(60_000):
            identity, *frames = engine.socket.recv_multipart()
            message = engine.codec.decode(frames)
            engine.identity = identity
            if isinstance(message, Hello) and welcomed in (None, identity):
                welcomed = identity
                engine.send(Welcome(PROTOCOL_VERSION, heartbeat_interval_s=0.5, engine_timeout_s=600, level=0))
            elif isinstance(message, Hello):
                engine.send(Refused("protocol 3 not supported (engine speaks 9)"))
            leaving = isinstance(message, Leaving) and identity == welcomed
        assert leaving, "the welcomed worker never said it was leaving"
        assert fleet.wait(timeout=30) == 2
        assert "protocol 3 not supported (engine speaks 9); stopping every worker of this fleet" in fleet.stderr.read()
    finally:
        if fleet.poll() is None:
            fleet.kill()
        engine.close()


@pytest.mark.own_engine(workers=0, backend="sim")
def test_a_fleet_given_the_ids_of_another_says_each_refusal_once_on_both_sides(tmp_path, own_engine):
    """Two fleets started with one --worker-id (a `fleet$i` loop run twice): each worker of the second refused for its
    id was a line of its own, in its log and in the engine's, a thousand of each for a fleet of a thousand."""
    engine = own_engine
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    first = start_fleet(first_dir, engine.worker_address, 4, "gpu")
    second = None
    try:
        engine.wait_ready(4, timeout_s=60)
        second = start_fleet(second_dir, engine.worker_address, 8, "gpu")  # gpu-0 to gpu-3 are taken
        engine.wait_ready(8, timeout_s=60)
        log = second_dir / "gpu.log"
        deadline = time.monotonic() + 30
        while "SIMULATED workers ready" not in (said := log.read_text()):
            assert time.monotonic() < deadline, said
            time.sleep(0.1)
        assert said.count("engine refused worker gpu-") == 1, said
        assert "fleet of 4 SIMULATED workers ready (4 of its worker ids are in use, those workers refused)" in said
        assert wait_for(lambda: "refusing worker gpu-" in engine.log())  # the engine's log thread may write it later
        assert engine.log().count("refusing worker gpu-") == 1, engine.log()
        assert second.poll() is None
    finally:
        assert_all_stop_cleanly(engine, first, second)
