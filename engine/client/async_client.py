"""`AsyncArgusClient`: the asyncio client of the engine's ZeroMQ front door (see engine.client)."""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from typing import Any

import zmq
import zmq.asyncio

from engine.client.link import (
    ClientClosed,
    FullDoor,
    OwnProcess,
    Reply,
    Retries,
    UnansweredWarning,
    check_address,
    checked_retries,
    close_sockets,
    closed_when_dropped,
    connect,
    connection_of,
    encoded,
    forked,
    redial,
    refuse_if_closed,
    refuse_if_forked,
    request_of,
    send_now,
    undecodable,
)
from engine.client.timeouts import checked_timeout, timed_out
from protocols.client_messages import Cancel, Error, Inquire, client_side_codec, salvage_request_id
from protocols.codec import DecodeError
from protocols.curve import ClientKeys
from protocols.limits import MAX_INQUIRED_IDS


def _cancel_in_closed_loop(waiting: asyncio.Future) -> None:
    """Cancels the zmq.asyncio read a task of a closed event loop waits on (or the read itself), so that pyzmq skips it
    and hands the next message to a read in the running loop. The read is marked cancelled before its loop refuses to
    schedule the task's wake-up (pyzmq's own close() cancels its reads so, in a loop torn down)."""
    try:
        waiting.cancel()
    except RuntimeError:  # 'Event loop is closed'
        pass


def _cancel_polls_in_closed_loops(sock: zmq.asyncio.Socket) -> None:
    """Cancels the waits on `sock` left in closed event loops. The watcher's poll is a future pyzmq keeps in line
    behind the one awaited, cancelled through callbacks a closed loop never runs: cancelling the task left it first in
    line, and the monitor's next event went to it, in vain ('Event loop is closed', logged by the next loop, whose
    watcher never heard that event: a call made there as the engine was down waited to send its request until its
    unanswered warning, or for ever with the engine back after that). The line is pyzmq's own (_recv_futures):
    test_client_event_loops fails should a pyzmq keep it otherwise."""
    for waiting in getattr(sock, "_recv_futures", None) or ():
        if waiting.future.get_loop().is_closed():
            _cancel_in_closed_loop(waiting.future)


def _reply_owed(call: asyncio.Future[Reply]) -> bool:
    """Whether no reply was taken by the call awaiting `call`: it waits still, or was cancelled awaiting it."""
    return call.cancelled() or not call.done()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():  # a pause ended by close(), a wait cancelled
        future.set_result(None)


async def _terminated(context: zmq.Context) -> None:
    """Terminates `context`, the event loop running meanwhile: term() waits for what is queued to go, up to the
    sockets' whole linger with no engine to take it, and every other task of the loop stood still so. In a thread of
    its own: the loop's default executor may be kept busy by the pipeline's own work (a close() waited behind it), and
    a pool of this module's would be a copy without its threads in a process forked from this one (a close() of a
    client made there waited for ever)."""
    loop = asyncio.get_running_loop()
    terminated = loop.create_future()

    def term() -> None:
        try:
            context.term()
        finally:
            try:
                loop.call_soon_threadsafe(_settle, terminated)
            except RuntimeError:  # the loop closed meanwhile: nobody waits
                pass

    threading.Thread(target=term, name="argus-client-close", daemon=True).start()
    await terminated


async def _read_replies(client_ref: weakref.ref[AsyncArgusClient], sock: zmq.asyncio.Socket) -> None:
    """The client's reply reader. A client dropped without close() is closed by its finalizer, which cancels the read
    waiting here: the reader then ends quietly."""
    try:
        while True:
            frames = await sock.recv_multipart(copy=False)
            client = client_ref()
            if client is None:
                return
            client._take_reply(frames)
            del client  # not held across the next wait
    except (zmq.ZMQError, asyncio.CancelledError):
        client = client_ref()
        if client is None or client._socket is not sock:  # dropped, or its socket replaced (_redial)
            return
        client._fail_waiting(ClientClosed("client closed"))
        # not held by the exception's traceback, which the task keeps: the client, its reader its own, in a cycle
        # that only the garbage collector's next full pass frees (with its sockets and its context's I/O thread)
        del client
        raise


