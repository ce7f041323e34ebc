"""The ZeroMQ front door for client programs: a ROUTER speaking protocols.client_messages.

Requests are keyed by (client identity, request id), so two clients may use the
same ids. Every admitted Generate is answered exactly once; Busy and Error
answer at once what cannot be admitted; garbage gets an Error, never a crash.
A reply is lost only to a client that cannot take it: one gone for good, or one
that leaves _MAX_UNREAD_REPLIES unread beyond the --max-queue the engine may
answer at once (it would hold engine memory without bound). Both are counted in
argus_replies_dropped_total. A reply that finds its client gone is kept, with
those that come after it, and tried again until the client is back; a client
still gone --client-gone-grace seconds after, or as the engine stops, has its kept replies dropped (and, after the
grace, its other requests cancelled). A client back asks after what it awaits (Inquire), and is
told which of those requests the engine does not hold: lost with the connection,
or sent to an engine since restarted. That answer is not kept for a client gone: it asks again at its next
connection (ArgusClient and AsyncArgusClient do). Kept, the 64 Inquires of 256 ids read ahead of a client that left
made 16,384 answers for each of its connections: 100 such connections had the engine keep 790,000, 900 MB.

libzmq bounds the size of each frame, not the number of frames in a message,
and delivers a message only whole: a peer may make the engine buffer one
message of many frames before it is refused. Keep the door on loopback, or
behind CURVE (docs/scaling.md).

With CURVE, a request is refused (unauthorized) unless the key it came with is
admitted now: ZeroMQ checks a key only at the handshake, and a client whose key
a reload (SIGHUP) removed was served for as long as it stayed connected.

At most --max-client-connections are admitted at once (engine/zmq/client_connections.py); the next ones are refused at
their handshake by the context's ZAP handler, which asks `slots` (engine/zmq/zap_handler.py).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import secrets
from collections import deque
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING

import zmq

from engine.dispatch.jobs import AdmittedRequest
from engine.logs.plurals import counted
from engine.logs.quiet_lines import QuietLines
from engine.zmq.client_connections import ClientConnections
from engine.zmq.loop_socket import LoopSocket
from engine.zmq.zap_handler import CLIENTS
from protocols.client_messages import (
    Cancel,
    Error,
    Generate,
    Inquire,
    engine_side_codec,
    refusal_words,
    refuses_a_value,
    salvage_request_id,
)
from protocols.codec import DecodeError
from protocols.curve import KeyPair, peer_key
from protocols.limits import MAX_CLIENT_FRAME_BYTES
from protocols.sockets import SocketFiles, bind_all, make_socket

if TYPE_CHECKING:
    from engine.server import Engine

log = logging.getLogger("argus.clients")

# messages read ahead from one client before the engine handles them; past this many, ZeroMQ stops reading the client,
# whose sends wait. At the 100,000 of other sockets (protocols/sockets.py), a client sending faster than the engine
# decodes (frames just under MAX_CLIENT_FRAME_BYTES, each refused) had the engine buffer its backlog: 2.4 GB in 10 s
_MAX_READ_AHEAD = 64
# replies queued for a client beyond what its connection takes, and beyond the --max-queue ones the engine may
# write at once (a drain's end, a sweep): past this many, it is not reading them
_MAX_UNREAD_REPLIES = 256
# a client can have each of the door's log lines written at will: each is written at most this often, saying what those
# held back meanwhile told of (all of it is counted in the metrics too)
_LOG_EVERY_S = 60.0
# at shutdown, replies already written still queue for clients that read slowly (large images on a slow link):
# they get this long to leave before the engine exits
_REPLY_FLUSH_MS = 10_000
# how often the replies kept for clients found gone are tried again: ZeroMQ tells the engine of no reconnection, and
# a client back but silent (its calls waiting) was taken for gone: the reply that had found it gone was lost, and its
# other requests cancelled at the grace's end. One sweep for all of them, and tried only after a handshake (_sweep):
# a timer and a failed send each, every 0.5 s, 3,000 clients gone (a sim engine otherwise idle at 2 to 3% of a core)
# took 10 to 13%
_GONE_RETRY_S = 0.5
_NOTHING_KEPT: frozenset[str] = frozenset()
# the (client, request id) pairs last answered request_lost that are remembered, so that a client asking after one again
# (that answer lost with another dropped connection, or a client of its own asking twice) is answered again, and the
# request not counted lost a second time: about 1 MB at most
_LOST_REMEMBERED = 4096
# what a client asking after a request the engine does not hold is told, under the request's id
_LOST = (
    "the engine holds no such request: it restarted since the request was sent, or the request or its reply was lost"
    " with a dropped connection; it will not be answered, and sending it again is safe"
)


@dataclass(slots=True)
class _Gone:
    """A client a reply found gone: the replies it has not had, in order, until it is back or given up on. At most
    the replies to what it had in flight as it went (up to --max-queue images): gone, it sends no more."""

    since: float
    replies: deque[tuple[str, list]]  # each reply's request id, and its frames


class ClientDoor:
    def __init__(
        self,
        engine: Engine,
        context: zmq.Context,
        listen: tuple[str, ...],
        curve: KeyPair | None = None,
        admits: Callable[[bytes], bool] | None = None,
    ):
        """`admits` (with `curve`): whether a peer's public key is admitted on this socket now (CurveGate.admits)."""
        self._engine = engine
        self._admits = admits
        # made at start, a series at 0: an alert on its rate sees the first refusal
        self._count_refusal = engine.metrics.door_refusals.labels("zmq", "unauthorized").inc if admits else None
        # a client a reply found gone, and not heard from nor reached since, has its other requests cancelled after
        # this long: the engine made every image a killed pipeline had asked for (up to --max-queue), for no one,
        # while the clients still there got Busy
        self._gone_grace_s = engine.config.client_gone_grace_s
        self._unread_bound = engine.config.dispatch.max_queue + _MAX_UNREAD_REPLIES
        sock = make_socket(
            context,
            zmq.ROUTER,
            curve_server=curve,
            zap_domain=CLIENTS,
            max_frame_bytes=MAX_CLIENT_FRAME_BYTES,
            send_hwm=self._unread_bound,
            recv_hwm=_MAX_READ_AHEAD,
            # a client that reconnects under its identity (a dropped TCP connection, a NAT reset) gets its replies
            # at once, rather than being refused while the old connection is still thought alive. The identity is
            # the client's secret (engine.client draws a uuid4: 122 random bits), and never logged (_named)
            handover=True,
        )
        self._connections = ClientConnections(sock, engine.config.client_max_connections)
        # whether a connection in its handshake finds room: the ZAP handler's thread asks
        self.slots = self._connections
        engine.metrics.zmq_client_connections.set_function(lambda: self._connections.open)
        self.endpoints = bind_all(sock, listen)
        self._files = SocketFiles(listen)
        self._socket = LoopSocket(sock, self._on_frames, _named)
        self._codec = engine_side_codec()
        self._live: dict[tuple[bytes, str], AdmittedRequest] = {}
        self._gone: dict[bytes, _Gone] = {}  # oldest first
        self._new_gone: list[bytes] = []  # found gone since the last sweep
        self._sweep_due: asyncio.TimerHandle | None = None
        # the door's count of handshakes as of the sweep before the last, and the last
        self._swept_handshakes = (0, 0)
        self._answered_lost: dict[tuple[bytes, str], None] = {}  # oldest first, at most _LOST_REMEMBERED
        # a line each for "lost", "unread" and "gone": what the lines held back told of is said by the next one.
        # Without, a line an hour into a storm read as the one client it names, the others unseen
        self._log_lines = QuietLines(_LOG_EVERY_S)

    def start(self) -> None:
        self._connections.start()
        self._socket.start()

    def close(self) -> None:
        if self._sweep_due is not None:
            self._sweep_due.cancel()
        self._give_up_the_gone()
        self._files.remove()  # the replies still queued go out over the connections made, not the path
        self._connections.close()
        self._socket.close(linger_ms=_REPLY_FLUSH_MS)

    def _on_frames(self, identity: bytes, frames: list) -> None:
        kept = self._back(identity)
        message = self._codec.decode(frames)
        if isinstance(message, (Generate, Cancel)) and self._reply_decided(identity, message.request_id):
            # its id's request was answered in this pass (a Cancel read before it), and holds the id until its reply
            # goes, a loop turn later: handled after that reply, a Generate is served rather than refused as a second
            # one in flight, and a Cancel finds the request it came after
            asyncio.get_running_loop().call_soon(self._on_frames, identity, frames)
        elif isinstance(message, DecodeError):
            header = frames[0].buffer  # a ROUTER hands on no identity without a frame after it
            if not refuses_a_value(message.reason):
                # counted as garbage: a request refused for a field's value (n 0, steps 201) is a client's bad input,
                # as over HTTP, and an alert on these fired on every such request
                self._engine.metrics.bad_messages.labels("client").inc()
            self._refuse_request(identity, salvage_request_id(header), refusal_words(message.reason, header))
        elif isinstance(message, Generate):
            # the client its share of the queue is counted for: its CURVE key, which it keeps from one connection
            # to the next; without CURVE, its socket's identity
            client = peer_key(frames[0]) if self._admits else identity
            if self._admits and not self._admits(client):
                self._count_refusal()  # not a request: counted as an HTTP request without the API key is
                reason = "this client's CURVE key is no longer admitted (removed from the engine's allowed keys)"
                self._reply(identity, self._refusal(identity, message.request_id, "unauthorized", reason))
            else:
                self._on_generate(identity, message, "zmq:" + client.hex())
        elif isinstance(message, Inquire):
            self._answer_inquiry(identity, message.request_ids, kept)
        elif isinstance(message, Cancel):  # FromClient has no other kind
            request = self._live.get((identity, message.request_id))
            if request is not None:
                self._engine.dispatcher.cancel(request)

    def _reply_decided(self, identity: bytes, request_id: str) -> bool:
        """Whether the client's request under this id has its reply, not yet sent (_finished runs a loop turn after)."""
        request = self._live.get((identity, request_id))
        return request is not None and request.done

    def _answer_inquiry(self, identity: bytes, request_ids: list[str], kept: AbstractSet[str]) -> None:
        """Each request the client awaits that the engine does not hold is answered request_lost; one it holds gets its
        reply when it ends, and one whose reply was `kept` for the client while it was gone has had it (_back) or will
        have it: never a second."""
        lost = [
            request_id
            for request_id in dict.fromkeys(request_ids)
            if (identity, request_id) not in self._live and request_id not in kept
        ]
        # counted once: each Inquire of a request lost was counted again
        first_asked = [request_id for request_id in lost if (identity, request_id) not in self._answered_lost]
        self._engine.metrics.requests_lost.inc(len(first_asked))
        for request_id in first_asked:
            self._answered_lost[identity, request_id] = None
        for _ in range(len(self._answered_lost) - _LOST_REMEMBERED):
            del self._answered_lost[next(iter(self._answered_lost))]
        held = self._log_lines.due("lost", len(lost)) if lost else None
        if held is not None:
            log.info(
                "client %s awaits %s this engine does not hold (lost with the connection, or the engine restarted"
                " since): answered request_lost%s",
                _named(identity),
                counted(len(lost), "request"),
                _held_back(held, "answered so"),
            )
        for request_id in lost:
            self._reply(identity, Error(request_id, "request_lost", _LOST), keep=False)

    def _refuse_request(self, identity: bytes, request_id: str, reason: str) -> None:
        """Answered invalid_request before the engine saw it, and counted as the engine counts those it refuses."""
        refused = self._refusal(identity, request_id, "invalid_request", reason)
        self._engine.count_refusal(refused)
        self._reply(identity, refused)

    def _refusal(self, identity: bytes, request_id: str, code: str, reason: str) -> Error:
        """The Error refusing a message under `request_id`, the id left out if the client has a request in flight
        under it: that request owes one reply of its own, to come, and this error under its id would read as that
        reply (a client matching replies by id would end the request on it, then get its images too)."""
        if (identity, request_id) in self._live:
            reason, request_id = f"request_id {request_id!r} is in flight: {reason}", ""
        return Error(request_id, code, reason)

    def _on_generate(self, identity: bytes, spec: Generate, client: str) -> None:
        key = (identity, spec.request_id)
        if key in self._live:
            self._refuse_request(identity, spec.request_id, "a second Generate under it is refused")
            return
        self._answered_lost.pop(key, None)  # a request of its own under the id: lost in turn, it counts
        admitted = self._engine.submit(spec, client)
        if not isinstance(admitted, AdmittedRequest):
            self._reply(identity, admitted)
            return
        self._live[key] = admitted
        admitted.future.add_done_callback(lambda future: self._finished(key, future.result()))

    def _finished(self, key: tuple[bytes, str], reply: object) -> None:
        self._engine.count_reply(self._live.pop(key), reply)
        self._reply(key[0], reply)

    def _reply(self, identity: bytes, message: object, keep: bool = True) -> None:
        """`keep`: kept for the client if it is gone (else dropped: an answer it asks for again once back)."""
        frames = self._codec.encode(message)
        gone = self._gone.get(identity)
        if gone is not None:
            if keep:
                gone.replies.append((message.request_id, frames))  # behind those it has not had yet
        elif not self._deliver(identity, frames) and keep:
            log.debug("client %s went away before its reply: kept for it", _named(identity))
            loop = asyncio.get_running_loop()
            self._gone[identity] = _Gone(loop.time(), deque([(message.request_id, frames)]))
            self._new_gone.append(identity)
            if self._sweep_due is None:
                self._sweep_due = loop.call_later(_GONE_RETRY_S, self._sweep)

    def _deliver(self, identity: bytes, frames: list) -> bool:
        """False if the client is not connected (the reply is not sent)."""
        failed = self._socket.send(identity, frames)
        if failed == errno.EAGAIN:
            self._engine.metrics.replies_dropped.labels("unread").inc()
            held = self._log_lines.due("unread")
            if held is not None:
                log.warning(
                    "client %s leaves %s unread: dropping its replies%s",
                    _named(identity),
                    counted(self._unread_bound, "reply", "replies"),
                    _held_back(held, "replies dropped unread"),
                )
        return failed in (0, errno.EAGAIN)

    def _back(self, identity: bytes) -> AbstractSet[str]:
        """Heard from: the client is connected, and gets what was kept for it first. The ids of the replies kept."""
        gone = self._gone.get(identity)
        if gone is None:
            return _NOTHING_KEPT  # nothing made for the usual message
        kept = {request_id for request_id, _ in gone.replies}
        self._try_again(identity, gone)
        return kept

    def _hand_over_kept(self, identity: bytes, gone: _Gone) -> None:
        """Sends the client the replies kept for it, in order, until one finds it still gone."""
        while gone.replies and self._deliver(identity, gone.replies[0][1]):
            gone.replies.popleft()

    def _try_again(self, identity: bytes, gone: _Gone) -> None:
        self._hand_over_kept(identity, gone)
        if not gone.replies:
            del self._gone[identity]

    def _sweep(self) -> None:
        """Every _GONE_RETRY_S while clients are kept for: their replies tried again, only if a connection's
        handshake succeeded since the sweep before the last (a client back made one, and its connection may reach
        the socket a sweep after), and those found gone since the last (one may have connected again as its reply
        found it gone); then the clients gone past the grace given up."""
        before_last, last = self._swept_handshakes
        now = self._connections.handshakes
        self._swept_handshakes = (last, now)
        tried, self._new_gone = (list(self._gone) if now != before_last else self._new_gone), []
        for identity in tried:
            if (gone := self._gone.get(identity)) is not None:
                self._try_again(identity, gone)
        loop = asyncio.get_running_loop()
        while self._gone:
            identity, gone = next(iter(self._gone.items()))
            if loop.time() - gone.since < self._gone_grace_s:
                break
            self._give_up(identity, gone)
        self._sweep_due = loop.call_later(_GONE_RETRY_S, self._sweep) if self._gone else None

    def _give_up(self, identity: bytes, gone: _Gone) -> None:
        # the replies to the requests cancelled here find it gone too, and are kept as long in their turn
        del self._gone[identity]
        self._engine.metrics.replies_dropped.labels("gone").inc(len(gone.replies))
        mine = [request for (owner, _), request in self._live.items() if owner == identity]
        held = self._log_lines.due("gone", len(mine)) if mine else None
        if held is not None:
            log.info(
                "client %s gone: cancelling its %s%s",
                _named(identity),
                counted(len(mine), "request"),
                _held_back(held, "requests of clients gone cancelled"),
            )
        self._engine.dispatcher.cancel(*mine)

    def _give_up_the_gone(self) -> None:
        """At shutdown, the replies kept for clients found gone (the drain's among them) go to those back since, and
        the rest are dropped: counted and said. They were let go with the door, in no count and no line."""
        dropped, clients = 0, 0
        for identity, gone in self._gone.items():
            self._hand_over_kept(identity, gone)
            dropped += len(gone.replies)
            clients += bool(gone.replies)
        self._gone.clear()
        if dropped:
            self._engine.metrics.replies_dropped.labels("gone").inc(dropped)
            log.info(
                "stopping: dropped the %s kept for %s gone (within --client-gone-grace)",
                counted(dropped, "reply", "replies"),
                counted(clients, "client"),
            )


def _held_back(held: int, what: str) -> str:
    return f"; {held} more {what} since the last such line (any client)" if held else ""


# a key of this process's own: a client is named in the log by a digest of its identity, which tells clients apart and
# gives none of it away. Its first 6 bytes did: libzmq names a client that gives no identity of its own by 5, all of
# them shown, and whoever read the log could connect under that name and take the client's replies (ROUTER_HANDOVER)
_NAMING_KEY = secrets.token_bytes(16)


def _named(identity: bytes) -> str:
    """Enough to tell clients apart in a log, nothing to take a client's replies over with."""
    return hashlib.blake2b(identity, digest_size=6, key=_NAMING_KEY).hexdigest()
