"""The engine's side of the worker links: one ROUTER socket, its reader, and liveness.

Handshake: a worker's Hello (its values checked: engine/fleet/hello_check.py) is answered with Welcome
and registers it; a hello from a new process under the id of a worker heard from
within 3 heartbeat intervals, whose connection is still up, is Refused. Heartbeats and every message refresh its
last-seen time; a worker silent past the timeout is declared lost (and its
process, if ours, killed and restarted by the launcher). One whose beats bounce, at two in a row, is lost at once: its
connection closed (its process died) and was not dialled again. A Leaving removes the
worker at the end of the loop turn it is read in, with the others read in it, and what it held is routed again (its
log line waits a second, for those of the workers leaving with it). Any other message from an identity that is not a
worker here is answered Rejoin: the worker says hello at once.

With CURVE, a hello is refused unless its peer's key is admitted now, and a worker whose key a reload (SIGHUP)
removed is dropped and told to rejoin, which it is refused: ZeroMQ checks a key only at the handshake, and a
revoked worker still connected was kept and sent users' prompts until it dropped its connection.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable

import msgspec
import zmq

from engine.dispatch.dispatcher import Dispatcher
from engine.fleet.handshake_lines import HandshakeLines
from engine.fleet.hello_check import hello_refusal, identity_refusal, name_refusal, protocol_refusal
from engine.fleet.registry import WorkerHandle, WorkerRegistry
from engine.logs.gathered_lines import GatheredLines
from engine.logs.join_lines import JOINS_GATHERED_S, say_joins
from engine.logs.quiet_lines import QuietLines
from engine.metrics import EngineMetrics
from engine.zmq.curve_gate import WORKERS
from engine.zmq.loop_socket import LoopSocket
from protocols import client_messages
from protocols.codec import Codec, DecodeError
from protocols.curve import KeyPair, peer_key
from protocols.shortened import cut_middle, printable
from protocols.sockets import SocketFiles, bind_all, make_socket
from protocols.worker_messages import (
    PROTOCOL_VERSION,
    BatchDone,
    Cleared,
    EngineHeartbeat,
    Generate,
    Heartbeat,
    Hello,
    HelloVersion,
    ItemFailed,
    Leaving,
    LevelSet,
    Probe,
    Refused,
    Rejoin,
    Shutdown,
    Welcome,
    batch_done_id,
    engine_side_codec,
)

log = logging.getLogger("argus.workers")
# ticks per heartbeat interval: each sends to its share of the workers
_BEAT_TICKS = 20
# a worker heard from within this many heartbeat intervals is alive: a hello from another process with its
# worker id is a second worker misnamed, not its replacement (a restarted process takes longer than this)
_ALIVE_INTERVALS = 3
# a refusal is logged once for its reason this often, counting those left out: a fleet of a thousand workers of
# another backend (one hello but for their ids) logged a thousand lines at each start, as did a thousand workers
# started with one mistake
REFUSED_LOG_INTERVAL_S = 10.0
_ID_REFUSED = "worker id refused"  # the refusals of ids in use (or a local slot's), each naming its own: one key
# a peer's identity in a log line: a worker's is its id, "/" and 8 hex digits, the end kept
_PEER_NAME_CHARS = 80
_PEER_NAME_TAIL = 20

WorkerEvent = Callable[[WorkerHandle], None]


class WorkerLink:
    def __init__(
        self,
        context: zmq.Context,
        listen: list[str],
        registry: WorkerRegistry,
        metrics: EngineMetrics,
        heartbeat_interval_s: float,
        heartbeat_timeout_s: float,
        curve: KeyPair | None = None,
        *,
        backend: str,
        model: str = "",
        time_scale: float = 1.0,
        admits: Callable[[bytes], bool] | None = None,
    ):
        """`admits` (with `curve`): whether a peer's public key is admitted on this socket now (CurveGate.admits)."""
        # a connection dead without a word (a worker's host gone, a NAT that forgot the flow) is dropped once no
        # whole frame came in for the heartbeat timeout after a ping. Kept (TCP gives up after about 15 minutes when
        # written to, never through a proxy that holds it), it held the worker's identity: the worker, dialling
        # again, was not heard, its new connection taken for a second peer under a live worker's name
        pings = (round(heartbeat_interval_s * 1000), round(heartbeat_timeout_s * 1000))
        sock = make_socket(
            context, zmq.ROUTER, curve_server=curve, zap_domain=WORKERS if curve else "", heartbeat_ms=pings
        )
        self._admits = admits
        self.endpoints = bind_all(sock, listen)
        # the handshakes that fail, said: a worker with a wrong engine key was never heard, and nothing said why
        self._handshakes = HandshakeLines(sock, WORKERS) if curve is not None else None
        self._files = SocketFiles(listen)
        self._socket = LoopSocket(sock, self._on_frames, peer_name)
        self._codec = engine_side_codec()
        self._version_codec = Codec(HelloVersion)
        # reads a client program's request, sent here by mistake, and answers it in the client protocol
        self._client_codec = client_messages.engine_side_codec()
        self._backend = backend  # the one every worker must run
        # and the one model: named at start when the engine can read it, else by the first worker welcomed
        self._model = model or None
        self._model_named_by = "argus serve --backend/--model/--model-id"
        # the sim's --time-scale the controller's latency profile is scaled by
        self._time_scale = time_scale
        # set by the engine: the largest batch its controller plans each worker's capacity at (--max-batch, else the
        # backend's)
        self.planned_max_batch: int | None = None
        # what workers' hellos were warned of (their time scale, a smaller batch), each once: see _warn_once
        self._warned: set[tuple[str, object]] = set()
        self._registry = registry
        self._metrics = metrics
        self._heartbeat_interval_s = heartbeat_interval_s
        self._heartbeat_timeout_s = heartbeat_timeout_s
        self._stopping = False  # Shutdown sent: see _on_hello
        # the workers whose Leaving was read this loop turn, lost together at its end (see _leaving_now)
        self._leaving: dict[WorkerHandle, None] = {}
        self._refusal_lines = QuietLines(REFUSED_LOG_INTERVAL_S)  # one a reason
        self.dispatcher: Dispatcher | None = None
        # the workers welcomed: a hello opens a window in which those that join are said in one line
        self._joins: GatheredLines[WorkerHandle] = GatheredLines(JOINS_GATHERED_S, say_joins)
        self._gone_said_at: int | None = None  # the beat turn a window of workers found gone ends: see _lose_gone
        self.on_silent: WorkerEvent = lambda handle: None  # set by the engine: kill what hangs
        # set by the engine: a worker was welcomed (a slot of its own started, a remote worker no longer on its way)
        self.on_joined: WorkerEvent = lambda handle: None
        # set by the engine: a worker of this id, cleared by its Probe, loads its model (a worker on its way)
        self.on_cleared: Callable[[str], None] = lambda worker_id: None
        # set by the engine: why a worker of this id and pid is not the process now in a slot of its launcher's (a
        # local worker's, a Ray actor's), or None
        self.refusal: Callable[[str, int], str | None] = lambda worker_id, pid: None
        self.on_model: Callable[[str], None] = lambda model: None  # set by the engine: the first worker named it

    def bind_dispatcher(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        dispatcher.loss_lines.joins_first = self._joins.say

    def send(self, worker: WorkerHandle, message: object) -> bool:
        """True once handed to the worker's connection."""
        if isinstance(message, Generate):
            worker.idle_since = None
        sent = not self._socket.send(worker.identity, self._codec.encode(message))
        if not sent and isinstance(message, Generate):
            # the dispatcher loses it as unreachable; one of ours is hung (_lose_gone_one), and the batch came before
            # its silence counted or its beats bounced (an engine held past its ping timeout sends what waited at once)
            self.on_silent(worker)
        return sent

    def shutdown_all(self) -> None:
        """Tells every worker this engine is stopping; from now on hellos go unanswered (see _on_hello)."""
        self._stopping = True
        for worker in self._registry.registered():
            self.send(worker, Shutdown())

    def drop_revoked(self) -> None:
        """Drops the workers whose CURVE key is no longer admitted (after a reload), and routes what they held
        elsewhere; each is told to rejoin, and its hello is refused: it says why and exits. A fleet's workers share
        their key: they are said lost in one line."""
        revoked = [w for w in self._registry.registered() if w.curve_key is not None and not self._admits(w.curve_key)]
        self._lose_together(revoked, self._revoke)

    def _revoke(self, worker: WorkerHandle) -> None:
        self.dispatcher.worker_lost(worker, "revoked")
        self._socket.send(worker.identity, self._codec.encode(Rejoin()))

    def close(self) -> None:
        self._joins.say()
        if self.dispatcher is not None:
            if self._stopping:
                # told Shutdown, a worker is found gone at its beat, up to two heartbeats on, and the engine closes as
                # soon as its own workers have exited: its last lines said all, some or none of them left, as the race
                # went. Those not found yet leave now, in the line of those that were
                for worker in self._registry.registered():
                    self._left(worker)
            self.dispatcher.loss_lines.leaves.say()
        if self._gone_said_at is not None:
            self._say_gone()
        if self._handshakes is not None:
            self._handshakes.close()
        self._files.remove()
        self._socket.close()

    async def run(self) -> None:
        self._socket.start()
        if self._handshakes is not None:
            self._handshakes.start()
        await self._watch_heartbeats()

    def _on_frames(self, identity: bytes, frames: list) -> None:
        message = self._codec.decode(frames)
        if isinstance(message, DecodeError):
            message = self._failed_answer(identity, frames[0].buffer, message.reason) or message
        if isinstance(message, DecodeError):
            self._answer_stranger(identity, frames, message.reason)
        curve_key = peer_key(frames[0]) if self._admits and isinstance(message, Hello) else None
        # a message this engine cannot read is counted, even one answered
        self._on_message(identity, message, curve_key)

    def _failed_answer(self, identity: bytes, header: memoryview, reason: str) -> BatchDone | None:
        """A worker's answer to a batch it holds whose header reads but whose frames do not (a latent of a dtype the
        wire refuses, a frame of the wrong size): each image of the batch failed, saying why (counted, as garbage
        is). Dropped, the images waited out the heartbeat timeout, were said lost on the link and sent again, to the
        worker that answered so again; the cause was said only at DEBUG."""
        worker = self._registry.get(identity)
        batch_id = batch_done_id(header) if worker is not None else None
        jobs = worker.inflight.get(batch_id) if batch_id is not None else None
        if not jobs:
            return None
        self._metrics.bad_messages.labels("worker").inc()
        failed = f"the worker's answer did not decode: {reason}"
        return BatchDone(batch_id, [ItemFailed(job.job_id, "undecodable", failed) for job in jobs])

    def _answer_stranger(self, identity: bytes, frames: list, reason: str) -> None:
        """Answers what a peer of another kind sends in words it reads: a worker of another version is Refused, both
        versions named, and one of this version whose hello does not decode (`reason`), why; a client program
        pointed at this address (the engine's worker one, not --client-listen) is answered an Error under its
        request's id. Unanswered, its call waited for ever, or for its timeout, and the worker said hello for ever,
        warned that the engine was down."""
        other = self._version_codec.decode(frames)
        if isinstance(other, HelloVersion):
            if not self._stopping:
                refused = protocol_refusal(other.protocol) or f"hello did not decode: {reason}"
                self._refuse(identity, Refused(refused))
            return
        request = self._client_codec.decode(frames)
        if isinstance(request, client_messages.Generate):
            reason = (
                "this is the engine's worker address (argus serve --worker-listen, port 5556 by default): send"
                " requests to its client address (--client-listen, port 5555 by default)"
            )
            error = client_messages.Error(request.request_id, "invalid_request", reason)
            self._socket.send(identity, self._client_codec.encode(error))

    def _on_message(self, identity: bytes, message: object, curve_key: bytes | None = None) -> None:
        """`curve_key`: with CURVE, the public key a Hello came with."""
        worker = self._registry.get(identity)
        if worker in self._leaving:
            return  # what it says after its Leaving is dropped, as once it is lost (it gives back what it held)
        if isinstance(message, Hello):
            self._on_hello(identity, message, worker, curve_key)
            return
        if isinstance(message, Probe):
            self._on_probe(identity, message)
            return
        if isinstance(message, DecodeError):
            # garbage is counted and dropped, never fatal
            self._metrics.bad_messages.labels("worker").inc()
            log.debug("dropped %s from %s", printable(message.reason), peer_name(identity))
            return
        if worker is None:
            log.debug("dropped %s from %s, not a worker here", type(message).__name__, peer_name(identity))
            if not (self._stopping or isinstance(message, Leaving)):
                # one this engine dropped as silent (a stall, a network cut), or one the engine before it on this
                # address welcomed: without a word it would serve no one until our silence timed out (10 s)
                self._socket.send(identity, self._codec.encode(Rejoin()))
            return
        worker.last_seen = time.monotonic()
        if isinstance(message, BatchDone):
            self.dispatcher.batch_done(worker, message)
        elif isinstance(message, Heartbeat):
            for batch_id in self._lost_batches(worker, message.running_batch):
                log.warning("batch %d to %s was lost on the link: sending its images again", batch_id, worker.name)
                self.dispatcher.batch_done(worker, BatchDone(batch_id, []))  # each image it leaves out is still owed
        elif isinstance(message, Leaving):
            self._leaving_now(worker)
        elif not isinstance(message, LevelSet):
            self._metrics.bad_messages.labels("worker").inc()
        # LevelSet only acknowledges: the engine routes by a level from the moment it sends SetLevel, and taking
        # the echo as news would move the worker back when a later SetLevel crossed it on the wire

    def _lost_batches(self, worker: WorkerHandle, running_batch: int) -> list[int]:
        """The batches sent to the worker that its heartbeat shows it will never answer. A link cut loses what is on
        the wire (a Generate on its way, a BatchDone on its way back) and the worker, dialling again at once, beats
        on: nothing else would ever answer them. It runs its batches in the order sent and answers each before the
        next, so those sent before the one it runs are lost; and idle at every beat for over a heartbeat timeout
        since the last one was sent (none takes that long to arrive, and one it had but had not started at a beat,
        it runs by the next), it holds none."""
        if running_batch >= 0:
            worker.idle_since = None
            return [batch_id for batch_id in worker.inflight if batch_id < running_batch]
        now = time.monotonic()
        if worker.idle_since is None:
            worker.idle_since = now
        return list(worker.inflight) if now - worker.idle_since > self._heartbeat_timeout_s else []

    def _on_hello(self, identity: bytes, hello: Hello, known: WorkerHandle | None, curve_key: bytes | None) -> None:
        if self._stopping:
            # a worker started by hand says hello again at the Shutdown: welcomed by the engine going away, it would
            # wait out a heartbeat timeout before trying the next engine on this address. Unanswered, it retries
            # every second; Refused would end it
            return
        if self._admits and not self._admits(curve_key):
            if known is not None:
                self.dispatcher.worker_lost(known, "revoked")
            reason = "this worker's CURVE key is no longer admitted (removed from the engine's allowed keys)"
            self._refuse(identity, Refused(reason))
            return
        if known is not None and not _repeats(known.hello, hello):
            # the same peer now says it is another worker (its id, sizes, batch): what it held was sent for the
            # worker it was, and the limits and ids derived from that hello would go stale; it joins anew, checked
            self.dispatcher.worker_lost(known, "rejoined")
            known = None
        checked = hello_refusal(hello, self._backend, self._model, self._model_named_by) or name_refusal(identity)
        if refused := self._refusal(checked, hello.worker_id, hello.pid, taken_by_itself=known is not None):
            self._refuse(identity, refused)
            return
        if known is not None and (hello.session == known.hello.session or not (known.inflight or known.queue)):
            # a repeated hello (our Welcome crossed its retry, or its retries queued while we were down), or one
            # that dropped nothing: answer again, register once
            known.hello = hello
            self.send(known, self._welcome(known.level))
            return
        if known is not None:
            # it lost us and dropped what it held (workers/runtime.py, _rejoin): route that again
            self.dispatcher.worker_lost(known, "rejoined")
        for stale in self._registry.by_worker_id(hello.worker_id):
            # the same slot says hello from a new process, and the old one is silent: it is gone
            self.dispatcher.worker_lost(stale, "replaced")
        worker = self._registry.add(identity, hello, level=hello.level)
        worker.curve_key = curve_key
        if not self.send(worker, self._welcome(worker.level)):
            self._registry.remove(worker)
            return
        if self._model is None:
            # pinned for this engine's life, even once every worker has gone: the cache holds this model's latents
            self._model, self._model_named_by = hello.model, f"named by {worker.name}, the first worker it welcomed"
            log.info("serving model %s, %s", hello.model, self._model_named_by)
            self.on_model(hello.model)
        self._joins.gather()
        self._joins.add(worker)
        self._warn_of_another_time_scale(worker)
        self._warn_of_smaller_batches(worker)
        self.on_joined(worker)
        self.dispatcher.worker_ready(worker)

    def _on_probe(self, identity: bytes, probe: Probe) -> None:
        """Answers as a hello of these values would be now, and registers nothing. Not while stopping: the worker
        loads its model meanwhile (as it does when no engine answers), and says hello to the next engine."""
        if self._stopping:
            return
        checked = identity_refusal(probe, self._backend, self._model, self._model_named_by)
        if refused := self._refusal(checked, probe.worker_id, probe.pid):
            # named by the id it asks for: it asks on a connection of its own, whose identity libzmq made up (five
            # random bytes: the log named no worker an operator could find)
            asking = f"{peer_name(probe.worker_id.encode())} (pid {probe.pid}, asking before it loads its model)"
            self._refuse(identity, refused, asking)
        else:
            self._socket.send(identity, self._codec.encode(Cleared()))
            self.on_cleared(probe.worker_id)

    def _refusal(self, checked: str | None, worker_id: str, pid: int, taken_by_itself: bool = False) -> Refused | None:
        """Why a worker may not join: `checked`, why its values are refused (engine/fleet/hello_check.py), else its id.
        `taken_by_itself`: the id's holder is the same peer, saying hello again."""
        if checked:
            return Refused(checked)
        if reason := self.refusal(worker_id, pid):
            # its id alone is refused (a local slot's, a Ray actor's): a fleet whose ids run into a slot's stopped
            # every worker, those under ids of their own too
            return Refused(reason, id_in_use=True)
        return None if taken_by_itself else self._id_in_use(worker_id)

    def _warn_of_another_time_scale(self, worker: WorkerHandle) -> None:
        """Warned, not refused: its images are right (unlike another model's), only the controller's plan is off by
        the ratio; and workers of different speeds in one engine can be what a simulation is after."""
        scale = worker.hello.time_scale
        if self._backend == "sim" and scale != self._time_scale:
            self._warn_once(
                ("time scale", scale),
                "worker %s runs the sim at --time-scale %g but this engine's controller plans with --time-scale %g: its"
                " latency predictions for such workers are wrong; give argus worker and argus serve the same"
                " --time-scale",
                worker.name,
                scale,
                self._time_scale,
            )

    def _warn_of_smaller_batches(self, worker: WorkerHandle) -> None:
        """Warned, as another time scale is: the controller counts a worker's capacity at the largest batch it plans
        for that fits the SLO, and a worker that runs only smaller ones makes fewer images a second than the plan
        counts on (a worker started by hand with --max-batch 2 beside the engine's default 8, or 4 for sdxl)."""
        largest = worker.hello.max_batch
        planned = self.planned_max_batch
        if planned is not None and largest < planned:
            self._warn_once(
                ("batch size", largest),
                "worker %s runs batches of at most %d but this engine's controller plans for batches of up to %d: it"
                " may count on more images a second from such workers than they make; give argus serve --max-batch %d",
                worker.name,
                largest,
                planned,
                largest,
            )

    def _warn_once(self, per: tuple[str, object], message: str, *args: object) -> None:
        """Warns the first time `per` (what is warned of, and its value in a hello) comes, never again: a fleet of a
        thousand workers sends a thousand hellos."""
        if per not in self._warned:
            self._warned.add(per)
            log.warning(f"{message} (said once per {per[0]})", *args)

    def _refuse(self, identity: bytes, refused: Refused, name: str = "") -> None:
        """`name`: the worker's, if not its identity's. Refusals of an id are said once for all ids: each names its
        own, and a fleet started with another's --worker-id made a line for each of its workers."""
        key, for_what = (_ID_REFUSED, "their ids") if refused.id_in_use else (refused.reason, "this")
        left_out = self._refusal_lines.due(key)
        if left_out is not None:
            more = f" ({left_out} more refused for {for_what} since its last line)" if left_out else ""
            log.error("refusing worker %s: %s%s", name or peer_name(identity), refused.reason, more)
        self._socket.send(identity, self._codec.encode(refused))

    def _id_in_use(self, worker_id: str) -> Refused | None:
        """Why a new process may not take `worker_id`: a live worker has it. Replacing it would make the two
        evict each other at every hello, each time re-routing what the other held."""
        alive_since = time.monotonic() - _ALIVE_INTERVALS * self._heartbeat_interval_s
        for holder in self._registry.by_worker_id(worker_id):
            # a beat to it is refused (EHOSTUNREACH) once its connection has closed: a process that crashed and
            # was started again at once (systemd, a container's restart policy) is its own replacement
            if holder.last_seen >= alive_since and self.send(holder, EngineHeartbeat()):
                # the default id (host-pid) is taken twice by containers that are each PID 1 on one host name
                reason = (
                    f"worker id {worker_id!r} is in use by the live worker {holder.name}: give each worker its own"
                    " --worker-id"
                )
                return Refused(reason, id_in_use=True)
        return None

    def _welcome(self, level: int) -> Welcome:
        return Welcome(PROTOCOL_VERSION, self._heartbeat_interval_s, self._heartbeat_timeout_s, level)

    async def _watch_heartbeats(self) -> None:
        beat = self._codec.encode(EngineHeartbeat())
        ticked = time.monotonic()
        # (when it resumed, for how long) of each time this loop was held past an interval, over the last timeout
        holds: deque[tuple[float, float]] = deque()
        for turn in itertools.count(1):
            # a slice of the workers each tick: beats spread over the interval, never a burst of thousands. A
            # worker's tick follows its identity, not its place in the registry: by place, a worker that left moved
            # the later ones back one, and the one whose tick came next waited almost two intervals for its beat
            await asyncio.sleep(self._heartbeat_interval_s / _BEAT_TICKS)
            now = time.monotonic()
            if now - ticked > self._heartbeat_interval_s:
                # this loop did not run for an interval (the engine stopped: SIGSTOP, Ctrl-Z, a paused VM; or held):
                # what its workers sent meanwhile waits unread, so that time is not counted as their silence.
                # Counted, a check that came before the beats were read, after a pause past the timeout, lost every
                # worker as silent ("silent for over 2 s", an ERROR each) and counted each image they held a try.
                # Only the time held is forgiven: putting off every check a timeout from each hold, a loop held
                # once per timeout never lost a hung worker
                holds.append((now, now - ticked))
            ticked = now
            tick = turn % _BEAT_TICKS
            gone = [
                worker
                for worker in self._registry.registered()
                if hash(worker.identity) % _BEAT_TICKS == tick and self._beat(worker, beat)
            ]
            self._lose_gone(gone, turn)
            if turn % _BEAT_TICKS:
                continue
            while holds and holds[0][0] < now - self._heartbeat_timeout_s:
                holds.popleft()
            cutoff = now - self._heartbeat_timeout_s - sum(held for _, held in holds)
            self._lose_silent(self._registry.silent_since(cutoff))

    def _beat(self, worker: WorkerHandle, beat: list) -> bool:
        """Beats the worker. True: it is gone, its beat bounced (EHOSTUNREACH: it has no connection) as its last one
        did, an interval before. A process that died (SIGKILL, a crash; a remote one, which no launcher of ours sees
        end) closed its connection at once, and its images waited out the heartbeat timeout (10 s), unless a batch
        sent to it bounced first. A link cut that the worker dials again after (ZeroMQ redials in 100 ms) bounces one
        beat at most; a host gone without closing its connection bounces none, and is found silent."""
        bounced = self._socket.send(worker.identity, beat) == zmq.EHOSTUNREACH
        gone, worker.beat_bounced = bounced and worker.beat_bounced, bounced
        return gone

    def _lose_gone(self, gone: list[WorkerHandle], turn: int) -> None:
        """Loses the workers found gone at beat turn `turn`, together. Those found in a round of beats from the first
        are said in one line, at its end: a fleet's process killed, each of its workers is found at its own tick, and
        a line for each tick made up to 20 (what they held is routed again at once: only the line waits)."""
        if turn == self._gone_said_at:
            self._say_gone()
        if not gone:
            return
        if self._gone_said_at is None:
            self.dispatcher.loss_lines.hold()
            self._gone_said_at = turn + _BEAT_TICKS
        self._lose_together(gone, self._lose_gone_one)

    def _leaving_now(self, worker: WorkerHandle) -> None:
        """The worker said Leaving: routed nothing from now, it is lost at the end of this loop turn, with the others
        whose Leaving is read in it. Lost at once, what it held went to the next worker of its fleet about to leave
        (a fleet stopped says each worker's Leaving in turn, within a millisecond), sent there for nothing, and from
        that one to the next."""
        if not self._leaving:
            asyncio.get_running_loop().call_soon(self._lose_leaving)
        self._leaving[worker] = None
        self.dispatcher.withhold([worker])

    def _lose_leaving(self) -> None:
        leaving, self._leaving = self._leaving, {}
        self._lose_together([worker for worker in leaving if worker.registered], self._left)

    def _left(self, worker: WorkerHandle) -> None:
        """The worker left as asked: the workers that leave within a second of it are said in one line
        (engine/logs/loss_lines.py), a fleet or a Deployment stopped having made a line for each worker."""
        self.dispatcher.loss_lines.leaves.gather()
        self.dispatcher.worker_lost(worker, "left")

    def _lose_gone_one(self, worker: WorkerHandle) -> None:
        if self._stopping:
            # told to stop (Shutdown), one of ours stops without a Leaving: its closed connection is its word. Lost as
            # unreachable, a clean stop that went on a while (a large cache's save) warned of a loss and counted one
            self._left(worker)
            return
        self._lose_one(worker, "unreachable")
        # a process of ours found so lives on hung (SIGSTOP, a paused container): libzmq drops a connection whose pings
        # go unanswered for the heartbeat timeout, by its own clock, and the engine's loop held (a paused VM) forgives
        # that time as silence, so the bounced beats found it first. Not killed, it was never started again. One that
        # ended was lost by its launcher first: there is nothing to kill
        self.on_silent(worker)

    def _say_gone(self) -> None:
        self._gone_said_at = None
        self.dispatcher.loss_lines.release()

    def _lose_silent(self, silent: list[WorkerHandle]) -> None:
        """Workers silent together (a fleet's process killed or stopped, its host cut off) are said in the one line
        of their loss, an ERROR; one alone in a line of its own before it."""
        if len(silent) == 1:
            log.error("worker %s silent for over %g s (--heartbeat-timeout)", silent[0].name, self._heartbeat_timeout_s)
        self._lose_together(silent, self._lose_silent_one)

    def _lose_silent_one(self, worker: WorkerHandle) -> None:
        self._lose_one(worker, "heartbeat")
        self.on_silent(worker)

    def _lose_one(self, worker: WorkerHandle, cause: str) -> None:
        try:
            self.dispatcher.worker_lost(worker, cause)
        except Exception:  # the other workers lost with it, and the next watches, must still be handled
            log.exception("handling the loss of worker %s failed", worker.name)

    def _lose_together(self, workers: list[WorkerHandle], lose: WorkerEvent) -> None:
        """Loses each of `workers` by `lose`, said in one line (engine/logs/loss_lines.py). None of them is routed the
        others' images: lost in turn, each one's went to the next, whose loss counted a try, and an image failed after
        three (worker_lost) while other workers were free."""
        self.dispatcher.withhold(workers)
        with self.dispatcher.loss_lines.together():
            for worker in workers:
                lose(worker)


def _repeats(first: Hello, again: Hello) -> bool:
    """`again` says what `first` said, but for what changes while a worker runs: its level, and its session (a
    new one drops its work: see _on_hello)."""
    return msgspec.structs.replace(again, level=first.level, session=first.session) == first


def peer_name(identity: bytes) -> str:
    """A peer's ZeroMQ identity as text for a log line, as worker names are written: it was "refusing worker
    b'vm-7688/cab35da6'". Any peer that reaches the worker address sets its own, up to 255 bytes: bytes that are not
    UTF-8 are replaced, a character that is not printable is escaped (a newline would forge a log line), and past 80
    characters the middle is cut out."""
    return cut_middle(printable(identity.decode(errors="replace")), _PEER_NAME_CHARS, _PEER_NAME_TAIL)
