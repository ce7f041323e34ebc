"""`argus worker --backend sim --count N`: N SIMULATED workers in one process, so a fleet of a thousand fits a laptop.

Each worker is a WorkerRuntime of its own: its own DEALER socket and identity
(`{base}-{i}/...`), queue, level, heartbeats, hello, and rejoin when the engine
goes silent or (unless started with --die-with-parent) says Shutdown. They share
one ZeroMQ context and one SimBackend. Instead of a
blocking loop per worker, one loop serves them all, woken by the operating
system's selector on the sockets' file descriptors (zmq.Poller would look at
every socket on every wake-up) or by the earliest of their timers: a worker that
starts a batch is busy until its simulated time has passed (a timer in the
loop, where a lone sim worker would sleep; the same latency profile, times the
time scale), then SimBackend answers the batch at once, reporting the time the
worker was busy.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import math
import selectors
import time
from collections.abc import Callable

import msgspec
import zmq

from controller.profiles import LatencyProfile, ProfileLatency
from protocols.curve import ClientKeys
from protocols.sockets import allow_open_files
from protocols.worker_messages import Generate, ItemDone, ItemOutcome, Refused
from workers.backend import Backend, BackendInfo, all_aborted, cancel_all
from workers.config import WorkerConfig
from workers.main import exit_with_parent, load_backend, serve_until_stopped
from workers.runtime import UNANSWERED_WARNING_S, EngineRefused, UnansweredWarnings, WorkerRuntime, warn_unanswered
from workers.wakeup import Wakeup

log = logging.getLogger("argus.fleet")

# file descriptors each worker needs (its TCP connection and its socket's mailbox), and some for the process
_FDS_PER_WORKER = 2
_SPARE_FDS = 64


class _SimulatedRun(Backend):
    """SimBackend's answers, built at time scale 0: the simulated time was spent busy in the fleet's loop."""

    def __init__(self, connect: str, base_id: str, max_batch: int | None, time_scale: float):
        # built as a lone sim worker builds its backend, at time scale 0
        self._sim = load_backend(WorkerConfig(connect, base_id, backend="sim", time_scale=0.0, max_batch=max_batch))
        # described at the fleet's: the time scale its workers' hellos tell the engine
        self._info = dataclasses.replace(self._sim.describe(), time_scale=time_scale)

    def describe(self) -> BackendInfo:
        return self._info

    def check(self, batch: Generate) -> None:
        self._sim.check(batch)

    def run(self, batch: Generate, control: SimWorker) -> list[ItemOutcome]:
        if control.still_busy() and all_aborted(batch, control):
            # cut short, as SimBackend cuts a run its worker stops: nothing was made. At time scale 0 it finds the
            # images made, and a fleet stopped mid-batch answered them done long before their simulated time
            return cancel_all(batch)
        run_ms = control.busy_ms()
        outcomes = self._sim.run(batch, control)
        return [msgspec.structs.replace(o, run_ms=run_ms) if isinstance(o, ItemDone) else o for o in outcomes]


class _NamingWorker(logging.LoggerAdapter):
    """The fleet's process names the fleet in each of its records (engine/logs/setup.py): a line about one of its
    workers names that one, as the fleet's own lines about one do."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter, name: str):
        super().__init__(logger)
        self._name = name

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:
        # an argument, not part of the format: a % in a worker's id would break it
        super().log(level, "worker %s: " + str(msg), self._name, *args, **kwargs)


