"""A worker that is up and beating but fails every batch (a GPU in a bad CUDA state, out of memory at every batch, a
broken model folder on one host, a build that answers images of another size) answers at once, so it was idle more
often than the healthy workers and was routed more of the traffic: beside one healthy sim worker it failed 90 of
100 requests. Now 3 failed batches in a row take it out of rotation: a worker the engine started is restarted, one
started by hand is routed nothing for 10 s and then given batches again, on probation."""

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from dispatcher_harness import TWO_LEVELS, Harness
from waiting import eventually, wait_for

from engine.client import ArgusClient
from engine.config import LaunchConfig
from engine.dispatch import failing_workers
from engine.dispatch.failing_workers import FAILING_AFTER
from engine.dispatch.jobs import Fallback
from engine.fleet.registry import WorkerHandle
from engine.fleet.restart_backoff import GIVE_UP_AFTER
from engine.server import Engine
from engine_process import in_process_config, start_engine, stop_in_process
from protocols.client_messages import Images
from protocols.worker_messages import REFUSED, BatchDone, ItemCancelled, ItemFailed
from protocols.worker_messages import Generate as Batch

FAILING_WORKER = Path(__file__).parent / "failing_worker.py"
PROMPTS = itertools.count()
# a batch may go to the worker behind the one whose failure takes it out (two in flight: engine/config.py)
MOST_FAILED = FAILING_AFTER + 1
# the healthy sim workers' images in about 25 ms: slower still than the failing worker's answers, which without the
# take-out failed 92 of 100 requests at this scale
TIME_SCALE = 0.005


