"""Fair service among clients while the fleet is overloaded: where a client's queued job ranks beside other clients'.

By deadline alone, whoever holds the earliest deadlines is served: a client keeping a hundred requests in flight held
them, and a light client's request with a deadline behind them was answered deadline_exceeded (the client shares,
engine/dispatch/client_shares.py, decide only who is admitted). So a job ranks no earlier than its client's fair point:
when the work that client had queued before it would be done at a fair share of the fleet, the workers in rotation
divided among the clients sharing it. It is reckoned behind the client's last job queued, from the fair clock: now, or
the fair point of the job that led the latest batch sent if later (start-time fair queuing's virtual clock, on the clock
the deadlines are on: FairClock). A flooding client's backlog ranks behind a light client's job, which is judged by that
order; the flood's jobs put back so sheds only the flood's own jobs (KeptJobs), and they are the ones that end up
late. A client's jobs of one deadline class are served in the order it sent them, however much more than its share
it is served, and a client back after a silence goes among a flood's backlog, not before all of it. A client with
nothing queued is behind no one, and while one client alone shares the fleet its jobs rank by their deadlines alone,
exactly as before.

A client counts as sharing the fleet from a job routed to a worker until the work queued then would be done (one SLO
at least): one that sends its next request a few seconds after its last was answered is still counted when the jobs
queued meanwhile come up, and they rank behind its request. It counts on while a job of its is queued: a light
client's request due in 5 s ranks by the time it must start by, later than the queue it came to would be done; once
the client stopped counting, the flood had the fleet alone again, its next jobs ranked by their own deadlines (one
without slo_ms as due one SLO after it came) before that request, which was answered deadline_exceeded at its turn.

The queued jobs are ranked again, in the order they had (which both their deadlines and their fair points keep), by
engine/dispatch/timing.py (ranks_anew, rerank). Anew from now, each client's behind its own before them: as a second
client comes, the first's, ranked by their deadlines while it was alone, as if it had shared the fleet all along (else
a lone flood's backlog went before the newcomer's first requests until it was served, a dozen seconds and more); as
the last but one leaves, the lone client's by their deadlines again (else its next jobs went before its own backlog,
still at its fair points). And the fair clock, run ahead of now while its clients are served beyond their shares, is
moved back with every queued fair point once it is more than twice an SLO (or the time the fleet takes to clear the
queue, if longer) ahead, to once that: let run, a request due in a minute went before a flood's whole backlog due in
seconds; moved back to now, the flood's oldest jobs went before a light request that came then. A job counts in
argus_fair_deferrals_total as it is put back, not again as the clock is moved back.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from engine.dispatch.jobs import AdmittedRequest, Job


class SharingClients:
    """The clients sharing the fleet now, counted without a pass over them: one entry a client in a heap by when it
    stops counting, its time renewed in place by each job it queues and the entry moved on when met. `queues`:
    whether a client has a job queued, which renews its entry by `least_s` when met."""

    def __init__(self, least_s: float, queues: Callable[[str], bool]):
        self._least_s = least_s  # a client counts at least this long after a job it queued
        self._queues = queues
        self._until: dict[str, float] = {}  # client -> until when it counts
        self._ends: list[tuple[float, str]] = []  # (until, client), one a client counted: until then at least

    def note(self, client: str, now: float, clears_in: float) -> None:
        """A job of the client's was routed to a worker at `now`, behind work the fleet clears in `clears_in`."""
        until = now + max(self._least_s, clears_in)
        counted = self._until.get(client)
        if counted is None:
            heapq.heappush(self._ends, (until, client))
        if counted is None or until > counted:
            self._until[client] = until

    def count(self, now: float) -> int:
        while self._ends and self._ends[0][0] <= now:
            _, client = heapq.heappop(self._ends)
            until = self._until[client]
            if until <= now and self._queues(client):
                until = self._until[client] = now + self._least_s
            if until > now:  # renewed since, or still queued
                heapq.heappush(self._ends, (until, client))
            else:
                del self._until[client]
        return len(self._until)


def fair_point(since: float, queued_s: float, sharing: int, workers: int) -> float:
    """When `queued_s` seconds of a client's work would be done from `since` at one of `sharing` shares of `workers`
    workers."""
    return since + queued_s * sharing / workers


def fair_rank(start_by: float, now: float, queued_s: float, sharing: int, workers: int) -> float:
    """Where a job ranks: the time it must start by, or later its client's fair point, when the `queued_s` seconds
    its client had queued before it would be done from `now` at one of `sharing` shares of `workers` workers."""
    if sharing < 2 or not queued_s:
        return start_by
    return max(start_by, fair_point(now, queued_s, sharing, workers))


