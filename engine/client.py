"""Client classes for pipelines that talk to the engine's ZeroMQ front door.

`ArgusClient` is blocking; `AsyncArgusClient` pipelines many requests over one
socket, resolving each reply's future by request id. Against an engine that
requires CURVE, pass `curve=ClientKeys.from_files(my.key_secret, engine.key)`. Both return the engine's
terminal message: Images, Error, Busy or Cancelled (never raise for those). Both raise ConnectionRefusedError,
saying why, once the engine refuses this client's CURVE key, CURVE is on at one end only, or the address is no
argus engine's ZeroMQ one (an HTTP port): no reply would ever come. ArgusClient raises EngineUnreachable, a
TimeoutError, for a call that timed out with no engine ever reached at the address; a call that waits
UNANSWERED_WARNING_S so is logged as a warning, once per client (the async client's calls wait for ever).

Replies are matched to requests by request id. The engine answers every
request exactly once, even one the client gave up on (timed out or cancelled),
and that late reply cannot be told from the reply to a retry under the same id:
retry with a fresh id (the default when none is given). An id must be a string
of 1 to 128 characters: any other ("" included) raises ValueError before anything is sent.

Connected again (a dropped connection, an engine restarted on the address), a
client asks after the requests it awaits (Inquire): each the engine does not
hold is answered Error request_lost, where it would never have been answered.
With `retries`, a call sends its request again, under its id, after a Busy or a
request_lost: the engine holds nothing under that id then, so no late reply can
come for it.
"""

from __future__ import annotations

import asyncio
import logging
import reprlib
import threading
import time
import uuid
import warnings
import weakref
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from protocols.client_messages import (
    Busy,
    Cancel,
    Cancelled,
    Error,
    Generate,
    Images,
    Inquire,
    RequestId,
    client_side_codec,
    salvage_request_id,
)
from protocols.codec import DecodeError
from protocols.curve import ClientKeys, RefusedHandshakes
from protocols.limits import MAX_INQUIRED_IDS, MAX_REQUEST_ID_CHARS
from protocols.sockets import is_zmq_address, make_socket

Reply = Images | Error | Busy | Cancelled

log = logging.getLogger("argus.client")


# what is still queued at close, a Cancel above all, gets this long to reach the engine
_CLOSE_LINGER_MS = 500
# the longest a blocking call waits in C before a signal handler can run (see ArgusClient._wait)
_POLL_SLICE_MS = 200
# a connection that died without a word (the engine's host gone, a NAT that forgot the flow) is found by pings
# and dialled again: TCP alone kept it for ever while idle, and for about 15 minutes of retransmissions once a request
# was sent, every call timing out meanwhile even with a new engine up on the address. The timeout runs from a ping
# to the next whole frame in, so it leaves room for a large reply on a slow link (10 MB at 200 kB/s)
_HEARTBEAT_INTERVAL_MS = 10_000
_HEARTBEAT_TIMEOUT_MS = 60_000
# ZeroMQ's send timeout is an int of milliseconds
_MAX_TIMEOUT_S = (2**31 - 1) / 1000
# a call waiting this long with no engine ever reached is worth a warning, once per client, as `argus worker` warns of
# hellos unanswered: a mistyped address or an engine down looks like a slow engine, and a call without a timeout
# waits for ever
UNANSWERED_WARNING_S = 10.0
# the keywords generate() takes (another is a TypeError, None or not)
_FIELDS = frozenset(Generate.__struct_fields__)


class ClientClosed(Exception):
    """A call made on a closed client, or still in flight when it was closed."""


class EngineUnreachable(TimeoutError):
    """A call timed out, and no handshake with an engine ever succeeded at the client's address: nothing answered
    there (no engine up, a host that does not resolve or does not answer). A plain TimeoutError is an engine reached
    that did not reply in time. A TimeoutError too, as it is one: code that handles timeouts still does, and the
    call may have come only early (an engine that comes up later is dialled, and answers the next call)."""


def _unreached(address: str, waited_s: float) -> EngineUnreachable:
    return EngineUnreachable(
        f"nothing answered at {address} in {waited_s:g} s: check that the engine is up and that {address} is its"
        " --client-listen address"
    )