def serve(address: str, requests: int = 100, clients: int = 4) -> tuple[Counter, Counter]:
    """`requests` requests from `clients` clients, each sending its share one after the other: the replies by outcome
    (images, or the error's code), and the images by the worker's id (its name up to the /)."""
    outcomes, makers = Counter(), Counter()

    def client(number: int) -> None:
        with ArgusClient(address, timeout_s=60) as argus:
            for i in range(requests // clients):
                reply = argus.generate(f"a lighthouse at dusk, {number}.{i}", width=64, height=64)
                if isinstance(reply, Images):
                    outcomes["images"] += 1
                    makers[reply.images[0].worker.split("/")[0]] += 1
                else:
                    outcomes[reply.code] += 1

    threads = [threading.Thread(target=client, args=(number,)) for number in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes, makers


def states(engine) -> dict[str, str]:
    return {w["name"].split("/")[0]: w["state"] for w in engine.ready()["workers"]}


@contextlib.contextmanager
def taken_out_by_hand(tmp_path, answer: str):
    """An engine with one healthy sim worker beside one started by hand that fails every batch (`answer`) until the
    file it is given exists: yields the engine, once 100 requests took that one out of rotation, and that file."""
    engine = start_engine(tmp_path, "--time-scale", str(TIME_SCALE), workers=1, backend="sim")
    healed = tmp_path / "healed"
    command = [sys.executable, str(FAILING_WORKER), "--connect", engine.worker_address, "--worker-id", "by-hand"]
    bad = subprocess.Popen([*command, "--answer", answer, "--heal-when", str(healed)])
    try:
        engine.wait_ready(2, timeout_s=60)
        outcomes, makers = serve(engine.client_address)
        # before: 87 to 90 worker_error
        assert outcomes["worker_error"] <= MOST_FAILED and outcomes["images"] == 100 - outcomes["worker_error"]
        assert set(outcomes) <= {"images", "worker_error"} and set(makers) == {"local-0"}, (outcomes, makers)
        assert states(engine) == {"local-0": "ready", "by-hand": "failing"}
        assert engine.ready()["ready"] is True
        assert engine.metric("argus_workers", state="failing") == 1
        assert engine.metric("argus_workers", state="ready") == 1
        assert wait_for(lambda: "by-hand/00000001 failed 3 batches in a row: out of rotation for 10 s" in engine.log())
        yield engine, healed
    finally:
        bad.kill()
        bad.wait()
        assert engine.stop() == 0


@pytest.mark.timeout(180)
def test_a_worker_started_by_hand_that_answers_images_of_another_size_is_taken_out(tmp_path):
    """It answers images of half the size asked, which the engine fails with worker_error: taken out as one whose
    images failed is (its probation after, the same once out, is the module's last test's)."""
    with taken_out_by_hand(tmp_path, "small"):
        pass


@pytest.mark.timeout(180)
def test_one_taken_out_is_put_back_at_once_when_no_other_worker_is_left(tmp_path):
    """Its failures answered at once beat requests that wait for no_worker."""
    engine = start_engine(tmp_path, "--time-scale", str(TIME_SCALE), workers=1, backend="sim")
    command = [sys.executable, str(FAILING_WORKER), "--connect", engine.worker_address, "--worker-id", "by-hand"]
    bad = subprocess.Popen(command)
    try:
        engine.wait_ready(2, timeout_s=60)
        serve(engine.client_address, requests=20)
        assert states(engine) == {"local-0": "ready", "by-hand": "failing"}
        (healthy,) = [w["pid"] for w in engine.ready()["workers"] if w["name"].startswith("local-0/")]
        os.kill(healthy, signal.SIGKILL)
        put_back = re.compile(r"by-hand/00000001 back in rotation after \d+ s out, no other worker being in rotation")
        # the line says "no other worker" only for one put back before its time was up
        assert wait_for(lambda: put_back.search(engine.log()), 30), engine.log()
    finally:
        bad.kill()
        bad.wait()
        assert engine.stop() == 0


def local_0_spawns(monkeypatch, then_cannot_serve: bool = False) -> list:
    """The processes the launcher starts for slot local-0, recorded: the first fails every batch; those after it are
    healthy sim workers, or (`then_cannot_serve`) exit 2 at once, as a worker that cannot serve as configured does."""
    spawned = []
    create = asyncio.create_subprocess_exec

    async def recorded(*args, **kwargs):
        if "local-0" not in args:
            return await create(*args, **kwargs)
        if not spawned:
            # `python -m engine.cli worker --connect ...`: the same flags, to the failing worker
            args = (sys.executable, str(FAILING_WORKER), *args[args.index("--connect") :])
        elif then_cannot_serve:
            args = (sys.executable, "-c", "raise SystemExit(2)")
        spawned.append(await create(*args, **kwargs))
        return spawned[-1]

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recorded)
    return spawned


async def test_a_local_worker_that_fails_every_batch_is_restarted(monkeypatch, tmp_path, caplog):
    """The engine's own worker is killed and started again through its launcher, which stands in a healthy one."""
    spawned = local_0_spawns(monkeypatch)
    launch = LaunchConfig(count=2, backend="sim", time_scale=TIME_SCALE, restart_backoff_s=0.1)
    engine = Engine(in_process_config(tmp_path, launch=launch))
    running = asyncio.create_task(engine.run())
    try:
        assert await eventually(lambda: spawned and len(engine.registry.registered()) == 2, timeout_s=60)
        bad = spawned[0]
        outcomes, makers = await asyncio.to_thread(serve, f"ipc://{tmp_path}/clients")
        # before: 87 worker_error
        assert outcomes["worker_error"] <= MOST_FAILED and outcomes["images"] == 100 - outcomes["worker_error"]
        assert "local-0/00000001 failed 3 batches in a row: restarting it" in caplog.text
        assert engine.metrics.registry.get_sample_value("argus_worker_losses_total", {"cause": "failing"}) == 1
        assert await eventually(lambda: bad.returncode is not None) and bad.returncode == -9

        # its slot is started again (a healthy sim worker, here), and serves
        def both_serve() -> bool:
            pids = [w.hello.pid for w in engine.registry.registered()]
            return len(pids) == 2 and bad.pid not in pids

        assert await eventually(both_serve, timeout_s=60)
        _, makers = await asyncio.to_thread(serve, f"ipc://{tmp_path}/clients", 20)
        assert set(makers) == {"local-0", "local-1"}, makers
    finally:
        await stop_in_process(engine, running, spawned)


async def test_a_failing_slot_whose_restart_is_given_up_no_longer_counts_as_out(monkeypatch, tmp_path, caplog):
    """local-0 fails every batch and is restarted, but cannot start again and its launcher gives the slot up. It
    counted as restarting for ever: with local-1 and a failing worker left, taking that one out made 2 out of a fleet
    counted as 3, over half, and it was never taken out. The fleet is 2 now, and one of them may be out."""
    spawned = local_0_spawns(monkeypatch, then_cannot_serve=True)
    launch = LaunchConfig(count=2, backend="sim", time_scale=TIME_SCALE, restart_backoff_s=0.1)
    engine = Engine(in_process_config(tmp_path, launch=launch))
    running = asyncio.create_task(engine.run())
    by_hand = None
    try:
        assert await eventually(lambda: spawned and len(engine.registry.registered()) == 2, timeout_s=60)
        await asyncio.to_thread(serve, f"ipc://{tmp_path}/clients", 40)
        assert "local-0/00000001 failed 3 batches in a row: restarting it" in caplog.text
        assert await eventually(lambda: "worker local-0 exited with 2 before its hello" in caplog.text, timeout_s=60)
        assert [process.returncode for process in spawned] == [-9] + [2] * GIVE_UP_AFTER

        worker = [
            sys.executable,
            str(FAILING_WORKER),
            "--connect",
            f"ipc://{tmp_path}/workers",
            "--worker-id",
            "by-hand",
        ]
        by_hand = subprocess.Popen(worker)
        assert await eventually(lambda: len(engine.registry.registered()) == 2, timeout_s=60)
        outcomes, _ = await asyncio.to_thread(serve, f"ipc://{tmp_path}/clients", 40)
        # before: 33 to 35 of the 40 worker_error (3 now)
        assert outcomes["worker_error"] <= MOST_FAILED, outcomes
        assert "by-hand/00000001 failed 3 batches in a row: out of rotation for 10 s" in caplog.text
    finally:
        if by_hand is not None:
            by_hand.kill()
            by_hand.wait()
        await stop_in_process(engine, running, spawned)


def handle() -> WorkerHandle:
    return WorkerHandle(b"w/1", None, 0, 0.0)


def test_failed_batches_in_a_row_take_a_worker_out_and_an_image_resets_the_count():
    """`failed`: what was asked of each image failed (each request a number here)."""
    worker = handle()
    assert not failing_workers.judge(worker, made=False, failed=[0])
    assert not failing_workers.judge(worker, made=False, failed=[])  # all aborted or left out: no news
    assert not failing_workers.judge(worker, made=True, failed=[1])  # one image made: the worker can serve
    for request in range(FAILING_AFTER - 1):
        assert not failing_workers.judge(worker, made=False, failed=[request])
    assert failing_workers.judge(worker, made=False, failed=[FAILING_AFTER])


def test_a_worker_taken_out_in_a_row_stays_out_twice_as_long_each_time_until_an_image():
    worker = handle()
    for request in range(FAILING_AFTER):
        failing_workers.judge(worker, made=False, failed=[request])
    outs = []
    for now in range(8):
        failing_workers.take_out(worker, now)
        outs.append(worker.back_at - now)
        # one failed batch on probation: out again
        assert failing_workers.judge(worker, made=False, failed=[FAILING_AFTER + now])
    assert outs == [10, 20, 40, 80, 160, 300, 300, 300]
    assert not failing_workers.judge(worker, made=True, failed=[])
    failing_workers.take_out(worker, 0.0)
    assert worker.back_at == 10


async def test_a_worker_out_again_after_probation_is_said_to_have_failed_every_batch_since_its_last_image(caplog):
    """Its count stands while it is out: the line taking it out again counted 3 batches whatever it had failed."""
    h, workers, answered = taken_out_for_failing()
    assert "worker b failed 3 batches in a row: out of rotation for 10 s" in caplog.messages[-1]
    h.clock.now += 10
    h.dispatcher.sweep()
    assert workers["b"].ready
    while workers["b"].ready:
        another_request(h)
        answer_new_batches(h, workers, answered, failing={"b"})
    assert "worker b failed 4 batches in a row: out of rotation for 20 s" in caplog.messages[-1]


@pytest.mark.parametrize("answer", ["aborted", "lost on the link", "refused"])
async def test_a_batch_that_says_nothing_of_a_worker_on_probation_keeps_it_in_rotation(answer):
    """Back in rotation, a worker whose next batch failed nothing and made nothing (its request cancelled, the batch
    lost on the link or not the worker's to run) was taken out again for twice as long, said to have failed the
    batches it had failed before."""
    h, workers, answered = taken_out_for_failing()
    h.clock.now += 10
    h.dispatcher.sweep()
    assert workers["b"].ready
    sent = len(h.batches("b"))
    while len(h.batches("b")) == sent:  # a serves what it is sent until b is sent one
        request = h.request()
        for batch in h.batches("a"):
            if batch.batch_id not in answered:
                answered.add(batch.batch_id)
                h.finish(workers["a"], batch)
    (batch,) = h.batches("b")[sent:]
    job_id = batch.items[0].request_id
    outcomes = {
        "aborted": [ItemCancelled(job_id)],
        "lost on the link": [],
        "refused": [ItemFailed(job_id, REFUSED, "not a size this worker runs")],
    }[answer]
    h.dispatcher.cancel(request)
    h.dispatcher.batch_done(workers["b"], BatchDone(batch.batch_id, outcomes))
    assert workers["b"].ready


async def test_a_worker_lost_while_out_of_rotation_leaves_the_others_serving():
    """Its heartbeats stop while it is out: the workers still in rotation take every request, and it is counted
    neither in rotation nor out of it."""
    h, workers, answered = taken_out_for_failing()
    h.dispatcher.worker_lost(workers["b"], "heartbeat")
    assert h.registry.in_rotation == 1 and h.registry.taken_out() == []
    assert h.metrics.registry.get_sample_value("argus_workers", {"state": "failing"}) == 0
    sent = len(h.batches("a"))
    request = h.request()
    answer_new_batches(h, workers, answered, failing=set())
    assert len(h.batches("a")) == sent + 1 and request.done


def another_request(h: Harness):
    """A request that asks what no other did: a worker that failed one is not judged again for failing its retry
    (failing_workers.Asked)."""
    return h.request(prompt=f"a lighthouse, {next(PROMPTS)}")


def taken_out_for_failing() -> tuple[Harness, dict, set]:
    """Workers a and b started by hand, b taken out of rotation for failing every batch it was sent while a served:
    the harness, the workers by name, and the ids of the batches answered."""
    h = Harness()
    h.dispatcher.restart = lambda worker: False  # started by hand
    workers = {name: h.add_worker(name, max_batch=1) for name in "ab"}
    answered = set()
    while workers["b"].ready:  # b fails every batch it is sent, a serves
        another_request(h)
        answer_new_batches(h, workers, answered, failing={"b"})
    return h, workers, answered


def answer_new_batches(h: Harness, workers: dict, answered: set, failing: set[str]) -> None:
    """Answers each batch sent since the last call (`answered` holds the ids answered): every image failed on the
    workers named in `failing`, served on the others."""
    for name, batch in [(name, message) for name, message in h.sent if isinstance(message, Batch)]:
        if batch.batch_id in answered:
            continue
        answered.add(batch.batch_id)
        if name in failing:
            failed = [ItemFailed(item.request_id, "cuda_error", "fails here") for item in batch.items]
            h.dispatcher.batch_done(workers[name], BatchDone(batch.batch_id, failed))
        else:
            h.finish(workers[name], batch)


async def test_at_most_half_the_fleet_is_taken_out_or_restarting_at_once():
    """Requests that fail on every worker (their own fault) must not empty the fleet: 2 of 5 out at most."""
    h = Harness()
    restarted = []

    def restart(worker: WorkerHandle) -> bool:  # "a" is the engine's own, the others started by hand
        restarted.append(worker.name)
        return worker.name == "a"

    h.dispatcher.restart = restart
    workers = {name: h.add_worker(name, max_batch=1) for name in "abcde"}
    answered = set()
    for _ in range(len(workers) * FAILING_AFTER * 2):
        another_request(h)
        answer_new_batches(h, workers, answered, failing=set(workers))
    assert restarted[0] == "a" and len(h.registry.taken_out()) == 1, (restarted, h.registry.taken_out())
    assert h.registry.in_rotation == 3


async def test_a_worker_taken_out_does_not_count_to_share_the_queued_work():
    """Whether a queued job makes its deadline is judged by the workers in rotation: counted, a worker taken out
    halved the wait ahead of a job, which stayed at its level to end late instead of moving up to make it."""
    h = Harness(profile=TWO_LEVELS, inflight_batches_per_worker=1, escalate=True)
    workers = {name: h.add_worker(name, max_batch=1) for name in "ab"}
    answered = set()
    while workers["b"].ready:  # b fails every batch it is sent, a serves
        another_request(h)
        answer_new_batches(h, workers, answered, failing={"b"})
    h.request(slo_ms=10_000)  # runs on a: 1 s
    h.request(slo_ms=2_500)  # queued, to start first: 1 s more
    # would start after 2 s and need 1 s more at level 0 (0.5 s at 25); shared by 2 workers, after 1.5 s
    late = h.request(slo_ms=2_700, fallbacks=(Fallback(25, 25, "latent-25"),))
    (job,) = late.jobs
    assert job.level == 25


@pytest.fixture(scope="module", autouse=True)
def probed(tmp_path_factory):
    """The test of the worker started by hand that fails every batch waits out its 10 s out of rotation: its engine
    is started, and that worker taken out and mended, in a thread from the module's start, so the wait runs while the
    other tests do (that test is the module's last). The engine, once its worker was taken out and mended."""
    held = contextlib.ExitStack()

    def taken_out_and_mended():
        engine, healed = held.enter_context(taken_out_by_hand(tmp_path_factory.mktemp("probed"), "failed"))
        healed.touch()
        return engine

    with held, concurrent.futures.ThreadPoolExecutor(1) as pool:
        yield pool.submit(taken_out_and_mended)


@pytest.mark.timeout(180)
def test_a_worker_started_by_hand_that_fails_every_batch_is_taken_out_then_probed(probed):
    """It says each image failed: the client gets worker_error, for 3 requests now."""
    engine = probed.result()  # taken out (taken_out_by_hand's checks), then mended
    # mended: after its 10 s it is given batches again, and an image puts it back for good
    assert wait_for(lambda: "by-hand/00000001 back in rotation after 10 s out" in engine.log(), 60), engine.log()
    assert engine.metric("argus_workers", state="failing") == 0
    served = Counter()
    for _ in range(10):
        served += serve(engine.client_address, requests=2, clients=2)[1]
    assert served["by-hand"] > 0, served
    assert states(engine) == {"local-0": "ready", "by-hand": "ready"}
