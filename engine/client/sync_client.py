"""`ArgusClient`: the blocking client of the engine's ZeroMQ front door (see engine.client)."""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any

import zmq

from engine.client.link import (
    ClientClosed,
    FullDoor,
    OwnProcess,
    Reply,
    Retries,
    UnansweredWarning,
    check_address,
    checked_retries,
    close_all,
    closed_when_dropped,
    connect,
    connection_of,
    encoded,
    forked,
    is_lost,
    redial,
    refuse_if_closed,
    refuse_if_forked,
    request_of,
    send_now,
    undecodable,
)
from engine.client.timeouts import checked_timeout, timed_out
from protocols.client_messages import Cancel, Error, Generate, Inquire, client_side_codec, salvage_request_id
from protocols.codec import DecodeError
from protocols.curve import ClientKeys

# the longest a blocking call waits in C before a signal handler can run (see ArgusClient._wait)
_POLL_SLICE_MS = 200
# requests given up on whose replies are still to come, kept by id (see ArgusClient._given_up): past this many (an
# engine that answers none of them), the oldest is forgotten
_MAX_GIVEN_UP = 1000


class ArgusClient(OwnProcess):
    """Blocking client: one request at a time. Calls from several threads take turns, each within its timeout from
    the moment it is called, its wait for the turn included: for requests in parallel, give each thread a client of
    its own, or use AsyncArgusClient. `retries`: how many times a call sends its request again after a Busy (once
    the time it names has passed), a request_lost, or an answer that the engine is stopping (after a backoff: see
    link.Retries), before it returns that reply; none that would wait past the timeout."""

    def __init__(self, address: str, timeout_s: float | None = None, curve: ClientKeys | None = None, retries: int = 0):
        timeout_s = checked_timeout(timeout_s)
        self._retries = checked_retries(retries)
        check_address(address)
        self._address = address
        self._curve = curve
        self._made_in = os.getpid()
        self._context = zmq.Context()
        self._socket, self._refusals = connect(self._context, address, curve)
        self._dropped = closed_when_dropped(self, address, self._context, self._socket, self._refusals)
        self._poller = self._polling()
        self._full_door = FullDoor(self._refusals)
        self._redial_at: float | None = None  # when a socket shut out by the engine's bound is replaced
        self._codec = client_side_codec()
        # a call takes every reply that is not its own for a stale one and drops it: another thread's call in
        # between would lose its reply (and ZeroMQ sockets must not be used by two threads at once). Reentrant for
        # close() from a signal handler run in the thread holding it outside its call (see close())
        self._turn = threading.RLock()
        self._closing = False  # set by close(): a call in another thread gives up at its next poll slice
        self._calling: int | None = None  # the thread whose call holds the turn
        self._timeout_s = timeout_s
        self._unanswered = UnansweredWarning(address, self._refusals)
        self._warn_at = 0.0  # when the call in progress has waited UNANSWERED_WARNING_S
        # the request sent and awaited, and the connection (connection_of) it was sent or last asked after on
        self._awaited: tuple[str, int] | None = None
        # whether it was asked after: only then can a request_lost under its id be its answer
        self._asked_after = False
        # the requests sent whose calls ended without their reply (a timeout, Ctrl-C), until that reply is read: a call
        # under the id of one waits for it before it sends. It took that reply for its own (another prompt's images),
        # and the engine, still holding the request, refused its own. Each with the connection it was sent or last
        # asked after on, and whether it was asked after (as _awaited and _asked_after)
        self._given_up: dict[str, tuple[int, bool]] = {}

    def generate(self, prompt: str, request_id: str | None = None, **fields: Any) -> Reply:
        # before the turn: a thread of the parent's that held it as the process forked holds it here for ever
        refuse_if_forked(self._made_in)
        request = request_of(prompt, request_id, fields)
        encoded(self._codec, request)  # refused (ValueError) before the call waits for anything
        # one deadline for the call, from here: a call that waited for the turn and then for its own timeout_s took
        # up to N timeouts behind N - 1 other threads' calls. So too its request's slo_ms
        deadline = self._deadline()
        retries = Retries(self._retries, request)
        if not self._turn.acquire(timeout=-1 if deadline is None else max(0.0, deadline - time.monotonic())):
            raise self._timed_out(f"{request.request_id} not sent: other threads' calls held this client")
        try:
            self._calling = threading.get_ident()
            try:
                refuse_if_closed(self._socket)
                return self._exchange(retries, deadline)
            finally:
                self._calling = None
                if self._closing:
                    self._close()  # asked for by a signal handler during this call, which could not wait for it
        finally:
            self._turn.release()

    def _exchange(self, retries: Retries, deadline: float | None) -> Reply:
        request_id = retries.request_id
        # whether the engine may hold a request of this call's id: only then is it told to cancel it. A Cancel of one
        # never sent is sent for nothing, and with no engine connected it was queued for the next, one per call
        held = request_id in self._given_up
        try:
            while True:
                # neither the wait for room to send nor the late replies skipped on the way may extend the deadline
                self._warn_at = time.monotonic() + self._unanswered.delay_s
                if request_id in self._given_up:
                    earlier = f"no reply yet to the request given up on under the id {request_id}"
                    self._await(request_id, *self._given_up.pop(request_id), deadline, earlier)
                request = self._room_to_send(retries, deadline)
                if isinstance(request, Error):
                    return request  # its deadline passed before it could go
                held = True  # before the send: an exception raised as it returns is no request left running
                if not self._sent(request):
                    continue  # the room went: wait again, hearing the refusal or the deadline
                reply = self._await(
                    request_id, connection_of(self._refusals), False, deadline, f"no reply for {request_id}"
                )
                pause_s = retries.pause_s(reply)
                if pause_s is None or not self._pause(pause_s, deadline):
                    return reply
        except BaseException:
            if held:
                # the call ended without its answer, maybe as the request went out (Ctrl-C, close() from another
                # thread, the timeout, whatever a signal handler raised: SystemExit from a SIGTERM handler ran the
                # request to its end for no one): the engine stops its work. One it does not hold (answered) it ignores
                self._cancel(request_id)
            raise

    def _await(
        self, request_id: str, connection: int, asked_after: bool, deadline: float | None, unanswered: str
    ) -> Reply:
        """The reply under `request_id`, sent on `connection` (or last asked after on it: `asked_after`)."""
        self._awaited = (request_id, connection)
        self._asked_after = asked_after
        try:
            return self._reply_to(request_id, deadline, unanswered)
        except ValueError:
            raise  # an undecodable reply, read: the request's own, or one naming none (see _reply_to)
        except BaseException:
            # its reply, still to come, is not the answer of a later call under its id
            self._given_up[request_id] = (self._awaited[1], self._asked_after)
            if len(self._given_up) > _MAX_GIVEN_UP:
                del self._given_up[next(iter(self._given_up))]
            raise
        finally:
            self._awaited = None

    def _reply_to(self, request_id: str, deadline: float | None, unanswered: str) -> Reply:
        """`unanswered`: what a timeout says first."""
        while True:
            if not self._wait(zmq.POLLIN, deadline):
                raise self._timed_out(unanswered)
            frames = self._socket.recv_multipart(copy=False)
            reply = self._codec.decode(frames)
            if isinstance(reply, DecodeError):
                refused = self._refusals.not_an_engine()
                if refused:
                    raise ConnectionRefusedError(refused)
                answered_id = salvage_request_id(frames[0].buffer)
                if answered_id and answered_id != request_id:
                    self._given_up.pop(answered_id, None)
                    continue  # the late reply to a request given up on: this call's own reply may yet decode
                # one naming no request is maybe this request's answer, maybe not: cancelled (_exchange), the engine
                # does not go on with it for no one
                raise undecodable(self._address, reply.reason)
            if reply.request_id == request_id and (self._asked_after or not is_lost(reply)):
                return reply
            if reply.request_id != request_id:
                self._given_up.pop(reply.request_id, None)
            # a stale reply to an earlier request that timed out, or the request_lost after a reply: skip it. So too
            # a request_lost under this id that this attempt was not asked after: the answer to the Inquire of an
            # attempt before it, sent as that one was refused Busy (it went out as the client connected again), and
            # read by the retry, which the engine holds (the call returned request_lost, `retries` more sent it again)

    def _room_to_send(self, retries: Retries, deadline: float | None) -> Generate | Error:
        """The request as it goes once there is room to send it (Retries.request: with what is left of its slo_ms);
        the call's answer instead if its deadline passed first."""
        # a DEALER with no connected peer (engine down, CURVE refused) blocks on send: bound that too
        if not self._wait(zmq.POLLOUT, deadline):
            raise self._timed_out(f"could not reach the engine to send {retries.request_id}")
        return retries.request()

    def _sent(self, request: Generate) -> bool:
        """Whether the request went. Never blocking: the engine can refuse the handshake between the poll that saw room
        and the send, and ZeroMQ then drops the connection's queue, the only one; a blocking send waited for ever (CI,
        2026-12-03)."""
        try:
            self._socket.send_multipart(encoded(self._codec, request), zmq.DONTWAIT, copy=False)
        except zmq.Again:
            return False
        return True

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
        return timed_out(self._address, self._refusals, self._timeout_s, why)

    def _wait(self, events: int, deadline: float | None) -> bool:
        """True once the socket is ready for `events`, False at the deadline; raises ConnectionRefusedError once
        the engine will never answer. Ready to send only while connected to an engine, as heard by each poll's end."""
        while True:
            # a DEALER queues what is sent with no engine connected, for the next connection: a call that timed out
            # meanwhile left its request (and its Cancel) queued, and the engine back ran each for no one. Meanwhile
            # the poll hears the monitor alone, which tells of the next connection
            connected = events != zmq.POLLOUT or self._refusals.connected
            self._poller.register(self._socket, events if connected else 0)
            left_ms = None if deadline is None else max(0, math.ceil((deadline - time.monotonic()) * 1000))
            # in slices: Ctrl-C taken by another of the process's threads interrupts no poll, and is only raised
            # here once the poll returns to Python (a poll without end never would)
            ready = dict(self._poller.poll(_POLL_SLICE_MS if left_ms is None else min(left_ms, _POLL_SLICE_MS)))
            if self._closing:
                raise ClientClosed("client closed during the call")
            refused = self._refusals.reason()
            if refused:
                raise ConnectionRefusedError(refused)
            self._redial_when_due()
            if time.monotonic() >= self._warn_at:
                self._unanswered()
            # connected still, as of the events this poll read: the end of a connection told while the client was
            # idle (no one reads the monitor between calls) was read here, by the poll that found the socket ready to
            # send, and the request went into the queue for the next engine all the same
            if self._socket in ready and (events != zmq.POLLOUT or self._refusals.connected):
                return True
            # with nothing come to read: a reply already come needs no asking after, and would be followed by the
            # request_lost of an engine that holds the request no more
            self._ask_if_reconnected()
            # by the clock, not by the slice: the poll also ends on the refusals monitor's events (the handshake as a
            # call's request goes out), and a call with under a slice left timed out then, a 0.2 s one in 3 ms
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def _redial_when_due(self) -> None:
        """Replaces the socket shut out by the engine's bound once its pause (FullDoor) has passed: the call waits on,
        within its timeout, as for an engine down."""
        if not self._refusals.shut_out:
            self._redial_at = None  # none, or it got in meanwhile (see RefusedHandshakes.shut_out)
        elif self._redial_at is None:
            self._redial_at = time.monotonic() + self._full_door.pause_s()
        elif time.monotonic() >= self._redial_at:
            self._redial_at = None
            self._socket, self._dropped = redial(
                self, self._dropped, self._context, self._socket, self._refusals, self._address, self._curve
            )
            self._poller = self._polling()

    def _polling(self) -> zmq.Poller:
        """A poller of the monitor (_wait adds the socket as each wait needs it)."""
        poller = zmq.Poller()
        poller.register(self._refusals.monitor, zmq.POLLIN)
        return poller

    def _ask_if_reconnected(self) -> None:
        """Asks the engine after the request awaited once connected again since it was sent (as of the events
        reason() read): sent to an engine since restarted, or lost with the connection, it would never be answered."""
        if self._awaited is None or self._refusals.handshakes <= self._awaited[1]:
            return
        request_id = self._awaited[0]
        self._awaited = (request_id, self._refusals.handshakes)
        self._asked_after = True
        send_now(self._socket, self._codec.encode(Inquire([request_id])))

    def _cancel(self, request_id: str) -> None:
        send_now(self._socket, self._codec.encode(Cancel(request_id)))

    def close(self) -> None:
        """A call in flight in another thread is cancelled at the engine and raises ClientClosed, rather than poll a
        socket closed under it (ZeroMQ sockets are not thread-safe)."""
        self._closing = True
        if self._calling == threading.get_ident():
            return  # a signal handler, during this thread's call: waiting for the turn would wait for ever
        if forked(self._made_in):
            return  # the sockets are the parent's (see refuse_if_forked)
        # a signal handler in the thread holding the turn but past its call (pyzmq runs handlers inside its own calls:
        # a second SIGTERM as the call it ended closes the sockets) takes it again and closes them: it waited for the
        # turn its own thread held, for ever. Closing twice is harmless
        with self._turn:
            self._close()

    def _close(self) -> None:
        self._dropped.detach()
        close_all(self._context, self._socket, self._refusals)

    def __enter__(self) -> ArgusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
