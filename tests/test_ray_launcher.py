"""Workers as Ray actors on a local Ray instance, sim and tiny, serve a real engine; killing one mid-load loses no
request. Simulated workers need no CPU of their own; the Ray instance and its actors are not handed the API key, and
each actor's log lines are forwarded under its own pid, none held back or folded into another's by Ray; an actor Ray
cannot place is named in a warning and replaced, and one whose worker cannot load its model is replaced with a warning
saying why, and after three such ends left empty, and one Ray's memory monitor kills with a warning saying so; one
that does not stop when asked is killed, named alone in the log, and one whose worker has not said hello is killed at
once, unwarned; a worker started by hand under an actor's id is told the id is the slot's; a cluster that cannot be
reached ends the engine with an error, and SIGTERM stops it while it still tries, or once its Ray instance lost its
head (the GCS), which the engine says at once, leaving nothing of that instance; it answers HTTP while an actor's start
waits for that GCS."""

import asyncio
import importlib.util
import json
import logging
import os
import re
import signal
import subprocess
import time
import uuid
from collections import Counter

import pytest
import waiting
import zmq
import zmq.asyncio
from process_checks import process_running
from ray_head import ensure_the_local_token, loopback_ray_head
from session_leftovers import assert_nothing_left

from engine.config import API_KEY_ENV, EngineConfig, LaunchConfig
from engine.fleet.ray.launcher import RayLauncher, tcp_endpoint
from engine.fleet.restart_backoff import GIVE_UP_AFTER
from engine.metrics import EngineMetrics
from engine.server import Engine
from engine.system.proc_reads import children_of, read_command
from engine_process import free_port, start_engine, start_worker
from protocols.client_messages import Generate, Images, client_side_codec
from protocols.curve import ClientKeys, create_key_files
from protocols.sockets import make_socket

# ray is not imported here: the launcher must import it first, to keep its Ray instance on loopback
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")

# the shared cluster's: the tiny actors take one each
HEAD_CPUS = 2
# enough that the actor killed holds several when it is killed: each actor is handed its share at once
REQUESTS = 8


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray cluster of HEAD_CPUS CPUs and no GPU, for the engines that need one but not an instance of their own
    (their tests kill or look at none of its GCS, raylet and agents): each joins it (--ray-address) as a driver, its
    job its own, whose actors end as it disconnects. Started once: an instance of the engine's own took seconds to
    start and to stop."""
    log_path = tmp_path_factory.mktemp("ray-head") / "head.log"
    # the token of a local Ray instance (~/.ray/auth_token), which a driver keeps for the life of its process: Ray
    # refused an engine in this process the local instance it started after it had joined a cluster of another token
    ensure_the_local_token()
    with loopback_ray_head(
        log_path, f"--num-cpus={HEAD_CPUS}", "--num-gpus=0", environment={"RAY_AUTH_MODE": "token"}
    ) as head:
        yield head


@pytest.fixture
def ray_cluster(ray_head, monkeypatch):
    """The shared cluster's address, for the engines that join it, in this process or started from it: its token is
    the one of ~/.ray/auth_token, which a local instance's start turns on in this process (RAY_AUTH_MODE=token, left
    set) and a joining engine is told to send."""
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    return ray_head


class RayEngine(Engine):
    """The engine with Ray actors for workers, as `argus serve --launcher ray` builds it (docs/scaling.md)."""

    def __init__(self, config: EngineConfig):
        super().__init__(config)
        self.launcher = RayLauncher(
            config.launch,
            tcp_endpoint(self.link.endpoints),
            self.metrics,
            self._local_worker_exited,
            self._curve.local_worker_keys,
            config.cache.embedder,
            config.ray_address,
        )


def test_a_hello_under_an_actors_id_is_refused_before_the_launcher_has_reached_ray():
    """The engine reads its worker socket while its launcher reaches Ray (seconds): a worker started by hand as ray-0
    then was welcomed under the slot's id (once it has: test_a_worker_started_by_hand_under_an_actors_id_...)."""
    slots = RayLauncher(LaunchConfig(count=2, backend="sim"), "tcp://127.0.0.1:1", EngineMetrics(), print, None)
    assert "Ray actor slot" in slots.refusal("ray-1", os.getpid())
    assert slots.refusal("remote-0", os.getpid()) is None


