"""Shares of the queue among clients: one that keeps --max-queue full cannot keep the others out.

Admission is first come, first served while the queue has room, and a lone
client may fill it. A client refused because the queue is full is remembered
as waiting for a while (a few of the Retry-After it was told), admitted meanwhile or not: a client
asking for one image at a time is not refused again at once for room the others took back. While any other client
waits, a client holding its equal share of --max-queue or more (divided among
the clients holding images and those waiting) is refused too: the room its
finished images free goes to the waiting ones, whose retry finds it. Before,
a pipeline that retried each Busy at once took every slot as it freed, and an
interactive client got Busy for as long as the pipeline ran. And the room the
client that has waited longest asks for is kept from the others: before, a
request of n near --max-queue fitted only an empty queue, and waited for ever
while another client kept a few images queued, however far below its share.

A client is what its front door names it by (engine/zmq/door.py,
engine/http/api.py): over ZeroMQ its CURVE key, else its socket's identity;
over HTTP the request's `safety_identifier`, else its `user`, else its address. Service, once admitted, is shared
among the same clients (engine/dispatch/fair_share.py).

A refusal says how soon to try again (engine/dispatch/queue_pace.py): as long as the engine takes to answer the images
that must leave before the request fits. At a full queue those are the images it asks for beyond the room left (and
beyond the room kept for the client that has waited longest); past its share, those it holds beyond its share, which
leave at its part of the fleet's pace, one of the clients sharing the queue.

At most a few times --max-queue clients are remembered waiting: a client may name itself afresh at every request.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

# a client refused at a full queue is remembered as waiting for this many of the Retry-After it was told; past that it
# has gone
_WAITS = 3
# the clients remembered as waiting (or served within their wait) at most, as a multiple of --max-queue: past that many,
# every client's share of the queue is none already, and one more counted changes no refusal but its own place in line.
# Unbounded, a client naming itself afresh at each request (a `user` a request, over HTTP) at a queue told to wait 60 s
# had each name kept 3 minutes: 180,000 waits and 80 MB of the engine's memory at 1,000 refusals a second
_WAITS_KEPT_PER_IMAGE = 4


class Refusal(NamedTuple):
    reason: str  # Busy.reason: queue_full or client_share
    retry_s: int  # how soon to try again


class _Wait(NamedTuple):
    until: float  # it counts as waiting until then
    images: int  # that it asked for
    listed: float  # the time of its one entry in _wait_ends that counts: at or before `until`


class ClientShares:
    """A call costs about the same however many clients wait: a client cycling through `user` names at a full
    queue leaves one wait per name, a few of its Retry-After long, and scanning them all at every request cost 90 us
    a refusal with 1,000 waiting and 290 us with 20,000 (about 2 us now, the Retry-After reckoned with it). A client
    renewing its wait leaves no more behind: each renewal pushed an end of its own, and one ZeroMQ client retrying
    each Busy at once, 32,000 a second at a queue told 30 s, grew the engine by 194 MB in 40 s."""

    def __init__(
        self, max_queue: int, retry_s: Callable[[int], int], clock: Callable[[], float] = time.monotonic
    ) -> None:
        """`retry_s`: how soon so many images will have left the queue (QueuePace.retry_s)."""
        self._max_queue = max_queue
        self._waits_kept = _WAITS_KEPT_PER_IMAGE * max_queue + 1  # more than --max-queue: see _WAITS_KEPT_PER_IMAGE
        self._retry_s = retry_s
        self._clock = clock
        self._held: dict[str, int] = {}  # images admitted and not answered, by client (none held: not here)
        # clients refused at a full queue, in the order they began to wait (a retry keeps its place): the first is
        # served first
        self._waiting: OrderedDict[str, _Wait] = OrderedDict()
        # clients admitted while they waited, until their wait ends: counted as waiting still, but owed no room. A
        # wait ended at admission, and a client asking for an image at a time came back to a queue the others had
        # filled again: refused at each request, it waited a Retry-After (1 s at least) for each image
        self._served: dict[str, _Wait] = {}
        # (when, client), soonest first: one entry a waiting or served client (and those of ended waits, met and
        # dropped), each at or before its wait's end, moved on to the end when met if the wait was renewed since. A
        # wait lasts as long as its Retry-After says: one set shorter than the last gets an entry of its own
        self._wait_ends: list[tuple[float, str]] = []
        # clients waiting or served that hold no images: with _held, those the queue is shared among
        self._waiting_only = 0

    def refusal(self, client: str, images: int, queued: int) -> Refusal | None:
        """None if the client's request may be admitted now, with `queued` images in the engine; else why not, and
        how soon to try again."""
        self._forget_stale_waits()
        held = self._held.get(client, 0)
        share = self._share(client)
        if held and self._others_wait(client) and held + images > share:
            sharing = len(self._held) + self._waiting_only
            return Refusal("client_share", self._retry_s((held + images - share) * sharing))
        beyond = queued + images + self._kept_for_others(client) - self._max_queue
        if beyond > 0:
            retry_s = self._retry_s(beyond)
            # room is owed to it: the others give way while it waits. To one holding nothing too where the share
            # rounds down to none (more clients than --max-queue): at --max-queue 1, a client was never counted as
            # waiting, and one retrying at once took every slot as it freed while another retried for ever
            if held < share or not held:
                self._wait(client, images, _WAITS * retry_s)
            return Refusal("queue_full", retry_s)
        return None

    def add(self, client: str, images: int) -> None:
        if (wait := self._waiting.pop(client, None)) is not None:
            self._served[client] = wait
        if client not in self._held and self._waits(client):
            self._waiting_only -= 1
        self._held[client] = self._held.get(client, 0) + images

    def remove(self, client: str, images: int) -> None:
        left = self._held[client] - images
        if left:
            self._held[client] = left
        else:
            del self._held[client]
            self._waiting_only += self._waits(client)

    def _wait(self, client: str, images: int, waiting_s: float) -> None:
        until = self._clock() + waiting_s
        # one served waits anew behind those waiting: it had its turn
        wait = self._waiting.get(client) or self._served.pop(client, None)
        if wait is None and len(self._waiting) + len(self._served) >= self._waits_kept:
            return  # refused all the same; it takes a place in line once the waits before it have ended
        if wait is None and client not in self._held:
            self._waiting_only += 1
        if wait is not None and wait.listed <= until:  # its entry comes up in time: moved on then
            listed = wait.listed
        else:
            listed = until
            heapq.heappush(self._wait_ends, (until, client))
        self._waiting[client] = _Wait(until, images, listed)

    def _kept_for_others(self, client: str) -> int:
        """The room kept for the request of the client that has waited longest, unless it is this one's."""
        first = next(iter(self._waiting), client)
        return 0 if first == client else self._waiting[first].images

    def _share(self, client: str) -> int:
        """--max-queue divided among the clients holding images, those waiting, and this one."""
        sharing = len(self._held) + self._waiting_only
        return self._max_queue // (sharing + (client not in self._held and not self._waits(client)))

    def _others_wait(self, client: str) -> bool:
        return len(self._waiting) + len(self._served) > self._waits(client)

    def _waits(self, client: str) -> bool:
        """Counted as waiting: waiting, or served within its wait."""
        return client in self._waiting or client in self._served

    def _forget_stale_waits(self) -> None:
        now = self._clock()
        while self._wait_ends and self._wait_ends[0][0] <= now:
            when, client = heapq.heappop(self._wait_ends)
            waits = self._waiting if client in self._waiting else self._served
            wait = waits.get(client)
            if wait is None or wait.listed != when:  # of a wait that ended, or was set shorter since
                continue
            if wait.until <= now:
                del waits[client]
                self._waiting_only -= client not in self._held
            else:  # renewed since: on to its end
                heapq.heappush(self._wait_ends, (wait.until, client))
                waits[client] = wait._replace(listed=wait.until)
