"""The engine: one event loop, its actors under one TaskGroup, and the shutdown state machine.

RUNNING admits requests. A signal flips the state to DRAINING (the handler does
nothing else): /ready turns false, new requests are refused, in-flight ones get
up to `shutdown_timeout_s` to finish (a second signal ends the wait), the rest are cancelled with a reply, then
every worker is told the engine is stopping (those it launched exit, ones started
by hand wait for the next engine), and the sockets close before the context.

The Engine builds, runs and drains; beside it: its periodic tasks (housekeeping.py), what /ready says
(engine/http/readiness.py) and the checks on the addresses it listens on (engine/system/listen_checks.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import functools
import logging
import signal
import time

import zmq
from aiohttp import web

from engine.cache.embedder_loading import EmbedderLoading
from engine.cache.embedders import Embedder
from engine.cache.preparation import Preparation
from engine.cache.service import CacheService, Returned, build_cache_service
from engine.commands.arg_types import UsageError
from engine.config import EngineConfig
from engine.control.loop import ControlLoop
from engine.control.milp_process import MilpProcess
from engine.control.setup import build_control
from engine.dispatch.admission import Admission
from engine.dispatch.dispatcher import Dispatcher
from engine.dispatch.jobs import AdmittedRequest, Job
from engine.fleet.launcher import LocalLauncher
from engine.fleet.link import WorkerLink
from engine.fleet.ray.launcher import RayLauncher, tcp_endpoint
from engine.fleet.registry import WorkerHandle, WorkerRegistry
from engine.fleet.slot_supervision import Launcher
from engine.fleet.worker_outlook import WorkerOutlook
from engine.housekeeping import checkpoint_forever, reload_keys_on_hangup, sweep_forever
from engine.http.api import SERVER_LOG, build_app
from engine.http.connection_limit import ConnectionLimit
from engine.http.half_close import half_close_aware
from engine.http.head_limit import head_limit
from engine.http.image_files import ImageFiles
from engine.http.listener import listen, on_loopback
from engine.http.parse_errors import json_parse_errors
from engine.http.send_timeout import send_timeout
from engine.logs.plurals import counted
from engine.metrics import EngineMetrics
from engine.system.listen_checks import (
    bind_errors_named,
    http_address,
    refuse_long_ipc_path,
    warn_if_http_open,
    warn_if_open,
)
from engine.system.open_files import http_connection_bound
from engine.system.stop_signals import HELD_SIGNALS, STOP_SIGNALS, UNUSED_SIGNALS, HeldStopSignals, say_unused
from engine.system.temp_folders import make_temp_folder, remove_dead_engines_folders
from engine.version import argus_version
from engine.zmq.curve_gate import CLIENTS, WORKERS, CurveGate
from engine.zmq.door import ClientDoor
from engine.zmq.zap_handler import ZapHandler
from protocols.client_messages import Busy, Cancelled, Error, Generate
from protocols.curve import create_key_files
from protocols.limits import MAX_HEAD_LINE_BYTES, MAX_HEADERS
from protocols.worker_messages import ItemDone, SetLevel
from workers.limits import INPUT_REFUSALS
from workers.model_id import model_latent_shape

log = logging.getLogger("argus.engine")
# a line for each request answered otherwise than with its images, or refused at admission, naming its id, at DEBUG:
# under overload there is one for most requests (the WARNING lines about workers and batches name their requests too)
request_log = logging.getLogger("argus.requests")

# after the drain, HTTP responses still being written (large images to a slow reader) get this long, as the ZeroMQ
# door's do; a client still sending a request body then (refused, the engine drains) held the exit for aiohttp's
# default of 60 s
_HTTP_FLUSH_S = 10.0


class EngineState(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


class Engine:
    def __init__(self, config: EngineConfig):
        # what is opened below, closed in reverse order when the engine stops, or at once if it cannot start
        # (a port in use): sockets, the CURVE gate's thread, the context, the temporary folders
        self._resources = contextlib.ExitStack()
        try:
            self._build(config)
        except BaseException:
            self._resources.close()
            raise

    def close(self) -> None:
        """Closes what the constructor opened, for an engine that will not run (run() closes it when it ends)."""
        self._resources.close()

    def _build(self, config: EngineConfig) -> None:
        remove_dead_engines_folders()
        self.config = config
        self.state = EngineState.RUNNING
        self.metrics = EngineMetrics()
        self.registry = WorkerRegistry(self.metrics)
        self.image_files = ImageFiles(config.image_url_store_bytes, config.image_url_ttl_s)
        self.metrics.image_urls.store = self.image_files
        self._context = zmq.Context()
        # destroy, not term: it also closes a socket whose bind failed, which term would wait on for ever
        self._resources.callback(self._context.destroy)
        self._curve = None
        if config.curve_secret_file:
            self._curve = CurveGate(
                self._context, config.curve_secret_file, config.curve_allowed_dir, config.curve_workers_dir
            )
        self._run_keys_dir = None
        if self._curve is None and config.launcher == "ray":
            # a key pair made for this run, on the worker socket alone; the gate admits the actors' (its
            # local_worker_keys)
            self._run_keys_dir = make_temp_folder("argus-keys-", self._resources)
            try:
                _, secret = create_key_files(self._run_keys_dir, "engine")
            except ValueError as error:  # a libzmq without CURVE
                raise UsageError(f"--launcher ray (its actors dial in over CURVE): {error}") from None
            self._curve = CurveGate(self._context, str(secret), None, self._run_keys_dir)
        # the context's one ZAP handler: the CURVE gate's, else one for the client door's bound alone
        self._zap = self._curve.zap if self._curve else ZapHandler(self._context)
        self._zap.count_client_refused = self.metrics.zmq_client_connections_refused.inc
        self._zap.start()  # before the doors bind: it answers their handshakes
        self._resources.callback(self._zap.stop)
        # CURVE on the worker socket with any gate; on the client socket only with --curve-allow's keys
        server_keys = self._curve.server_keys if self._curve else None
        client_keys = server_keys if self._curve and self._curve.guards_clients else None
        # the HTTP door's keys; those of --api-keys's file reread on SIGHUP
        self.api_keys = config.api_keys
        # local workers connect over a private IPC socket; remote ones over worker_listen
        self._ipc_dir = make_temp_folder("argus-", self._resources)
        local = f"ipc://{self._ipc_dir}/workers"
        refuse_long_ipc_path(local, self._ipc_dir)
        with bind_errors_named("--worker-listen"):
            self.link = WorkerLink(
                self._context,
                [local, *config.worker_listen],
                self.registry,
                self.metrics,
                config.heartbeat_interval_s,
                config.heartbeat_timeout_s,
                server_keys,
                backend=config.launch.backend,
                model=config.model_id,
                time_scale=config.launch.time_scale,
                admits=functools.partial(self._curve.admits, WORKERS) if self._curve else None,
            )
        self._resources.callback(self.link.close)
        # closed after the controller's thread stops (below), which waits for a solve still running
        milp = MilpProcess(log_level=config.launch.log_level, log_format=config.launch.log_format)
        self._resources.callback(milp.close)
        self.control = build_control(config, time.monotonic(), milp.allocate)
        self.link.planned_max_batch = self.control.planned.max_batch
        self.dispatcher = Dispatcher(
            self.registry,
            self.link.send,
            self.metrics,
            config.dispatch,
            profile=self.control.profile,
            on_image=self._image_made,
            escalate=self.control.policy.escalates,
            slo_s=self.control.slo_s,
            quality=self.control.quality,
            latent_levels=config.cache.levels if config.cache.enabled else (),
        )
        self.link.bind_dispatcher(self.dispatcher)
        self.control_loop = ControlLoop(
            self.control.policy,
            self.control.controller,
            self.registry,
            self._move_worker,
            self.metrics,
            time.monotonic,
            config.policy.window_s,
            self._controller_thread(),
            self.dispatcher.pace,
        )
        # a neural prompt embedder loads for seconds: on a thread of its own (started last, below), and the cache is
        # built in run() once it has loaded, a stop not waiting for it; the hash embedder is made at once
        neural = config.cache.enabled and config.cache.embedder != "hash"
        if not neural:
            self._adopt_cache(self._new_cache(None))
        self.admission = Admission(self.registry, config.launch.backend, config.dispatch.max_queue)
        admits = functools.partial(self._curve.admits, CLIENTS) if client_keys else None
        with bind_errors_named("--client-listen"):
            self.clients = ClientDoor(self, self._context, config.client_listen, client_keys, admits)
        self._resources.callback(self.clients.close)
        self._zap.client_slots = self.clients.slots
        # once both doors are bound: an address ZeroMQ cannot listen on is an error, not an open door to warn of
        keyed = self.api_keys is not None
        # the flags that would secure each: with --curve-secret given, the client socket lacks only --curve-allow
        clients_flags = "--curve-allow" if config.curve_secret_file else "--curve-secret and --curve-allow"
        warn_if_open(self.clients.endpoints, client_keys, "send requests", keyed, clients_flags)
        workers_flags = "--curve-secret and --curve-allow-workers (or --curve-allow, for clients too)"
        warn_if_open(
            self.link.endpoints, server_keys, "join as a worker and be sent users' prompts", keyed, workers_flags
        )
        self.launcher = self._launcher()
        self.link.on_silent = lambda worker: self.launcher.kill(worker.hello.worker_id)
        self.dispatcher.restart = lambda worker: self.launcher.kill(worker.hello.worker_id)
        # whether a worker is on its way, for how long a request that finds none waits for one
        self.outlook = WorkerOutlook(
            self.registry,
            self.launcher,
            config.launch.count,
            config.launch.startup_timeout_s,
            config.dispatch.no_worker_timeout_s,
            config.launch.given_up_retry_s,
        )
        self.dispatcher.worker_wait = self.outlook.wait
        self.link.on_cleared = lambda worker_id: self.outlook.probed(worker_id, time.monotonic())
        self.link.on_joined = self._joined
        # a slot's id is its own process's (or Ray actor's): the launcher's exits, kills and backoff go by it
        self.link.refusal = self.launcher.refusal
        self._stop_requested = asyncio.Event()
        # a second stop signal during the drain: the work left is cancelled at once rather than waited for (Ctrl-C
        # pressed again in a terminal was ignored, and the engine waited out --shutdown-timeout all the same)
        self._stop_now = asyncio.Event()
        self._hangup = asyncio.Event()  # SIGHUP: read the CURVE key directories and --api-keys's file again
        # last, when nothing else can fail the build: a process that exits while it loads must not wait for it
        self._embedder = EmbedderLoading(config.cache.embedder, config.cache.embedder_path) if neural else None

    def _controller_thread(self) -> concurrent.futures.Executor:
        """The one thread the controller solves on. Not the loop's default executor: other work shares that (HTTP's
        reading of large bodies), and plans waited behind a flood of large images HTTP base64-encoded there once."""
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="argus-controller")
        # as the engine stops: waits for a solve still running (its time limit bounds it), drops one not begun
        self._resources.callback(executor.shutdown, cancel_futures=True)
        return executor

    def _joined(self, worker: WorkerHandle) -> None:
        self.launcher.joined(worker.hello.worker_id)
        self.outlook.joined(worker.hello.worker_id)

    def _launcher(self) -> Launcher:
        config = self.config
        worker_keys = self._curve.local_worker_keys if self._curve else None
        embedder = config.cache.embedder
        if config.launcher == "ray":
            connect = config.ray_connect or tcp_endpoint(self.link.endpoints)
            return RayLauncher(
                config.launch,
                connect,
                self.metrics,
                self._local_worker_exited,
                worker_keys,
                embedder,
                config.ray_address,
                config.ray_connect_timeout_s,
            )
        return LocalLauncher(
            config.launch, self.link.endpoints[0], self.metrics, self._local_worker_exited, worker_keys, embedder
        )

    @property
    def embedder_still_loading(self) -> bool:
        """The prompt embedder is still loading: after run(), a stop came first, and the process must not wait for
        the load (engine/cli.py)."""
        return self._embedder is not None and self._embedder.unfinished

    # -- what the front doors call -----------------------------------------
    @property
    def running(self) -> bool:
        """Admitting requests: not draining, not stopped."""
        return self.state is EngineState.RUNNING

    def submit(self, spec: Generate, client: str = "") -> AdmittedRequest | Error | Busy:
        """`client`: who sent it, as its front door names clients (engine/dispatch/client_shares.py)."""
        if not self.running:
            refused = Error(spec.request_id, "shutting_down", "the engine is shutting down")
            self.count_refusal(refused)
            return refused
        admitted = self.admission.check(spec, self.dispatcher.outstanding_images, client)
        if isinstance(admitted, Busy):
            self.metrics.requests_by("busy", admitted.reason).inc()
            request_log.debug(
                "request %r refused busy (%s): retry after %d ms",
                spec.request_id,
                admitted.reason,
                admitted.retry_after_ms,
            )
            return admitted
        if isinstance(admitted, Error):
            self.count_refusal(admitted)
            return admitted
        self.dispatcher.admit(admitted)
        self.cache.prepare(admitted, self._prepared)
        return admitted

    def _move_worker(self, worker: WorkerHandle, level: int) -> None:
        # the dispatcher routes by the new level at once; batches in flight finish at theirs
        self.dispatcher.worker_level_set(worker, level)
        self.link.send(worker, SetLevel(level))

    def _prepared(self, request: AdmittedRequest, preparation: Preparation | BaseException) -> None:
        if isinstance(preparation, BaseException):
            log.error("preparing request %r failed", request.spec.request_id, exc_info=preparation)
            request.fail("internal_error", "the engine failed to prepare this request")
            return
        request.vector, request.neighbour = preparation.vector, preparation.neighbour
        request.resumer = preparation.resumer
        self.metrics.k_star_at(preparation.k_star).inc()
        try:
            self.dispatcher.route(
                request,
                preparation.level,
                preparation.latent,
                preparation.similarity,
                preparation.fallbacks,
                preparation.k_star,
                preparation.start,
                preparation.latent_seed,
            )
        except Exception:  # a bug must not leave it unanswered, nor the requests prepared with it unrouted
            log.exception("routing request %r failed", request.spec.request_id)
            request.fail("internal_error", "the engine failed to route this request")

    def _image_made(self, worker: WorkerHandle, job: Job, done: ItemDone) -> None:
        if job.index == job.request.resumer:  # the image its level was chosen for: the others run in full
            # before its latents are cached: a count and the prompt it was of show in the same statistics
            self.cache.count_start(job.request, job.start)
        self._cache_latents(worker, job, done)

    def _cache_latents(self, worker: WorkerHandle, job: Job, done: ItemDone) -> None:
        """The first image of a request to bring latents brings those its generation passed through: cache them (once
        checked on the cache thread: they are what the worker says). One resumed from a neighbour brings only the
        levels above its start (none from the top level) and its request's other images, run in full
        (Dispatcher.route), bring them all: with such images, those are cached, and a later prompt near this one can
        resume below the resumed image's start too."""
        request = job.request
        if request.vector is None or request.latents_cached or not done.brings_latents:
            return
        if job.start > 0 and request.spec.n > 1:
            return
        request.latents_cached = True
        shape = model_latent_shape(worker.hello.backend, worker.hello.model, request.width, request.height)
        self.cache.insert(request, request.vector, Returned(done, worker.name, job.start, shape, job.run_seed))

    def request_stop(self) -> None:
        if self.state is EngineState.RUNNING:
            self.state = EngineState.DRAINING
            self._stop_requested.set()
        elif self.state is EngineState.DRAINING:
            self._stop_now.set()

    def count_refusal(self, refused: Error) -> None:
        """Counts a request refused unadmitted, and says it at DEBUG: those the front doors refuse before the engine
        sees them too (a body or a message that is no request), which were said in no line at any level."""
        self.metrics.requests_by("rejected", refused.code).inc()
        request_log.debug("request %r refused %s: %s", refused.request_id, refused.code, refused.message)

    def count_reply(self, request: AdmittedRequest, reply: object) -> None:
        """Counts the answer a front door sends for an admitted request, once: the door's, not the engine's, as
        the door may answer otherwise (HTTP refuses images too large for the URL store, made all the same)."""
        seconds = time.monotonic() - request.admitted_at
        self.metrics.request_seconds.observe(seconds)
        if isinstance(reply, Error):
            self.metrics.requests_by("rejected" if reply.code in INPUT_REFUSALS else "error", reply.code).inc()
            request_log.debug(
                "request %r answered %s after %.3f s: %s", request.spec.request_id, reply.code, seconds, reply.message
            )
        elif isinstance(reply, Cancelled):
            self.metrics.requests_by("cancelled", "").inc()
            request_log.debug("request %r cancelled after %.3f s", request.spec.request_id, seconds)
        else:
            self.metrics.requests_by("ok", "").inc()

    def _local_worker_exited(self, worker_id: str, restarting: bool) -> None:
        """A local slot's worker ended; `restarting`: its launcher starts it again (False: the slot is given up)."""
        for worker in self.registry.by_worker_id(worker_id):
            self.dispatcher.worker_lost(worker, "exited")
        if not restarting:
            self.dispatcher.slot_given_up(worker_id)

    # -- lifecycle -----------------------------------------------------------
    async def run(self, held: HeldStopSignals | None = None) -> None:
        """Serves until a stop signal, then drains. `held`: the signals held while the engine was imported and built
        (engine/system/stop_signals.py): a stop that came then stops it before it serves, a SIGHUP has the keys read
        again once it serves, and they are held again once the loop is done with them."""
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._hangup.set)
        for signum in UNUSED_SIGNALS:
            loop.add_signal_handler(signum, say_unused, signum)
        if held is not None and held.hung_up:  # the keys were read before it came: read them again once serving
            self._hangup.set()
        stopped = False  # as asked: not ended by an error (a port in use, a Ray cluster it cannot join)
        try:
            if held is not None and held.received is not None:  # checked once the loop's handlers are in place
                log.info("%s as the engine started: stopping before it serves", held.received.name)
            elif self._embedder is None or await self._cache_built():
                await self._serve()
            else:
                log.info(
                    "stop asked for while the prompt embedder loaded or the cache was built: stopping before it serves"
                )
            stopped = True
        finally:
            self.close()
            self.state = EngineState.STOPPED
            if held is not None:
                # the loop would put Python's defaults back as it closes: until the exit a signal is kept, not fatal
                for signum in HELD_SIGNALS:
                    loop.remove_signal_handler(signum)
                held.hold()
            if stopped:  # an engine that failed says why in its error's one line, which came after this one
                log.info("engine stopped")

    async def _cache_built(self) -> bool:
        """Builds the prompt cache once its neural embedder has loaded, the loop handling a stop meanwhile; False if a
        stop came first, the load left running (it takes seconds, which a stop used to wait out), or came as the
        cache was built."""
        stop = asyncio.ensure_future(self._stop_requested.wait())
        loaded = self._embedder.loaded()
        if not loaded.done():  # says why nothing listens yet (minilm: about 8 s on a 2-core machine)
            log.info("waiting for the prompt embedder to load before serving")
        try:
            await asyncio.wait((stop, loaded), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            loaded.cancel()  # if still loading: the load runs on, and the process exits without waiting for it
        if loaded.cancelled():
            return False
        # on a thread: it removes the last run's spill folders (up to --cache-dir-bytes of files), and the loop
        # handles stop signals meanwhile
        cache = await asyncio.to_thread(self._new_cache, loaded.result())
        self._adopt_cache(cache)
        # a stop as the spill folders were removed (seconds, after a crash) was taken for none: the engine listened,
        # started its workers, and only then drained
        return not self._stop_requested.is_set()

    def _new_cache(self, embedder: Embedder | None) -> CacheService:
        """`embedder`: the one loaded for the cache, None to have the hash embedder made."""
        config = self.config
        return build_cache_service(
            config.cache,
            config.model_id,
            config.cache.levels,
            self.control_loop.choose,
            self.control_loop.fallback_levels,
            embedder,
        )

    def _adopt_cache(self, cache: CacheService) -> None:
        self.cache = cache
        self.metrics.cache.read = cache.current_stats
        # closed by the drain, saved; this is for an engine that never served (a port in use), and does nothing after
        self._resources.callback(cache.abandon)
        self.link.on_model = self._model_named

    def _model_named(self, model: str) -> None:
        """The first worker welcomed named the model this engine serves (it knew none as it started)."""
        self.control.warn_if_measured_elsewhere(model)
        self.cache.adopt_model(model)

    async def _serve(self) -> None:
        listener = None
        runner = None
        try:
            self.clients.start()
            bound = self.config.max_connections or http_connection_bound(self.config.launch.count)
            connections = ConnectionLimit(bound, self.metrics.http_connections_refused.inc)
            self.metrics.http_connections.set_function(lambda: connections.open)
            try:
                # bound first, not yet listening: the app's door depends on the addresses bound, and the connections'
                # protocol (`accepted`, below) on the app; none is accepted before start_serving()
                listener = await listen(lambda: accepted(), self.config.host, self.config.port)
            except OSError as error:
                where = f"--host {self.config.host} --port {self.config.port}"
                raise UsageError(f"{where}: {error.strerror or error}") from None
            loopback = on_loopback(listener)
            # aiohttp would inflate a compressed body on the loop, before the size limit or the API key apply: a
            # megabyte of gzip grows to a gigabyte and stalls every client. Bodies are small; none is compressed. Each
            # connection's aiohttp protocol is made with these (engine/http/parse_errors.py), as the runner's would be
            handler_args = {
                "access_log": None,
                "logger": SERVER_LOG,
                "auto_decompress": False,
                "keepalive_timeout": self.config.keepalive_timeout_s,
                "max_line_size": MAX_HEAD_LINE_BYTES,
                "max_field_size": MAX_HEAD_LINE_BYTES,
                "max_headers": MAX_HEADERS,
            }
            runner = web.AppRunner(
                build_app(self, loopback), handler_cancellation=True, shutdown_timeout=_HTTP_FLUSH_S, **handler_args
            )
            await runner.setup()
            # not web.TCPSite: each connection's protocol is wrapped, to answer a client that half-closes it, to
            # close one whose client stops reading, to bound how many are open and the heads they hold; the head's
            # bound innermost but for aiohttp's protocol (made to answer what its parser refuses in JSON), the one it
            # reads
            bounded = head_limit(json_parse_errors(runner.server, handler_args))
            connection = send_timeout(bounded, self.config.send_timeout_s, self.metrics.http_send_timeouts.inc)
            # outermost, the connection answer_half_closed finds as the transport's protocol
            accepted = half_close_aware(connections.protocols(connection))
            port = listener.sockets[0].getsockname()[1]
            # once bound: the port it names is the one listening (--port 0 named port 0)
            warn_if_http_open(self.config.host, port, self.api_keys is not None, loopback)
            await listener.start_serving()
            log.info(
                "argus %s: HTTP API listening on http://%s (POST /v1/images/generations; at most %s at once,"
                " --max-connections)",
                argus_version(),
                http_address(self.config.host, port),
                counted(bound, "connection"),
            )
            endpoints = ", ".join(self.clients.endpoints), ", ".join(self.link.endpoints)
            log.info("ZeroMQ clients: %s; workers: %s", *endpoints)
            async with asyncio.TaskGroup() as group:
                # the keys given with --curve-secret, reread on SIGHUP; a Ray run's own are not
                configured_keys = self._curve if self.config.curve_secret_file else None
                actors = [
                    group.create_task(self.link.run()),
                    group.create_task(sweep_forever(self.dispatcher, self.image_files, self.control.slo_s)),
                    group.create_task(self.launcher.run()),
                    group.create_task(self.control_loop.run()),
                    group.create_task(
                        checkpoint_forever(self.cache, self.config.cache, self._stop_requested, self.metrics)
                    ),
                    group.create_task(reload_keys_on_hangup(self._hangup, configured_keys, self.link, self.api_keys)),
                ]
                await self._stop_requested.wait()
                await self._drain(runner)
                for actor in actors:
                    actor.cancel()
        finally:
            if listener is not None:  # stop listening first, as runner.cleanup stops its sites
                listener.close()
            if runner is not None:
                await runner.cleanup()

    async def _drain(self, runner: web.AppRunner) -> None:
        log.info(
            "draining: %s in flight, given up to %g s (a second SIGTERM or SIGINT cancels them at once)",
            counted(self.dispatcher.outstanding_images, "image"),
            self.config.shutdown_timeout_s,
        )
        deadline = time.monotonic() + self.config.shutdown_timeout_s
        while self.dispatcher.outstanding_images and time.monotonic() < deadline and not self._stop_now.is_set():
            await asyncio.sleep(0.05)
        images = self.dispatcher.outstanding_images
        requests = self.dispatcher.cancel_all()
        if requests:  # the drain's log said only how many it began with, then "engine stopped"
            log.info(
                "%s: cancelled the %s in flight (%s, each answered Cancelled)",
                "second stop signal"
                if self._stop_now.is_set()
                else f"--shutdown-timeout ({self.config.shutdown_timeout_s:g} s) reached",
                counted(images, "image"),
                counted(requests, "request"),
            )
        # let the replies written by cancel_all reach the front doors' sockets
        await asyncio.sleep(0)
        await runner.shutdown()
        self.link.shutdown_all()
        await self.launcher.stop(timeout_s=5.0)
        # the drain is done: a failed save is not a failure for a supervisor to restart. It is written aside and
        # renamed over the last one, which a failed save leaves in place
        directory = self.config.cache.directory
        try:
            await self.cache.close(save_to=directory)
        except OSError as error:  # the disk's (full, read-only): one line, as a checkpoint's
            log.error(
                "saving the prompt cache to %s failed (%s); the next start restores the last save made, if any",
                directory,
                error,
            )
        except Exception:
            log.exception("saving the prompt cache failed; the next start restores the last save made, if any")
