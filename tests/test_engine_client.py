"""engine.client against a scripted ZeroMQ ROUTER: one deadline per call, one request per id in flight."""

import asyncio
import functools
import gc
import logging
import signal
import threading
import time

import msgspec
import pytest
import zmq
from aiohttp import web
from scripted_engine import ScriptedEngine
from stand_in_http import served
from waiting import eventually, wait_for

from engine.client import ArgusClient, AsyncArgusClient, ClientClosed, EngineUnreachable, sync_client
from engine.client import link as client_module
from engine_process import free_port
from protocols.client_messages import Cancel, Error, Generate, Inquire
from protocols.curve import ClientKeys, KeyPair, RefusedHandshakes
from protocols.sockets import make_socket


def test_stale_replies_do_not_stretch_the_timeout(scripted_engine):
    stop = threading.Event()
    stale_sent = 0

    def stale_replies():
        nonlocal stale_sent
        identity, _ = scripted_engine.receive()
        # answers to requests the client gave up on long ago, one every 0.1 s for up to 10 s
        while not stop.wait(0.1) and stale_sent < 100:
            scripted_engine.answer(identity, Error(f"old-{stale_sent}", "deadline_exceeded", "late"))
            stale_sent += 1

    sender = threading.Thread(target=stale_replies)
    sender.start()
    try:
        with ArgusClient(scripted_engine.address, timeout_s=0.5) as client, pytest.raises(TimeoutError) as timed_out:
            client.generate("a fox", request_id="wanted")
        # it gave up on its own deadline, not when the stale replies ran out
        assert stale_sent < 50
        # an engine there, slow: not taken for no engine at all
        assert type(timed_out.value) is TimeoutError and str(timed_out.value) == "no reply for wanted"
    finally:
        stop.set()
        sender.join()


def test_a_call_is_not_timed_out_by_a_reconnection_heard_in_its_last_poll_slice(scripted_engine, monkeypatch):
    """A call waits in poll slices, on its socket and on the monitor that hears connections, and took a slice that
    ended with no reply for its last whenever the time left was within one: a connection's end or handshake heard
    then timed the call out (a 0.2 s call on a new client, in the 3 ms its handshake took), here before its
    Inquire was answered. One slice holds the whole timeout in this test: the engine's answer has all the time it
    needs."""
    monkeypatch.setattr(sync_client, "_POLL_SLICE_MS", 60_000)

    def restart_once_sent():
        scripted_engine.receive()
        scripted_engine.restart()
        identity, inquiry = scripted_engine.receive()
        assert inquiry == Inquire(["sent"])
        scripted_engine.answer(identity, Error("sent", "request_lost", "lost"))

    restarting = threading.Thread(target=restart_once_sent)
    restarting.start()
    try:
        with ArgusClient(scripted_engine.address, timeout_s=30) as client:
            reply = client.generate("a fox", request_id="sent")
    finally:
        restarting.join()
    assert reply == Error("sent", "request_lost", "lost")


async def test_a_second_request_under_an_id_in_flight_is_refused_and_the_first_still_answered(scripted_engine):
    async with AsyncArgusClient(scripted_engine.address) as client:
        first = asyncio.create_task(client.generate("a fox", request_id="same"))
        identity, sent = await asyncio.to_thread(scripted_engine.receive)
        assert isinstance(sent, Generate) and sent.request_id == "same"
        with pytest.raises(ValueError, match="already in flight"):
            await client.generate("a wolf", request_id="same")
        scripted_engine.answer(identity, Error("same", "invalid_size", "answered"))
        reply = await asyncio.wait_for(first, 10)
        assert isinstance(reply, Error) and reply.message == "answered"


def _answered_once_connected(engine: ScriptedEngine, identity: bytes, reply) -> None:
    """Sends `reply` once the client is connected to the engine again (before, ZeroMQ would drop it)."""
    engine.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)

    def sent() -> bool:
        try:
            engine.answer(identity, reply)
        except zmq.ZMQError:  # EHOSTUNREACH: not connected yet
            return False
        return True

    assert wait_for(sent)


