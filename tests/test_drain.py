"""SIGTERM, or Ctrl-C in a terminal, drains: readiness drops, new work is refused, in-flight work finishes, no process
is left."""

import asyncio
import os
import signal
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import openai
import pytest
import zmq
from openai import OpenAI
from process_checks import process_running
from waiting import eventually, wait_for

from engine.client import AsyncArgusClient
from engine.system.proc_reads import local_workers_of
from engine_process import slow_reading_client, start_engine, start_worker
from loadgen.clients import HttpLoadClient, Planned, RequestOptions
from protocols.client_messages import Cancelled, Error, Generate, Images, client_side_codec

# the tests marked own_engine find theirs started while the tests before them ran (tests/engines_ahead.py)
pytestmark = pytest.mark.usefixtures("engines_ahead")


def stop_with_sigterm(engine) -> None:
    engine.process.send_signal(signal.SIGTERM)


def stop_with_group_sigterm(engine) -> None:
    """What systemd's stop does (KillMode=control-group, its default): SIGTERM to every process of the service, the
    engine's workers too; so does `kill -TERM -PGID`."""
    os.killpg(engine.process.pid, signal.SIGTERM)  # the engine leads its own group (start_engine)


def stop_with_ctrl_c(engine) -> None:
    """What a terminal does: SIGINT to the whole foreground group, the engine's workers too."""
    os.killpg(engine.process.pid, signal.SIGINT)  # the engine leads its own group (start_engine)


def admitted(engine, images: int) -> bool:
    """Whether the engine holds `images` images admitted and not yet answered."""
    return engine.metric("argus_queued_images") == images


def draining(engine) -> bool:
    return engine.get("/ready")[0] == 503


def workers_gone(workers: list[int]) -> bool:
    return not [pid for pid in workers if process_running(pid)]


@contextmanager
def killed_on_failure(engine):
    """For a test that stops its engine itself: one that fails first leaves neither the engine nor a worker."""
    try:
        yield
    except BaseException:
        os.killpg(engine.process.pid, signal.SIGKILL)  # its group: its workers too (start_engine)
        engine.process.wait()
        raise


async def stop_with_four_in_flight(engine, client: AsyncArgusClient, stop) -> list[asyncio.Task]:
    """Asks for four images and, once the engine holds them, stops it; returns the four calls once it drains."""
    in_flight = [asyncio.create_task(client.generate(f"p{i}", width=64, height=64)) for i in range(4)]
    assert await eventually(lambda: admitted(engine, 4), timeout_s=30)
    stop(engine)
    assert await eventually(lambda: draining(engine), timeout_s=30)
    return in_flight


def assert_exited_cleanly(engine, workers: list[int]) -> None:
    assert engine.process.wait(timeout=60) == 0
    assert "Traceback" not in engine.log()  # the workers too: they share the engine's output
    assert wait_for(lambda: workers_gone(workers)), "a worker outlived its engine"


def with_four_in_flight(stop):
    # an image takes about 1.25 s: the stop is handled long before the four are made (within milliseconds of their
    # admission, on a machine at rest)
    in_flight = pytest.mark.own_engine("--time-scale", "0.25", "--shutdown-timeout", "30", backend="sim")
    return pytest.param(stop, marks=in_flight, id=stop.__name__)


