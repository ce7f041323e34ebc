"""AsyncArgusClient's timeout_s, as ArgusClient's: a call that runs out of it is cancelled at the engine and raises
TimeoutError naming what it waited for (EngineUnreachable, with the address to check, when no engine was ever
reached), and no retry is sent that would wait past it.

The client took no timeout_s (TypeError), and asyncio.wait_for's TimeoutError said nothing: not the request, not the
address, not whether an engine was ever reached there."""

import asyncio

import pytest

from engine.client import AsyncArgusClient, EngineUnreachable
from engine_process import free_port
from protocols.client_messages import Busy, Cancel, Generate

# in process: a hang is a failure, not a wait for the suite's 300 s
pytestmark = pytest.mark.timeout(60)


async def _generate(client: AsyncArgusClient, **fields):
    async with client:
        return await client.generate("a fox", **fields)


def test_a_call_out_of_its_timeout_is_cancelled_at_the_engine_and_says_which(scripted_engine):
    client = AsyncArgusClient(scripted_engine.address, timeout_s=0.5)
    with pytest.raises(TimeoutError, match="^no reply for job$") as timed_out:
        asyncio.run(_generate(client, request_id="job"))
    assert not isinstance(timed_out.value, EngineUnreachable)  # the engine was reached: it took the request
    assert isinstance(scripted_engine.receive()[1], Generate)
    assert scripted_engine.receive()[1] == Cancel("job")


def test_a_call_with_no_engine_at_the_address_names_the_address():
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(EngineUnreachable, match=f"^nothing answered at {address} in 0.5 s: check that the engine"):
        asyncio.run(_generate(AsyncArgusClient(address, timeout_s=0.5)))


def test_no_retry_is_sent_that_would_wait_past_the_timeout(scripted_engine):
    """The Busy is the answer, as ArgusClient's: a TimeoutError for it hid that the engine was full."""

    async def busy_then_nothing():
        identity, request = await asyncio.to_thread(scripted_engine.receive)
        scripted_engine.answer(identity, Busy(request.request_id, retry_after_ms=600_000))

    async def call():
        answering = asyncio.create_task(busy_then_nothing())
        reply = await _generate(AsyncArgusClient(scripted_engine.address, timeout_s=30, retries=1))
        await answering
        return reply

    assert isinstance(asyncio.run(call()), Busy)


@pytest.mark.parametrize("timeout_s", [-1, 0, float("nan"), float("inf"), 1e7])
def test_a_timeout_out_of_bounds_is_refused_as_the_client_is_made(scripted_engine, timeout_s):
    with pytest.raises(ValueError, match="timeout_s"):
        AsyncArgusClient(scripted_engine.address, timeout_s=timeout_s)