class _UnansweredWarning:
    """Warns, the first time it is called, if the client never reached an engine (as of the monitor events read:
    the caller reads them first)."""

    def __init__(self, address: str, refusals: RefusedHandshakes):
        self._address = address
        self._refusals = refusals
        self._said = False

    def __call__(self) -> None:
        if self._said or self._refusals.handshook:
            return
        self._said = True
        log.warning(
            "no answer from an engine at %s for %g s: is it up, and is that its --client-listen address?",
            self._address,
            UNANSWERED_WARNING_S,
        )


def _check_address(address: str) -> None:
    """Before a context is made: ZeroMQ refused 'localhost:5555' as 'Invalid argument', and an http:// URL as
    'Protocol not supported', naming neither what it wants; a port past 65535 was taken, then never answered."""
    if not isinstance(address, str) or not is_zmq_address(address):
        hint = " (an HTTP URL: this client speaks ZeroMQ)" if str(address).startswith(("http://", "https://")) else ""
        raise ValueError(
            f"{address!r}{hint}: expected the engine's ZeroMQ client address, tcp://HOST:PORT or ipc://PATH, as"
            " its --client-listen says (default tcp://127.0.0.1:5555)"
        )


def _connect(context: zmq.Context, address: str, curve: ClientKeys | None) -> tuple[zmq.Socket, RefusedHandshakes]:
    # an identity of its own, kept across reconnects: the engine sends each reply to the identity that asked,
    # and libzmq would give a reconnected socket a new one, so a dropped connection would lose every reply
    identity = uuid.uuid4().hex.encode()
    try:
        heartbeat = (_HEARTBEAT_INTERVAL_MS, _HEARTBEAT_TIMEOUT_MS)
        sock = make_socket(context, zmq.DEALER, identity=identity, curve_client=curve, heartbeat_ms=heartbeat)
        # heard from before the socket connects: a refusal that came first would go unheard, and a call wait for
        # ever (or for its timeout) on an engine that will never answer it
        refusals = RefusedHandshakes(sock, address, curve is not None)
        sock.connect(address)
        return sock, refusals
    except zmq.ZMQError:
        # an address ZeroMQ refuses: the client is not made, so nothing would close its own context, and a
        # context left with a socket in it blocks whoever terminates it (the garbage collector: for ever)
        context.destroy(linger=0)
        raise


def _closed_when_dropped(
    client: object, address: str, context: zmq.Context, sock: zmq.Socket, refusals: RefusedHandshakes
) -> weakref.finalize:
    """Closes the client's sockets and context, with a ResourceWarning, if the client is dropped without close().
    pyzmq's own finalizers hung the process for ever on a client collected in a reference cycle (an AsyncArgusClient
    is in one once it has made a call, through its reader task): the garbage collector clears weak references first,
    so the context's finalizer found no socket left to close, and waited in term() for sockets not yet closed. A
    weakref.finalize runs before any finalizer of the cycle, and holds what it closes out of it."""
    dropped = weakref.finalize(client, _close_dropped, address, context, sock, refusals)
    # as pyzmq does at exit: a thread may still be in a call, on a socket that must not close under it
    dropped.atexit = False
    return dropped


def _close_dropped(address: str, context: zmq.Context, sock: zmq.Socket, refusals: RefusedHandshakes) -> None:
    warnings.warn(f"argus client of {address} dropped without close(): closing it", ResourceWarning, stacklevel=1)
    _close_all(context, sock, refusals)


def _close_all(context: zmq.Context, sock: zmq.Socket, refusals: RefusedHandshakes) -> None:
    refusals.close()
    sock.close(linger=_CLOSE_LINGER_MS)
    context.term()


def _cancel_in_closed_loop(task: asyncio.Task) -> None:
    """Cancels the zmq.asyncio read a task of a closed event loop waits on, so that pyzmq skips it and hands the next
    message to a read in the running loop. The read is marked cancelled before its loop refuses to schedule the
    task's wake-up (pyzmq's own close() cancels its reads so, in a loop torn down)."""
    try:
        task.cancel()
    except RuntimeError:  # 'Event loop is closed'
        pass


def _undecodable(address: str, reason: str) -> ValueError:
    # from a peer that took the handshake: an engine of another version, or another ZeroMQ program (a peer that
    # speaks no ZeroMQ is a refusal, see RefusedHandshakes.not_an_engine)
    return ValueError(
        f"undecodable reply from {address}: {reason} (is it an argus engine's --client-listen address, of this"
        " version?)"
    )


