"""A ZeroMQ socket read by the event loop hands the loop back between slices of a burst, whatever its messages cost."""

import asyncio
import time

import zmq
from waiting import eventually

from engine.zmq.loop_socket import LoopSocket


async def test_a_burst_of_costly_messages_is_handled_in_slices_that_let_the_loop_run_between():
    """Slices were 256 messages whatever each cost: a client's burst of refused requests (about 2 ms each to word)
    held the engine's loop for 1.8 s at a time, away from every other client and the workers' heartbeats."""
    burst = 256
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.bind("inproc://burst")
    client = context.socket(zmq.DEALER)
    client.connect("inproc://burst")
    for _ in range(burst):
        client.send(b"request")
    handled = 0

    def costly(identity: bytes, frames: list) -> None:
        nonlocal handled
        time.sleep(0.001)  # at least a millisecond each
        handled += 1

    loop = asyncio.get_running_loop()
    turns = [0]  # messages handled by each turn of another callback

    def another_callback() -> None:
        turns.append(handled)
        if handled < burst:
            loop.call_soon(another_callback)

    socket = LoopSocket(router, costly)
    try:
        socket.start()
        loop.call_soon(another_callback)
        assert await eventually(lambda: handled == burst)
    finally:
        socket.close()
        client.close(linger=0)
        context.term()
    assert max(after - before for before, after in zip(turns, turns[1:], strict=False)) < burst / 4
