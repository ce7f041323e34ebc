"""A worker started by hand with `argus worker --connect`: it joins an engine that spawned none, stops on Ctrl-C
or SIGTERM (handing its work on), and takes no live worker's id."""

import contextlib
import math
import re
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
from fake_engine import FakeEngine
from test_hello_bounds import SIM_MODEL
from waiting import wait_for

from controller.similarity import SimilarityTable
from engine.client import ArgusClient
from engine_process import (
    EngineProcess,
    ask_worker_door,
    free_port,
    lone_and_fleet,
    said_as_it_exits_2,
    start_engine,
    start_lone_and_fleet,
    start_worker,
)
from protocols.client_messages import Images
from protocols.curve import create_key_files
from protocols.worker_messages import PROTOCOL_VERSION, Cleared, Hello, Probe, Refused, Welcome
from workers.runtime import WorkerRuntime
from workers.sim_backend import SimBackend

# the tests marked own_engine find theirs started while the tests before them ran
pytestmark = pytest.mark.usefixtures("engines_ahead")


@pytest.fixture(scope="module")
def plain_engine(tmp_path_factory):
    """An engine that spawned no worker, without CURVE, shared by the tests whose workers leave it as they found it:
    with none."""
    engine = start_engine(tmp_path_factory.mktemp("plain"), workers=0, backend="sim")
    yield engine
    assert engine.stop() == 0


@dataclass(frozen=True)
class CurveFiles:
    engine_public: Path
    engine_secret: Path
    stranger_secret: Path
    admitted: Path  # an --curve-allow folder with no key in it


@pytest.fixture(scope="module")
def curve_files(tmp_path_factory) -> CurveFiles:
    folder = tmp_path_factory.mktemp("curve")
    engine_public, engine_secret = create_key_files(folder / "keys", "engine")
    _, stranger_secret = create_key_files(folder / "strangers", "stranger")
    (folder / "admitted").mkdir()
    return CurveFiles(engine_public, engine_secret, stranger_secret, folder / "admitted")


@pytest.fixture(scope="module")
def curve_engine(tmp_path_factory, curve_files):
    """An engine that spawned no worker and admits no worker's CURVE key."""
    curve = ["--curve-secret", str(curve_files.engine_secret), "--curve-allow", str(curve_files.admitted)]
    engine = start_engine(tmp_path_factory.mktemp("curve-engine"), *curve, workers=0, backend="sim")
    yield engine
    assert engine.stop() == 0


@pytest.fixture
def engine(plain_engine):
    """The shared engine, once the workers of the tests before have left it."""
    assert wait_for(lambda: not plain_engine.ready()["workers"], timeout_s=60), plain_engine.ready()
    return plain_engine


def test_hand_started_worker_serves(engine):
    worker = start_worker(engine.worker_address, "sim", "--time-scale", "0.01", "--worker-id", "by-hand")
    try:
        status = engine.wait_ready(1, timeout_s=60)
        (described,) = status["workers"]
        assert described["name"].startswith("by-hand/") and described["pid"] == worker.pid
        assert described["simulated"] is True
        with ArgusClient(engine.client_address, timeout_s=30) as client:
            reply = client.generate("a bridge in fog", width=64, height=64)
        assert isinstance(reply, Images) and reply.images[0].worker == described["name"]
    finally:
        # a worker started by hand outlives its engine (tests/test_engine_restart.py); its operator stops it
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0