@pytest.mark.parametrize(
    "stop", [with_four_in_flight(stop) for stop in (stop_with_sigterm, stop_with_group_sigterm, stop_with_ctrl_c)]
)
def test_a_stop_finishes_in_flight_work_and_leaves_no_worker(own_engine, stop):
    engine = own_engine
    workers = local_workers_of(engine.process.pid)
    assert len(workers) == 2

    async def scenario():
        async with AsyncArgusClient(engine.client_address) as client:
            in_flight = await stop_with_four_in_flight(engine, client, stop)
            unanswered_in_the_drain = engine.metric("argus_queued_images")
            refused = await client.generate("too late", width=64, height=64)
            return unanswered_in_the_drain, refused, await asyncio.wait_for(asyncio.gather(*in_flight), 60)

    with killed_on_failure(engine):
        unanswered_in_the_drain, refused, replies = asyncio.run(scenario())
    assert unanswered_in_the_drain > 0  # the stop found work in flight
    assert isinstance(refused, Error) and refused.code == "shutting_down"
    assert all(isinstance(reply, Images) for reply in replies)
    # by the workers that ran them: a group's SIGTERM stopped each at its next step, and the drain started them
    # again to make the images over from the first step (a model load first, minutes for SD-XL)
    assert "restarting" not in engine.log() and "lost" not in engine.log()
    assert_exited_cleanly(engine, workers)


@pytest.mark.own_engine("--time-scale", "1", "--max-batch", "1", "--shutdown-timeout", "120", backend="sim", workers=1)
def test_ctrl_c_pressed_again_during_the_drain_cancels_the_work_left_at_once(own_engine):
    """Before, the second Ctrl-C was ignored and the engine waited for the work in flight (about 20 s here) all the
    same; each request is still answered, once."""
    engine = own_engine
    workers = local_workers_of(engine.process.pid)

    async def scenario():
        async with AsyncArgusClient(engine.client_address) as client:
            in_flight = await stop_with_four_in_flight(engine, client, stop_with_ctrl_c)
            stop_with_ctrl_c(engine)
            return await asyncio.wait_for(asyncio.gather(*in_flight), 60)

    with killed_on_failure(engine):
        replies = asyncio.run(scenario())
    assert all(isinstance(reply, (Images, Cancelled)) for reply in replies)
    assert any(isinstance(reply, Cancelled) for reply in replies)  # 4 images of about 5 s each, one at a time
    assert_exited_cleanly(engine, workers)
    cancelled = sum(isinstance(reply, Cancelled) for reply in replies)
    assert f"second stop signal: cancelled the {cancelled} images in flight ({cancelled} requests" in engine.log()


@pytest.mark.own_engine("--time-scale", "0", backend="sim", workers=1)
def test_replies_written_before_a_stop_reach_a_client_that_reads_slowly(own_engine):
    engine = own_engine
    codec = client_side_codec()
    context = zmq.Context()
    client = slow_reading_client(context, engine.client_address)
    try:
        requests = 20
        for i in range(requests):
            big = Generate(f"r{i}", f"a big picture {i}", n=10, width=2048, height=2048, output_format="jpeg")
            client.send_multipart(codec.encode(big))
        deadline = time.monotonic() + 60
        while engine.metric("argus_requests_total", outcome="ok", code="") < requests:
            assert time.monotonic() < deadline, "the engine did not answer"
            time.sleep(0.2)
        stop_with_sigterm(engine)
        received = []  # read while the engine stops, however long it pauses between replies (a loaded machine)
        while (len(received) < requests and client.poll(30_000)) or client.poll(500):
            received.append(codec.decode(client.recv_multipart()))
        assert engine.process.wait(timeout=60) == 0
        assert sorted(reply.request_id for reply in received) == sorted(f"r{i}" for i in range(requests))
    finally:
        client.close(linger=0)
        context.term()


