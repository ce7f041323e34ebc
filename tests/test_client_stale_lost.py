"""A call retried after a Busy under its id is not answered by the request_lost the engine sends for the Inquire of
its first attempt: that attempt went out as the client connected again, was asked after, and was refused Busy before
the Inquire was read. The engine answers request_lost only to an Inquire, and holds the retry."""

import asyncio
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

from tcp_proxy import DroppingProxy
from waiting import wait_for

from engine.client import ArgusClient
from engine.client.async_client import AsyncArgusClient
from engine_process import start_engine
from protocols.client_messages import Busy, Images
from protocols.curve import RefusedHandshakes


def _queue_held(engine):
    """A call from another client holding the one place in the queue (an image of about 20 s, cut short by closing
    the client: the test's calls are refused Busy for as long as they take)."""
    blocker = ArgusClient(engine.client_address, timeout_s=120)
    caller = ThreadPoolExecutor(1)
    caller.submit(blocker.generate, "holding the queue", width=64, height=64, steps=200)
    assert wait_for(lambda: engine.metric("argus_queued_images") == 1)
    return blocker, caller


class _FlowOnceSent(threading.Thread):
    """Lets the stalled connection through once `sent()`: the request goes out with the handshake that the client
    then hears, and asks after it. `seen`: whether it was sent by then (else the case was not made, whatever the
    reply)."""

    def __init__(self, proxy: DroppingProxy, sent) -> None:
        super().__init__()
        self._proxy, self._sent = proxy, sent
        self.seen = False
        self.start()

    def run(self) -> None:
        self.seen = wait_for(self._sent)
        self._proxy.flowing.set()


@contextlib.contextmanager
def _queue_held_behind_a_proxy(tmp_path):
    """An engine of one place in its queue, held by another client's call, and a proxy to its client door that drops
    connections and holds handshakes: yields the proxy."""
    engine = start_engine(tmp_path, "--time-scale", "1", "--max-queue", "1", backend="sim", workers=1)
    proxy = DroppingProxy(int(engine.client_address.rsplit(":", 1)[1]))
    blocker, caller = _queue_held(engine)
    try:
        yield proxy
    finally:
        proxy.close()
        blocker.close()  # the call in the caller's thread ends at once
        caller.shutdown()
        assert engine.stop() == 0


def test_a_sync_retry_after_a_busy_is_not_answered_by_the_first_attempts_request_lost(tmp_path, monkeypatch):
    with _queue_held_behind_a_proxy(tmp_path) as proxy, ArgusClient(proxy.address, timeout_s=60, retries=1) as client:
        assert isinstance(client.generate("connected", width=64, height=64), Busy)
        proxy.flowing.clear()
        proxy.drop_all()  # the client dials again, its handshake held
        # a call that has not heard the connection end (told just after its poll read the monitor): its request goes
        # into the queue for the next connection. Else it waits for that connection, and there is no case to make
        monkeypatch.setattr(RefusedHandshakes, "connected", property(lambda refusals: True))
        flowing = _FlowOnceSent(proxy, lambda: client._awaited is not None)
        reply = client.generate("retried", width=64, height=64)
        flowing.join()
        assert flowing.seen
    # the engine's answer to the retry, Busy again or, the queue freed by then, its images: was request_lost, the
    # engine running the retry meanwhile
    assert isinstance(reply, (Busy, Images)), reply


def test_an_async_retry_after_a_busy_is_not_answered_by_the_first_attempts_request_lost(tmp_path):
    async def calls(proxy):
        async with AsyncArgusClient(proxy.address, retries=1) as client:
            assert isinstance(await client.generate("connected", width=64, height=64), Busy)
            proxy.flowing.clear()
            proxy.drop_all()
            flowing = _FlowOnceSent(proxy, lambda: "retried" in client._sent)
            reply = await asyncio.wait_for(client.generate("retried", "retried", width=64, height=64), 60)
            await asyncio.to_thread(flowing.join)
            assert flowing.seen
            return reply

    with _queue_held_behind_a_proxy(tmp_path) as proxy:
        reply = asyncio.run(calls(proxy))
    assert isinstance(reply, (Busy, Images)), reply