class FairClock:
    """Where each client's next job's fair point is reckoned from: behind its client's last job queued, and no earlier
    than the clock, the later of now and the fair point of the job that led the latest batch sent (start-time fair
    queuing's virtual clock, on the clock the deadlines are on). Behind its last job, not from now behind the seconds
    it has queued: a client served beyond its share (the others sending little) had those shrink faster than its
    share foresaw, and its later jobs ranked before its own earlier ones. From the clock, not from its own last point
    alone: a client served beyond its share has its points run ahead of now, and one that came back after a while
    had its whole burst ranked before that client's next job. The lead's point, not its batch-mates': taken in the
    order queued on a worker, they can lie far beyond it. How far the clock runs ahead of now is bounded by moving it
    back, and the queue's fair points with it (`ahead`, timing.ranks_anew)."""

    def __init__(self) -> None:
        self._at = float("-inf")  # the fair point of the job that led the latest batch sent
        self._last: dict[str, tuple[float, float]] = {}  # client -> (fair point, seconds) of its last job queued

    def behind(self, client: str, now: float) -> tuple[float, float]:
        """Where the client's next job's fair point is reckoned from, and the seconds of its work counted there:
        its last queued job's fair point (no earlier than the clock) and that job's seconds; or the clock and none,
        for a client with nothing queued."""
        clock = max(now, self._at)
        point, seconds = self._last.get(client, (clock, 0.0))
        return max(point, clock), seconds

    def queued(self, client: str, point: float, seconds: float) -> None:
        """A job of the client's, taking `seconds`, was queued at fair point `point`."""
        self._last[client] = point, seconds

    def forget(self, client: str) -> None:
        """The client has nothing queued any more: its next job is behind no one."""
        self._last.pop(client, None)

    def sent(self, point: float) -> None:
        self._at = max(self._at, point)

    def ahead(self, now: float) -> float:
        """Seconds the clock runs ahead of now: the fair points of the jobs sent lately past it, their clients served
        beyond their shares."""
        return self._at - now

    def move_back(self, seconds: float) -> None:
        """The clock and every client's point `seconds` earlier (timing.ranks_anew says why)."""
        self._at -= seconds
        self._last = {client: (point - seconds, queued_s) for client, (point, queued_s) in self._last.items()}

    def restart(self, now: float) -> None:
        """The queue is ranked again from now (timing.rerank), its clients' points with it."""
        self._at = now
        self._last.clear()


class KeptJobs:
    """The jobs with a deadline Moore-Hodgson's rule keeps as it goes down the queue (timing.answer_late), the
    costliest (then the latest) first: of every client, for a job that ranks by its deadline, or of the job's own
    client, for one its client's fair point put back. That one is late because its client sends more than its share,
    and sheds none of another client's jobs for it: shedding any costlier job, a flood of hits shed a light client's
    miss ranked before them. A job shed from one view is dropped from the other when met. `by_client`: whether
    clients share the fleet (else there is no view by client to keep)."""

    def __init__(self, by_client: bool) -> None:
        self._all: list[tuple[float, int, Job]] = []  # (-seconds, -place, job)
        self._by_client: dict[str, list[tuple[float, int, Job]]] | None = {} if by_client else None
        self._shed: set[int] = set()  # the places of the jobs shed
        self._of_request: dict[AdmittedRequest, list[tuple[float, int]]] = {}  # (seconds, place) of each job kept

    def keep(self, job: Job, seconds: float, place: int) -> None:
        entry = (-seconds, -place, job)
        heapq.heappush(self._all, entry)
        if self._by_client is not None:
            heapq.heappush(self._by_client.setdefault(job.request.client, []), entry)
        self._of_request.setdefault(job.request, []).append((seconds, place))

    def drop(self, request: AdmittedRequest) -> float:
        """Takes out the jobs kept of a request just answered (one of its images shed, or late): the seconds they
        no longer take. Kept, a request of several images shed for one of them still weighed on the jobs behind
        it with the others, and one of those was shed in turn for time no image would take."""
        freed = 0.0
        for seconds, place in self._of_request.pop(request, ()):
            if place not in self._shed:
                self._shed.add(place)
                freed += seconds
        return freed

    def shed_costlier(self, than: float, client: str | None) -> tuple[float, Job] | None:
        """Takes out the costliest job kept (of `client`; None: of any) if it takes longer than `than` seconds:
        its seconds and the job; None if none does."""
        heap = self._all if client is None or self._by_client is None else self._by_client.get(client, [])
        while heap and -heap[0][1] in self._shed:
            heapq.heappop(heap)
        if not heap or -heap[0][0] <= than:
            return None
        negated, negated_place, job = heapq.heappop(heap)
        self._shed.add(-negated_place)
        return -negated, job