async def test_a_reply_landed_as_the_async_client_asks_after_its_requests_is_read(scripted_engine):
    """The Inquire after a reconnection went out through a blocking socket over the client's, which took the wake-up
    ZeroMQ gives the client's reader for a reply landed since the event loop last looked (a loop busy with the
    pipeline's own work, or another reply): the reader never woke, and the call waited for ever, or until another
    call sent. Here the loop is held, as such work holds it, from the restart to the watcher's turn."""
    async with AsyncArgusClient(scripted_engine.address) as client:
        call = asyncio.create_task(client.generate("a fox", request_id="r1"))
        identity, _ = await asyncio.to_thread(scripted_engine.receive)
        assert await eventually(lambda: "r1" in client._sent)  # the call has seen its request out
        scripted_engine.restart()
        _answered_once_connected(scripted_engine, identity, Error("r1", "worker_error", "answered"))
        time.sleep(0.5)  # the reply lands; were it not there yet, the test could not fail, never the other way
        client._refusal()  # the watcher's turn: it hears the handshake and asks after r1
        reply = await asyncio.wait_for(call, 30)  # a guard against the hang, no bound on how long a reply takes
        assert reply == Error("r1", "worker_error", "answered")
        assert (await asyncio.to_thread(scripted_engine.receive))[1] == Inquire(["r1"])


async def test_closing_the_async_client_cancels_what_it_has_in_flight(scripted_engine):
    client = AsyncArgusClient(scripted_engine.address)
    pending = asyncio.create_task(client.generate("a fox", request_id="left-behind"))
    _, sent = await asyncio.to_thread(scripted_engine.receive)
    assert isinstance(sent, Generate)
    await client.close()
    _, cancel = await asyncio.to_thread(scripted_engine.receive)
    assert isinstance(cancel, Cancel) and cancel.request_id == "left-behind"
    with pytest.raises(ClientClosed):
        await pending


async def test_closing_the_async_client_as_a_call_goes_out_ends_the_call(scripted_engine):
    async with AsyncArgusClient(scripted_engine.address) as client:
        call = asyncio.create_task(client.generate("a fox"))
        await asyncio.sleep(0)  # the call is sent; the client's reader has not had its first turn
    # before: the reader, cancelled before it ran, failed no call, and this one waited for ever
    with pytest.raises(ClientClosed):
        await asyncio.wait_for(call, 10)


@pytest.mark.parametrize(
    ("request_id", "message"),
    [
        # the whole length and the limit, the id shortened in the middle with its quotes kept
        ("x" * 129, "request_id must be 1 to 128 characters, got 129: 'xxxxxxxxxxxx...xxxxxxxxxxxxx'"),
        # before, "" was taken for "no id" and replaced by a fresh one
        ("", "request_id must be 1 to 128 characters, got 0: ''"),
        (5, "request_id must be a string, got int 5"),
    ],
)
async def test_a_request_id_the_engine_could_not_answer_under_is_refused_before_it_is_sent(
    scripted_engine, request_id, message
):
    # the engine answers it under an id cut short or "", which no call matches: the call waited for ever
    with ArgusClient(scripted_engine.address, timeout_s=10) as client, pytest.raises(ValueError) as refused:
        client.generate("a fox", request_id=request_id)
    assert str(refused.value) == message
    async with AsyncArgusClient(scripted_engine.address) as client:
        with pytest.raises(ValueError) as refused:
            await client.generate("a fox", request_id=request_id)
        assert str(refused.value) == message
        pending = asyncio.create_task(client.generate("a fox", request_id="sent"))
        _, sent = await asyncio.to_thread(scripted_engine.receive)
        assert sent.request_id == "sent"  # the first message to reach the engine
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending


async def test_a_request_that_cannot_be_encoded_leaves_its_id_free(scripted_engine):
    async with AsyncArgusClient(scripted_engine.address) as client:
        with pytest.raises(NotImplementedError, match="cannot encode object"):
            await client.generate("a fox", request_id="seeded", seed=object())
        # before, the id stayed in flight for ever: this raised ValueError
        retry = asyncio.create_task(client.generate("a fox", request_id="seeded", seed=7))
        identity, sent = await asyncio.to_thread(scripted_engine.receive)
        assert sent.request_id == "seeded" and sent.seed == 7
        scripted_engine.answer(identity, Error("seeded", "invalid_size", "answered"))
        assert (await asyncio.wait_for(retry, 10)).message == "answered"


async def test_an_undecodable_reply_fails_the_async_call_it_answers(scripted_engine):
    async with AsyncArgusClient(scripted_engine.address) as client:
        call = asyncio.create_task(client.generate("a fox", request_id="garbled"))
        identity, _ = await asyncio.to_thread(scripted_engine.receive)
        # an image that is not bytes: what an engine of another protocol version might send. First one for a request
        # no longer in flight, which the reader passes over
        for request_id in ("gone", "garbled"):
            garbled = {"type": "images", "request_id": request_id, "images": [{"image": 1}]}
            scripted_engine.socket.send_multipart([identity, msgspec.msgpack.encode(garbled)])
        # before, the reply was dropped and the call waited for ever
        with pytest.raises(ValueError, match="undecodable reply"):
            await asyncio.wait_for(call, 10)


def _garbled(request_id: str | None) -> bytes:
    """A reply of an engine of another protocol version: an image that is not bytes, under `request_id` (none: no
    request id to be read from it at all)."""
    garbled = {"type": "images", "images": [{"image": 1}]}
    return msgspec.msgpack.encode(garbled if request_id is None else {**garbled, "request_id": request_id})


def test_an_undecodable_late_reply_to_a_timed_out_request_is_skipped_by_the_next_call(scripted_engine):
    with ArgusClient(scripted_engine.address, timeout_s=0.5) as client:
        identity = scripted_engine.timed_out(client, "late")
        scripted_engine.socket.send_multipart([identity, _garbled("late")])

        def answer_the_next() -> None:
            _, sent = scripted_engine.receive()
            scripted_engine.answer(identity, Error(sent.request_id, "invalid_size", "answered"))

        answering = threading.Thread(target=answer_the_next)
        answering.start()
        client._timeout_s = 10  # the next call waits for its reply, however busy the machine
        # before, it raised ValueError 'undecodable reply' for the reply to a request it had given up on
        assert client.generate("a fox", request_id="now").message == "answered"
        answering.join()


def test_an_undecodable_reply_naming_no_request_cancels_the_sync_call_in_flight_at_the_engine(scripted_engine):
    with ArgusClient(scripted_engine.address, timeout_s=10) as client:

        def answer_garbled() -> None:
            identity, _ = scripted_engine.receive()
            scripted_engine.socket.send_multipart([identity, _garbled(None)])

        answering = threading.Thread(target=answer_garbled)
        answering.start()
        with pytest.raises(ValueError, match="undecodable reply"):
            client.generate("a fox", request_id="now")
        answering.join()
        # before, nothing told the engine, which went on with a request no one awaits
        assert scripted_engine.receive()[1] == Cancel("now")


async def test_an_undecodable_reply_naming_no_request_fails_the_async_calls_in_flight(scripted_engine):
    async with AsyncArgusClient(scripted_engine.address) as client:
        calls = [asyncio.create_task(client.generate("a fox", request_id=name)) for name in ("one", "two")]
        identity, _ = await asyncio.to_thread(scripted_engine.receive)
        await asyncio.to_thread(scripted_engine.receive)
        scripted_engine.socket.send_multipart([identity, _garbled(None)])
        # before, no call could be told it was answered, and each waited for ever
        for call in calls:
            with pytest.raises(ValueError, match="undecodable reply"):
                await asyncio.wait_for(call, 10)
        cancelled = {(await asyncio.to_thread(scripted_engine.receive))[1] for _ in calls}
        assert cancelled == {Cancel("one"), Cancel("two")}