def test_an_actor_is_given_a_relative_model_folder_as_the_engine_names_it(tmp_path, monkeypatch):
    """An actor runs in its raylet's folder (where `ray start` ran), not the engine's: `--model sdxl`, next to the
    engine, named a folder there, or none, and every actor's worker failed to find it."""
    monkeypatch.chdir(tmp_path)
    slots = RayLauncher(
        LaunchConfig(count=1, backend="sdxl", model="sdxl"), "tcp://127.0.0.1:1", EngineMetrics(), print, None
    )
    assert slots._worker_config(0).model == str(tmp_path / "sdxl")


def sample(engine: Engine, name: str, **labels: str) -> float:
    return engine.metrics.registry.get_sample_value(name, labels) or 0.0


async def wait_for(condition, what: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("backend", "workers", "launch", "steps", "stuck_at_the_stop"),
    [
        # more actors than the shared cluster has CPUs: sim workers need none of their own, so all of them and the
        # replacement start; about half a second per image, so the kill lands while they hold work
        ("sim", HEAD_CPUS + 1, {"time_scale": 0.1}, 0, True),
        # two tiny SD-XLs, a real diffusers pipeline in each actor (one CPU each, the shared cluster's two), at 10
        # steps. On that loopback cluster, not on an instance of the engine's own: its start took seconds more
        ("tiny", HEAD_CPUS, {}, 10, False),
    ],
    ids=["sim", "tiny"],
)
async def test_ray_actors_serve_and_a_killed_actor_loses_nothing(
    tmp_path, caplog, ray_cluster, backend, workers, launch, steps, stuck_at_the_stop
):
    """With `stuck_at_the_stop`, the engine's stop then finds one actor that does not stop when asked, and kills it,
    naming it alone: the line counted every actor, stopped or not ('2 Ray actors still running after 5 s' of two, one
    of which had stopped), and named none. Checked here, not by a test of its own: that paid for an engine and its
    actors' start again."""
    keys = tmp_path / "keys"
    _, engine_secret = create_key_files(keys / "engine", "engine")
    create_key_files(keys / "allowed", "client")
    client_keys = ClientKeys.from_files(keys / "allowed" / "client.key_secret", keys / "engine" / "engine.key")
    client_address = f"tcp://127.0.0.1:{free_port()}"
    config = EngineConfig(
        port=0,
        client_listen=(client_address,),
        worker_listen=(f"tcp://127.0.0.1:{free_port()}",),
        # the replacement started 0.1 s after the kill, not 1 s: when does not matter, that it does
        launch=LaunchConfig(count=workers, backend=backend, max_batch=2, restart_backoff_s=0.1, **launch),
        curve_secret_file=str(engine_secret),
        curve_allowed_dir=str(keys / "allowed"),
        ray_address=ray_cluster,
    )
    engine = RayEngine(config)
    running = asyncio.create_task(engine.run())
    context = zmq.asyncio.Context()
    client = make_socket(context, zmq.DEALER, connect=client_address, curve_client=client_keys)
    codec = client_side_codec()
    try:
        await wait_for(lambda: len(engine.registry.registered()) == workers, "the Ray workers")
        first = {w.name for w in engine.registry.registered()}
        assert {w.hello.worker_id for w in engine.registry.registered()} == {f"ray-{i}" for i in range(workers)}
        import ray

        assert ray.cluster_resources()["CPU"] == HEAD_CPUS

        ids = [uuid.uuid4().hex for _ in range(REQUESTS)]
        for request_id in ids:
            request = Generate(request_id, f"a kite {request_id}", width=64, height=64, steps=steps)
            await client.send_multipart(codec.encode(request))
        await wait_for(lambda: any(w.load for w in engine.registry.registered()), "load")
        victim = max(engine.registry.registered(), key=lambda w: w.load)
        ray.kill(ray.get_actor(victim.hello.worker_id))

        def replaced() -> bool:
            names = {w.name for w in engine.registry.registered()}
            return len(names) == workers and victim.name not in names

        replies: Counter[str] = Counter()
        last_reply = time.monotonic()
        deadline = last_reply + 180
        # read until every request is answered and a new actor has taken the slot, and 1.5 s after the last reply at
        # least, to catch duplicates: that wait is the replacement's where it is the longer (a tiny model's load)
        while time.monotonic() < deadline and (
            len(replies) < REQUESTS or not replaced() or time.monotonic() < last_reply + 1.5
        ):
            if await client.poll(100):
                reply = codec.decode(await client.recv_multipart())
                assert isinstance(reply, Images), reply
                replies[reply.request_id] += 1
                last_reply = time.monotonic()
        assert set(replies) == set(ids)
        assert set(replies.values()) == {1}
        assert sample(engine, "argus_redispatched_images_total") >= 1

        # a new actor took the slot: a new peer under the same worker id
        assert replaced(), "timed out waiting for the replacement actor"
        after = {w.name for w in engine.registry.registered()}
        assert victim.name not in after and len(after - first) == 1
        assert sample(engine, "argus_worker_restarts_total") == 1
        stuck = engine.registry.registered()[0] if stuck_at_the_stop else None
        if stuck is not None:
            os.kill(stuck.hello.pid, signal.SIGSTOP)  # it cannot see the engine's Shutdown
    finally:
        client.close()
        context.term()
        engine.request_stop()
        await running
    if stuck is not None:
        said = (
            f"1 Ray actor did not stop within 5 s of being asked to ({stuck.hello.worker_id} (pid {stuck.hello.pid}))"
        )
        assert f"{said}: killing it" in caplog.text
        await wait_for(lambda: not process_running(stuck.hello.pid), "the stuck actor's end", timeout_s=60)


