"""The worker's blocking loop: no asyncio, one batch at a time.

Say hello, then repeat: drain the socket without blocking, run the next batch,
answer it with one BatchDone (a terminal outcome per item). While a batch runs, the backend calls
`between_steps` so heartbeats go out and aborts come in between denoising steps.

Some of a run shows no step: the text encoders before the first, the VAE decode
and image encoding after the last, a first run's warm-up, one step of a large
image on a slow device. At 1024x1024 these outlast a short --heartbeat-timeout,
and the engine would count a healthy worker hung, kill it and run its batch
again, forever. So while a run is in progress a second thread, the beat keeper,
does what `between_steps` does once a beat falls due. It vouches for a run only
until the run has shown no progress for `stall_timeout_s`: a run stuck for good
still goes silent, and the engine's heartbeat watch still replaces the worker.

Nothing is sent blocking: with no engine to take them (none up yet, or one that
refused this worker's CURVE key) messages would pile up to the high-water mark
and then block the loop for good, deaf to SIGTERM. A message that cannot leave
at once is dropped: the engine re-dispatches what it does not hear about.

An engine heard from by no message for its timeout is dialled again, and again
at each timeout while nothing comes (see `_redial_if_unheard`): TCP tells a
worker nothing when the engine's host is gone or a NAT forgets the flow, and
ZeroMQ, not told, never dials again, nor drops what waits to be sent.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections import deque

import msgspec
import zmq

from protocols.codec import DecodeError
from protocols.curve import ClientKeys, RefusedHandshakes
from protocols.endpoints import parse_endpoint
from protocols.sockets import dial, make_socket
from protocols.worker_messages import (
    PROTOCOL_VERSION,
    REFUSED,
    Abort,
    BatchDone,
    EngineHeartbeat,
    Generate,
    Heartbeat,
    Hello,
    ItemCancelled,
    ItemFailed,
    ItemOutcome,
    Leaving,
    LevelSet,
    Refused,
    Rejoin,
    SetLevel,
    Shutdown,
    Welcome,
    generate_ids,
    worker_side_codec,
)
from workers.backend import Backend, BatchAborted, BatchRefused, cancel_all, run_part
from workers.config import DEFAULT_STALL_TIMEOUT_S
from workers.devices import on_device
from workers.heap_trim import HeapTrim
from workers.wakeup import Wakeup

log = logging.getLogger("argus.worker")

# hellos unanswered this long are worth a warning: the engine is down, unreachable, or drops us unheard (sealed
# for another engine key, --curve-server-key); then again each time the wait has doubled, and at most this long apart
UNANSWERED_WARNING_S = 10.0
UNANSWERED_WARNING_MAX_S = 600.0
# how long a stopping worker's last messages may take to reach its engine
LINGER_MS = 500
# a ZeroMQ identity holds at most 255 bytes: the worker id, "/" and 8 hex digits (see WorkerRuntime.identity)
MAX_WORKER_ID_BYTES = 255 - 1 - 8


def worker_id_problem(worker_id: str) -> str | None:
    """What unfits a worker id for the worker's name, `{id}/{8 hex digits}` (its ZeroMQ identity, in /ready and in
    each image's `worker`), or None; its length is checked where it is given (with a fleet's suffix)."""
    if not worker_id:
        return "a worker id is not empty"
    if worker_id.isspace():
        # a variable set to spaces: the worker was named nothing in the engine's lines ("worker  /581a63fe ready"),
        # in /ready and in each image's `worker`
        return "a worker id is not blank (spaces only)"
    if not worker_id.isprintable():
        return "a worker id is printable characters only (a newline would forge a log line)"
    if worker_id != worker_id.strip():
        # "gpu-0 " reads as "gpu-0" in /ready and the log, while a fleet's, a restart's or a --worker-id elsewhere
        # written without the space is another worker
        return "a worker id has no spaces at its ends"
    if "/" in worker_id:
        # "a/b/581a63fe" reads as the id a and the hex b
        return 'a worker id holds no "/": a worker\'s name is its id, "/" and 8 hex digits, read up to the first "/"'
    return None


class EngineRefused(Exception):
    def __init__(self, refused: Refused):
        super().__init__(refused.reason)
        self.id_in_use = refused.id_in_use


def unreadable_answer(connect: str, asked: str, answer: DecodeError) -> str:
    """Why the peer at `connect` is no engine's worker socket: no engine's says what a worker cannot read."""
    return (
        f"{connect} answered {asked} with a message no argus engine sends its workers ({answer.reason}): --connect"
        " takes an engine's worker address (argus serve --worker-listen, port 5556 by default), not its client one"
        " (--client-listen) nor its HTTP port (--port)"
    )


def untimely_welcome(connect: str, welcome: Welcome) -> str | None:
    """Why the times a Welcome gives cannot be kept: each must be a positive, finite number of seconds. A heartbeat
    interval of 0 or below had the worker beat as fast as it could (a fleet of 3, 38,000 messages a second), NaN
    ended it with a traceback, and an engine timeout of 0 or below had it lose the engine as soon as it was welcomed,
    and say hello again."""
    for name, seconds in (("heartbeat interval", welcome.heartbeat_interval_s), ("timeout", welcome.engine_timeout_s)):
        if not (math.isfinite(seconds) and seconds > 0):
            return f"{connect} welcomed it with a {name} of {seconds!r} s, where an engine gives a positive number"
    return None


class UnansweredWarnings:
    """When a wait for an engine's answer is worth a warning: at UNANSWERED_WARNING_S, then each time the wait has
    doubled (20, 40, 80 s, ...), then every UNANSWERED_WARNING_MAX_S. A worker started by hand waits for an engine
    as long as it runs, and warned every 10 s of it, for ever."""

    def __init__(self) -> None:
        self._due_s = UNANSWERED_WARNING_S

    def due(self, waited_s: float) -> bool:
        if waited_s < self._due_s:
            return False
        self._due_s = waited_s + min(waited_s, UNANSWERED_WARNING_MAX_S)
        return True


def warn_unanswered(
    connect: str, waited_s: float, workers: str = "this worker", engine_stopped: bool = False, served: bool = False
) -> None:
    """`engine_stopped`: the wait began when the engine said Shutdown, an orderly stop, so no key is to blame.
    `served`: an engine on the address welcomed the workers before they lost it to its silence (killed, crashed, cut
    off), so no key is to blame either: one the next engine there refuses is said at once, and the worker exits 2."""
    if engine_stopped:
        log.warning(
            "the engine at %s stopped %.0f s ago (it said so), and no engine has answered %s since: waiting for the"
            " next one on that address",
            connect,
            waited_s,
            workers,
        )
        return
    if host := unresolved_host(connect):
        log.warning(
            "no answer from an engine at %s for %.0f s: its host %s does not resolve (a typo in --connect, or a name"
            " not in DNS yet): dialling on",
            connect,
            waited_s,
            host,
        )
        return
    if served:
        log.warning(
            "the engine at %s went silent (killed, crashed, or cut off from this host), and no engine has answered %s"
            " for %.0f s since: waiting for the next one on that address",
            connect,
            workers,
            waited_s,
        )
        return
    log.warning(
        "no answer from an engine at %s for %.0f s: is it up, and does it take %s "
        "(CURVE keys: --curve-key/--curve-server-key here, --curve-allow or --curve-allow-workers there)?",
        connect,
        waited_s,
        workers,
    )


def unresolved_host(connect: str) -> str | None:
    """The host of a tcp:// address (`tcp://[SOURCE;]HOST:PORT`) when it does not resolve now, else None. ZeroMQ dials
    such a host again and again without a word, as it does a port no one listens on: a worker given a typo was warned
    only to check the engine and the CURVE keys. Asked when a warning is due, not before: a name not in DNS yet (a
    Kubernetes Service made after its workers) may come, and the worker waits for it."""
    endpoint = parse_endpoint(connect)
    if endpoint.scheme != "tcp":
        return None
    try:
        socket.getaddrinfo(endpoint.host, None)
    except (OSError, UnicodeError):  # socket.gaierror; a name IDNA cannot encode
        return endpoint.host
    return None


class WorkerRuntime:
    def __init__(
        self,
        backend: Backend,
        connect: str,
        worker_id: str,
        hello_retry_s: float = 1.0,
        curve: ClientKeys | None = None,
        context: zmq.Context | None = None,
        owned: bool = False,
        stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
        watch_handshakes: bool = True,
    ):
        """`watch_handshakes`: hear the handshakes the engine refuses for good (a fleet watches one of its workers)."""
        self._backend = backend
        self._info = backend.describe()
        self._worker_id = worker_id
        # what its lines about itself are said through: a fleet's worker names itself in them (workers/fleet.py)
        self._log: logging.Logger | logging.LoggerAdapter = log
        # a fresh identity per process: a restarted worker is a new peer
        self.identity = f"{worker_id}/{uuid.uuid4().hex[:8]}".encode()
        # several runtimes in one process (a simulated fleet) share one context
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._socket = make_socket(self._context, zmq.DEALER, identity=self.identity, curve_client=curve)
        # heard from before the socket connects: a refusal that came first would go unheard, the worker waiting
        # for an engine that will never answer it
        self.refused_handshakes = None
        if watch_handshakes:
            # silent ones judged by the address's greeting: see RefusedHandshakes
            self.refused_handshakes = RefusedHandshakes(self._socket, connect, curve is not None, asks_greeting=True)
        dial(self._socket, connect)
        self._codec = worker_side_codec()
        self._connect = connect
        # launched by an engine, which stops it: the engine's Shutdown ends this worker. One started by hand
        # outlives its engine and says hello to the next one on the same address.
        self._owned = owned
        self._hello_retry_s = hello_retry_s
        self._session = 0  # see Hello.session
        self._level = 0
        self._heartbeat_interval_s = 1.0
        self._engine_timeout_s = 10.0
        self._next_heartbeat = 0.0
        self._last_heard = 0.0
        self._dialled_at = time.monotonic()  # see _redial_if_unheard
        self._engine_lost = True  # no engine serves this worker: none has welcomed it yet, or it was lost since
        self.engine_stopped = False  # the engine was lost to its Shutdown (an orderly stop), until the next Welcome
        # an engine welcomed it once: a wait since is for an engine lost (see warn_unanswered), not one never reached
        self.served = False
        # a message ignored before the next Welcome was said: those after it are not, until then (see _welcomed)
        self._ignoring_said = False
        self._pending: deque[Generate] = deque()
        self._running: Generate | None = None
        self._aborted: set[str] = set()
        self._stopping = False
        # made by serve(), which waits on it beside the socket: a fleet's workers wait in the fleet's loop
        self._wakeup: Wakeup | None = None
        self._leaving_said = False  # see _say_leaving
        # the beat keeper (see the module's docstring): it touches the socket only under this lock, and only
        # while _in_run; the worker's thread clears _in_run under the lock before it uses the socket unlocked
        self._stall_timeout_s = stall_timeout_s
        self._socket_lock = threading.Lock()
        self._in_run = False
        self._last_progress = 0.0
        self._closing = threading.Event()

    # -- StepControl -------------------------------------------------------
    def between_steps(self) -> None:
        with self._socket_lock:
            self._drain()
            self._heartbeat_if_due()
        self._last_progress = time.monotonic()

    def is_aborted(self, request_id: str) -> bool:
        return self._stopping or self._engine_lost or request_id in self._aborted

    def cancelled(self, request_id: str) -> bool:
        return request_id in self._aborted

    def stop(self) -> None:
        """Safe from a signal handler and from another thread: a wait for the engine ends at once."""
        self._stopping = True
        if self._wakeup is not None:
            self._wakeup.wake()

    # -- loop ----------------------------------------------------------------
    def serve(self) -> None:
        # made before the first look at _stopping: a stop before it is seen there, one after it wakes the wait
        self._wakeup = Wakeup()
        keeper = threading.Thread(target=self._keep_beating, name="argus-beat-keeper", daemon=True)
        keeper.start()
        heap_trim = HeapTrim()
        try:
            with self._wakeup.on_signals():
                if not self._handshake():
                    return
                self._say_ready()
                while not self._stopping:
                    self._drain()
                    self._heartbeat_if_due()
                    if self._engine_lost:
                        self._rejoin()
                    elif self._pending:
                        with heap_trim:  # once the batch is answered: what a large one freed goes back
                            self._run(self._pending.popleft())
                    elif not self._stopping:
                        timeout_ms = max(1, int((self._next_heartbeat - time.monotonic()) * 1000))
                        self._wait(timeout_ms)
                self._cancel_pending()
        finally:
            self._closing.set()
            keeper.join()
            self._close()
            self._wakeup.close()

    def _keep_beating(self) -> None:
        """The beat keeper's thread: between_steps' work for a run that shows no step for a while."""
        while not self._closing.wait(self._heartbeat_interval_s / 4):
            with self._socket_lock:
                quiet_s = time.monotonic() - self._last_progress
                if self._in_run and quiet_s < self._stall_timeout_s and time.monotonic() >= self._next_heartbeat:
                    self._drain()
                    self._heartbeat_if_due()

    def _cancel_pending(self) -> None:
        """Answers what was queued but never started."""
        self._say_leaving()
        while self._pending:
            batch = self._pending.popleft()
            self._send(BatchDone(batch.batch_id, cancel_all(batch)))

    def _close(self) -> None:
        if self.refused_handshakes is not None:
            self.refused_handshakes.close()
        # what waits to go for an engine that serves this worker (a Leaving, images answered) is given time to
        # reach it; what waits for none (hellos) is not: a worker that no engine answered waited out the linger
        self._socket.close(linger=0 if self._engine_lost else LINGER_MS)
        if self._own_context:
            self._context.term()

    def _say_leaving(self) -> None:
        """Before a stopping worker answers what it gives up: the engine then routes that work elsewhere, not
        back to a worker about to go (which would cost the images a try each)."""
        if not self._leaving_said:
            self._leaving_said = True
            self._send(Leaving())

    def _say_ready(self, again: str = "") -> None:
        log.info(
            "worker %s ready%s (%s %s, model %s)%s",
            self.identity.decode(),
            again,
            self._info.name,
            on_device(self._info.device, self._info.simulated),
            self._info.model_id,
            " SIMULATED: no model runs" if self._info.simulated else "",
        )

    def _rejoin(self) -> None:
        self._forget_engine()
        if self._handshake():
            # the last line was a warning that it says hello again, or waits for the next engine: read as the
            # worker's state, it was wrong for as long as the worker then served
            self._say_ready(" again")

    def _lose_engine(self, why: str) -> None:
        if not self._engine_lost:
            self._say_engine_lost(why)
            self._engine_lost = True

    def _say_engine_lost(self, why: str) -> None:
        log.warning("%s; saying hello again", why)

    def _forget_engine(self) -> None:
        """The engine is gone: what it sent is void (it re-dispatches), so start over."""
        self._pending.clear()
        self._aborted.clear()
        self._session += 1

    def _handshake(self) -> bool:
        """Says hello until the engine welcomes this worker (True) or it is told to stop (False): an engine that
        is not up yet must not keep a stopped worker alive."""
        hello = self._hello()
        started = time.monotonic()
        warnings = UnansweredWarnings()
        while not self._stopping:
            self._send(hello)
            if not self._wait(int(self._hello_retry_s * 1000)):
                refused = self.refused_handshakes and self.refused_handshakes.reason()
                if refused:
                    raise EngineRefused(Refused(refused))
                self._redial_if_unheard()
                waited_s = time.monotonic() - started
                if warnings.due(waited_s):
                    warn_unanswered(self._connect, waited_s, engine_stopped=self.engine_stopped, served=self.served)
                continue  # engine not up yet: say hello again
            self._last_heard = time.monotonic()
            if self._welcomed(self._codec.decode(self._socket.recv_multipart(copy=False))):
                return True
        return False

    def _wait(self, timeout_ms: int) -> bool:
        """Waits up to `timeout_ms` for a message (True) or a stop."""
        deadline = time.monotonic() + timeout_ms / 1000
        waited_on = [(self._socket, zmq.POLLIN), (self._wakeup, zmq.POLLIN)]
        while True:
            ready = [item for item, _ in zmq.zmq_poll(waited_on, timeout_ms)]  # the wake-up as its descriptor
            if self._stopping or self._socket in ready or self._wakeup.fileno() not in ready:
                return self._socket in ready
            # woken by a signal whose handler has yet to run (see Wakeup.on_signals): it runs before the next poll,
            # which a stop then ends. Left readable, a signal that is no stop ended each wait after it at once
            self._wakeup.clear()
            if self._stopping:
                # a stop's handler that ran as the wake-up was cleared (its signal landed after the look above) had
                # its wake-up cleared with it: polled again, the worker waited the whole wait out
                return False
            timeout_ms = max(0, int((deadline - time.monotonic()) * 1000))

    def _hello(self) -> Hello:
        return Hello(
            protocol=PROTOCOL_VERSION,
            worker_id=self._worker_id,
            backend=self._info.name,
            model=self._info.model_id,
            device=self._info.device,
            simulated=self._info.simulated,
            levels=list(self._info.levels),
            max_batch=self._info.max_batch,
            default_steps=self._info.default_steps,
            min_size=self._info.min_size,
            max_size=self._info.max_size,
            default_size=self._info.default_size,
            level=self._level,
            refused_steps=list(self._info.refused_steps),
            time_scale=self._info.time_scale,
            pid=os.getpid(),
            session=self._session,
        )

    def _welcomed(self, message: object) -> bool:
        """Takes the engine's answer to a hello: True once welcomed (raises EngineRefused when refused)."""
        if isinstance(message, Refused):
            raise EngineRefused(message)
        if isinstance(message, DecodeError):
            # an engine's client door (--connect given its client address) answers each hello with an Error: the
            # worker said hello again at once, for ever, some 6,600 hellos and warnings a second, each counted a
            # rejected request by the engine
            raise EngineRefused(Refused(unreadable_answer(self._connect, "a hello", message)))
        if isinstance(message, Welcome):
            if untimely := untimely_welcome(self._connect, message):
                raise EngineRefused(Refused(untimely))
            self._engine_lost = False
            self.engine_stopped = False
            self.served = True
            self._ignoring_said = False
            self._heartbeat_interval_s = message.heartbeat_interval_s
            self._engine_timeout_s = message.engine_timeout_s
            self._level = message.level
            self._last_heard = time.monotonic()
            return True
        if not isinstance(message, Rejoin) and not self._ignoring_said:
            # a Rejoin answers a beat sent before the hello, to an engine that does not know it: it is saying hello
            # already (a fleet of 200 warned of it 21 times at each restart of its engine). What else comes before
            # the welcome is said once: an engine paused past its timeout sends what it queued for a worker it
            # still counts, every message of which was a warning, and re-dispatches it all once it hears the hello
            self._ignoring_said = True
            self._say_ignoring(type(message).__name__)
        return False

    def _say_ignoring(self, kind: str) -> None:
        log.warning("ignoring %s before welcome (and, unsaid, what else comes before it)", kind)

    def _drain(self) -> None:
        while self._socket.poll(0, zmq.POLLIN):
            self._last_heard = time.monotonic()
            frames = self._socket.recv_multipart(copy=False)
            message = self._codec.decode(frames)
            if isinstance(message, DecodeError):
                self._undecodable(frames[0].buffer, message.reason)
            else:
                self._handle(message)

    def _undecodable(self, header: memoryview, reason: str) -> None:
        self._log.error("undecodable message from engine: %s", reason)
        batch = generate_ids(header)
        if batch is not None:
            batch_id, request_ids = batch
            failed = f"the batch did not decode: {reason}"
            self._send(BatchDone(batch_id, [ItemFailed(rid, "worker_error", failed) for rid in request_ids]))

    def _handle(self, message: object) -> None:
        if isinstance(message, Generate):
            self._pending.append(message)
        elif isinstance(message, Abort):
            live = self._live_request_ids()
            self._aborted.update(rid for rid in message.request_ids if rid in live)
        elif isinstance(message, SetLevel):
            # a level is a routing role, not a reload: the batch in flight finishes as it is
            self._level = message.level
            self._send(LevelSet(message.level))
        elif isinstance(message, Shutdown):
            if self._owned:
                self._stopping = True
                self._leaving_said = True  # the engine asked: nothing to tell it
            else:
                if not self._engine_lost:  # once lost (silent for its timeout), a Shutdown is not why
                    self.engine_stopped = True
                self._lose_engine("engine stopping")
        elif isinstance(message, Rejoin):
            self._lose_engine("the engine does not know this worker (it was dropped, or the engine restarted)")
        elif isinstance(message, (EngineHeartbeat, Welcome)):
            pass  # liveness only (a Welcome repeated for a hello retry)
        else:
            self._log.warning("unexpected %s from engine", type(message).__name__)

    def _live_request_ids(self) -> set[str]:
        batches = [*self._pending, *([self._running] if self._running else [])]
        return {item.request_id for batch in batches for item in batch.items}

    def _run(self, batch: Generate) -> None:
        self._running = batch
        self._last_progress = time.monotonic()
        self._in_run = True
        try:
            outcomes = self._run_unaborted(batch)
        except BatchAborted:
            outcomes = cancel_all(batch)
        except BatchRefused as exc:
            # the batch's fault, said by the engine in one line naming this worker, the requests and why: a traceback
            # here (in the engine's own log, for a worker it started) said nothing more
            self._log.debug("batch %d refused: %s", batch.batch_id, exc)
            outcomes = [ItemFailed(i.request_id, REFUSED, str(exc)) for i in batch.items]
        except Exception as exc:  # a failed batch becomes one error per member
            self._log.exception("batch %d failed", batch.batch_id)
            outcomes = [ItemFailed(i.request_id, "worker_error", f"{type(exc).__name__}: {exc}") for i in batch.items]
        finally:
            with self._socket_lock:
                self._in_run = False
            self._running = None
        if self._engine_lost:
            return  # nobody is waiting for these any more
        if self._stopping and self._gives_up(outcomes):
            self._say_leaving()
        # a Leaving goes before images given up, so the engine sends them elsewhere, not back here; images made
        # go first, as the engine drops an answer that comes after a Leaving (the Leaving follows: _cancel_pending)
        self._send(BatchDone(batch.batch_id, outcomes))
        self._aborted.difference_update(item.request_id for item in batch.items)

    def _unaborted(self, batch: Generate) -> Generate:
        """The batch without the items the engine aborted while it waited here: those are not worth a run."""
        if not any(self.cancelled(item.request_id) for item in batch.items):
            return batch
        return msgspec.structs.replace(batch, items=[i for i in batch.items if not self.cancelled(i.request_id)])

    def _run_unaborted(self, batch: Generate) -> list[ItemOutcome]:
        """Runs what is still wanted of the batch; an item aborted before its run started is answered cancelled.

        It ran with the rest: a batch of 4 with 3 aborted while it queued here took the 4-image time (sim SD-XL
        profile: 12.75 s for its one image, 5.1 s alone), and one whose every item was aborted went to the backend.
        """
        # taken once: an abort that comes in during the run is the backend's to answer
        return run_part(batch, self._unaborted(batch), lambda part: self._backend.run(part, self), ItemCancelled)

    def _gives_up(self, outcomes: list[ItemOutcome]) -> bool:
        """Whether the run gave up images that are still owed (not those the engine aborted)."""
        return any(isinstance(o, ItemCancelled) and not self.cancelled(o.request_id) for o in outcomes)

    def _heartbeat_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last_heard > self._engine_timeout_s:
            self._lose_engine(f"engine silent for {self._engine_timeout_s:.0f} s")
            self._redial_if_unheard()
        if now >= self._next_heartbeat:
            running = self._running.batch_id if self._running else -1
            self._send(Heartbeat(self._level, running))
            self._next_heartbeat = now + self._heartbeat_interval_s

    def _redial_if_unheard(self) -> None:
        """Dials the engine again when nothing came from it for its timeout since it was last dialled.

        A connection dead without a word (the engine's host gone, a NAT that forgot the flow) looks alive to TCP
        for about 15 minutes, and for ever through a proxy that holds it: ZeroMQ never dialled again, and the
        worker said hello into it, unheard by the engine that came up on the address. Dialling again also drops
        what was queued for an engine that never took it: every hello said while none was up (one a second, kept
        up to the high-water mark of 100,000) reached the next engine at once, which answered each."""
        now = time.monotonic()
        if now - max(self._last_heard, self._dialled_at) > self._engine_timeout_s:
            self._socket.disconnect(self._connect)
            dial(self._socket, self._connect)
            self._dialled_at = now

    def _send(self, message: object) -> None:
        try:
            self._socket.send_multipart(self._codec.encode(message), flags=zmq.DONTWAIT, copy=False)
        except zmq.Again:
            self._log.debug("no engine to take %s: dropped", type(message).__name__)