@pytest.mark.own_engine(workers=0, backend="sim")
def test_a_stopped_worker_hands_its_work_to_another_at_once(own_engine):
    """SIGTERM mid-batch: the worker says it is leaving before it answers its images cancelled, so they go to
    the other worker at once, not back to the one leaving (two tries spent, and a wait for its heartbeat)."""
    # a 50-step image takes it 20 s: it is still making it once the fast worker, started after, has joined (1 to 2 s
    # on two loaded cores; at 5 s an image, a slower start would leave it to finish the image itself)
    slow = start_worker(own_engine.worker_address, "sim", "--time-scale", "4", "--worker-id", "slow")
    fast = None
    try:
        own_engine.wait_ready(1, timeout_s=60)
        with ArgusClient(own_engine.client_address, timeout_s=60) as client, ThreadPoolExecutor(1) as pool:
            reply = pool.submit(client.generate, "a harbour at dawn", width=64, height=64)
            deadline = time.monotonic() + 30
            while not own_engine.ready()["workers"][0]["load"]:
                assert time.monotonic() < deadline, "the slow worker never took the image"
                time.sleep(0.05)
            fast = start_worker(own_engine.worker_address, "sim", "--time-scale", "0.01", "--worker-id", "fast")
            own_engine.wait_ready(2, timeout_s=60)
            slow.send_signal(signal.SIGTERM)
            reply = reply.result()
        assert isinstance(reply, Images) and reply.images[0].worker.startswith("fast/")
        assert slow.wait(timeout=30) == 0
        assert own_engine.metric("argus_worker_losses_total", cause="left") == 1
        assert own_engine.metric("argus_redispatched_images_total") == 1
        # its cancelled batch, come after its Leaving, is the tail of a worker that went: not garbage
        assert own_engine.metric("argus_bad_messages_total", link="worker") == 0
    finally:
        for worker in (slow, fast):
            if worker is not None and worker.poll() is None:
                worker.kill()


class StopAfterTheSteps:
    """The sim backend, whose worker is stopped (SIGTERM) once a batch's steps are done, as its images are encoded;
    a batch waits for `go` first."""

    def __init__(self, runtime_of):
        self._inner = SimBackend(SimilarityTable.bundled("hash"), time_scale=0.01)
        self._runtime_of = runtime_of
        self.running, self.go = threading.Event(), threading.Event()

    def describe(self):
        return self._inner.describe()

    def run(self, batch, control):
        self.running.set()
        assert self.go.wait(60), "the test never let the batch run"
        outcomes = self._inner.run(batch, control)
        self._runtime_of().stop()
        return outcomes


@pytest.mark.own_engine(workers=0, backend="sim")
def test_a_worker_stopped_after_making_its_images_answers_them(own_engine):
    """Before, it said Leaving before answering: the engine routed the images elsewhere at once, dropped the
    answer that came after, and they were made again (a try each, and a whole run)."""
    backend = StopAfterTheSteps(lambda: runtime)
    runtime = WorkerRuntime(backend, own_engine.worker_address, "stopping")
    serving = threading.Thread(target=runtime.serve, daemon=True)
    serving.start()
    other = None
    try:
        own_engine.wait_ready(1, timeout_s=60)
        with ArgusClient(own_engine.client_address, timeout_s=60) as client, ThreadPoolExecutor(1) as pool:
            reply = pool.submit(client.generate, "a harbour at dawn", width=64, height=64)
            assert backend.running.wait(30), "the worker never took the image"
            # another worker, so that an image given up is made again rather than waiting for one
            other = start_worker(own_engine.worker_address, "sim", "--time-scale", "0.01", "--worker-id", "other")
            own_engine.wait_ready(2, timeout_s=60)
            backend.go.set()
            reply = reply.result()
        assert isinstance(reply, Images) and reply.images[0].worker.startswith("stopping/")
        serving.join(30)
        assert not serving.is_alive()
        # its Leaving is sent as its thread ends, and read by the engine in its own time
        assert wait_for(lambda: own_engine.metric("argus_worker_losses_total", cause="left") == 1)
        assert own_engine.metric("argus_redispatched_images_total") == 0
    finally:
        backend.go.set()
        runtime.stop()
        if other is not None:
            other.terminate()
            other.wait(30)


def test_a_second_worker_given_a_live_workers_id_is_refused(engine):
    """Not a replacement: evicting the live one would start the two evicting each other at every hello."""
    replaced = engine.metric("argus_worker_losses_total", cause="replaced")
    first = start_worker(engine.worker_address, "sim", "--time-scale", "0.01", "--worker-id", "gpu0")
    try:
        (registered,) = engine.wait_ready(1, timeout_s=60)["workers"]
        second = start_worker(
            engine.worker_address, "sim", "--worker-id", "gpu0", stderr=subprocess.PIPE, text=True
        )  # fmt: skip
        assert second.wait(timeout=60) == 2
        assert "worker id 'gpu0' is in use by the live worker" in second.stderr.read()
        (still,) = engine.ready()["workers"]
        assert still["name"] == registered["name"] and still["pid"] == first.pid
        assert engine.metric("argus_worker_losses_total", cause="replaced") == replaced
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)


