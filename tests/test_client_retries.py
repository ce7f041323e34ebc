"""`retries`: the engine.client classes send a request again after a Busy (once the time it names has passed), a
request_lost (at once), or an answer that the engine is stopping (after a backoff), as OpenAI's clients retry a 429 and
a 503; with none, the call returns that reply."""

import asyncio
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest
from waiting import wait_for

from engine.client import ArgusClient, AsyncArgusClient, ClientClosed
from engine.client.link import Retries
from engine_process import start_engine
from protocols.client_messages import Busy, Cancelled, Error, Generate, Images

# the tests marked own_engine find theirs started while the tests before them ran (tests/engines_ahead.py)
pytestmark = pytest.mark.usefixtures("engines_ahead")


@pytest.fixture(scope="module")
def one_place(tmp_path_factory):
    # one image at a time, about half a second each (64 px), and room for one in the queue
    engine = start_engine(
        tmp_path_factory.mktemp("one-place"), "--time-scale", "0.1", "--max-queue", "1", backend="sim", workers=1
    )
    yield engine
    assert engine.stop() == 0


@pytest.fixture
def engine(one_place):
    """The engine of one place, left idle by each test: the next finds its queue empty."""
    yield one_place
    assert wait_for(one_place.idle)


def test_calls_refused_busy_are_sent_again_once_the_queue_has_room(engine):
    # of three calls at once, two are refused Busy at first

    async def three_at_once(retries: int) -> list:
        async with AsyncArgusClient(engine.client_address, retries=retries) as client:
            calls = (client.generate(f"a fox {i}", width=64, height=64) for i in range(3))
            return await asyncio.wait_for(asyncio.gather(*calls), 60)

    assert sum(isinstance(reply, Busy) for reply in asyncio.run(three_at_once(0))) == 2
    replies = asyncio.run(three_at_once(10))
    assert all(isinstance(reply, Images) for reply in replies), replies


def test_a_call_in_flight_when_the_engine_is_killed_is_sent_again_to_the_engine_that_replaces_it(tmp_path):
    first = start_engine(tmp_path, "--time-scale", "1", backend="sim", workers=1)  # an image takes about 5 s
    second = None
    try:
        with ArgusClient(first.client_address, timeout_s=120, retries=1) as client, ThreadPoolExecutor(1) as caller:
            call = caller.submit(client.generate, "in flight", request_id="kept-id", width=64, height=64)
            assert wait_for(lambda: first.metric("argus_queued_images") == 1)
            os.killpg(first.process.pid, signal.SIGKILL)
            first.process.wait()
            port = int(first.client_address.rsplit(":", 1)[1])
            second = start_engine(tmp_path, "--time-scale", "0.01", backend="sim", workers=1, client_port=port)
            reply = call.result(timeout=110)
        assert isinstance(reply, Images) and reply.request_id == "kept-id", reply  # request_lost without retries
        assert second.metric("argus_requests_lost_total") == 1
    finally:
        first.stop()
        if second is not None:
            assert second.stop() == 0


def test_closing_the_async_client_ends_a_call_waiting_to_send_its_request_again(engine):
    """close() ended the calls in flight, not one waiting out a Busy's retry_after_ms (up to a minute) to send its
    request again: that one slept on, and raised ClientClosed only then. ArgusClient's close() ends such a wait."""

    def refused() -> float:
        return engine.metric("argus_requests_total", outcome="busy", code="queue_full")

    async def closed_while_it_waits():
        async with AsyncArgusClient(engine.client_address) as holder:
            # the one place in the queue, for many of the call's pauses (an image of about 6 s)
            holding = asyncio.ensure_future(holder.generate("holding the queue", width=1024, height=1024, steps=200))
            while engine.metric("argus_queued_images") != 1:
                await asyncio.sleep(0.05)
            client = AsyncArgusClient(engine.client_address, retries=100)
            call = asyncio.ensure_future(client.generate("refused", request_id="refused", width=64, height=64))
            # refused Busy, its reply read: it waits to send again, in flight nowhere
            while not (refused() >= 1 and "refused" not in client._waiting or call.done()):
                await asyncio.sleep(0.05)
            assert not call.done(), call.result()
            await client.close()
            await asyncio.sleep(0)
            assert call.done()  # was sleeping on
            with pytest.raises(ClientClosed):
                call.result()
            holding.cancel()
            await asyncio.gather(holding, return_exceptions=True)

    asyncio.run(asyncio.wait_for(closed_while_it_waits(), 60))