def ray_engine(launch: LaunchConfig, **changes) -> Engine:
    """As `argus serve --launcher ray` builds it: no CURVE of its own, so a key pair made for the run."""
    return Engine(
        EngineConfig(
            port=0,
            client_listen=(f"tcp://127.0.0.1:{free_port()}",),
            worker_listen=(f"tcp://127.0.0.1:{free_port()}",),
            launch=launch,
            launcher="ray",
            **changes,
        )
    )


async def test_an_actor_ray_cannot_place_is_named_in_a_warning_and_replaced(caplog, ray_cluster):
    # Ray never places it: the startup timeout's size does not matter
    launch = LaunchConfig(count=1, backend="tiny", devices=("cuda:0",), startup_timeout_s=1.0)
    engine = ray_engine(launch, ray_address=ray_cluster)  # a cluster of no GPU
    running = asyncio.create_task(engine.run())
    try:
        # waiting for Ray to place it, the slot's capacity is on its way (as a local worker's): it counts starting
        await wait_for(lambda: sample(engine, "argus_workers", state="starting") == 1, "the actor starting")
        await wait_for(lambda: sample(engine, "argus_worker_restarts_total") >= 1, "the replacement", timeout_s=120)
        assert (
            "worker ray-0 (Ray actor) was not started by Ray within 1 s (--startup-timeout; it needs 1 GPU"
            in caplog.text
        )
    finally:
        engine.request_stop()
        await running


async def test_an_actor_whose_worker_cannot_load_its_model_is_replaced_then_given_up_and_the_log_says_why(
    caplog, ray_cluster
):
    """As a local worker's slot is: before, the actor was replaced for as long as the engine ran, every 30 s at
    most, each one placed and loading its model again. Given up, it is replaced every given_up_retry_s (5 minutes)."""
    launch = LaunchConfig(count=1, backend="sdxl", model="/no/such/sdxl-model", restart_backoff_s=0.1)
    engine = ray_engine(launch, ray_address=ray_cluster)
    running = asyncio.create_task(engine.run())
    try:
        await wait_for(lambda: sample(engine, "argus_workers", state="failed") == 1, "the slot given up", timeout_s=150)
        # each end counts: the last, the slot given up, is started again too, after given_up_retry_s
        assert sample(engine, "argus_worker_restarts_total") == GIVE_UP_AFTER
        assert "worker ray-0 (Ray actor) ended: FileNotFoundError" in caplog.text
        assert "/no/such/sdxl-model" in caplog.text
        assert f"before its hello {GIVE_UP_AFTER} times in a row: it cannot serve as configured" in caplog.text
    finally:
        engine.request_stop()
        await running