@pytest.mark.own_engine("--shutdown-timeout", "0", "--max-queue", "1000", workers=0, backend="sim")
def test_a_client_gets_every_reply_when_the_drain_cancels_all_its_requests_at_once(own_engine):
    """A client may have --max-queue requests admitted, and the end of a drain answers them all in one go: before,
    a client that had left some images unread (fewer than the 256 of one that does not read) lost most of them."""
    images, waiting = 100, 900
    engine = own_engine
    worker = start_worker(engine.worker_address, "sim", "--time-scale", "0", "--worker-id", "by-hand")
    codec = client_side_codec()
    context = zmq.Context()
    client = slow_reading_client(context, engine.client_address)
    try:
        engine.wait_ready(1, timeout_s=60)
        for i in range(images):  # large: left unread, they fill the connection
            client.send_multipart(codec.encode(Generate(f"i{i}", f"a big picture {i}", width=2048, height=2048)))
        deadline = time.monotonic() + 60
        while engine.metric("argus_requests_total", outcome="ok", code="") < images:
            assert time.monotonic() < deadline, "the engine did not answer"
            time.sleep(0.2)
        worker.send_signal(signal.SIGTERM)  # the rest wait for a worker until the drain cancels them
        assert worker.wait(timeout=30) == 0
        for i in range(waiting):
            client.send_multipart(codec.encode(Generate(f"w{i}", f"a fox {i}", width=64, height=64)))
        while engine.metric("argus_queued_images") < waiting:
            assert time.monotonic() < deadline, "the engine did not admit them all"
            time.sleep(0.2)
        stop_with_sigterm(engine)
        received = []  # as above
        while (len(received) < images + waiting and client.poll(30_000)) or client.poll(500):
            received.append(codec.decode(client.recv_multipart()))
        assert engine.process.wait(timeout=60) == 0
        assert Counter(type(reply) for reply in received) == {Images: images, Cancelled: waiting}
        assert len({reply.request_id for reply in received}) == images + waiting
        # the log said only how many images the drain began with, then "engine stopped"
        said = f"--shutdown-timeout (0 s) reached: cancelled the {waiting} images in flight ({waiting} requests, each"
        assert said in engine.log()
    finally:
        client.close(linger=0)
        context.term()
        if worker.poll() is None:
            worker.kill()


def test_workers_exit_when_the_engine_is_killed(tmp_path):
    engine = start_engine(tmp_path, backend="sim")
    workers = local_workers_of(engine.process.pid)
    assert len(workers) == 2
    engine.process.send_signal(signal.SIGKILL)
    engine.process.wait()
    assert wait_for(lambda: workers_gone(workers), timeout_s=20)


# an exact image takes about 5 s; the drain gives in-flight work no time at all
@pytest.mark.own_engine("--time-scale", "1", "--shutdown-timeout", "0", backend="sim", workers=1)
def test_work_cancelled_at_the_end_of_a_drain_is_a_cancelled_reply_over_http_too(own_engine):
    engine = own_engine

    async def scenario():
        client = HttpLoadClient(engine.http, RequestOptions(64, 64))
        try:
            in_flight = asyncio.create_task(
                client.request(Planned(0, 0, "a fox", 0.0, None), time.perf_counter(), None)
            )
            assert await eventually(lambda: engine.metric("argus_running_images") == 1, timeout_s=30)
            stop_with_sigterm(engine)
            return await asyncio.wait_for(in_flight, 60)
        finally:
            await client.close()

    with killed_on_failure(engine):
        record = asyncio.run(scenario())
    assert (record["outcome"], record["status"], record["code"]) == ("cancelled", 503, "cancelled")
    assert engine.process.wait(timeout=60) == 0


# an image at the sim backend's default size takes about 5 s: the drain outlasts the requests made during it
@pytest.mark.own_engine("--time-scale", "1", "--shutdown-timeout", "60", backend="sim", workers=1)
def test_each_answer_of_a_draining_engine_closes_its_connection(own_engine):
    """An OpenAI client retries a 503 shutting_down on the connection its pool keeps alive: behind a load balancer
    that ties each connection to one engine, every retry reached the draining engine again, and the request failed
    while other engines served. Closed, the connection is opened anew for the retry."""
    engine = own_engine

    def client() -> OpenAI:
        return OpenAI(base_url=engine.http + "/v1", api_key="unused", max_retries=0, timeout=60)

    pooled = client()
    pooled.images.generate(prompt="a fox", size="64x64", extra_body={"num_inference_steps": 1})  # kept alive
    with killed_on_failure(engine), ThreadPoolExecutor(1) as running:
        in_flight = running.submit(client().images.with_raw_response.generate, prompt="a long one")
        assert wait_for(lambda: admitted(engine, 1))
        stop_with_sigterm(engine)
        assert wait_for(lambda: draining(engine))
        with pytest.raises(openai.InternalServerError) as raised:
            pooled.images.generate(prompt="too late", size="64x64")
        assert raised.value.code == "shutting_down"
        assert raised.value.response.headers["Connection"] == "close"
        # the work in flight is answered: its client's next request, too, goes where a balancer sends it
        assert in_flight.result(timeout=60).headers["Connection"] == "close"
    assert engine.process.wait(timeout=60) == 0