@pytest.mark.parametrize("retries", [-1, 1.5, True, None])
def test_retries_must_be_a_whole_number_of_0_or_more(retries):
    for make in (
        lambda: ArgusClient("tcp://127.0.0.1:1", retries=retries),
        lambda: AsyncArgusClient("tcp://127.0.0.1:1", retries=retries),
    ):
        with pytest.raises(ValueError, match="retries must be a whole number of 0 or more"):
            make()


@pytest.mark.own_engine("--time-scale", "1", "--shutdown-timeout", "4", backend="sim", workers=1)
def test_calls_get_through_a_restart_with_retries_and_get_the_drains_answers_without(tmp_path, own_engine):
    """An engine SIGTERMed with requests in flight, and more sent as it drains, then a new engine started on its
    address (a restart, a rolling deploy): with retries, every call is answered by the new engine. A call cut off by the
    drain's end came back Cancelled, one sent during the drain shutting_down, whatever `retries` said; without
    retries, so they still do."""
    # images that outlast the drain: those in flight are cancelled at its end, and it runs its full 4 s
    first = own_engine
    slow = {"width": 1024, "height": 1024, "steps": 200}
    second = []

    def draining() -> bool:
        return first.get("/ready")[0] == 503

    async def scenario():
        async with (
            AsyncArgusClient(first.client_address, retries=10) as retrying,
            AsyncArgusClient(first.client_address) as once,
        ):
            # ArgusClient's calls in threads, each with a client of its own (one call at a time)
            sync_retrying = [ArgusClient(first.client_address, timeout_s=150, retries=10) for _ in range(2)]
            try:
                cut_off = [asyncio.ensure_future(retrying.generate(f"cut off {i}", **slow)) for i in range(3)]
                cut_off.append(asyncio.ensure_future(asyncio.to_thread(sync_retrying[0].generate, "cut off", **slow)))
                cut_off_once = asyncio.ensure_future(once.generate("cut off once", **slow))
                assert await asyncio.to_thread(wait_for, lambda: first.metric("argus_queued_images") == 5)
                first.process.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(wait_for, draining)
                refused = [
                    asyncio.ensure_future(retrying.generate("sent as it drains", width=64, height=64)),
                    asyncio.ensure_future(
                        asyncio.to_thread(sync_retrying[1].generate, "sent as it drains", width=64, height=64)
                    ),
                ]
                refused_once = await asyncio.wait_for(once.generate("sent once as it drains", width=64, height=64), 30)
                assert isinstance(refused_once, Error) and refused_once.code == "shutting_down", refused_once
                assert isinstance(await asyncio.wait_for(cut_off_once, 60), Cancelled)
                assert await asyncio.to_thread(first.process.wait, 60) == 0
                port = int(first.client_address.rsplit(":", 1)[1])
                second.append(
                    await asyncio.to_thread(
                        start_engine, tmp_path, "--time-scale", "0.01", backend="sim", workers=1, client_port=port
                    )
                )
                replies = await asyncio.wait_for(asyncio.gather(*cut_off, *refused), 150)
            finally:
                for client in sync_retrying:
                    client.close()
        assert all(isinstance(reply, Images) for reply in replies), replies  # Cancelled, shutting_down before
        # answered by the new engine, not by a connection to the old one
        assert second[0].metric("argus_requests_total", outcome="ok", code="") == len(replies)

    try:
        asyncio.run(scenario())
    finally:
        first.stop()
        for engine in second:
            assert engine.stop() == 0