def test_an_actor_that_rays_memory_monitor_kills_is_replaced_with_a_warning_saying_so(tmp_path, monkeypatch):
    """The line said only the last line of Ray's report, its advice ('Refer to the documentation on how to address the
    out of memory issue: ...'), not that Ray had killed the actor for the node's memory, nor how much was in use."""
    # the engine's Ray instance kills any worker running a task, at once: every node is above 1% of its memory
    monkeypatch.setenv("RAY_memory_usage_threshold", "0.01")
    monkeypatch.setenv("RAY_memory_monitor_refresh_ms", "100")
    engine = start_engine(tmp_path, "--launcher", "ray", workers=1, backend="sim", wait=False)
    try:
        said = "worker ray-0 (Ray actor) ended: "
        assert waiting.wait_for(lambda: said in engine.log(), timeout_s=120), engine.log()
        ended = next(line for line in engine.log_path.read_text().splitlines() if said in line)
        assert "killed due to the node running low on memory. Memory on the node" in ended, ended
        assert "Refer to the documentation" not in ended, ended
    finally:
        engine.stop()


async def test_an_actor_whose_worker_has_not_said_hello_is_killed_at_the_stop_not_waited_for(caplog, ray_cluster):
    """Only a worker that said hello is told to shut down: the stop waited 5 s for one still loading its model (or, as
    here, dialling where no engine listens), then warned that it 'did not stop within 5 s of being asked to'."""
    caplog.set_level(logging.INFO, "argus.launcher")
    nowhere = f"tcp://127.0.0.1:{free_port()}"
    engine = ray_engine(LaunchConfig(count=1, backend="sim"), ray_connect=nowhere, ray_address=ray_cluster)
    running = asyncio.create_task(engine.run())
    try:
        await wait_for(lambda: "started worker ray-0 as a Ray actor" in caplog.text, "the actor")
        (pid,) = (int(word) for word in re.findall(r"as a Ray actor \(pid (\d+)", caplog.text))
    finally:
        engine.request_stop()
        await running
    assert "did not stop" not in caplog.text
    await wait_for(lambda: not process_running(pid), "the actor's end", timeout_s=60)


@pytest.mark.parametrize(
    "address, timeout, error",
    [
        # nobody answers; the port is drawn as the test runs, so that the test's id is the same at every collection.
        # The timeout as given: a fraction was rounded, and 0.4 said "within 0 s"
        ("127.0.0.1:{free}", "2.5", "within 2.5 s (--ray-connect-timeout)"),
        ("127.0.0.1:port", "3", "Unable to parse port number"),
        ("ray://127.0.0.1:1", "3", "Ray Client requires pip package `ray[client]`"),  # not in the ray extra
        # Ray's message lists the ways out on lines of their own: the engine said the last alone, `2. Set RAY_ADDRESS
        # to the GCS address instead`, not that the address was not one
        (
            "http://127.0.0.1:{free}",
            "3",
            "http://127.0.0.1:{free}: Invalid Ray address: 'http://127.0.0.1:{free}'. It looks like you set RAY_ADDRESS"
            " to an HTTP address (e.g. the API server address). To fix this, either: 1. Unset RAY_ADDRESS",
        ),
    ],
)
def test_a_cluster_the_engine_cannot_join_ends_it_in_one_line(tmp_path, address, timeout, error):
    port = free_port()
    address, error = address.format(free=port), error.format(free=port)
    options = ("--launcher", "ray", "--ray-address", address, "--ray-connect-timeout", timeout)
    engine = start_engine(tmp_path, *options, workers=1, backend="sim", wait=False)
    try:
        assert engine.process.wait(120) == 2, engine.log()
        assert f"argus serve: error: could not connect to the Ray cluster at {address}" in engine.log()
        assert error in engine.log()
        assert "Traceback" not in engine.log()
        assert "engine stopped" not in engine.log()  # it never started: the error is its last word
    finally:
        engine.stop()


def test_sigterm_stops_an_engine_still_connecting_to_ray(tmp_path):
    options = ("--launcher", "ray", "--ray-address", f"127.0.0.1:{free_port()}")
    engine = start_engine(tmp_path, *options, workers=1, backend="sim", wait=False)
    try:
        deadline = time.monotonic() + 60
        while "Connecting to existing Ray cluster" not in engine.log() and time.monotonic() < deadline:
            assert engine.process.poll() is None, engine.log()
            time.sleep(0.2)
        assert "Connecting to existing Ray cluster" in engine.log()
    finally:
        assert engine.stop() == 0, engine.log()  # drained and stopped, without waiting for the connection