def test_a_probe_is_answered_as_a_hello_of_its_values_would_be_and_registers_nothing(engine):
    """What a worker asks before it loads its model (minutes, for SD-XL), on a connection of its own."""
    first = start_worker(engine.worker_address, "sim", "--time-scale", "0.01", "--worker-id", "gpu0")

    def answer(protocol: int = PROTOCOL_VERSION, worker_id: str = "gpu1", model: str = SIM_MODEL) -> object:
        return ask_worker_door(engine.worker_address, Probe(protocol, worker_id, "sim", model, pid=12345))

    try:
        (registered,) = engine.wait_ready(1, timeout_s=60)["workers"]
        assert answer() == Cleared()
        assert answer(model="") == Cleared()  # a model known only once loaded is not checked
        taken = answer(worker_id="gpu0")
        assert taken.id_in_use and "worker id 'gpu0' is in use by the live worker" in taken.reason, taken
        assert taken.reason.endswith(": give each worker its own --worker-id"), taken
        other = answer(model="sim:0123456789abcdef")
        assert isinstance(other, Refused) and "model 'sim:0123456789abcdef': this engine serves" in other.reason
        old = answer(protocol=PROTOCOL_VERSION - 1)
        assert old.reason == f"protocol {PROTOCOL_VERSION - 1} not supported (engine speaks {PROTOCOL_VERSION})"
        (still,) = engine.ready()["workers"]
        assert still["name"] == registered["name"] and still["pid"] == first.pid
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)


def test_a_worker_of_another_backend_is_refused_before_it_loads_its_model(engine):
    worker = start_worker(engine.worker_address, "tiny", "--worker-id", "gpu9", stderr=subprocess.PIPE, text=True)
    said = said_as_it_exits_2(worker)
    assert "engine refused this worker: backend 'tiny': this engine serves 'sim'" in said, said
    assert "loading the tiny backend" not in said, said
    # the engine names the worker, not the identity libzmq made up for the connection it asked on
    named = f"refusing worker gpu9 (pid {worker.pid}, asking before it loads its model): backend 'tiny'"
    assert wait_for(lambda: named in engine.log(), timeout_s=60), engine.log()[-2000:]


@pytest.mark.own_engine("--heartbeat-timeout", "30", workers=0, backend="sim")
def test_a_worker_restarted_under_its_id_right_after_a_crash_takes_its_place(own_engine):
    """A supervisor (systemd, a container's restart policy) starts the same worker again within a second of a
    crash, under the same id: the dead one's link is gone, so the id is free (it was refused for 3 heartbeat
    intervals, the new worker exiting 2 each time)."""
    crashed = start_worker(own_engine.worker_address, "sim", "--time-scale", "0.01", "--worker-id", "gpu0")
    restarted = None
    try:
        (registered,) = own_engine.wait_ready(1, timeout_s=60)["workers"]
        crashed.kill()
        crashed.wait(timeout=30)
        restarted = start_worker(own_engine.worker_address, "sim", "--time-scale", "0.01", "--worker-id", "gpu0")
        deadline = time.monotonic() + 60
        while [w["pid"] for w in own_engine.ready()["workers"]] != [restarted.pid]:
            assert restarted.poll() is None, "the restarted worker was refused"
            assert time.monotonic() < deadline
            time.sleep(0.2)
        # the new hello under its id replaces the dead link, unless the engine saw that connection drop first (on a
        # loaded host): either way the loss is counted once, and not waited for
        lost = {
            cause: own_engine.metric("argus_worker_losses_total", cause=cause)
            for cause in ("replaced", "unreachable", "heartbeat")
        }
        assert lost["replaced"] + lost["unreachable"] == 1 and lost["heartbeat"] == 0, lost
        with ArgusClient(own_engine.client_address, timeout_s=30) as client:
            reply = client.generate("a bridge in fog", width=64, height=64)
        assert isinstance(reply, Images) and reply.images[0].worker != registered["name"]
    finally:
        if restarted is not None:
            restarted.send_signal(signal.SIGTERM)
            restarted.wait(timeout=30)
    assert restarted.returncode == 0


# who the worker is, and what it says as it exits 2
_NEVER_TAKEN_SAYS = {
    "key not admitted": "does not admit this CURVE key on this socket (a worker's key goes in its",
    "no keys": "requires CURVE keys",
    "keys, engine without CURVE": "does not use CURVE",
    "a fleet, key not admitted": "does not admit this CURVE key",
    "wrong engine key": "the engine's public key given is not its own",
    "a model, key not admitted": "does not admit this CURVE key",
    "a model, wrong engine key": "the engine's public key given is not its own",
}


