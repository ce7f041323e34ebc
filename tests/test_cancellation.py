"""A client that goes away (HTTP) or cancels (ZeroMQ) aborts its request, queued or running."""

import asyncio
import json
import threading

import openai
import pytest
from waiting import eventually, wait_for

from controller.similarity import SimilarityTable
from engine.client import AsyncArgusClient
from engine_process import start_engine
from protocols.worker_messages import ItemCancelled, ItemDone
from workers.runtime import WorkerRuntime
from workers.sim_backend import SimBackend


class RecordingSim:
    """The sim backend, one image at a time of about 5 s, keeping what each of its runs answered: a running image
    cut short is seen where it happens, not guessed from how soon its worker was free again."""

    def __init__(self):
        self._inner = SimBackend(SimilarityTable.bundled("hash"), time_scale=1.0, max_batch=1)
        self.started = 0
        self.runs = []  # the outcomes of each run, once it returned

    def describe(self):
        return self._inner.describe()

    def run(self, batch, control):
        self.started += 1
        outcomes = self._inner.run(batch, control)
        self.runs.append(outcomes)
        return outcomes


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """An engine and its one worker, run here; each test leaves it idle."""
    engine = start_engine(tmp_path_factory.mktemp("cancellation"), workers=0, backend="sim", wait=False)
    backend = RecordingSim()
    runtime = WorkerRuntime(backend, engine.worker_address, "recording")
    serving = threading.Thread(target=runtime.serve, daemon=True)
    serving.start()
    try:
        engine.wait_ready(1, timeout_s=60)
        yield engine, backend
    finally:
        runtime.stop()
        serving.join(30)
        assert engine.stop() == 0


def counts(engine) -> tuple[float, float]:
    """Requests cancelled, and images made at level 0, so far."""
    cancelled = engine.metric("argus_requests_total", outcome="cancelled", code="")
    return cancelled, engine.metric("argus_images_total", level="0")


def ran(backend: RecordingSim, since: int) -> list[list[type]]:
    """What each run from the `since`th on answered, by kind."""
    return [[type(outcome) for outcome in outcomes] for outcomes in backend.runs[since:]]


async def send_request(engine) -> asyncio.StreamWriter:
    host, port = engine.http.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    body = json.dumps({"prompt": "a slow one", "size": "64x64"}).encode()
    writer.write(
        b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    return writer


async def hang_up(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()


def test_http_client_disconnect_aborts_running_and_queued_requests(served):
    engine, backend = served
    (cancelled, made), runs = counts(engine), len(backend.runs)

    async def scenario():
        running = await send_request(engine)
        assert await eventually(lambda: backend.started > runs, timeout_s=30)
        queued = await send_request(engine)
        assert await eventually(lambda: engine.metric("argus_queued_images") == 2, timeout_s=30)
        await asyncio.gather(hang_up(running), hang_up(queued))

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert wait_for(engine.idle, timeout_s=60)
    # the running image was cut short, and the queued one never ran
    assert ran(backend, runs) == [[ItemCancelled]]
    assert wait_for(lambda: counts(engine)[0] == cancelled + 2)
    assert counts(engine) == (cancelled + 2, made)


def test_an_openai_client_giving_up_at_its_timeout_has_each_try_cancelled(served):
    """The OpenAI client closes its connection when its read timeout passes (a response half read cannot be reused),
    then retries: the try it gave up on is cancelled at that close, and its retry does not wait behind it. Why the
    engine needs no deadline made of the X-Stainless-Read-Timeout header that client sends (docs/reliability.md)."""
    engine, backend = served
    (cancelled, made), runs = counts(engine), len(backend.runs)
    # an image takes about 5 s: each try gives up before its own is made
    client = openai.OpenAI(base_url=engine.http + "/v1", api_key="unused", max_retries=1, timeout=1.0)
    with pytest.raises(openai.APITimeoutError):
        client.images.generate(prompt="a slow one", size="64x64")
    assert wait_for(lambda: counts(engine)[0] == cancelled + 2)
    assert wait_for(engine.idle, timeout_s=60)
    # a try that was running was cut short, one still queued never ran
    assert all(outcomes == [ItemCancelled] for outcomes in ran(backend, runs))
    assert counts(engine) == (cancelled + 2, made)


def test_zmq_cancel_aborts_the_running_request(served):
    engine, backend = served
    (cancelled, made), runs = counts(engine), len(backend.runs)

    async def scenario():
        async with AsyncArgusClient(engine.client_address) as client:
            task = asyncio.create_task(client.generate("a slow one", width=64, height=64))
            assert await eventually(lambda: backend.started > runs, timeout_s=30)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # of one step (about 0.1 s, not 5): that it is made counts, not how long it takes
            return await asyncio.wait_for(client.generate("next", width=64, height=64, steps=1), 60)

    reply = asyncio.run(scenario())
    assert reply.images[0].level == 0
    # the first image was cut short, the next one made
    assert ran(backend, runs) == [[ItemCancelled], [ItemDone]]
    assert counts(engine) == (cancelled + 1, made + 1)
    assert wait_for(engine.idle)