async def test_closing_the_async_client_with_its_send_queue_full_cancels_each_call_quietly(caplog, monkeypatch):
    # a queue of 64, not the default 100,000: as full, where 100,000 calls took 8 s of CPU (300 on a busy machine)
    hwm = 64
    monkeypatch.setattr(client_module, "make_socket", functools.partial(make_socket, send_hwm=hwm))
    # believed connected (an engine gone, its connection's end not heard yet), where there is none: every request
    # stays queued. A client that has heard no engine sends nothing
    monkeypatch.setattr(RefusedHandshakes, "connected", property(lambda self: True))
    client = AsyncArgusClient(f"tcp://127.0.0.1:{free_port()}")
    calls = [asyncio.create_task(client.generate("a fox")) for _ in range(3 * hwm)]
    await asyncio.sleep(0)  # each call sent, and the socket's queue full
    assert not client._socket.getsockopt(zmq.EVENTS) & zmq.POLLOUT  # what this test is of: a send would wait
    await client.close()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert {type(outcome) for outcome in outcomes} == {ClientClosed}
    # before: a 'Future exception was never retrieved' traceback for each of them, said as each is collected
    gc.collect()
    assert "never retrieved" not in caplog.text


async def test_a_closed_client_refuses_a_request_as_closed(scripted_engine):
    # it was ZeroMQ's 'Socket operation on non-socket', and the async client's reader task failed unretrieved
    client = ArgusClient(scripted_engine.address, timeout_s=10)
    client.close()
    with pytest.raises(ClientClosed):
        client.generate("a fox")
    async_client = AsyncArgusClient(scripted_engine.address)
    await async_client.close()
    with pytest.raises(ClientClosed):
        await async_client.generate("a fox")


async def test_closing_a_client_twice_is_harmless(scripted_engine):
    with ArgusClient(scripted_engine.address, timeout_s=10) as client:
        client.close()
    # before: TypeError('context must be specified'), from shadowing the closed socket
    async with AsyncArgusClient(scripted_engine.address) as async_client:
        await async_client.close()


def test_the_async_client_serves_one_event_loop_after_another(scripted_engine):
    # a pipeline that calls asyncio.run once per batch: the second loop's replies went to the first loop's reader,
    # ended with that loop, and the call waited for ever
    client = AsyncArgusClient(scripted_engine.address)

    async def one(request_id):
        call = asyncio.create_task(client.generate("a fox", request_id=request_id))
        identity, _ = await asyncio.to_thread(scripted_engine.receive)
        scripted_engine.answer(identity, Error(request_id, "invalid_size", "answered"))
        return await asyncio.wait_for(call, 10)

    assert asyncio.run(one("first")).request_id == "first"
    assert asyncio.run(one("second")).request_id == "second"
    asyncio.run(client.close())


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("localhost:5555", "'localhost:5555': expected the engine's ZeroMQ client address"),  # was 'Invalid argument'
        ("tcp://127.0.0.1", "expected the engine's ZeroMQ client address, tcp://HOST:PORT or ipc://PATH"),
        ("tcp://127.0.0.1:99999", "tcp://127.0.0.1:99999"),  # was taken, and never answered
        ("http://127.0.0.1:8000", "(an HTTP URL: this client speaks ZeroMQ)"),  # was 'Protocol not supported'
    ],
)
@pytest.mark.parametrize("make", [lambda a: ArgusClient(a, timeout_s=1), AsyncArgusClient], ids=["sync", "async"])
def test_an_address_that_is_no_engines_is_refused_saying_what_is_taken(make, address, says):
    with pytest.raises(ValueError) as refused:
        make(address)
    assert says in str(refused.value) and "--client-listen" in str(refused.value)