@pytest.fixture(scope="module", autouse=True)
def never_taken(request, tmp_path_factory, curve_files):
    """The workers of test_a_worker_the_engine_can_never_take_says_why_and_exits_2, by who: each started in a thread
    from the module's start, two at a time, as (the engine it dialled, what it said as it exited 2). Each waits a
    second or more on libzmq's handshakes, hardly on the cores: those waits run while the tests before its own do."""
    whos = [
        item.callspec.params["who"]
        for item in request.session.items
        if item.module is request.module
        and item.originalname == test_a_worker_the_engine_can_never_take_says_why_and_exits_2.__name__
    ]
    # the engines started here, not in the workers' threads
    engines = {
        who: request.getfixturevalue("plain_engine" if who == "keys, engine without CURVE" else "curve_engine")
        for who in whos
    }
    # its hellos sealed for another engine: libzmq dials again for ever, unread
    other_engine_key, _ = create_key_files(tmp_path_factory.mktemp("other"), "engine")

    def refused(who: str) -> tuple[EngineProcess, str]:
        engine = engines[who]
        engine_key = other_engine_key if who.endswith("wrong engine key") else curve_files.engine_public
        keys = ["--curve-key", str(curve_files.stranger_secret), "--curve-server-key", str(engine_key)]
        fleet = ["--count", "3"] if who.startswith("a fleet") else []
        backend = "tiny" if who.startswith("a model") else "sim"
        worker = start_worker(
            engine.worker_address, backend, *([] if who == "no keys" else keys), *fleet, stderr=subprocess.PIPE
        )
        return engine, said_as_it_exits_2(worker)

    with ThreadPoolExecutor(2) as pool:
        yield {who: pool.submit(refused, who) for who in whos}


@pytest.mark.parametrize("who", list(_NEVER_TAKEN_SAYS))
def test_a_worker_the_engine_can_never_take_says_why_and_exits_2(never_taken, who):
    """libzmq does not dial again after the engine refused the key, nor when one side speaks CURVE and the other
    not: the worker warned of no answer every 10 s, for ever, and did not join even a restarted engine that
    admitted it. A worker with a model to load hears it before loading it (an SD-XL one loaded for minutes first)."""
    engine, said = never_taken[who].result()
    # "the engine at ADDRESS does not use CURVE", or, if the engine hung up before the worker named the mismatch
    # ten times in a row, "every handshake with the engine at ADDRESS failed: ..., the engine does not use CURVE"
    says = _NEVER_TAKEN_SAYS[who]
    assert "engine refused this worker: " in said and engine.worker_address in said and says in said, said
    if who.startswith("a model"):  # the tiny backend
        assert "loading the tiny backend" not in said, said


@pytest.mark.own_engine(workers=0, backend="sim")
def test_a_worker_or_fleet_that_served_says_why_the_next_engine_can_never_take_it_and_exits_2(
    own_engine, tmp_path, curve_files
):
    """The engine restarted on its address with CURVE turned on (or its key pair replaced): a lone worker said why and
    exited 2, a fleet waited for ever, warning that the engine had stopped and that it waited for the next one."""
    workers, logs = start_lone_and_fleet(tmp_path, own_engine.worker_address, fleet=3)
    second = None
    try:
        own_engine.wait_ready(4, timeout_s=60)
        assert own_engine.stop() == 0
        curve = ["--curve-secret", str(curve_files.engine_secret), "--curve-allow", str(curve_files.admitted)]
        worker_port = int(own_engine.worker_address.rsplit(":", 1)[1])
        second = start_engine(tmp_path, *curve, workers=0, backend="sim", worker_port=worker_port)
        for worker, path in zip(workers, logs.values(), strict=True):
            assert worker.wait(timeout=60) == 2, path.read_text()
            # libzmq says the mechanisms differ, or hangs up first (a race): "... is not an argus engine's ZeroMQ
            # address (...), or the engine at ... requires CURVE keys" then (protocols/curve.py, _no_engine_here)
            said = re.search(r"engine refused this worker: (.*)", log := path.read_text())
            assert said and said[1].endswith(f"the engine at {own_engine.worker_address} requires CURVE keys"), log
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
        if second is not None:
            assert second.stop() == 0