def _refuse_if_closed(sock: zmq.Socket) -> None:
    # rather than ZeroMQ's 'Socket operation on non-socket', and (async) a reader task failing unseen
    if sock.closed:
        raise ClientClosed("client closed")


def _send_now(sock: zmq.Socket, frames: list) -> None:
    """Sends a message only if it can go at once: one with no connection to take it has nobody to tell (a Cancel), or
    is asked again at the next connection (an Inquire)."""
    try:
        sock.send_multipart(frames, zmq.DONTWAIT)
    except zmq.Again:
        pass


def _checked_retries(retries: int) -> int:
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ValueError(f"retries must be a whole number of 0 or more, not {retries!r}")
    return retries


def _retry_pause_s(reply: Reply) -> float | None:
    """How long to wait before sending a request again after this reply, or None if the reply is the call's answer:
    Busy after the time it names, request_lost at once (the engine holds nothing of it: sending it again is safe)."""
    if isinstance(reply, Busy):
        return reply.retry_after_ms / 1000
    if isinstance(reply, Error) and reply.code == "request_lost":
        return 0.0
    return None


def _connection(refusals: RefusedHandshakes) -> int:
    """The connection to the engine a message sent now goes out on, numbered by the handshakes heard: one sent before
    the first is queued for it. A request is asked after (Inquire) once a later one succeeds."""
    return max(refusals.handshakes, 1)


def _generate(prompt: str, request_id: str | None, fields: dict[str, Any]) -> Generate:
    # only None asks for a fresh id: "" is a caller's mistake (the engine would refuse it), not a request for one
    if request_id is None:
        request_id = uuid.uuid4().hex
    # None is a field's default, as HTTP's null is: a pipeline may pass its own optional settings on (steps=None).
    # Left out here, not sent: on the wire a field is a value or absent, and the engine refuses nil where the
    # default is not None (README)
    fields = {name: value for name, value in fields.items() if value is not None or name not in _FIELDS}
    try:
        # checked here, not left to the engine: it answers an id it cannot read (not a string, too long) under ""
        # or the id cut short, which no call would match, so the call would wait for ever
        msgspec.convert(request_id, RequestId)
    except msgspec.ValidationError:
        raise ValueError(_request_id_problem(request_id)) from None
    return Generate(request_id=request_id, prompt=prompt, **fields)


def _request_id_problem(request_id: object) -> str:
    # reprlib shortens a long id in the middle and keeps its quotes: the message stays one readable line
    if not isinstance(request_id, str):
        return f"request_id must be a string, got {type(request_id).__name__} {reprlib.repr(request_id)}"
    return (
        f"request_id must be 1 to {MAX_REQUEST_ID_CHARS} characters, got {len(request_id)}: {reprlib.repr(request_id)}"
    )


