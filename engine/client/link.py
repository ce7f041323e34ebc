"""What the two client classes (engine.client) share: the socket to the engine and what is heard on it, the request as
it is sent, and when a call sends it again."""

from __future__ import annotations

import logging
import os
import random
import reprlib
import time
import uuid
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import msgspec
import zmq

from protocols.client_messages import Busy, Cancelled, Error, Generate, Images, RequestId
from protocols.codec import Codec
from protocols.curve import ClientKeys, RefusedHandshakes
from protocols.endpoints import FORM, NotAnEndpoint, parse_endpoint
from protocols.limits import MAX_CLIENT_FRAME_BYTES, MAX_PROMPT_CHARS, MAX_REQUEST_ID_CHARS
from protocols.sockets import dial, make_socket

Reply = Images | Error | Busy | Cancelled

log = logging.getLogger("argus.client")


# what is still queued at close, a Cancel above all, gets this long to reach the engine
_CLOSE_LINGER_MS = 500
# a connection that died without a word (the engine's host gone, a NAT that forgot the flow) is found by pings
# and dialled again: TCP alone kept it for ever while idle, and for about 15 minutes of retransmissions once a request
# was sent, every call timing out meanwhile even with a new engine up on the address. The timeout runs from a ping
# to the next whole frame in, so it leaves room for a large reply on a slow link (10 MB at 200 kB/s)
_HEARTBEAT_INTERVAL_MS = 10_000
_HEARTBEAT_TIMEOUT_MS = 60_000
# a call waiting this long with no engine ever reached is worth a warning, once per client, as `argus worker` warns of
# hellos unanswered: a mistyped address or an engine down looks like a slow engine, and a call without a timeout
# waits for ever
UNANSWERED_WARNING_S = 10.0
# after an answer that the engine is stopping, a retry waits this long, each next one twice as long as the last, up to
# the cap, as OpenAI's Python client backs off its retries of a 503: a drain (--shutdown-timeout, 30 s by default) and
# the start of the engine that replaces it take seconds, and a retry at once met the same drain again
_STOPPING_FIRST_PAUSE_S = 0.5
_STOPPING_MAX_PAUSE_S = 8.0
# after a refusal for the engine's --max-client-connections, the client dials again this long after, each next time
# twice as long, up to the cap: a connection ends when a client of it closes, any moment, and a refused client that
# dialled at once met the same full door again, as do the others refused with it
_FULL_FIRST_PAUSE_S = 0.25
_FULL_MAX_PAUSE_S = 4.0
# the keywords generate() takes (another is a TypeError, None or not)
_FIELDS = frozenset(Generate.__struct_fields__)


class ClientClosed(Exception):
    """A call made on a closed client, or still in flight when it was closed."""


class UnansweredWarning:
    """Warns, the first time it is called, if the client never reached an engine (as of the monitor events read:
    the caller reads them first)."""

    def __init__(self, address: str, refusals: RefusedHandshakes):
        self._address = address
        self._refusals = refusals
        self._said = False

    @property
    def delay_s(self) -> float:
        """How long a call waits before it warns (UNANSWERED_WARNING_S, as it is when asked)."""
        return UNANSWERED_WARNING_S

    def __call__(self) -> None:
        if self._said or self._refusals.handshook:
            return
        self._said = True
        if self._refusals.full:
            log.warning("%s; calls wait for a connection to end", self._refusals.full)
            return
        log.warning(
            "no answer from an engine at %s for %g s: is it up, and is that its --client-listen address?",
            self._address,
            UNANSWERED_WARNING_S,
        )


def check_address(address: str) -> None:
    """Before a context is made: ZeroMQ refused 'localhost:5555' as 'Invalid argument', and an http:// URL as
    'Protocol not supported', naming neither what it wants; a port past 65535 was taken, then never answered."""
    why = ""
    if isinstance(address, str):
        try:
            parse_endpoint(address)
            return
        except NotAnEndpoint as error:
            why = f": {error.why}" if error.why else ""
    hint = " (an HTTP URL: this client speaks ZeroMQ)" if str(address).startswith(("http://", "https://")) else ""
    raise ValueError(
        f"{address!r}{hint}: expected the engine's ZeroMQ client address, {FORM}, as its --client-listen says"
        f" (default tcp://127.0.0.1:5555){why}"
    )