def test_a_worker_with_keys_given_the_engines_http_port_says_so_and_exits_2(curve_engine, curve_files):
    """libzmq with CURVE hangs up on a peer that does not greet as ZeroMQ does, and never dials it again: the worker
    said hello for ever, warning every 10 s of no answer."""
    address = curve_engine.http.replace("http://", "tcp://")
    keys = ["--curve-key", str(curve_files.stranger_secret), "--curve-server-key", str(curve_files.engine_public)]
    said = said_as_it_exits_2(start_worker(address, "sim", *keys, stderr=subprocess.PIPE))
    assert f"{address} is not an argus engine's ZeroMQ address (the handshake failed: an HTTP port?)" in said, said


@pytest.mark.parametrize("fleet", [[], ["--count", "3"]], ids=["worker", "fleet"])
def test_a_worker_given_the_engines_client_address_says_so_and_exits_2(engine, fleet):
    """The client door answers each hello with an Error the worker cannot read: the worker said hello again at once,
    for ever (about 6,600 hellos, warnings in its log and rejected requests in the engine's a second)."""
    said = said_as_it_exits_2(start_worker(engine.client_address, "sim", *fleet, stderr=subprocess.PIPE))
    assert f"engine refused this worker: {engine.client_address} answered a hello" in said, said
    assert "not its client one" in said


@pytest.mark.parametrize(
    ("fleet", "times"),
    [
        ([], {"heartbeat_interval_s": 0.0}),
        ([], {"heartbeat_interval_s": math.nan}),
        (["--count", "3"], {"heartbeat_interval_s": -1.0}),
        ([], {"engine_timeout_s": 0.0}),
    ],
    ids=["interval 0", "interval NaN", "fleet, interval -1", "timeout 0"],
)
def test_a_welcome_whose_times_cannot_be_kept_is_refused_and_the_worker_exits_2(fleet, times):
    """A heartbeat interval of 0 had a worker beat as fast as it could (a fleet of 3 sent 38,000 messages a second),
    one of NaN ended it with a traceback, and a timeout of 0 lost the engine as soon as it was welcomed."""
    engine = FakeEngine()
    worker = start_worker(engine.address, "sim", "--worker-id", "w", *fleet, stderr=subprocess.PIPE)
    try:
        engine.receive(Hello)
        given = {"heartbeat_interval_s": 1.0, "engine_timeout_s": 600.0, **times}
        engine.send(Welcome(PROTOCOL_VERSION, **given, level=0))
        said = said_as_it_exits_2(worker, timeout_s=30)
        assert f"engine refused this worker: {engine.address} welcomed it with a " in said, said
    finally:
        if worker.poll() is None:
            worker.kill()
        engine.close()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_hand_started_worker_stops_cleanly_while_no_engine_answers(signum):
    # a peer that takes the worker's hellos and never answers: the worker keeps saying hello
    address = f"tcp://127.0.0.1:{free_port()}"
    context = zmq.Context()
    silent = context.socket(zmq.ROUTER)
    silent.setsockopt(zmq.LINGER, 0)
    silent.bind(address)
    worker = start_worker(address, "sim", stderr=subprocess.PIPE)
    try:
        # a hello: its start is over, its handlers for the signals set (a SIGINT before them ends its imports)
        assert silent.poll(60_000), "the worker never said hello"
        worker.send_signal(signum)
        assert worker.wait(timeout=30) == 0
        assert b"Traceback" not in worker.stderr.read()
    finally:
        if worker.poll() is None:
            worker.kill()
        silent.close()
        context.term()


@pytest.fixture(scope="module", autouse=True)
def unanswered(tmp_path_factory):
    """A lone worker and a fleet of 3 for each address no engine answers at, as (address, [lone, fleet], logs): all
    started at once, as each warns only after 10 s unanswered (UNANSWERED_WARNING_S), a wait its tests share. Started
    with the module (autouse), not by the first of its tests, so that the 10 s pass while the tests before them run.
    Each test stops the two of its address."""
    addresses = {
        "no one listens": f"tcp://127.0.0.1:{free_port()}",
        "unresolved": "tcp://argus-engine.invalid:5556",  # RFC 6761: never resolves
    }
    with contextlib.ExitStack() as started:
        yield {
            case: (address, *started.enter_context(lone_and_fleet(tmp_path_factory.mktemp("unanswered"), address, 3)))
            for case, address in addresses.items()
        }