@pytest.fixture(scope="module", autouse=True)
def stopped_beside_a_trickling_client(tmp_path_factory):
    """An engine stopped while a client still sends its request body, as (whether it served on beside the client, the
    stop: its exit status once it ends). Begun with the module (autouse): the stop waits out the engine's flush of HTTP
    responses (10 s, engine/server.py) for that client, while the tests before the one that reads it run."""
    engine = start_engine(tmp_path_factory.mktemp("trickling"), "--time-scale", "0", backend="sim", workers=1)
    host, port = engine.http.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as trickling, ThreadPoolExecutor(1) as stopping:
        trickling.sendall(
            b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"pro'
        )
        served_beside_it = engine.ready()["ready"]
        # past 30 s the engine is killed (-9): well within it the stop ends, well outside aiohttp's 60 s
        yield served_beside_it, stopping.submit(engine.stop, timeout_s=30)


def test_a_client_still_sending_its_body_does_not_hold_the_stop(stopped_beside_a_trickling_client):
    """The drain refuses it; it held the exit for aiohttp's default 60 s, as long as a response being written."""
    served_beside_it, stop = stopped_beside_a_trickling_client
    assert served_beside_it  # the engine serves on beside it
    assert stop.result() == 0


def test_a_stop_deletes_its_ipc_socket_files(tmp_path):
    """libzmq leaves a socket file at an ipc:// path it stops listening on: a stopped engine's --client-listen and
    --worker-listen paths stayed, sockets nobody listened on, until the next engine on them."""
    clients, workers = tmp_path / "clients", tmp_path / "workers"
    listen = ("--client-listen", f"ipc://{clients}", "--worker-listen", f"ipc://{workers}")
    # --time-scale 0: the image only shows the paths served (at the sim's default, it took 5 s)
    engine = start_engine(tmp_path, *listen, "--time-scale", "0", backend="sim")
    with killed_on_failure(engine):
        reply = asyncio.run(generate_once(f"ipc://{clients}"))
        assert isinstance(reply, Images)
        assert clients.is_socket() and workers.is_socket()
        assert engine.stop() == 0
    assert not clients.exists() and not workers.exists()


def test_a_stop_leaves_the_socket_file_another_engine_made_at_its_path(tmp_path):
    """A path whose file was deleted under the engine (by hand, a tmp cleaner) and bound anew by another is the other's
    at the first's stop: deleting it would leave the second serving where no client can reach it."""
    clients = tmp_path / "clients"
    first = start_engine(tmp_path, "--client-listen", f"ipc://{clients}", backend="sim", workers=0, wait=False)
    with killed_on_failure(first):
        assert wait_for(clients.exists, timeout_s=60)
        clients.unlink()
        second = start_engine(
            tmp_path, "--client-listen", f"ipc://{clients}", "--time-scale", "0", backend="sim", workers=1
        )
    with killed_on_failure(second):
        assert first.stop() == 0  # which ends it whatever happens
        assert clients.is_socket()
        assert isinstance(asyncio.run(generate_once(f"ipc://{clients}")), Images)
        assert second.stop() == 0
    assert not clients.exists()


async def generate_once(address: str):
    async with AsyncArgusClient(address) as client:
        return await asyncio.wait_for(client.generate("a lighthouse", width=64, height=64), 60)