def connect(context: zmq.Context, address: str, curve: ClientKeys | None) -> tuple[zmq.Socket, RefusedHandshakes]:
    # an identity of its own, kept across reconnects: the engine sends each reply to the identity that asked,
    # and libzmq would give a reconnected socket a new one, so a dropped connection would lose every reply
    identity = uuid.uuid4().hex.encode()
    try:
        sock = _socket(context, identity, curve)
        # heard from before the socket connects: a refusal that came first would go unheard, and a call wait for
        # ever (or for its timeout) on an engine that will never answer it
        refusals = RefusedHandshakes(sock, address, curve is not None, rides_out_full=True)
        dial(sock, address)
        return sock, refusals
    except zmq.ZMQError:
        # an address ZeroMQ refuses: the client is not made, so nothing would close its own context, and a
        # context left with a socket in it blocks whoever terminates it (the garbage collector: for ever)
        context.destroy(linger=0)
        raise


def redial(
    client: object,
    dropped: weakref.finalize,
    context: zmq.Context,
    sock: zmq.Socket,
    refusals: RefusedHandshakes,
    address: str,
    curve: ClientKeys | None,
) -> tuple[zmq.Socket, weakref.finalize]:
    """A socket in place of `sock`, which the engine refused for its bound (refusals.shut_out: libzmq dials it no
    more), dialling the engine under the same identity: the replies the engine keeps for a client cut off go to that
    identity, and the requests sent before are asked after (Inquire) once it connects. Nothing is lost with `sock`:
    a call sends only while connected, and a Cancel or an Inquire with no connection is not queued (send_now).
    With it, the client's closed_when_dropped in place of `dropped`, which holds `sock`."""
    new = _socket(context, sock.get(zmq.ROUTING_ID), curve)
    refusals.watch(new)
    dial(new, address)
    sock.close(linger=0)
    dropped.detach()
    return new, closed_when_dropped(client, address, context, new, refusals)


def _socket(context: zmq.Context, identity: bytes, curve: ClientKeys | None) -> zmq.Socket:
    heartbeat = (_HEARTBEAT_INTERVAL_MS, _HEARTBEAT_TIMEOUT_MS)
    return make_socket(context, zmq.DEALER, identity=identity, curve_client=curve, heartbeat_ms=heartbeat)


class Backoff:
    """Pauses that grow: each twice the last, up to `max_s`, less up to a quarter at random (as OpenAI's Python client
    backs off its retries), so that clients turned away together do not all come back at one moment."""

    def __init__(self, first_s: float, max_s: float):
        self._first_s = first_s
        self._max_s = max_s
        self._next_s = first_s

    def pause_s(self) -> float:
        pause_s = self._next_s * (1 - 0.25 * random.random())
        self._next_s = min(2 * self._next_s, self._max_s)
        return pause_s

    def reset(self) -> None:
        self._next_s = self._first_s


class FullDoor:
    """When a client shut out by the engine's bound (refusals.shut_out) dials again: after a Backoff, begun anew once
    a handshake has succeeded since the last refusal."""

    def __init__(self, refusals: RefusedHandshakes):
        self._refusals = refusals
        self._backoff = Backoff(_FULL_FIRST_PAUSE_S, _FULL_MAX_PAUSE_S)
        self._handshakes = 0  # as of the last refusal

    def pause_s(self) -> float:
        if self._refusals.handshakes > self._handshakes:
            self._handshakes = self._refusals.handshakes
            self._backoff.reset()
        return self._backoff.pause_s()


def closed_when_dropped(
    client: object, address: str, context: zmq.Context, sock: zmq.Socket, refusals: RefusedHandshakes
) -> weakref.finalize:
    """Closes the client's sockets and context, with a ResourceWarning, if the client is dropped without close().
    pyzmq's own finalizers hung the process for ever on a client collected in a reference cycle (a client held by an
    object it refers back to, as a pipeline's stage may be): the garbage collector clears weak references first,
    so the context's finalizer found no socket left to close, and waited in term() for sockets not yet closed. A
    weakref.finalize runs before any finalizer of the cycle, and holds what it closes out of it."""
    dropped = weakref.finalize(client, _close_dropped, address, os.getpid(), context, sock, refusals)
    # as pyzmq does at exit: a thread may still be in a call, on a socket that must not close under it
    dropped.atexit = False
    return dropped


def _close_dropped(
    address: str, made_in: int, context: zmq.Context, sock: zmq.Socket, refusals: RefusedHandshakes
) -> None:
    if forked(made_in):
        return  # a copy of the parent's sockets, which are not this process's to close
    warnings.warn(f"argus client of {address} dropped without close(): closing it", ResourceWarning, stacklevel=1)
    close_all(context, sock, refusals)