def test_answers_that_the_engine_is_stopping_are_sent_again_after_a_backoff_that_doubles_up_to_8_s():
    retries = Retries(9, Generate("r", "a fox"))
    stopping = [Error("r", "shutting_down", "the engine is shutting down"), Cancelled("r")] * 4
    pauses = [retries.pause_s(reply) for reply in stopping]
    # each less up to a quarter at random, so that the clients of a restarted engine spread out
    for pause_s, full_s in zip(pauses, [0.5, 1, 2, 4, 8, 8, 8, 8], strict=True):
        assert 0.75 * full_s <= pause_s <= full_s, pauses
    assert retries.pause_s(Error("r", "request_lost", "")) == 0  # at once, and the last retry
    assert retries.pause_s(Cancelled("r")) is None  # spent
    # an answer on the request's merits
    assert Retries(3, Generate("r", "a fox")).pause_s(Error("r", "worker_error", "")) is None


class _Clock:
    def __init__(self):
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_a_request_is_sent_with_what_is_left_of_its_deadline_counted_from_the_call():
    """slo_ms is a deadline from admission: sent again whole after an engine's restart, a request of slo_ms 2000 that
    waited 5 s for it was served up to 7 s after its first send, by an engine that deemed it on time. So too the first
    send, after a wait (for another thread's call, for the engine): Retries is made as the call is."""
    clock = _Clock()
    request = Generate("r", "a fox", slo_ms=2000)
    retries = Retries(3, request, clock)
    clock.now_s += 0.2  # the call waited before its first send
    assert retries.request() == Generate("r", "a fox", slo_ms=pytest.approx(1800))
    assert retries.pause_s(Busy("r", 300)) == 0.3
    clock.now_s += 0.3
    assert retries.request() == Generate("r", "a fox", slo_ms=pytest.approx(1500))
    assert retries.pause_s(Error("r", "request_lost", "")) == 0
    clock.now_s += 1.6  # the retry waited for an engine to come up past the deadline
    late = retries.request()
    assert isinstance(late, Error) and late.code == "deadline_exceeded", late
    assert "slo_ms 2000 from the call" in late.message
    # without a deadline, the request goes as it was
    unbounded = Retries(1, Generate("r", "a fox"), clock)
    assert unbounded.pause_s(Cancelled("r")) is not None
    clock.now_s += 60
    assert unbounded.request() == Generate("r", "a fox")


def test_a_retry_the_deadline_passes_before_is_answered_at_once():
    """A Busy naming a wait past the request's deadline: the call waited it out to send a request already late."""
    clock = _Clock()
    retries = Retries(3, Generate("r", "a fox", slo_ms=1000), clock)
    assert retries.pause_s(Busy("r", 1000)) == 0  # no wait: its end is the deadline
    late = retries.request()
    assert isinstance(late, Error) and late.code == "deadline_exceeded", late


def test_calls_told_to_retry_past_their_deadline_answer_deadline_exceeded_without_sending_again(engine):
    """Both clients, through a real engine: a call refused Busy for longer than its slo_ms is answered
    deadline_exceeded at once, as the engine answers one that cannot make its deadline. It waited the Busy out, then
    sent the request again with its full slo_ms."""

    def answered() -> float:
        """The requests the engine has answered, whatever the answer."""
        samples = engine.get("/metrics")[1].decode().splitlines()
        return sum(float(line.rpartition(" ")[2]) for line in samples if line.startswith("argus_requests_total{"))

    async def refused_past_their_deadline() -> list:
        async with AsyncArgusClient(engine.client_address) as holder:
            # the one place in the queue, for about 6 s: a Busy names a wait of seconds
            holding = asyncio.ensure_future(holder.generate("holding the queue", width=1024, height=1024, steps=200))
            while engine.metric("argus_queued_images") != 1:
                await asyncio.sleep(0.05)
            before = answered()
            fields = {"width": 64, "height": 64, "slo_ms": 100}
            async with AsyncArgusClient(engine.client_address, retries=5) as client:
                replies = [await asyncio.wait_for(client.generate("refused, async", **fields), 30)]
            with ArgusClient(engine.client_address, timeout_s=30, retries=5) as client:
                replies.append(await asyncio.to_thread(client.generate, "refused, sync", **fields))
            assert answered() == before + 2  # a Busy each, and not sent again (a Busy or deadline_exceeded after)
            holding.cancel()
            await asyncio.gather(holding, return_exceptions=True)
            return replies

    replies = asyncio.run(asyncio.wait_for(refused_past_their_deadline(), 60))
    assert all(isinstance(reply, Error) and reply.code == "deadline_exceeded" for reply in replies), replies
