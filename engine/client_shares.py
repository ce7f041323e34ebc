"""Shares of the queue among clients: one that keeps --max-queue full cannot keep the others out.

Admission is first come, first served while the queue has room, and a lone
client may fill it. A client refused because the queue is full is remembered
as waiting for a while (a few of its Retry-After). While any other client
waits, a client holding its equal share of --max-queue or more (divided among
the clients holding images and those waiting) is refused too: the room its
finished images free goes to the waiting ones, whose retry finds it. Before,
a pipeline that retried each Busy at once took every slot as it freed, and an
interactive client got Busy for as long as the pipeline ran. And the room the
client that has waited longest asks for is kept from the others: before, a
request of n near --max-queue fitted only an empty queue, and waited for ever
while another client kept a few images queued, however far below its share.

A client is what its front door names it by (engine/client_door.py,
engine/http_api.py): over ZeroMQ its CURVE key, else its socket's identity;
over HTTP the request's `safety_identifier`, else its `user`, else its address. Service, once admitted, is shared
among the same clients (engine/fair_share.py).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable


class ClientShares:
    """Every call costs the same however many clients wait: a client cycling through `user` names at a full
    queue leaves one wait per name for `waiting_s`, and scanning them all at every request cost 90 us a refusal
    with 1,000 waiting and 290 us with 20,000 (about 2 us now, either way)."""

    def __init__(self, max_queue: int, waiting_s: float, clock: Callable[[], float] = time.monotonic):
        self._max_queue = max_queue
        self._waiting_s = waiting_s
        self._clock = clock  # never goes back: the waits' ends are set in the order they come
        self._held: dict[str, int] = {}  # images admitted and not answered, by client (none held: not here)
        # clients refused at a full queue: until when each counts as waiting, and the images it asked for. In the
        # order they began to wait (a retry keeps its place): the first is served first
        self._waiting: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._wait_ends: deque[tuple[float, str]] = deque()  # (until, client) as each wait was set or renewed
        self._waiting_only = 0  # clients waiting that hold no images: with _held, those the queue is shared among

    def refusal(self, client: str, images: int, queued: int) -> str | None:
        """None if the client's request may be admitted now, with `queued` images in the engine; else why not
        (Busy.reason): queue_full or client_share."""
        self._forget_stale_waits()
        held = self._held.get(client, 0)
        if held and self._others_wait(client) and held + images > self._share(client):
            return "client_share"
        if queued + images + self._kept_for_others(client) > self._max_queue:
            if held < self._share(client):  # room is owed to it: the others give way while it waits
                self._wait(client, images)
            return "queue_full"
        return None

    def add(self, client: str, images: int) -> None:
        if self._waiting.pop(client, None) is not None and client not in self._held:
            self._waiting_only -= 1
        self._held[client] = self._held.get(client, 0) + images

    def remove(self, client: str, images: int) -> None:
        left = self._held[client] - images
        if left:
            self._held[client] = left
        else:
            del self._held[client]
            self._waiting_only += client in self._waiting

    def _wait(self, client: str, images: int) -> None:
        until = self._clock() + self._waiting_s
        if client not in self._waiting and client not in self._held:
            self._waiting_only += 1
        self._waiting[client] = (until, images)
        self._wait_ends.append((until, client))

    def _kept_for_others(self, client: str) -> int:
        """The room kept for the request of the client that has waited longest, unless it is this one's."""
        first = next(iter(self._waiting), client)
        return 0 if first == client else self._waiting[first][1]

    def _share(self, client: str) -> int:
        """--max-queue divided among the clients holding images, those waiting, and this one."""
        sharing = len(self._held) + self._waiting_only
        return self._max_queue // (sharing + (client not in self._held and client not in self._waiting))

    def _others_wait(self, client: str) -> bool:
        return len(self._waiting) > (client in self._waiting)

    def _forget_stale_waits(self) -> None:
        now = self._clock()
        while self._wait_ends and self._wait_ends[0][0] <= now:
            _, client = self._wait_ends.popleft()
            wait = self._waiting.get(client)
            if wait is not None and wait[0] <= now:  # not renewed since (a renewal's end is further on)
                del self._waiting[client]
                self._waiting_only -= client not in self._held