def close_all(context: zmq.Context, sock: zmq.Socket, refusals: RefusedHandshakes) -> None:
    close_sockets(sock, refusals)
    context.term()


def close_sockets(sock: zmq.Socket, refusals: RefusedHandshakes) -> None:
    """Closes the client's sockets, what is queued on them left to go for _CLOSE_LINGER_MS: the context's term() waits
    for it (the whole linger, when there is no engine to take it)."""
    refusals.close()
    sock.close(linger=_CLOSE_LINGER_MS)


def undecodable(address: str, reason: str) -> ValueError:
    # from a peer that took the handshake: an engine of another version, or another ZeroMQ program (a peer that
    # speaks no ZeroMQ is a refusal, see RefusedHandshakes.not_an_engine)
    return ValueError(
        f"undecodable reply from {address}: {reason} (is it an argus engine's --client-listen address, of this"
        " version?)"
    )


def forked(made_in: int) -> bool:
    """Whether this process was forked from the one the client was made in (`made_in`, its pid). A fork copies the
    client's sockets but not ZeroMQ's I/O threads, which stay the parent's: a call waited for ever, in C, its timeout
    and Ctrl-C unheard, and closing them would reach into the parent's queues."""
    return os.getpid() != made_in


def refuse_if_forked(made_in: int) -> None:
    if forked(made_in):
        raise RuntimeError(
            f"this argus client was made in process {made_in}, and this process ({os.getpid()}) was forked from it:"
            " ZeroMQ sockets do not survive a fork; make a client in this process, after the fork"
        )


class OwnProcess:
    """A client serves the process that made it: pickled, to be sent to another (multiprocessing's spawn, a pool's
    arguments), it is refused in words that say so, where pyzmq's 'self.handle cannot be converted to a Python object
    for pickling' named neither the client nor what to do."""

    def __reduce__(self) -> Any:
        raise TypeError(
            f"an {type(self).__name__} cannot be pickled: its ZeroMQ sockets serve the process that made it; make a"
            " client in each process that calls the engine"
        )


def refuse_if_closed(sock: zmq.Socket) -> None:
    # rather than ZeroMQ's 'Socket operation on non-socket', and (async) a reader task failing unseen
    if sock.closed:
        raise ClientClosed("client closed")


def send_now(sock: zmq.Socket, frames: list) -> None:
    """Sends a message only if it can go at once: one with no connection to take it has nobody to tell (a Cancel), or
    is asked again at the next connection (an Inquire)."""
    try:
        sock.send_multipart(frames, zmq.DONTWAIT)
    except zmq.Again:
        pass


def checked_retries(retries: int) -> int:
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ValueError(f"retries must be a whole number of 0 or more, not {retries!r}")
    return retries


class Retries:
    """A call's request as each send takes it, and when the call sends it again (`retries`): one per call, made as the
    call is made, the one rule of both clients. Each reply that is no answer to the request itself is retried while
    retries are left: Busy after the time it names, request_lost at once (the engine holds nothing of it: sending it
    again is safe), and an answer that the engine is stopping (is_stopping) after a backoff, in which another engine
    may come up on the address. A request with a deadline (slo_ms) goes, each time, with what is left of it, counted
    from the call (`clock`: seconds)."""

    def __init__(self, retries: int, request: Generate, clock: Callable[[], float] = time.monotonic):
        self._left = retries
        self._request = request
        self._clock = clock
        # slo_ms is a deadline from the engine's admission: sent whole, a request with slo_ms 2000 that waited 5 s
        # (through a restart, for another thread's call, for room to send) was served up to 7 s after the call, and by
        # an engine that deemed it on time
        self._due_s = None if request.slo_ms is None else clock() + request.slo_ms / 1000
        self._late = False  # the deadline passes before the pause after the last reply ends
        # the backoff after each answer that the engine is stopping
        self._stopping = Backoff(_STOPPING_FIRST_PAUSE_S, _STOPPING_MAX_PAUSE_S)
        # whether the request went out (AsyncArgusClient's, set as it sends; ArgusClient knows where it waits): a call
        # that times out before it did waited for no reply, and says so
        self.sent = False

    @property
    def request_id(self) -> str:
        return self._request.request_id

    def pause_s(self, reply: Reply) -> float | None:
        """How long to wait before sending the request again after `reply`, or None if the reply is the call's answer
        (so too once the retries are spent). 0 when the request's deadline passes before the pause would end: request()
        then answers at once, as the engine answers a request that cannot make its deadline."""
        if not self._left:
            return None
        if isinstance(reply, Busy):
            pause_s = reply.retry_after_ms / 1000
        elif is_lost(reply):
            pause_s = 0.0
        elif is_stopping(reply):
            pause_s = self._stopping.pause_s()
        else:
            return None
        self._left -= 1
        self._late = self._due_s is not None and self._clock() + pause_s >= self._due_s
        return 0.0 if self._late else pause_s

    def request(self) -> Generate | Error:
        """The request to send now, as it goes out (the first time too): its slo_ms what is left of the deadline. None
        left, the call's answer instead, nothing sent: deadline_exceeded, as the engine answers a request past its
        deadline."""
        if self._due_s is None:
            return self._request
        left_ms = (self._due_s - self._clock()) * 1000
        if self._late or left_ms <= 0:
            return Error(
                self._request.request_id,
                "deadline_exceeded",
                f"the request's deadline (slo_ms {self._request.slo_ms:g} from the call) passed before it could be"
                " sent",
            )
        return msgspec.structs.replace(self._request, slo_ms=left_ms)