def test_the_ray_instance_is_not_handed_the_api_key_and_the_engine_answers_and_stops_after_it_lost_the_gcs(
    tmp_path, monkeypatch
):
    """After its own Ray instance lost its GCS, the engine (one engine for both, which took a Ray instance and a stop
    each): SIGTERM is an ordinary stop, and leaves nothing of that instance; and an actor that ends meanwhile is
    replaced by a start that waits for the GCS off the event loop, which was on it, /health unanswered, until Ray
    ended the engine 60 s on (a `ray stop`, or a closed terminal's SIGHUP, which the engine takes for a key reload,
    ended its instance under it), and nothing of the engine's said why."""
    monkeypatch.setenv(API_KEY_ENV, "a-key-for-http-only")
    options = ("--log-format", "json")
    engine = start_engine(tmp_path, "--launcher", "ray", workers=2, backend="sim", wait=False, argus_options=options)
    engine.api_key = "a-key-for-http-only"
    try:
        workers = engine.wait_ready(2)["workers"]
        assert_the_ray_processes_are_not_handed_the_api_key(engine, workers[0]["pid"])
        # each actor logs as the engine does (before, Ray set no logging up for it: its INFO lines were lost), each
        # line forwarded by Ray, after a prefix naming the actor, when its log monitor next reads the actor's output.
        # Each actor's own: Ray's log deduplication held back the line the second actor said as the first had (until
        # the engine stopped), or folded it into another's, `[repeated 2x across cluster]` appended. The prefix names
        # the worker (it named the class, RayWorker, for each)
        loading = {(worker["name"].partition("/")[0], worker["pid"]) for worker in workers}
        assert waiting.wait_for(lambda: actors_saying(engine, LOADING) == loading, timeout_s=60), engine.log()
        assert "\x1b[" not in engine.log()  # the prefix coloured for a terminal, in a file
        (gcs,) = (pid for pid in children_of(engine.process.pid) if "gcs_server" in read_command(pid))
        os.kill(gcs, signal.SIGKILL)
        # one actor ends (the other goes on serving): its replacement's start, after a backoff of 1 s (counted
        # restarting until then, from the restart's count on), waits for the GCS: the engine answers meanwhile (the
        # answer that says the backoff is over among them)
        if process_running(workers[0]["pid"]):
            os.kill(workers[0]["pid"], signal.SIGKILL)
        assert waiting.wait_for(lambda: engine.metric("argus_worker_restarts_total") == 1, timeout_s=60), engine.log()
        started_again = waiting.wait_for(lambda: engine.metric("argus_workers", state="restarting") == 0, timeout_s=60)
        assert started_again, engine.log()
        for _ in range(10):
            assert engine.get("/health")[0] == 200, engine.log()
            time.sleep(0.2)
        gone = "lost the engine's own Ray instance: its GCS at 127.0.0.1:"
        said = [record["message"] for record in engine_records(engine, "argus.launcher", "ERROR")]
        assert any(gone in line and "No worker that ends can be replaced while it is gone" in line for line in said), (
            said
        )
        # SIGTERM is an ordinary stop, which Ray's crash handler turned into an abort; it does not wait for the start
        assert engine.stop() == 0, engine.log()
        assert "engine stopped" in engine.log()
        assert "SIGTERM received" not in engine.log()
        # ray.init's, off the main thread: misleading, as SIGTERM drains the engine as ever
        assert "SIGTERM handler is not set" not in engine.log()
    finally:
        engine.stop()
        # the raylet's agents, waiting on the GCS gone, ran on for a minute or more, orphaned
        assert_nothing_left(engine)


def engine_records(engine, logger: str, level: str) -> list[dict]:
    """The JSON records the engine (not an actor, whose lines Ray forwards after a prefix) logged at `level`."""
    records = []
    for line in engine.log_path.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if (record["logger"], record["level"]) == (logger, level):
                records.append(record)
    return records


LOADING = ("argus.worker", "INFO", "loading the sim backend on no device")
ACTOR_PREFIX = re.compile(r"\((ray-\d+) pid=(\d+)\)")