def test_a_worker_or_fleet_no_engine_answers_says_so(unanswered):
    """A mistyped address or a CURVE key the engine does not admit looks like nothing at all: both warn, after 10 s
    unanswered."""
    address, workers, logs = unanswered["no one listens"]
    warning = f"no answer from an engine at {address}"
    for path in logs.values():
        assert wait_for(lambda path=path: warning in path.read_text(), timeout_s=60), path.read_text()
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    assert [worker.wait(timeout=30) for worker in workers] == [0, 0]
    assert "take 3 of this fleet's 3 workers" in logs["fleet"].read_text()


def test_a_worker_or_fleet_given_a_host_that_does_not_resolve_says_so(unanswered):
    """ZeroMQ dials a name that does not resolve as it does a port no one listens on, without a word: the warning
    asked whether the engine was up and took the worker's CURVE keys."""
    address, workers, logs = unanswered["unresolved"]
    warning = f"no answer from an engine at {address} for 10 s: its host argus-engine.invalid does not resolve"
    for path in logs.values():
        assert wait_for(lambda path=path: warning in path.read_text(), timeout_s=60), path.read_text()
        assert "CURVE" not in path.read_text()
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    assert [worker.wait(timeout=30) for worker in workers] == [0, 0]


@pytest.mark.own_engine("--time-scale", "0.2", "--heartbeat-timeout", "2", workers=1, backend="sim")
def test_a_peer_dialing_in_under_a_live_workers_name_gets_none_of_its_traffic(own_engine):
    """A worker's identity is its public name (in /ready and every reply): a second connection under it is
    refused, not handed the worker's prompts (the worker, gone silent, was then killed as hung)."""
    context = zmq.Context()
    impostor = context.socket(zmq.DEALER)
    impostor.setsockopt(zmq.LINGER, 0)
    try:
        (worker,) = own_engine.wait_ready(1, timeout_s=60)["workers"]
        # its worker's losses counted from here: started ahead, the engine sat idle while the tests before ran
        silent = own_engine.metric("argus_worker_losses_total", cause="heartbeat")
        impostor.setsockopt(zmq.IDENTITY, worker["name"].encode())
        handshakes = impostor.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        impostor.connect(own_engine.worker_address)
        # connected, its name told (the engine reads it as the handshake ends), had the engine taken it
        assert handshakes.poll(30_000), "the impostor never reached the engine"
        impostor.disable_monitor()
        handshakes.close()
        with ArgusClient(own_engine.client_address, timeout_s=60) as client:
            for i in range(3):  # past a heartbeat timeout: a worker cut off would be lost by now
                reply = client.generate(f"another user's prompt {i}", width=64, height=64)
                assert isinstance(reply, Images) and reply.images[0].worker == worker["name"]
        assert not impostor.poll(0)  # not a heartbeat, not a prompt
        assert own_engine.ready()["workers"][0]["pid"] == worker["pid"]
        assert own_engine.metric("argus_worker_losses_total", cause="heartbeat") == silent
    finally:
        impostor.close()
        context.term()


@pytest.mark.own_engine("--time-scale", "0.5", workers=0, backend="sim")
def test_workers_at_another_time_scale_than_the_engine_are_warned_of_by_name(own_engine):
    """The engine's controller plans with its --time-scale, the workers sleep by theirs: before, a difference went
    without a word. A lone worker and a fleet each say theirs in their hello; the engine warns once per time scale
    (test_worker_hello checks the whole line)."""
    lone = start_worker(own_engine.worker_address, "sim", "--time-scale", "0.02", "--worker-id", "lone")
    fleet = start_worker(
        own_engine.worker_address, "sim", "--count", "2", "--time-scale", "0.01", "--worker-id", "fleet"
    )
    try:
        own_engine.wait_ready(3, timeout_s=60)
        warned = [line for line in own_engine.log_path.read_text().splitlines() if "plans with --time-scale" in line]
        said = re.compile(
            r"worker ([a-z]+)[-0-9]*/\S+ runs the sim at --time-scale ([0-9.]+) but .* --time-scale 0\.5: "
        )
        assert sorted(said.search(line).groups() for line in warned) == [("fleet", "0.01"), ("lone", "0.02")], warned
    finally:
        for worker in (lone, fleet):
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0