def is_stopping(reply: Reply) -> bool:
    """Whether the reply says the engine is stopping, not what it made of the request: shutting_down, a request sent
    as it drained, or Cancelled, one still in flight as the drain ended. A call never returns the Cancelled of a cancel
    of its client's own (sent once its call has ended: the reply is skipped), so a Cancelled it returns is the engine's
    doing: its drain's end, or its --client-gone-grace run out on a client cut off. After either, the engine holds
    nothing under the id, so the request can be sent again under it, to the engine that comes up on the address. One
    exception: ArgusClient forgets the oldest of more than a thousand calls given up on whose replies never came
    (sync_client._MAX_GIVEN_UP), and a later call under such an id reads that call's late Cancelled as its own."""
    return isinstance(reply, Cancelled) or (isinstance(reply, Error) and reply.code == "shutting_down")


def is_lost(reply: Reply) -> bool:
    """Whether the reply is the engine's request_lost, its answer to an Inquire, never to a request."""
    return isinstance(reply, Error) and reply.code == "request_lost"


def connection_of(refusals: RefusedHandshakes) -> int:
    """The connection to the engine a message sent now goes out on, numbered by the handshakes heard: one sent before
    the first is queued for it. A request is asked after (Inquire) once a later one succeeds."""
    return max(refusals.handshakes, 1)


def request_of(prompt: str, request_id: str | None, fields: dict[str, Any]) -> Generate:
    # only None asks for a fresh id: "" is a caller's mistake (the engine would refuse it), not a request for one
    if request_id is None:
        request_id = uuid.uuid4().hex
    # None is a field's default, as HTTP's null is: a pipeline may pass its own optional settings on (steps=None).
    # Left out here, not sent: on the wire a field is a value or absent, and the engine refuses nil where the
    # default is not None (docs/client.md, Fields)
    fields = {name: value for name, value in fields.items() if value is not None or name not in _FIELDS}
    try:
        # checked here, not left to the engine: it answers an id it cannot read (not a string, too long) under ""
        # or the id cut short, which no call would match, so the call would wait for ever
        msgspec.convert(request_id, RequestId)
    except msgspec.ValidationError:
        raise ValueError(_request_id_problem(request_id)) from None
    return Generate(request_id=request_id, prompt=prompt, **fields)


def encoded(codec: Codec, request: Generate) -> list:
    """The request's frames, refused here (ValueError) if the engine would cut the connection on them rather than read
    them: a call waited for the request_lost its reconnection brought, which said that sending it again was safe, and
    `retries` sent it again, each time."""
    frames = codec.encode(request)
    if len(frames[0]) > MAX_CLIENT_FRAME_BYTES:
        raise ValueError(
            f"request {request.request_id} is {len(frames[0]):,} bytes, past the {MAX_CLIENT_FRAME_BYTES:,} the engine"
            f" reads (its prompt and negative_prompt are at most {MAX_PROMPT_CHARS:,} characters each): the engine"
            " would drop the connection rather than answer it"
        )
    return frames


def _request_id_problem(request_id: object) -> str:
    # reprlib shortens a long id in the middle and keeps its quotes: the message stays one readable line
    if not isinstance(request_id, str):
        return f"request_id must be a string, got {type(request_id).__name__} {reprlib.repr(request_id)}"
    return (
        f"request_id must be 1 to {MAX_REQUEST_ID_CHARS} characters, got {len(request_id)}: {reprlib.repr(request_id)}"
    )