class ArgusClient:
    """Blocking client: one request at a time. Calls from several threads take turns, each within its timeout from
    the moment it is called, its wait for the turn included: for requests in parallel, give each thread a client of
    its own, or use AsyncArgusClient. `retries`: how many times a call sends its request again after a Busy (once
    the time it names has passed, if that is within the timeout) or a request_lost, before it returns that reply."""

    def __init__(self, address: str, timeout_s: float | None = None, curve: ClientKeys | None = None, retries: int = 0):
        # checked before the socket is made: ZeroMQ refused a negative one with 'Invalid argument' (NaN, infinity
        # and over 24 days failed otherwise), each time leaving the socket and context unclosed
        if timeout_s is not None and not 0 < timeout_s <= _MAX_TIMEOUT_S:
            raise ValueError(f"timeout_s must be above 0 and at most {_MAX_TIMEOUT_S:.0f} (or None), not {timeout_s}")
        self._retries = _checked_retries(retries)
        _check_address(address)
        self._address = address
        self._context = zmq.Context()
        self._socket, self._refusals = _connect(self._context, address, curve)
        self._dropped = _closed_when_dropped(self, address, self._context, self._socket, self._refusals)
        self._poller = zmq.Poller()
        self._poller.register(self._refusals.monitor, zmq.POLLIN)
        self._codec = client_side_codec()
        # a call takes every reply that is not its own for a stale one and drops it: another thread's call in
        # between would lose its reply (and ZeroMQ sockets must not be used by two threads at once)
        self._turn = threading.Lock()
        self._closing = False  # set by close(): a call in another thread gives up at its next poll slice
        self._calling: int | None = None  # the thread whose call holds the turn
        self._timeout_s = timeout_s
        self._unanswered = _UnansweredWarning(address, self._refusals)
        self._warn_at = 0.0  # when the call in progress has waited UNANSWERED_WARNING_S
        # the request sent and awaited, and the connection (_connection) it was sent or last asked after on
        self._awaited: tuple[str, int] | None = None

    def generate(self, prompt: str, request_id: str | None = None, **fields: Any) -> Reply:
        request = _generate(prompt, request_id, fields)
        # one deadline for the call, from here: a call that waited for the turn and then for its own timeout_s took
        # up to N timeouts behind N - 1 other threads' calls
        deadline = self._deadline()
        if not self._turn.acquire(timeout=-1 if deadline is None else max(0.0, deadline - time.monotonic())):
            raise self._timed_out(f"{request.request_id} not sent: other threads' calls held this client")
        try:
            _refuse_if_closed(self._socket)
            self._calling = threading.get_ident()
            try:
                return self._exchange(request, deadline)
            finally:
                self._calling = None
                if self._closing:
                    self._close()  # asked for by a signal handler during this call, which could not wait for it
        finally:
            self._turn.release()

    def _exchange(self, request: Generate, deadline: float | None) -> Reply:
        try:
            retries_left = self._retries
            while True:
                reply = self._send_and_wait(request, deadline)
                pause_s = _retry_pause_s(reply)
                if not retries_left or pause_s is None or not self._pause(pause_s, deadline):
                    return reply
                retries_left -= 1
        except (KeyboardInterrupt, ClientClosed):
            # the caller gave up (Ctrl-C, or close() from another thread), maybe as the request went out: the engine
            # stops its work, as at a timeout
            self._cancel(request.request_id)
            raise

    def _send_and_wait(self, request: Generate, deadline: float | None) -> Reply:
        # neither the wait for room to send nor the late replies skipped on the way may extend the call's deadline
        self._warn_at = time.monotonic() + UNANSWERED_WARNING_S
        self._send(request, deadline)
        self._awaited = (request.request_id, _connection(self._refusals))
        try:
            return self._reply_to(request.request_id, deadline)
        finally:
            self._awaited = None

    def _reply_to(self, request_id: str, deadline: float | None) -> Reply:
        while True:
            if not self._wait(zmq.POLLIN, deadline):
                self._cancel(request_id)
                raise self._timed_out(f"no reply for {request_id}")
            reply = self._codec.decode(self._socket.recv_multipart(copy=False))
            if isinstance(reply, DecodeError):
                refused = self._refusals.not_an_engine()
                if refused:
                    raise ConnectionRefusedError(refused)
                raise _undecodable(self._address, reply.reason)
            if reply.request_id == request_id:
                return reply
            # a stale reply to an earlier request that timed out, or the request_lost after a reply: skip it

    def _send(self, request: Generate, deadline: float | None) -> None:
        # a DEALER with no connected peer (engine down, CURVE refused) blocks on send: bound that too. Never blocking:
        # the engine can refuse the handshake between the poll that saw room and the send, and ZeroMQ then drops the
        # connection's queue, the only one; a blocking send waited for ever (CI, 2026-12-03)
        frames = self._codec.encode(request)
        while True:
            if not self._wait(zmq.POLLOUT, deadline):
                raise self._timed_out(f"could not reach the engine to send {request.request_id}")
            try:
                self._socket.send_multipart(frames, zmq.DONTWAIT, copy=False)
                return
            except zmq.Again:
                continue  # the room went: wait again, hearing the refusal or the deadline

    def _pause(self, pause_s: float, deadline: float | None) -> bool:
        """Waits `pause_s`, in slices close() can end; False, at once, if the deadline comes first."""
        end = time.monotonic() + pause_s
        if deadline is not None and end >= deadline:
            return False
        while (left_s := end - time.monotonic()) > 0:
            time.sleep(min(left_s, _POLL_SLICE_MS / 1000))
            if self._closing:
                raise ClientClosed("client closed during the call")
        return True

    def _deadline(self) -> float | None:
        return None if self._timeout_s is None else time.monotonic() + self._timeout_s

    def _timed_out(self, why: str) -> TimeoutError:
        # the handshakes heard up to the deadline: _wait read the monitor last as it ended
        if not self._refusals.handshook:
            return _unreached(self._address, self._timeout_s)
        return TimeoutError(why)

    def _wait(self, events: int, deadline: float | None) -> bool:
        """True once the socket is ready for `events`, False at the deadline; raises ConnectionRefusedError once
        the engine will never answer."""
        self._poller.register(self._socket, events)
        while True:
            left_ms = None if deadline is None else max(0, round((deadline - time.monotonic()) * 1000))
            # in slices: Ctrl-C taken by another of the process's threads interrupts no poll, and is only raised
            # here once the poll returns to Python (a poll without end never would)
            ready = dict(self._poller.poll(_POLL_SLICE_MS if left_ms is None else min(left_ms, _POLL_SLICE_MS)))
            if self._closing:
                raise ClientClosed("client closed during the call")
            refused = self._refusals.reason()
            if refused:
                raise ConnectionRefusedError(refused)
            if time.monotonic() >= self._warn_at:
                self._unanswered()
            if self._socket in ready:
                return True
            # with nothing come to read: a reply already come needs no asking after, and would be followed by the
            # request_lost of an engine that holds the request no more
            self._ask_if_reconnected()
            if left_ms is not None and left_ms <= _POLL_SLICE_MS:
                return False

    def _ask_if_reconnected(self) -> None:
        """Asks the engine after the request awaited once connected again since it was sent (as of the events
        reason() read): sent to an engine since restarted, or lost with the connection, it would never be answered."""
        if self._awaited is None or self._refusals.handshakes <= self._awaited[1]:
            return
        request_id = self._awaited[0]
        self._awaited = (request_id, self._refusals.handshakes)
        _send_now(self._socket, self._codec.encode(Inquire([request_id])))

    def _cancel(self, request_id: str) -> None:
        _send_now(self._socket, self._codec.encode(Cancel(request_id)))

    def close(self) -> None:
        """A call in flight in another thread is cancelled at the engine and raises ClientClosed, rather than poll a
        socket closed under it (ZeroMQ sockets are not thread-safe)."""
        self._closing = True
        if self._calling == threading.get_ident():
            return  # a signal handler, during this thread's call: waiting for the turn would wait for ever
        with self._turn:
            self._close()

    def _close(self) -> None:
        self._dropped.detach()
        _close_all(self._context, self._socket, self._refusals)

    def __enter__(self) -> ArgusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncArgusClient:
    """asyncio client: any number of requests in flight over one socket, in one event loop at a time (one
    asyncio.run after another is fine, as is a loop closed with calls pending; a call while another loop the client
    read replies in is still open raises RuntimeError). `retries` as ArgusClient's."""

    def __init__(self, address: str, curve: ClientKeys | None = None, retries: int = 0):
        self._retries = _checked_retries(retries)
        _check_address(address)
        self._address = address
        self._context = zmq.asyncio.Context()
        self._socket, self._refusals = _connect(self._context, address, curve)
        self._dropped = _closed_when_dropped(self, address, self._context, self._socket, self._refusals)
        self._refused: str | None = None  # why the engine will never answer, once it will not
        self._codec = client_side_codec()
        self._waiting: dict[str, asyncio.Future[Reply]] = {}
        # of the requests waiting, those sent: the connection (_connection) each was sent or last asked after on
        self._sent: dict[str, int] = {}
        self._reader: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None
        self._unanswered = _UnansweredWarning(address, self._refusals)

    async def generate(self, prompt: str, request_id: str | None = None, **fields: Any) -> Reply:
        """Raises ValueError for a request id this client already has in flight: replies are told apart by id."""
        request = _generate(prompt, request_id, fields)
        retries_left = self._retries
        while True:
            reply = await self._call(request)
            pause_s = _retry_pause_s(reply)
            if not retries_left or pause_s is None:
                return reply
            retries_left -= 1
            await asyncio.sleep(pause_s)

    async def _call(self, request: Generate) -> Reply:
        _refuse_if_closed(self._socket)
        if self._refused:
            raise ConnectionRefusedError(self._refused)
        if request.request_id in self._waiting:
            raise ValueError(f"request id {request.request_id!r} is already in flight on this client")
        # encoded before the id is taken: a field it cannot encode (a numpy int) must not leave the id in flight
        frames = self._codec.encode(request)
        loop = asyncio.get_running_loop()
        self._read_in(loop)
        future = loop.create_future()
        self._waiting[request.request_id] = future
        sending = self._socket.send_multipart(frames, copy=False)
        unanswered = loop.call_later(UNANSWERED_WARNING_S, self._warn_if_unanswered)
        try:
            # a refusal fails `future`, while the send may wait for good: no engine will take it
            await asyncio.wait((sending, future), return_when=asyncio.FIRST_COMPLETED)
            if future.done() and not sending.done():
                sending.cancel()
            else:
                await sending
                self._sent[request.request_id] = _connection(self._refusals)
            return await future
        except asyncio.CancelledError:
            if not sending.done():
                sending.cancel()
            if not sending.cancelled():
                # the caller gave up on a request that went out: tell the engine so it stops the work. Queued on
                # the socket, not awaited: with no engine there, the queue stays full, and a caller that gave up
                # must not wait for room in it (close() drops what is still queued)
                self._socket.send_multipart(self._codec.encode(Cancel(request.request_id)))
            raise
        finally:
            unanswered.cancel()
            self._waiting.pop(request.request_id, None)
            self._sent.pop(request.request_id, None)

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
        # else none yet, or done: their event loop ended (asyncio.run returned), and this call runs in another
        self._forget_calls_of_closed_loops()
        self._reader = loop.create_task(self._read_replies())
        self._watcher = loop.create_task(self._watch_connection())

    def _forget_calls_of_closed_loops(self) -> None:
        """A call still waiting when its event loop was closed never returns: its future, resolved, raised 'Event loop
        is closed' (its reply read in the next loop ended the reader there, and every call after waited for ever;
        close() raised, leaving the sockets open), and its request is asked after (Inquire) no more."""
        for request_id, future in list(self._waiting.items()):
            if future.get_loop().is_closed():
                del self._waiting[request_id]
                self._sent.pop(request_id, None)

    async def _read_replies(self) -> None:
        try:
            while True:
                frames = await self._socket.recv_multipart(copy=False)
                reply = self._codec.decode(frames)
                if isinstance(reply, DecodeError):
                    self._on_undecodable(frames, reply.reason)
                    continue
                future = self._waiting.get(reply.request_id)
                if future is not None and not future.done():
                    future.set_result(reply)
        except (zmq.ZMQError, asyncio.CancelledError):
            self._fail_waiting(ClientClosed("client closed"))
            raise

    def _on_undecodable(self, frames: list, reason: str) -> None:
        if self._refusals.not_an_engine():
            # what a peer that speaks no ZeroMQ sent: no call's reply, and none will come. The same refusal as
            # ArgusClient's, which reads it from the same message
            self._refusal()
            return
        # not_an_engine() read the monitor's events: a handshake heard there is none the watcher will hear
        self._ask_if_reconnected()
        # the call it answers raises, as ArgusClient's does, rather than wait for a reply already come
        future = self._waiting.get(salvage_request_id(frames[0].buffer))
        if future is not None and not future.done():
            future.set_exception(_undecodable(self._address, reason))

    def _warn_if_unanswered(self) -> None:
        if not self._refusal():
            self._unanswered()

    def _refusal(self) -> str | None:
        """Why the engine will never answer, from the monitor as it is now, not as the watcher last read it (a
        handshake it has not had its turn to hear is no silence); the calls waiting fail with it. The watcher does
        not hear what is read here: so here, the requests sent are asked after once connected again."""
        refused = self._refusals.reason()
        if refused and self._refused is None:
            self._refused = refused
            self._fail_waiting(ConnectionRefusedError(refused))
        if not refused:
            self._ask_if_reconnected()
        return refused

    async def _watch_connection(self) -> None:
        while self._refusal() is None:
            await self._refusals.monitor.poll()

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
            _send_now(sock, self._codec.encode(Inquire(chunk)))

    def _fail_waiting(self, error: Exception) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        """Requests still in flight are cancelled at the engine and raise ClientClosed here. Closing again does
        nothing (as for ArgusClient): a close() inside `async with` raised TypeError at the block's end."""
        if self._socket.closed:
            return
        # through a blocking socket over the same one: an asyncio socket fails the future of a send that would block
        # rather than raise, which left a 'Future exception was never retrieved' traceback per request in flight
        # once the queue was full (the engine down)
        sock = zmq.Socket.shadow(self._socket.underlying)
        for request_id in self._waiting:
            try:
                sock.send_multipart(self._codec.encode(Cancel(request_id)), zmq.DONTWAIT)
            except zmq.Again:
                break  # nobody to tell
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
        self._dropped.detach()
        _close_all(self._context, self._socket, self._refusals)

    async def __aenter__(self) -> AsyncArgusClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