def actors_saying(engine, said: tuple[str, str, str]) -> set[tuple[str, int]]:
    """(worker id, pid) of the engine's actors that logged a JSON record (logger, level, message) `said`, as Ray
    forwarded it: after a prefix that names the worker and its pid, as the record itself does."""
    actors = set()
    for line in engine.log_path.read_text().splitlines():
        forwarded = ACTOR_PREFIX.search(line)
        if forwarded and "{" in line:
            record = json.loads(line[line.index("{") :])  # whole: nothing of Ray's appended
            assert (record["worker"], record["pid"]) == (forwarded[1], int(forwarded[2])), line
            if (record["logger"], record["level"], record["message"]) == said:
                actors.add((forwarded[1], record["pid"]))
    return actors


def assert_the_ray_processes_are_not_handed_the_api_key(engine, actor_pid: int) -> None:
    """The engine was started with the API key in its environment: its Ray instance (the GCS, the raylet, ...) and its
    actor, which inherit the rest of that environment, are not."""
    key = b"\0%s=" % API_KEY_ENV.encode()
    assert key in read_environment(engine.process.pid)
    ray_processes = {actor_pid: "the actor"} | {pid: read_command(pid) for pid in children_of(engine.process.pid)}
    environments = {pid: read_environment(pid) for pid in ray_processes}
    # an environment that could not be read holds no key: those that matter most were read
    read = " ".join(command for pid, command in ray_processes.items() if b"\0PATH=" in environments[pid])
    assert "the actor" in read and "gcs_server" in read and "raylet/raylet" in read, ray_processes
    holding = [command for pid, command in ray_processes.items() if key in environments[pid]]
    assert holding == [], holding


def test_a_worker_whose_actor_ray_counts_ended_is_refused_not_served_beside_its_replacement(tmp_path, monkeypatch):
    # the raylet killed: Ray counts its node lost and the actor ended, but the actor's process runs on (as it does on
    # a node cut off from the head) and would say hello again, serving beside the actor that takes its slot. Lost
    # once the GCS's health checks of the raylet have failed a few times in a row: 2, every 0.5 s here (Ray's 5, every
    # 3 s, took 13 s or more); a killed raylet fails each at once, a live one only by not answering within 10 s
    monkeypatch.setenv("RAY_health_check_period_ms", "500")
    monkeypatch.setenv("RAY_health_check_failure_threshold", "2")
    engine = start_engine(tmp_path, "--launcher", "ray", workers=1, backend="sim")
    try:
        (worker,) = engine.ready()["workers"]
        (raylet,) = (pid for pid in children_of(engine.process.pid) if "raylet/raylet" in read_command(pid))
        os.kill(raylet, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while "refusing worker" not in engine.log() and time.monotonic() < deadline:
            assert engine.process.poll() is None, engine.log()
            time.sleep(0.2)
        assert f"pid {worker['pid']} is not the live Ray actor of ray-0" in engine.log()
        assert engine.ready()["workers"] == []
    finally:
        engine.stop()


def test_a_worker_started_by_hand_under_an_actors_id_is_told_the_id_is_the_slots(tmp_path, ray_cluster):
    """It was told `pid N is not the live Ray actor of ray-0 (Ray counts its actor ended)`, while that actor served."""
    keys = tmp_path / "keys"
    _, engine_secret = create_key_files(keys / "engine", "engine")
    _, worker_secret = create_key_files(keys / "workers", "worker")
    (keys / "clients").mkdir()
    curve = ("--curve-secret", str(engine_secret), "--curve-allow", str(keys / "clients"))
    curve += ("--curve-allow-workers", str(keys / "workers"))
    ray = ("--launcher", "ray", "--ray-address", ray_cluster)
    engine = start_engine(tmp_path, *ray, *curve, workers=1, backend="sim")
    worker_curve = ("--curve-key", str(worker_secret), "--curve-server-key", str(keys / "engine" / "engine.key"))
    worker = start_worker(engine.worker_address, "sim", "--worker-id", "ray-0", *worker_curve, stderr=subprocess.PIPE)
    try:
        _, said = worker.communicate(timeout=60)
        assert worker.returncode == 2, said
        assert "worker id 'ray-0' is this engine's own Ray actor slot: give this worker another" in said.decode()
        assert [worker["name"].partition("/")[0] for worker in engine.ready()["workers"]] == ["ray-0"]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        engine.stop()


def read_environment(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as environment:
            return b"\0" + environment.read()
    except OSError:  # it ended meanwhile
        return b""