async def _watch_connection(client_ref: weakref.ref[AsyncArgusClient], monitor: zmq.asyncio.Socket) -> None:
    """Hears the handshakes the engine refuses, and the connections made again, as the client's calls wait."""
    while True:
        client = client_ref()
        if client is None or client._refusal() is not None:
            return
        del client
        try:
            await monitor.poll()
        except zmq.ZMQError:  # closed by the finalizer of a client dropped without close(), or replaced (_redial)
            client = client_ref()
            if client is None or client._refusals.monitor is not monitor:
                return
            raise


class AsyncArgusClient(OwnProcess):
    """asyncio client: any number of requests in flight over one socket, in one event loop at a time (one
    asyncio.run after another is fine, as is a loop closed with calls pending: their requests are cancelled at the
    engine, and a call under the id of one waits for that one's reply before it sends; a call while another loop the
    client read replies in is still open raises RuntimeError). `timeout_s` and `retries` as ArgusClient's: a call
    that runs out of its timeout is cancelled at the engine and raises TimeoutError (EngineUnreachable with no engine
    ever reached), where asyncio.wait_for's said nothing, not even the address."""

    def __init__(self, address: str, curve: ClientKeys | None = None, retries: int = 0, timeout_s: float | None = None):
        # after the others, unlike ArgusClient's: a call that gave curve and retries by position is served as before
        self._timeout_s = checked_timeout(timeout_s)
        self._retries = checked_retries(retries)
        check_address(address)
        self._address = address
        self._curve = curve
        self._made_in = os.getpid()
        self._context = zmq.asyncio.Context()
        self._socket, self._refusals = connect(self._context, address, curve)
        self._dropped = closed_when_dropped(self, address, self._context, self._socket, self._refusals)
        self._refused: str | None = None  # why the engine will never answer, once it will not
        self._full_door = FullDoor(self._refusals)
        self._redialling: asyncio.TimerHandle | None = None  # the socket shut out by the engine's bound, replaced then
        self._codec = client_side_codec()
        self._waiting: dict[str, asyncio.Future[Reply]] = {}
        # of the requests waiting, those sent: the connection (connection_of) each was sent or last asked after on
        self._sent: dict[str, int] = {}
        # the requests of calls left waiting in an event loop closed under them, until their reply (or request_lost)
        # is read: it is theirs, not that of a call made since under the same id (kept in _sent: asked after)
        self._orphaned: set[str] = set()
        # the calls waiting to send their request again (retries), each on a future of its own: close() ends them
        self._pauses: set[asyncio.Future[None]] = set()
        # the calls waiting for a connection to send their request, each on a future of its own (see _connected), in
        # the order they were made: they go in it (a set's order sent a pipeline's requests shuffled)
        self._connecting: dict[asyncio.Future[None], None] = {}
        self._reader: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None
        self._closing = False  # close() is under way
        self._unanswered = UnansweredWarning(address, self._refusals)

    async def generate(self, prompt: str, request_id: str | None = None, **fields: Any) -> Reply:
        """Raises ValueError for a request id this client already has in flight: replies are told apart by id."""
        request = request_of(prompt, request_id, fields)
        # refused before the id is taken: a field it cannot encode (an object msgpack has no type for) must not leave
        # the id in flight
        encoded(self._codec, request)
        loop = asyncio.get_running_loop()
        # one deadline for the call, its retries included, from here; so too its request's slo_ms
        deadline = None if self._timeout_s is None else loop.time() + self._timeout_s
        retries = Retries(self._retries, request)
        bound = asyncio.timeout_at(deadline)
        try:
            async with bound:
                return await self._answer(retries, deadline)
        except TimeoutError:
            if not bound.expired():
                raise
            raise self._timed_out(retries) from None

    async def _answer(self, retries: Retries, deadline: float | None) -> Reply:
        while True:
            reply = await self._call(retries)
            pause_s = retries.pause_s(reply)
            # as ArgusClient's: no retry that would wait past the timeout (the reply, not a TimeoutError, is the answer)
            if pause_s is None or (deadline is not None and asyncio.get_running_loop().time() + pause_s >= deadline):
                return reply
            await self._pause(pause_s)

    def _timed_out(self, retries: Retries) -> Exception:
        # the handshakes heard up to now: the watcher may not have had its turn to read them
        refused = self._refusal()
        if refused:
            return ConnectionRefusedError(refused)
        # as ArgusClient's words
        why = "no reply for" if retries.sent else "could not reach the engine to send"
        return timed_out(self._address, self._refusals, self._timeout_s, f"{why} {retries.request_id}")

    async def _pause(self, pause_s: float) -> None:
        """Waits `pause_s`, or until close(), which raises ClientClosed here (as ArgusClient's _pause): a close() that
        left it sleeping, up to the minute a Busy may name, held up whoever awaited the call."""
        loop = asyncio.get_running_loop()
        pause = loop.create_future()
        ends = loop.call_later(pause_s, _settle, pause)
        self._pauses.add(pause)
        try:
            await pause
        finally:
            ends.cancel()
            self._pauses.discard(pause)

    async def _call(self, retries: Retries) -> Reply:
        refuse_if_forked(self._made_in)
        self._refuse_if_closed()
        loop = asyncio.get_running_loop()
        # first: a call waiting in a closed event loop will never return, and _read_in forgets it (its id is free once
        # its request's reply is read: _orphan_answered)
        self._read_in(loop)
        if self._refused:  # after: _read_in reads what the monitor told while no watcher ran
            raise ConnectionRefusedError(self._refused)
        request_id = retries.request_id
        if request_id in self._waiting:
            raise ValueError(f"request id {request_id!r} is already in flight on this client")
        if request_id in self._orphaned:
            await self._orphan_answered(request_id, loop)
            self._refuse_if_closed()  # by a close() begun as the orphan's reply came
        future = loop.create_future()
        self._waiting[request_id] = future
        sending: asyncio.Future | None = None
        unanswered = loop.call_later(self._unanswered.delay_s, self._warn_if_unanswered)
        try:
            # a refusal or close() fails `future`, while the waits below may last for good: no engine will take it
            await self._connected(future, loop)
            if future.done():
                return await future
            request = retries.request()  # as it goes out: with what is left of its slo_ms
            if isinstance(request, Error):
                return request  # its deadline passed before it could go
            sending = self._socket.send_multipart(encoded(self._codec, request), copy=False)
            await asyncio.wait((sending, future), return_when=asyncio.FIRST_COMPLETED)
            if not future.done():
                await sending
                self._sent[request_id] = connection_of(self._refusals)
                retries.sent = True
            elif not sending.done():
                sending.cancel()
            # else the send ended as the call did: close() fails the calls, then its socket cancels the sends still
            # waiting for room. The call's own end is the one to raise (ClientClosed, not the send's CancelledError,
            # which left the ClientClosed unretrieved, a traceback for each)
            return await future
        except asyncio.CancelledError:
            if sending is not None and not sending.done():
                sending.cancel()
            if sending is not None and not sending.cancelled():
                # the caller gave up on a request that went out: tell the engine so it stops the work. Queued on
                # the socket, not awaited: with no engine there, the queue stays full, and a caller that gave up
                # must not wait for room in it (close() drops what is still queued)
                self._socket.send_multipart(self._codec.encode(Cancel(request_id)))
                if _reply_owed(future):
                    # its reply is still to come, and is not the answer of a call made since under its id (a retry
                    # after asyncio.wait_for timed out): that call took it (another prompt's images), and the engine,
                    # still holding this request, refused its own. Orphaned, as a call left in a closed loop is
                    self._orphaned.add(request_id)
                    self._sent.setdefault(request_id, connection_of(self._refusals))
            raise
        finally:
            unanswered.cancel()
            if self._forget_waiting(request_id, future) and request_id not in self._orphaned:
                self._sent.pop(request_id, None)

    async def _connected(self, future: asyncio.Future[Reply], loop: asyncio.AbstractEventLoop) -> None:
        """Returns once the socket is connected to an engine (as the watcher has heard), or `future` is done. A DEALER
        queues what is sent with no engine connected, for the next connection, up to its high-water mark: calls that
        timed out or were cancelled while the engine was down left their requests (50,000: RSS +59 MB) and Cancels
        queued, and the engine back ran each for no one. Waiting here, a call given up on sends nothing."""
        while not self._refusals.connected and not future.done():
            # one each: the done-callbacks of one future all awaited took it out one by one as each call ended, for
            # 40,000 calls timed out together 120 s of CPU
            connecting = loop.create_future()
            self._connecting[connecting] = None
            try:
                await asyncio.wait((connecting, future), return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._connecting.pop(connecting, None)

    def _forget_waiting(self, request_id: str, future: asyncio.Future) -> bool:
        """Takes out the call's `future` under `request_id`, if it is still there: whether it was. A call left in a
        closed event loop was taken out already (_forget_calls_of_closed_loops), and its coroutine is closed when the
        garbage collector finds it, any time after: taking out whatever was under its id then took the next call's
        wait for the orphan's reply, which waited for ever, its request never sent."""
        if self._waiting.get(request_id) is not future:
            return False
        del self._waiting[request_id]
        return True

    def _refuse_if_closed(self) -> None:
        refuse_if_closed(self._socket)
        if self._closing:
            # close() has told the engine to stop the requests in flight, and waits for the reader to end: a request
            # sent now went out uncancelled, and the engine ran it for no one
            raise ClientClosed("client closed")

    def _read_in(self, loop: asyncio.AbstractEventLoop) -> None:
        """Starts the reply reader and refusal watcher in `loop`, the running one, unless they run in it already."""
        if self._reader is not None and not self._reader.done():
            if self._reader.get_loop() is loop:
                return
            if not self._reader.get_loop().is_closed():
                raise RuntimeError(
                    "this AsyncArgusClient reads its replies in another event loop, still open: a client serves one"
                    " loop at a time (close that loop first, or give each loop a client of its own)"
                )
            # its loop was closed with them pending (loop.close() without cancelling its tasks; asyncio.run cancels
            # them): every reply went on to the read the reader left pending there, and each call waited for ever
            for task in (self._reader, self._watcher):
                _cancel_in_closed_loop(task)
            _cancel_polls_in_closed_loops(self._refusals.monitor)
        # else none yet, or done: their event loop ended (asyncio.run returned), and this call runs in another
        self._forget_calls_of_closed_loops()
        self._redialling = None  # of a loop gone: never to run
        self._start_tasks(loop)

    def _start_tasks(self, loop: asyncio.AbstractEventLoop) -> None:
        # holding the client weakly: the loop holds its tasks, and a client its tasks held was never collected while
        # the loop ran, so one dropped without close() kept its context's I/O thread and sockets open, unwarned
        client = weakref.ref(self)
        self._reader = loop.create_task(_read_replies(client, self._socket))
        self._watcher = loop.create_task(_watch_connection(client, self._refusals.monitor))
        # the watcher's first look, taken now: its turn comes after this call's send, and a connection that ended
        # while no loop ran one (the client idle between asyncio.run calls) took the request into its queue, for the
        # next engine
        self._refusal()

    def _forget_calls_of_closed_loops(self) -> None:
        """A call still waiting when its event loop was closed never returns: its future, resolved, raised 'Event loop
        is closed' (its reply read in the next loop ended the reader there, and every call after waited for ever;
        close() raised, leaving the sockets open). Its request, if sent, is cancelled at the engine, and orphaned
        until its reply is read."""
        orphaned = []
        for request_id, future in list(self._waiting.items()):
            if future.get_loop().is_closed():
                del self._waiting[request_id]
                # not one whose reply was read (no other is to come), but one whose task was cancelled as it closed
                if request_id in self._sent and _reply_owed(future):
                    orphaned.append(request_id)
                else:
                    self._sent.pop(request_id, None)
        self._orphaned.update(orphaned)
        self._cancel_at_engine(orphaned)
        self._pauses = {pause for pause in self._pauses if not pause.get_loop().is_closed()}

    async def _orphan_answered(self, request_id: str, loop: asyncio.AbstractEventLoop) -> None:
        """Waits for the reply to the orphaned request under `request_id`. A call under its id sent before it was read
        took it for its own reply (another prompt's images), and the engine, still holding the orphan, refused its
        request."""
        answered = loop.create_future()
        self._waiting[request_id] = answered
        try:
            await answered
        finally:
            self._forget_waiting(request_id, answered)

    def _took_orphans_reply(self, request_id: str) -> bool:
        """Whether a reply under `request_id` is an orphaned request's (see _orphan_answered), and so dropped."""
        if request_id not in self._orphaned:
            return False
        self._orphaned.discard(request_id)
        self._sent.pop(request_id, None)
        answered = self._waiting.get(request_id)
        if answered is not None and not answered.done():
            answered.set_result(None)
        return True

    def _take_reply(self, frames: list) -> None:
        reply = self._codec.decode(frames)
        if isinstance(reply, DecodeError):
            self._on_undecodable(frames, reply.reason)
            return
        if self._took_orphans_reply(reply.request_id):
            return
        future = self._waiting.get(reply.request_id)
        if future is not None and not future.done():
            future.set_result(reply)

    def _on_undecodable(self, frames: list, reason: str) -> None:
        if self._refusals.not_an_engine():
            # what a peer that speaks no ZeroMQ sent: no call's reply, and none will come. The same refusal as
            # ArgusClient's, which reads it from the same message
            self._refusal()
            return
        # not_an_engine() read the monitor's events: a handshake heard there is none the watcher will hear
        self._heard()
        # the call it answers raises, as ArgusClient's does, rather than wait for a reply already come
        answered_id = salvage_request_id(frames[0].buffer)
        if not answered_id:
            # it names no request: any call's answer, or none, and each waited for ever. Each raises, as ArgusClient's
            # call in flight does, and the engine is told to go on with none of them
            self._cancel_at_engine(self._unanswered_ids())
            self._fail_waiting(undecodable(self._address, reason))
            return
        if self._took_orphans_reply(answered_id):
            return
        future = self._waiting.get(answered_id)
        if future is not None and not future.done():
            future.set_exception(undecodable(self._address, reason))

    def _warn_if_unanswered(self) -> None:
        if not self._refusal():
            self._unanswered()

    def _refusal(self) -> str | None:
        """Why the engine will never answer, from the monitor as it is now, not as the watcher last read it (a
        handshake it has not had its turn to hear is no silence); the calls waiting fail with it. The watcher does
        not hear what is read here: so here, what it heard is acted on (_heard)."""
        refused = self._refusals.reason()
        if refused and self._refused is None:
            self._refused = refused
            self._fail_waiting(ConnectionRefusedError(refused))
        if not refused:
            self._heard()
        if self._refusals.shut_out and self._redialling is None and not self._closing:
            # the calls wait on, each within its timeout, as for an engine down
            self._redialling = asyncio.get_running_loop().call_later(self._full_door.pause_s(), self._redial)
        return refused

    def _redial(self) -> None:
        """Replaces the socket shut out by the engine's bound, and the reader and watcher of the one replaced."""
        self._redialling = None
        # or got in meanwhile (see RefusedHandshakes.shut_out): what it sent since would be lost with it
        if self._closing or self._socket.closed or not self._refusals.shut_out:
            return
        for task in (self._reader, self._watcher):
            if task is not None:
                task.cancel()  # before their sockets close: each then ends quietly, its socket replaced
        self._socket, self._dropped = redial(
            self, self._dropped, self._context, self._socket, self._refusals, self._address, self._curve
        )
        self._start_tasks(asyncio.get_running_loop())

    def _heard(self) -> None:
        """Acts on the monitor's events read: the requests sent are asked after once connected again, and the calls
        waiting to send theirs go once connected."""
        self._ask_if_reconnected()
        if self._refusals.connected:
            connecting, self._connecting = self._connecting, {}
            for waiting in connecting:
                if not waiting.get_loop().is_closed():  # its call never returns (_forget_calls_of_closed_loops)
                    _settle(waiting)

    def _ask_if_reconnected(self) -> None:
        """As ArgusClient's: the requests sent before the socket connected again, sent to an engine since restarted or
        lost with the connection, would never be answered."""
        handshakes = self._refusals.handshakes
        asked = [request_id for request_id, since in self._sent.items() if since < handshakes]
        if not asked:
            return
        # through a blocking socket over the same one, never waiting, as close() sends
        sock = zmq.Socket.shadow(self._socket.underlying)
        for first in range(0, len(asked), MAX_INQUIRED_IDS):
            chunk = asked[first : first + MAX_INQUIRED_IDS]
            self._sent.update(dict.fromkeys(chunk, handshakes))
            send_now(sock, self._codec.encode(Inquire(chunk)))
        # a send takes in ZeroMQ's wake-up for a reply landed since the loop last looked, and only the asyncio
        # socket's own calls pass it on to the reader: asked so, it reads what is there (it waited for ever)
        self._socket.get(zmq.EVENTS)

    def _unanswered_ids(self) -> list[str]:
        """The requests in flight (answered ones' calls may be yet to return)."""
        return [request_id for request_id, future in self._waiting.items() if not future.done()]

    def _cancel_at_engine(self, request_ids: list[str]) -> None:
        """Tells the engine to stop `request_ids`, without waiting for room to."""
        # through a blocking socket over the same one: an asyncio socket fails the future of a send that would block
        # rather than raise, which left a 'Future exception was never retrieved' traceback per request in flight
        # once the queue was full (the engine down)
        sock = zmq.Socket.shadow(self._socket.underlying)
        for request_id in request_ids:
            try:
                sock.send_multipart(self._codec.encode(Cancel(request_id)), zmq.DONTWAIT)
            except zmq.Again:
                break  # nobody to tell

    def _fail_waiting(self, error: Exception) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        """Requests still in flight are cancelled at the engine and raise ClientClosed here, as do calls waiting to send
        theirs again (retries) and calls made while it closes (they send nothing). Closing again does nothing (as for
        ArgusClient): a close() inside `async with` raised TypeError at the block's end. Cancelled as it closes, it
        closes all the same, then raises CancelledError."""
        if forked(self._made_in) or self._socket.closed:
            return  # forked: the sockets, and the calls in flight, are the parent's (see refuse_if_forked)
        self._closing = True
        if self._redialling is not None:
            self._redialling.cancel()
        self._cancel_at_engine(self._unanswered_ids())
        closing = asyncio.current_task()
        cancels = closing.cancelling() if closing else 0
        for task in (self._reader, self._watcher):
            if task is not None and task.get_loop().is_closed():
                _cancel_in_closed_loop(task)  # it can never run again, and awaiting it raised: the sockets stayed open
            elif task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, zmq.ZMQError):
                    pass
        # here too, not only by the reader: a reader cancelled before its first turn (a call sent in the same turn
        # as the close) never runs, and its calls waited for ever
        self._forget_calls_of_closed_loops()
        self._fail_waiting(ClientClosed("client closed"))
        for pause in self._pauses:
            if not pause.done():
                pause.set_exception(ClientClosed("client closed during the call"))
        self._dropped.detach()
        # the sockets in the loop (a zmq.asyncio socket's close takes its reader out of the loop), the context off it
        close_sockets(self._socket, self._refusals)
        await _terminated(self._context)
        if closing and closing.cancelling() > cancels:
            # cancelled as it waited for a task above, whose own end raises the same CancelledError: closed all the
            # same, it ends cancelled. Swallowed, the task ran on past close() (a wait_for of it that timed out
            # returned; asyncio.run's end waited on a task it had cancelled)
            raise asyncio.CancelledError

    async def __aenter__(self) -> AsyncArgusClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