@pytest.mark.parametrize("timeout_s", [-1, 0, float("nan"), float("inf"), 1e7])
def test_a_timeout_zeromq_cannot_take_is_refused_before_a_socket_is_made(scripted_engine, timeout_s):
    # ZeroMQ refused -1 with 'Invalid argument', NaN to 1e7 s were int conversion errors, 0 timed every call out
    with pytest.raises(ValueError, match="timeout_s"):
        ArgusClient(scripted_engine.address, timeout_s=timeout_s)


def test_calls_from_several_threads_each_get_their_own_reply(scripted_engine):
    calls = 6

    def answer_each():
        answered = 0
        while answered < calls:
            # what came together is answered last first, so no call's reply is simply the next to arrive
            came = [scripted_engine.receive()]
            while scripted_engine.socket.poll(300):
                came.append(scripted_engine.receive())
            for identity, sent in reversed(came):
                scripted_engine.answer(identity, Error(sent.request_id, "invalid_size", sent.request_id))
            answered += len(came)

    answering = threading.Thread(target=answer_each)
    answering.start()
    replies = {}
    with ArgusClient(scripted_engine.address, timeout_s=10) as client:

        def call(request_id):
            try:
                replies[request_id] = client.generate("a fox", request_id=request_id).message
            except TimeoutError as error:  # before: another thread's call took its reply for a stale one
                replies[request_id] = error

        threads = [threading.Thread(target=call, args=(f"thread-{i}",)) for i in range(calls)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    answering.join()
    assert replies == {f"thread-{i}": f"thread-{i}" for i in range(calls)}


def test_a_calls_timeout_counts_its_wait_for_another_threads_call(monkeypatch):
    """Calls from several threads take turns, each within its own timeout_s: before, a call waited for the turn
    without bound and then for its timeout, up to N timeouts behind N - 1 threads. Here the call holding the turn
    is held in a slow log handler (its warning that no engine answers) until the other call has ended."""
    monkeypatch.setattr(client_module, "UNANSWERED_WARNING_S", 0)
    warned, released = threading.Event(), threading.Event()

    class SlowHandler(logging.Handler):
        def emit(self, record):
            warned.set()
            released.wait(60)

    handler = SlowHandler()
    logging.getLogger("argus.client").addHandler(handler)
    outcomes = {}
    try:
        with ArgusClient(f"tcp://127.0.0.1:{free_port()}", timeout_s=1) as client:

            def call(name):
                try:
                    outcomes[name] = client.generate("a fox")
                except Exception as error:
                    outcomes[name] = error

            holding = threading.Thread(target=call, args=("holding",))
            holding.start()
            assert warned.wait(30)
            waiting = threading.Thread(target=call, args=("waiting",))
            waiting.start()
            waiting.join(60)  # before: for ever, the turn held until this call ended
            ended_first = not waiting.is_alive()
            released.set()
            holding.join()
            waiting.join()
    finally:
        released.set()
        logging.getLogger("argus.client").removeHandler(handler)
    assert ended_first
    assert {name: type(outcome) for name, outcome in outcomes.items()} == {
        "waiting": EngineUnreachable,
        "holding": EngineUnreachable,
    }


def test_closing_the_sync_client_from_another_thread_cancels_the_call_in_flight(scripted_engine):
    client = ArgusClient(scripted_engine.address)  # no timeout: only close() ends the call
    outcome = []

    def call():
        try:
            outcome.append(client.generate("a fox", request_id="in-flight"))
        except Exception as error:  # before: ZeroMQ's 'Socket operation on non-socket', from a socket closed under it
            outcome.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    _, sent = scripted_engine.receive()
    assert sent.request_id == "in-flight"
    client.close()
    caller.join(timeout=30)
    assert [type(o) for o in outcome] == [ClientClosed]
    assert scripted_engine.receive()[1] == Cancel("in-flight")


def test_closing_the_sync_client_from_a_signal_handler_during_a_call_ends_the_call(scripted_engine):
    client = ArgusClient(scripted_engine.address)
    caller = threading.get_ident()

    def close_once_sent():
        scripted_engine.receive()
        signal.pthread_kill(caller, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, lambda *_: client.close())
    closer = threading.Thread(target=close_once_sent)
    closer.start()
    try:
        with pytest.raises(ClientClosed):
            client.generate("a fox", request_id="r1")
        closer.join()
        assert scripted_engine.receive()[1] == Cancel("r1")
        with pytest.raises(ClientClosed):
            client.generate("a fox")
    finally:
        signal.signal(signal.SIGUSR1, previous)


class _Hung(Exception):
    pass


def test_a_second_signal_as_the_sync_client_closes_its_sockets_does_not_hang_it(scripted_engine, monkeypatch):
    """A handler that closes the client (a pipeline's SIGTERM one) run again as the call it ended closes the sockets
    (a second SIGTERM: pyzmq runs handlers inside its calls, and closing waits up to 0.5 s for the Cancel to go out):
    it waited for the turn its own thread held, and the process hung for ever, deaf to every signal after."""
    client = ArgusClient(scripted_engine.address)
    caller = threading.get_ident()
    closing = sync_client.close_all

    def closing_as_a_second_signal_comes(*sockets):
        monkeypatch.setattr(sync_client, "close_all", closing)  # the one signal more
        signal.pthread_kill(caller, signal.SIGUSR1)  # its handler runs here, in the thread closing the sockets
        closing(*sockets)

    def close_once_sent():
        scripted_engine.receive()
        monkeypatch.setattr(sync_client, "close_all", closing_as_a_second_signal_comes)
        signal.pthread_kill(caller, signal.SIGUSR1)

    def hung(*_):
        raise _Hung("the client's close() waited for ever in the signal handler")

    handlers = {signal.SIGUSR1: lambda *_: client.close(), signal.SIGUSR2: hung}
    previous = {number: signal.signal(number, handler) for number, handler in handlers.items()}
    # only a guard against the hang (which no signal but this one ended), not a bound on how long closing takes
    guard = threading.Timer(60, signal.pthread_kill, (caller, signal.SIGUSR2))
    closer = threading.Thread(target=close_once_sent)
    closer.start()
    try:
        guard.start()
        with pytest.raises(ClientClosed):
            client.generate("a fox", request_id="r1")
        guard.cancel()
        closer.join()
        assert scripted_engine.receive()[1] == Cancel("r1")
    finally:
        guard.cancel()
        for number, handler in previous.items():
            signal.signal(number, handler)


@pytest.mark.usefixtures("ctrl_c_interrupts")
def test_ctrl_c_during_a_call_cancels_it_at_the_engine(scripted_engine):
    """Ctrl-C is taken by whichever thread of the process the kernel picks: here not the caller's, whose poll it
    does not interrupt (before, a call without a timeout never saw it, and CI timed out)."""
    client = ArgusClient(scripted_engine.address)
    seen = []

    def interrupt_once_sent():
        identity, request = scripted_engine.receive()
        seen.append(request)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        try:
            seen.append(scripted_engine.receive(timeout_s=30)[1])
        except AssertionError:  # no Cancel came: answer, so that the call returns and the test fails
            scripted_engine.answer(identity, Error(request.request_id, "worker_error", "unanswered"))

    interrupter = threading.Thread(target=interrupt_once_sent)
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            client.generate("a fox", request_id="r1")
        interrupter.join()
        assert [type(m) for m in seen] == [Generate, Cancel] and seen[1] == Cancel("r1")
    finally:
        client.close()


@pytest.mark.parametrize("curve", [None, ClientKeys(KeyPair.generate(), KeyPair.generate().public)], ids=["", "curve"])
async def test_both_clients_pointed_at_an_http_port_say_alike_that_it_is_no_engines(curve):
    """Without CURVE, libzmq takes an HTTP server's 400 (its answer to ZeroMQ's greeting) for a message of ZeroMQ's
    first version, which has no handshake: ArgusClient raised ValueError 'undecodable reply' at once, while
    AsyncArgusClient, finding no request id in it, dropped it, and raised ConnectionRefusedError naming CURVE first
    once ten handshakes had failed. With CURVE, libzmq hangs up at once and never dials again: both waited for ever
    (or for their timeout)."""
    async with served(web.Application()) as url:
        address = url.replace("http://", "tcp://")
        not_an_engine = f"{address} is not an argus engine's ZeroMQ address (the handshake failed: an HTTP port?)"

        def call_blocking():
            with ArgusClient(address, timeout_s=30, curve=curve) as client:
                client.generate("a fox")

        with pytest.raises(ConnectionRefusedError) as blocking:
            await asyncio.to_thread(call_blocking)
        async with AsyncArgusClient(address, curve=curve) as client:
            with pytest.raises(ConnectionRefusedError) as pipelined:
                await asyncio.wait_for(client.generate("a fox"), 30)
        assert str(blocking.value) == str(pipelined.value)
        # CURVE is named, and after the address: the engine would have said that it requires it, but may hang up
        # before it does
        expected = not_an_engine if curve else f"{not_an_engine}, or the engine at {address} requires CURVE keys"
        assert str(blocking.value) == expected


@pytest.mark.parametrize("where", ["a port no one listens on", "a host that does not resolve"])
def test_a_call_to_where_no_engine_answers_says_so_not_that_the_engine_is_slow(where):
    """A DEALER queues a request whether or not it reaches a peer: the call timed out 'no reply for ...', as one to
    a slow engine does."""
    address = (
        f"tcp://127.0.0.1:{free_port()}" if where.startswith("a port") else "tcp://argus-no-such-host.invalid:5555"
    )
    with ArgusClient(address, timeout_s=1) as client:
        with pytest.raises(EngineUnreachable) as unreached:
            client.generate("a fox")
        # still a TimeoutError, for code that handles timeouts
        assert isinstance(unreached.value, TimeoutError)
        assert str(unreached.value) == (
            f"nothing answered at {address} in 1 s: check that the engine is up and that {address} is its"
            " --client-listen address"
        )


async def test_a_call_waiting_on_no_engine_is_warned_of_once_per_client(scripted_engine, monkeypatch, caplog):
    """As `argus worker` warns of hellos unanswered: a call without a timeout waits for ever, saying nothing."""
    monkeypatch.setattr(client_module, "UNANSWERED_WARNING_S", 0.2)
    caplog.set_level(logging.WARNING, logger="argus.client")
    address = f"tcp://127.0.0.1:{free_port()}"
    warning = f"no answer from an engine at {address} for 0.2 s: is it up, and is that its --client-listen address?"

    def call_blocking():
        with ArgusClient(address, timeout_s=1) as client:
            for _ in range(2):
                with pytest.raises(EngineUnreachable):
                    client.generate("a fox")

    await asyncio.to_thread(call_blocking)
    assert caplog.messages == [warning]
    caplog.clear()
    async with AsyncArgusClient(address) as client:
        for _ in range(2):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.generate("a fox"), 1)
    assert caplog.messages == [warning]
    caplog.clear()
    # an engine reached (a call answered: the handshake is over whatever the load), slow to answer the next: no
    # warning
    monkeypatch.setattr(client_module, "UNANSWERED_WARNING_S", 60)
    async with AsyncArgusClient(scripted_engine.address) as client:
        answered = asyncio.create_task(client.generate("a fox", request_id="answered"))
        identity, _ = await asyncio.to_thread(scripted_engine.receive)
        scripted_engine.answer(identity, Error("answered", "invalid_size", "answered"))
        await asyncio.wait_for(answered, 10)
        monkeypatch.setattr(client_module, "UNANSWERED_WARNING_S", 0.2)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.generate("a wolf"), 1)
    assert caplog.messages == []