class SimWorker(WorkerRuntime):
    """One worker of the fleet: WorkerRuntime's protocol, driven by the fleet's loop instead of its own."""

    def __init__(
        self,
        backend: _SimulatedRun,
        connect: str,
        worker_id: str,
        context: zmq.Context,
        latency: ProfileLatency,
        time_scale: float,
        curve: ClientKeys | None,
        phase: float,
        owned: bool,
        watch_handshakes: bool,
        say_for_fleet: Callable[[SimWorker, str], None],
    ):
        """`say_for_fleet`: the fleet's, which says a line once for all its workers (why they say hello again, what
        they ignore before welcome)."""
        super().__init__(
            backend, connect, worker_id, curve=curve, context=context, owned=owned, watch_handshakes=watch_handshakes
        )
        self._log = _NamingWorker(self._log, self.identity.decode())
        self._say_for_fleet = say_for_fleet
        self._latency = latency
        self._time_scale = time_scale
        # workers welcomed together would beat together: spread them over the interval, as workers
        # started apart are (a burst of a thousand heartbeats stalls the engine for milliseconds)
        self._phase = phase
        self._joined = False
        self.unwelcomed_since = time.monotonic()  # saying hello since, while not joined
        self._hello_due = 0.0
        self._started = 0.0
        self._busy_until = 0.0
        self.wake_at = math.inf  # the fleet's timer for this worker

    @property
    def fd(self) -> int:
        """Signals that the socket's events may have changed (ZMQ_FD): the fleet's selector watches it."""
        return self._socket.FD

    @property
    def readable(self) -> bool:
        return bool(self._socket.getsockopt(zmq.EVENTS) & zmq.POLLIN)

    @property
    def joined(self) -> bool:
        return self._joined

    @property
    def heartbeat_interval_s(self) -> float:
        """The engine's, as its Welcome gave it."""
        return self._heartbeat_interval_s

    def _say_engine_lost(self, why: str) -> None:
        self._say_for_fleet(self, f"{why}; saying hello again")

    def _say_ignoring(self, kind: str) -> None:
        self._say_for_fleet(self, f"ignoring {kind} before welcome")

    def busy_ms(self) -> float:
        return (time.monotonic() - self._started) * 1000.0

    def still_busy(self) -> bool:
        """Whether the simulated time of the batch it runs has yet to pass."""
        return time.monotonic() < self._busy_until

    def close(self) -> None:
        self._close()

    def on_readable(self) -> None:
        while not self._joined and self._socket.poll(0, zmq.POLLIN):
            self._last_heard = time.monotonic()
            self._joined = self._welcomed(self._codec.decode(self._socket.recv_multipart(copy=False)))
            if self._joined:
                self._next_heartbeat = time.monotonic() + self._phase * self._heartbeat_interval_s
        if self._joined:
            self._drain()

    def tick(self, now: float) -> float | None:
        """Does what is due; returns when to come back, or None once this worker has stopped (close it then)."""
        if self._stopping:
            if self._running is not None:
                self._run(self._running)  # every item is aborted now: answered as cancelled
            self._cancel_pending()
            return None
        if self._joined:
            self._heartbeat_if_due()
            if self._engine_lost:
                self._forget_engine()
                self._running = None
                self._joined = False
                self.unwelcomed_since = self._hello_due = now
        if not self._joined:
            if now >= self._hello_due:
                self._redial_if_unheard()
                self._send(self._hello())
                self._hello_due = now + self._hello_retry_s
            return self._hello_due
        return self._work(now)

    def _work(self, now: float) -> float:
        while True:
            if self._running is not None:
                if now < self._busy_until and not all_aborted(self._running, self):
                    return min(self._next_heartbeat, self._busy_until)
                self._run(self._running)
            if self._stopping:
                return now  # a Shutdown came in while the batch was answered
            if not self._pending:
                return self._next_heartbeat
            batch = self._pending.popleft()
            self._running = batch
            self._started = now
            # timed for the items still wanted, as _run runs only those
            self._busy_until = now + self._time_scale * self._seconds(self._unaborted(batch))

    def _seconds(self, batch: Generate) -> float:
        try:
            # refused as a lone sim worker refuses it, before its run: it was busy for the batch's simulated time first
            # (a batch of 9 past its largest of 8, 25.5 s at --time-scale 1)
            self._backend.check(batch)
            return self._latency.seconds(batch.level, batch.steps, len(batch.items))
        except ValueError:  # BatchRefused is one
            # a batch it refuses, or none can time (an empty one): due at once, and _run answers it as a lone worker
            # does, where an exception here would end the loop of every worker in the process
            return 0.0


