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
over HTTP the request's `safety_identifier`, else its `user`, else its address.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class ClientShares:
    def __init__(self, max_queue: int, waiting_s: float, clock: Callable[[], float] = time.monotonic):
        self._max_queue = max_queue
        self._waiting_s = waiting_s
        self._clock = clock
        self._held: dict[str, int] = {}  # images admitted and not answered, by client (none held: not here)
        # clients refused at a full queue: until when each counts as waiting, and the images it asked for. In the
        # order they began to wait (a retry keeps its place): the first is served first
        self._waiting: dict[str, tuple[float, int]] = {}

    def refusal(self, client: str, images: int, queued: int) -> str | None:
        """None if the client's request may be admitted now, with `queued` images in the engine; else why not
        (Busy.reason): queue_full or client_share."""
        held = self._held.get(client, 0)
        if held and self._others_wait(client) and held + images > self._share(client):
            return "client_share"
        if queued + images + self._kept_for_others(client) > self._max_queue:
            if held < self._share(client):  # room is owed to it: the others give way while it waits
                self._waiting[client] = (self._clock() + self._waiting_s, images)
            return "queue_full"
        return None

    def _kept_for_others(self, client: str) -> int:
        """The room kept for the request of the client that has waited longest, unless it is this one's."""
        self._forget_stale_waits()
        first = next(iter(self._waiting), client)
        return 0 if first == client else self._waiting[first][1]

    def add(self, client: str, images: int) -> None:
        self._held[client] = self._held.get(client, 0) + images
        self._waiting.pop(client, None)

    def remove(self, client: str, images: int) -> None:
        left = self._held[client] - images
        if left:
            self._held[client] = left
        else:
            del self._held[client]

    def _share(self, client: str) -> int:
        """--max-queue divided among the clients holding images, those waiting, and this one."""
        self._forget_stale_waits()
        return self._max_queue // len(self._held.keys() | self._waiting.keys() | {client})

    def _others_wait(self, client: str) -> bool:
        self._forget_stale_waits()
        return any(waiting != client for waiting in self._waiting)

    def _forget_stale_waits(self) -> None:
        if self._waiting:
            now = self._clock()
            for client in [c for c, (until, _) in self._waiting.items() if until <= now]:
                del self._waiting[client]