class Fleet:
    def __init__(
        self,
        connect: str,
        count: int,
        base_id: str,
        time_scale: float,
        max_batch: int | None,
        curve: ClientKeys | None,
        owned: bool = False,
    ):
        self._context = zmq.Context()
        self._context.set(zmq.MAX_SOCKETS, count + _SPARE_FDS)
        backend = _SimulatedRun(connect, base_id, max_batch, time_scale)
        # SimBackend's own default profile
        latency = ProfileLatency(LatencyProfile.bundled())
        self._connect = connect
        self._workers = tuple(
            SimWorker(
                backend,
                connect,
                f"{base_id}-{i}",
                self._context,
                latency,
                time_scale,
                curve,
                i / count,
                owned,
                i == 0,
                self._say_once,
            )
            for i in range(count)
        )
        self._selector = selectors.DefaultSelector()
        for worker in self._workers:
            self._selector.register(worker.fd, selectors.EVENT_READ, worker)
        self._timers: list[tuple[float, int, SimWorker]] = []
        self._order = itertools.count()
        self._stop_requested = False
        # a stop ends the selector's wait at once, not at the earliest timer (a worker unanswered: its next hello)
        self._wakeup = Wakeup()
        self._selector.register(self._wakeup, selectors.EVENT_READ)
        self._refusal: EngineRefused | None = None  # what ended the fleet: a hello every worker of it sends
        # the workers share one key: a handshake refused for one (libzmq dials no more) is refused for all
        self._handshakes = self._workers[0].refused_handshakes
        self._ids_refused = 0
        # refused for their ids since the fleet's last ready line, which counts them: a line each made a thousand for
        # a fleet of a thousand started with another fleet's --worker-id
        self._ids_unsaid = 0
        # the wait of the workers still unwelcomed, from the first of them to wait: when it began, and its warnings
        self._waiting_since: float | None = None
        self._warnings = UnansweredWarnings()
        # why workers lost the engine, and what they ignored before welcome, each said once until the fleet is whole
        # again: the same line from each worker made a thousand at every restart of the engine
        self._said: set[str] = set()
        # when a worker last had a line of those to say (said or not): the fleet is whole again only a heartbeat
        # interval after it (see _whole)
        self._trouble_at = -math.inf

    @property
    def workers(self) -> tuple[SimWorker, ...]:
        return self._workers

    def stop(self) -> None:
        """Safe from a signal handler and from another thread: the loop notices at once."""
        self._stop_requested = True
        self._wakeup.wake()

    def serve(self) -> None:
        try:
            with self._wakeup.on_signals():
                self._loop()
        finally:
            self.close()
        if self._refusal is None and self._ids_refused == len(self._workers):
            self._refusal = EngineRefused(Refused("each of this fleet's worker ids is in use", id_in_use=True))
        if self._refusal is not None:
            raise self._refusal  # exit code 2, as a lone worker refused

    def close(self) -> None:
        """Closes every socket of the fleet, then their context: serve() does on its way out, a fleet never served
        needs it called."""
        self._selector.close()
        self._wakeup.close()
        for worker in self._workers:
            worker.close()
        self._context.term()

    def _loop(self) -> None:
        live = set(self._workers)
        now = time.monotonic()
        for worker in self._workers:
            self._serve(worker, now, live)
        announced = False
        check_at = now + UNANSWERED_WARNING_S  # for workers still unwelcomed: not on every wake-up of a big fleet
        while live:
            if self._stop_requested:
                self._stop_requested = False
                for worker in live:
                    worker.stop()
                    self._schedule(worker, now)
            events = self._selector.select(max(0.0, self._timers[0][0] - time.monotonic()))
            now = time.monotonic()
            for key, _ in events:
                if key.fileobj is self._wakeup:
                    # after the flag was read: a stop's is read again at the next turn, and a signal's handler (see
                    # Wakeup.on_signals), which stops the fleet, has run by then
                    self._wakeup.clear()
                elif key.data in live:
                    self._serve(key.data, now, live)
            while self._timers and self._timers[0][0] <= now:
                due, _, worker = heapq.heappop(self._timers)
                if due == worker.wake_at and worker in live:
                    worker.wake_at = math.inf
                    self._serve(worker, now, live)
            # and again once whole after a loss was said: that warning stood as the fleet's last word while it served
            if (not announced or self._said or self._ids_unsaid) and live and self._whole(live, now):
                self._say_ready(len(live), again=announced)
                announced = True
            elif self._refusal is None and (refused := self._handshakes.reason()):
                # heard at any time, not only before the fleet first served: an engine restarted on the address
                # with CURVE turned on, or a key pair of its own, left the fleet waiting for ever, warned of as an
                # engine that had stopped, where a lone worker said why and exited 2
                self._refused(self._workers[0], EngineRefused(Refused(refused)))
            if now >= check_at:
                check_at = now + UNANSWERED_WARNING_S
                self._warn_if_unanswered(live, now)

    def _whole(self, live: set[SimWorker], now: float) -> bool:
        """Every worker welcomed, and none has lost the engine for a heartbeat interval. An engine killed and replaced
        on the address answers each worker's beat with Rejoin, at the worker's own phase, and each is welcomed again
        within milliseconds: the fleet, whole again after each, said the loss and "ready again" for each worker in
        turn (30 lines for a fleet of 20). Within an interval every worker has beaten the new engine."""
        interval = self._workers[0].heartbeat_interval_s
        return now - self._trouble_at >= interval and all(w.joined for w in live)

    def _warn_if_unanswered(self, live: set[SimWorker], now: float) -> None:
        waiting = [w for w in live if not w.joined]
        since = min((w.unwelcomed_since for w in waiting), default=None)
        if since != self._waiting_since:  # a wait begins (or its first worker was welcomed): warned of afresh
            self._waiting_since, self._warnings = since, UnansweredWarnings()
        if since is None or not self._warnings.due(now - since):
            return
        # those waiting a heartbeat interval at least, past a hello's answer (milliseconds): counted by the warning's
        # own 10 s, the workers that lost a stopping engine a moment after the first (its Shutdown reached their
        # sockets apart, on a loaded machine) were left out: "1 of this fleet's 2 workers", both waiting. At most the
        # 10 s: an engine may give an interval longer than that, and the first to wait would not be counted
        interval = min(self._workers[0].heartbeat_interval_s, UNANSWERED_WARNING_S)
        unanswered = sum(now - w.unwelcomed_since >= interval for w in waiting)
        warn_unanswered(
            self._connect,
            now - since,
            f"{unanswered} of this fleet's {len(live)} workers",
            engine_stopped=all(w.engine_stopped for w in waiting),
            served=all(w.served for w in waiting),
        )

    def _say_ready(self, count: int, again: bool) -> None:
        one = self._ids_unsaid == 1
        in_use = f"{'is' if one else 'are'} in use, {'that worker' if one else 'those workers'} refused"
        refused = f" ({self._ids_unsaid} of its worker ids {in_use})" if self._ids_unsaid else ""
        log.info("fleet of %d SIMULATED workers ready%s%s", count, " again" if again else "", refused)
        self._said.clear()
        self._ids_unsaid = 0

    def _say_once(self, worker: SimWorker, line: str) -> None:
        self._trouble_at = time.monotonic()
        if line not in self._said:
            self._said.add(line)
            log.warning(
                "worker %s: %s (said once for the fleet's workers until all are welcomed)",
                worker.identity.decode(),
                line,
            )

    def _serve(self, worker: SimWorker, now: float, live: set[SimWorker]) -> None:
        while True:
            if worker.readable:
                try:
                    worker.on_readable()
                except EngineRefused as refusal:
                    self._refused(worker, refusal)
            wake = worker.tick(now)
            if wake is None:
                self._selector.unregister(worker.fd)
                if worker.refused_handshakes is not self._handshakes:
                    # the watcher's socket stays open, unserved, until the fleet closes: it hears the handshakes of
                    # all. Closed as its id was refused, the fleet waited for ever on an engine come up on the address
                    # with CURVE on (or a key pair of its own), where it said why and exited 2
                    worker.close()
                live.discard(worker)
                return
            # a send can take the descriptor's signal with it: what came in meanwhile is read now
            if not worker.readable:
                break
        self._schedule(worker, wake)

    def _refused(self, worker: SimWorker, refusal: EngineRefused) -> None:
        worker.stop()
        name = worker.identity.decode()
        if refusal.id_in_use:
            self._ids_refused += 1
            self._ids_unsaid += 1
            if self._ids_unsaid == 1:
                log.error(
                    "engine refused worker %s: %s; the fleet's other workers serve on (the others refused for their"
                    " ids are not said each: its ready line counts them)",
                    name,
                    refusal,
                )
        elif self._refusal is None:
            # the workers of a fleet send one hello but for their ids: what refuses it refuses them all
            self._refusal = refusal
            log.error("engine refused worker %s: %s; stopping every worker of this fleet", name, refusal)
            self.stop()

    def _schedule(self, worker: SimWorker, at: float) -> None:
        # one live timer per worker, the earliest: a later one is re-armed by the tick the earlier one causes
        if at < worker.wake_at:
            worker.wake_at = at
            heapq.heappush(self._timers, (at, next(self._order), worker))


def run_fleet(
    connect: str,
    count: int,
    base_id: str,
    time_scale: float,
    max_batch: int | None,
    curve: ClientKeys | None,
    die_with_parent: bool = False,
) -> int:
    if count < 1:
        raise SystemExit("--count must be at least 1")
    needed = count * _FDS_PER_WORKER + _SPARE_FDS
    if not allow_open_files(needed):
        # past the limit, the fleet died of "Too many open files" with a traceback as it made its sockets
        log.error(
            "--count %d needs %d open files, over this process's hard limit (ulimit -Hn): raise it or split the fleet",
            count,
            needed,
        )
        return 2
    if die_with_parent:
        exit_with_parent()
    fleet = Fleet(connect, count, base_id, time_scale, max_batch, curve, owned=die_with_parent)
    return serve_until_stopped(fleet, owned=die_with_parent)
