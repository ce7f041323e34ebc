"""Workers as Ray actors (`argus serve --launcher ray`): Ray places them, the engine supervises them.

Each worker slot is one actor (num_gpus=1 on a GPU, num_cpus=1 on CPU, none for
a simulated worker, which sleeps) whose process runs the ordinary worker loop
(`workers.main.run_worker`) and dials the engine's worker address over TCP with
CURVE. The end of an actor (its loop
returned or raised, it was killed, its node died) is the worker's exit, as a
process exit is for the local launcher: the engine is told at once (on_exit
re-dispatches what it held) and a new actor takes the slot, after a backoff
that doubles while actors end before their worker says hello or soon after
(engine/fleet/restart_backoff.py). An actor Ray has
not started within the startup timeout (the cluster lacks what it asks for), or
whose worker has not said hello within it after, is replaced the same way. One
whose worker says it cannot serve as configured before its hello (its model
folder missing on that node, a device it lacks, refused by the engine),
GIVE_UP_AFTER times in a row, is given up: replaced only every few minutes, as a local worker is.

Ray is an optional extra (`pip install ray`), imported only here. With no
address a Ray instance of our own is started on this machine, bound to the
loopback interface only; with one (`auto`, `HOST:PORT`, `ray://...`) the
engine joins that cluster as a driver. Actors are owned by the engine's Ray
job: when the engine process ends, Ray ends them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import os
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from engine.commands.arg_types import UsageError
from engine.config import API_KEY_ENV, LaunchConfig
from engine.fleet.ray.calls import RayCalls, in_daemon_thread
from engine.fleet.ray.gcs_watch import watch_gcs
from engine.fleet.ray.logs import RayTokenRefused, watching_ray_logs
from engine.fleet.ray.own_processes import Process, kill_left, own_ray_processes
from engine.fleet.restart_backoff import GIVE_UP_AFTER
from engine.fleet.slot_supervision import SlotSupervisor, log_not_stopped, said_hello_or_ended
from engine.metrics import EngineMetrics
from engine.system.listen_checks import http_address
from protocols.curve import ClientKeys
from protocols.endpoints import NotAnEndpoint, is_loopback, parse_endpoint, parse_host_port
from workers.backend import BackendUnavailable
from workers.config import WorkerConfig
from workers.main import CANNOT_SERVE_EXIT, SIM_SIMILARITY_TABLE_ENV
from workers.model_loading import ModelLoadFailed

log = logging.getLogger("argus.launcher")
# Ray picks a node's address when it is imported: with this off it is the loopback address, so a
# Ray instance of our own binds nothing else (Ray reads it on Windows and macOS, where it defaults off). With it on,
# ray.init also rewrites a loopback --ray-address to the host's own address, where a head that listens on loopback
# alone (`ray start --head --node-ip-address=127.0.0.1`) does not answer
_RAY_CLUSTER_ADDRESSES_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Ray's crash handler, read when ray is imported, takes SIGTERM (the engine's ordinary stop) for a crash: it dumped a
# stack to the log at every stop, and once the GCS was gone the drain ended in SIGABRT, before the prompt cache's save
_RAY_CRASH_HANDLER_OFF_ENV = "RAY_DISABLE_FAILURE_SIGNAL_HANDLER"
# Ray's log deduplication, read when ray is imported, takes lines that differ only in their words with digits (a time,
# a pid, a worker's name) for one: the line an actor said as another had within 5 s was held back until a later line
# came (for an idle fleet, its stop), or folded with the others into one line of the last one's, `[repeated 2x across
# cluster]` appended (a JSON record that no longer parsed). Each actor's lines are forwarded as it says them
_RAY_LOG_DEDUP_ENV = "RAY_DEDUP_LOGS"
# Ray colours the prefix of each forwarded line whatever stderr is: a log written to a file (a JSON one for a
# collector) held terminal escape codes in each actor's line
_RAY_COLOR_PREFIX_ENV = "RAY_COLOR_PREFIX"
# Ray's calls start a Ray instance when the driver is not connected (read when ray is imported): once the GCS had gone,
# the stop's ray.kill started a second local instance of the engine's (or joined whatever cluster
# /tmp/ray/ray_current_cluster last named), whose processes outlived the engine. A call then fails, and is said
_RAY_AUTO_CONNECT_ENV = "RAY_ENABLE_AUTO_CONNECT"
# a slot's ended actors whose pids are known for theirs, should their workers say hello again: a bound, for a slot whose
# actors keep ending for the engine's whole life
_ENDED_PIDS_KEPT = 8


class RayWorker:
    """The actor: one worker in the actor's own process (Ray runs its methods on the main thread)."""

    def __init__(self, config: WorkerConfig):
        self._config = config

    def __repr__(self) -> str:
        # what Ray's prefix of each line the actor logs names it by: its worker id, not the class every actor shares
        return self._config.worker_id

    def pid(self) -> int:
        return os.getpid()

    def serve(self) -> int:
        from engine.logs.setup import configure_logging
        from workers.main import run_worker

        # as a local worker is started with the engine's --log-level and --log-format, its records naming it: Ray sets
        # no logging up for the actor's process, where Python then said only warnings, without even a level or a time
        configure_logging(self._config.log_level, self._config.log_format, self._config.worker_id)
        return run_worker(self._config)


def tcp_endpoint(endpoints: list[str]) -> str:
    """The engine's first TCP worker endpoint: what actors on any node dial."""
    for endpoint in endpoints:
        if parse_endpoint(endpoint, listening=True).scheme == "tcp":
            return endpoint
    raise UsageError("--launcher ray needs a TCP --worker-listen address for its actors to dial")


def reachable_dial(connect: str, node_ip: str) -> str:
    """The worker address actors dial, from every node: a wildcard host (tcp://0.0.0.0:5556, the endpoint of
    --worker-listen tcp://*:5556) becomes the address Ray knows this node by (dialled on another host, it reached that
    host, and the actor said hello there for ever). One on loopback is kept, with a WARNING when the cluster is more
    than this host's loopback: actors Ray places on other hosts reach no engine through it."""
    endpoint = parse_endpoint(connect)
    if endpoint.scheme != "tcp":  # an ipc:// path, which actors on this host alone reach
        return connect
    try:
        wildcard = ipaddress.ip_address(endpoint.host.partition("%")[0]).is_unspecified
    except ValueError:  # a host name (--ray-connect tcp://engine.example:5556)
        wildcard = False
    node = "tcp://" + http_address(node_ip, endpoint.port)
    if wildcard:
        return node
    if endpoint.loopback and not is_loopback(node_ip):
        log.warning(
            "Ray actors dial %s, this host's loopback: those placed on the cluster's other hosts reach no engine."
            " Listen where they reach (--worker-listen tcp://0.0.0.0:%s) or give --ray-connect %s",
            connect,
            endpoint.port,
            node,
        )
    return connect


def on_loopback(address: str) -> bool:
    """Whether a Ray cluster's HOST:PORT address (not `auto`, not `ray://...`) names this host's loopback interface."""
    try:
        return parse_host_port(address).loopback
    except NotAnEndpoint:
        return False


def connect_ray(address: str | None, refused: Callable[[RayTokenRefused], None] = lambda error: None) -> Any:
    """Joins the Ray cluster at `address`, or starts a loopback-only one; returns the ray module. `refused` is told
    at once when the cluster refuses the engine's token, which ray.init finds out only after about 20 s of tries."""
    if address is None or on_loopback(address):
        os.environ.setdefault(_RAY_CLUSTER_ADDRESSES_ENV, "0")
    os.environ.setdefault(_RAY_CRASH_HANDLER_OFF_ENV, "1")
    os.environ.setdefault(_RAY_LOG_DEDUP_ENV, "0")
    os.environ.setdefault(_RAY_AUTO_CONNECT_ENV, "0")
    if not sys.stderr.isatty():
        os.environ.setdefault(_RAY_COLOR_PREFIX_ENV, "0")
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("--launcher ray needs Ray: pip install ray") from exc

    # a Ray instance of our own, and every actor it starts, inherits the engine's environment but for the API key,
    # which they have no use for (nor have local workers: engine/fleet/launcher.py); the engine read it at start
    api_key = os.environ.pop(API_KEY_ENV, None) if address is None else None
    try:
        with watching_ray_logs(refused):
            ray.init(address=address or "local", include_dashboard=False)
    finally:
        if api_key is not None:
            os.environ[API_KEY_ENV] = api_key
    if address is None and not ipaddress.ip_address(ray.util.get_node_ip_address()).is_loopback:
        ray.shutdown()
        raise RuntimeError(
            f"a local Ray instance would listen beyond loopback: set {_RAY_CLUSTER_ADDRESSES_ENV}=0 before ray "
            "is imported, or start Ray yourself and pass --ray-address"
        )
    return ray


def connect_in_background(address: str | None) -> concurrent.futures.Future:
    """connect_ray in a daemon thread: ray.init waits for ever on a cluster it cannot reach, and an engine told to
    stop must not wait with it (asyncio.to_thread's executor threads are joined at exit)."""
    connected: concurrent.futures.Future = concurrent.futures.Future()

    def failed(error: BaseException) -> None:
        if not connected.done():  # ray.init raises in the end after a refusal already told
            connected.set_exception(error)

    def connect() -> None:
        try:
            connected.set_result(connect_ray(address, failed))
        except BaseException as error:
            failed(error)
            return
        # the thread stays: Ray starts the processes of a local instance with PR_SET_PDEATHSIG, which fires
        # when the thread that started them ends
        threading.Event().wait()

    threading.Thread(target=connect, name="ray-connect", daemon=True).start()
    return connected


def last_line(message: str) -> str:
    return message.splitlines()[-1]


def in_one_line(message: str) -> str:
    """A message on one line, a traceback by its last line (the reason): ray.init's for an http:// address lists the
    ways out on lines of their own, and the last alone, `2. Set RAY_ADDRESS to the GCS address instead`, was all the
    engine said."""
    lines = message.splitlines()
    if any(line.startswith("Traceback (most recent call last)") for line in lines):
        return lines[-1]
    return " ".join(line.strip() for line in lines if line.strip())


def reasons(error: BaseException, gist: Callable[[str], str] = last_line) -> str:
    """The error and what it was raised from, the gist of each message: by default its last line, where a task's
    traceback ends in what it raised, and an actor's death in its cause."""
    said = []
    cause: BaseException | None = error
    while cause is not None:
        said.append(gist(str(cause).strip() or type(cause).__name__))
        cause = cause.__cause__ or cause.__context__
    return ": ".join(said)


class RayLauncher(SlotSupervisor):
    """The local launcher's interface (engine/fleet/slot_supervision.py's Launcher; on_exit per worker) and slot
    supervision, with Ray actors."""

    def __init__(
        self,
        config: LaunchConfig,
        connect: str,
        metrics: EngineMetrics,
        on_exit: Callable[[str, bool], None],
        curve: ClientKeys,
        embedder: str = "hash",
        address: str | None = None,
        connect_timeout_s: float = 60.0,
    ):
        worker_ids = [_slot_id(slot) for slot in range(config.count)]
        super().__init__(config, metrics, on_exit, worker_ids)
        self._connect = connect
        self._curve = curve
        # a simulated worker models quality on the similarity table of the engine's embedder
        self._runtime_env = {"env_vars": {SIM_SIMILARITY_TABLE_ENV: embedder}}
        self._address = address
        self._connect_timeout_s = connect_timeout_s
        self._connected: asyncio.Future | None = None  # ray.init's outcome, the ray module, once run() began it
        self._ray: Any = None  # the ray module, once connected
        self._calls = RayCalls()  # those that may block, off the event loop
        self._actors: dict[str, Any] = {}
        self._serving: dict[str, asyncio.Future] = {}  # worker id -> its actor's loop
        # worker id -> the pid of its slot's live actor (None: none yet)
        self._pids: dict[str, int | None] = dict.fromkeys(worker_ids)
        # worker id -> the pids of its slot's last actors that ended, whose workers may yet say hello again
        self._ended_pids: dict[str, deque[int]] = {slot: deque(maxlen=_ENDED_PIDS_KEPT) for slot in worker_ids}

    async def run(self) -> None:
        connected = self._connected = asyncio.wrap_future(connect_in_background(self._address))
        cluster = f"the Ray cluster at {self._address}" if self._address else "a local Ray instance"
        # no worker can start: the engine ends, saying why in one line (a traceback buried the reason)
        try:
            self._ray = await asyncio.wait_for(asyncio.shield(connected), self._connect_timeout_s)
        except TimeoutError:
            # the engine ends with no stop: what of its own instance had started died with it but the raylet's
            # agents, which ran on, orphaned, waiting on the GCS gone with it
            kill_left(self._own_processes())
            raise UsageError(
                f"could not connect to {cluster} within {self._connect_timeout_s:g} s (--ray-connect-timeout)"
            ) from None
        except Exception as error:  # an address Ray cannot parse, a token it refuses, Ray Client not installed
            raise UsageError(f"could not connect to {cluster}: {reasons(error, in_one_line)}") from None
        if self._stopping:  # the stop waited for our own instance's start, to end it
            return
        self._connect = reachable_dial(self._connect, self._ray.util.get_node_ip_address())
        actor_class = self._ray.remote(RayWorker)
        # Ray Client's GCS (ray://) is the Ray Client server's to reach, not the engine's
        watched = None if (self._address or "").startswith("ray://") else self._ray.get_runtime_context().gcs_address
        owned = f"the Ray cluster at {self._address}" if self._address else "the engine's own Ray instance"
        watching = asyncio.create_task(watch_gcs(watched, owned)) if watched else None
        try:
            async with asyncio.TaskGroup() as group:
                for slot in range(self._config.count):
                    group.create_task(self._supervise(actor_class, slot))
        finally:
            if watching is not None:
                watching.cancel()

    def kill(self, worker_id: str) -> bool:
        """Kills the slot's actor, which is then replaced; False when no actor of ours has the id."""
        actor = self._actors.get(worker_id)
        if actor is not None:
            self._kill(actor)
            return True
        return False

    def refusal(self, worker_id: str, pid: int) -> str | None:
        """Why a worker under a slot's id is not the slot's live actor: one Ray counts ended (its node lost) can run
        on, out of Ray's reach, and would serve beside its replacement; refused, it ends. Any other (one started by
        hand) is told the id is the slot's: it was told Ray counted its actor ended, while that actor served on."""
        if worker_id not in self._pids or pid == self._pids[worker_id]:
            return None
        if pid in self._ended_pids[worker_id]:
            return f"pid {pid} is not the live Ray actor of {worker_id} (Ray counts its actor ended)"
        return f"worker id {worker_id!r} is this engine's own Ray actor slot: give this worker another"

    async def stop(self, timeout_s: float) -> None:
        """Lets each actor's loop end (the engine has told its workers to shut down), kills what is left, and leaves no
        process of a Ray instance of our own."""
        self._stopping = True
        ray = self._ray
        if ray is None and self._address is None and self._connected is not None:
            # a Ray instance of our own still starting is let start, then stopped: its processes died with the engine
            # while its raylet's agents, waiting on the GCS gone with them, ran on for a minute or more
            await asyncio.wait([self._connected], timeout=self._connect_timeout_s)
            if self._connected.done() and self._connected.exception() is None:
                ray = self._connected.result()
        if ray is None:  # not connected, so no actor: a cluster's connection is not waited for
            kill_left(self._own_processes())
            return
        # the engine told those whose worker said hello; one loading its model, or dialling where it reaches no engine,
        # was not told, and is killed at once: the stop waited 5 s for it, then said it had not stopped when asked
        asked = {worker_id: ended for worker_id, ended in self._serving.items() if self._hello[worker_id].is_set()}
        _, running = await asyncio.wait(asked.values(), timeout=timeout_s) if asked else (set(), set())
        if running:
            # those still running: the line counted every actor, stopped or not
            stuck = {worker_id: self._pids[worker_id] for worker_id, ended in asked.items() if ended in running}
            log_not_stopped("Ray actor", stuck, timeout_s)
        # done before the disconnect; waited for no longer than the loops were: a kill behind an actor's start that
        # waits for a GCS gone waits with it
        killed = [self._kill(actor) for actor in self._actors.values()]
        if killed:
            await asyncio.wait(killed, timeout=timeout_s)
        own = self._own_processes()  # before the shutdown, which may leave the raylet's agents orphaned
        # with the raylet gone and the GCS alive but not answering, it waited until Ray ended the engine, 60 s on
        disconnected = in_daemon_thread(ray.shutdown)
        done, _ = await asyncio.wait([disconnected], timeout=timeout_s)
        if not done:
            log.warning("disconnecting from Ray took over %g s: stopping without it", timeout_s)
        kill_left(own)
        if done:
            disconnected.result()  # raised as before the bound

    def _own_processes(self) -> list[Process]:
        """The processes of a Ray instance of our own; none of a cluster the engine joined, which is not its to end."""
        ray = sys.modules.get("ray")
        if self._address is not None or ray is None:
            return []
        return own_ray_processes(os.path.dirname(ray.__file__) + os.sep)

    def _kill(self, actor: Any) -> asyncio.Future:
        """ray.kill, in the thread of Ray's calls: it waits while the actor's start registers it with the GCS."""
        killed = self._calls.submit(self._ray.kill, actor)
        killed.add_done_callback(_said_if_failed)
        return killed

    async def _supervise(self, actor_class: Any, slot: int) -> None:
        config = self._worker_config(slot)
        worker_id = config.worker_id
        resources = actor_resources(config)
        while not self._stopping:
            self._starting(worker_id)
            # named in this engine's job (its own namespace): `ray.get_actor("ray-0")` from the engine
            starting = actor_class.options(name=worker_id, max_restarts=0, runtime_env=self._runtime_env, **resources)
            actor = self._actors[worker_id] = await self._calls.submit(starting.remote, config)
            if self._stopping:  # the stop came while it started, and killed the slot's last actor
                self._kill(actor)
                return
            ended, cannot_serve = await self._serve(actor, worker_id, resources)
            self._serving.pop(worker_id, None)
            if self._pids[worker_id] is not None:
                self._ended_pids[worker_id].append(self._pids[worker_id])
            self._pids[worker_id] = None
            if self._stopping:
                return
            self._kill(actor)  # one that is unreachable but alive must not serve on, beside its replacement or not
            await self._after_end(
                worker_id,
                cannot_serve,
                giving_up=f"worker {worker_id} (Ray actor) {ended} before its hello {GIVE_UP_AFTER} times in a row: it"
                " cannot serve as configured; given up",
                restarting=f"worker {worker_id} (Ray actor) {ended}; replacing it",
            )

    async def _serve(self, actor: Any, worker_id: str, resources: dict[str, int]) -> tuple[str, bool]:
        """Runs the actor's worker loop until it ends; says what ended it, and whether its worker said it cannot
        serve as configured (as a local worker's exit 2 does)."""
        timeout_s = self._config.startup_timeout_s
        given_up = self._given_up(worker_id)  # its retry's one line is its end's
        try:
            # an actor Ray places, or whose worker loads its model, is capacity on its way, as a local worker is
            with self._metrics.workers.labels("failed" if given_up else "starting").track_inprogress():
                try:
                    pid = await asyncio.wait_for(actor.pid.remote(), timeout_s)
                except TimeoutError:  # Ray could not place it, or its process does not start
                    # the flag named: a cluster that adds a GPU node on demand takes minutes to place it
                    shortage = await self._shortage(resources)
                    return f"was not started by Ray within {timeout_s:g} s (--startup-timeout; {shortage})", False
                level = logging.DEBUG if given_up else logging.INFO
                log.log(level, "started worker %s as a Ray actor (pid %d, %s)", worker_id, pid, resources)
                self._pids[worker_id] = pid
                serving = self._serving[worker_id] = asyncio.ensure_future(actor.serve.remote())
                started = await said_hello_or_ended(self._hello[worker_id], serving, timeout_s)
            if not started:
                log.error(
                    "worker %s (Ray actor, pid %d) said no hello within %g s (--startup-timeout); killing it",
                    worker_id,
                    pid,
                    timeout_s,
                )
                self._kill(actor)
            code = await serving
            return f"returned {code}", code == CANNOT_SERVE_EXIT
        except self._ray.exceptions.OutOfMemoryError as error:  # Ray's memory monitor killed it
            # what it measured is the first line; the last, all the line said before, is advice on Ray's settings
            return f"ended: {(str(error).strip() or type(error).__name__).splitlines()[0]}", False
        except self._ray.exceptions.RayError as error:  # killed, its node lost, or the loop raised
            # why, not only Ray's class for it: "RayTaskError(FileNotFoundError)" named no file. Ray's error for a
            # task that raised is also an instance of what it raised
            cannot_serve = isinstance(error, (BackendUnavailable, ModelLoadFailed, FileNotFoundError))
            return f"ended: {reasons(error)}", cannot_serve

    async def _shortage(self, resources: dict[str, int]) -> str:
        """What the actor asks for that the cluster has not got free, for the log (asked of the GCS)."""
        free = await self._calls.submit(self._ray.available_resources)
        total = await self._calls.submit(self._ray.cluster_resources)
        asked = {"CPU": resources.get("num_cpus", 0), "GPU": resources.get("num_gpus", 0)}
        short = [
            f"it needs {amount} {name}, the cluster has {free.get(name, 0):g} free of {total.get(name, 0):g}"
            for name, amount in asked.items()
            if amount > free.get(name, 0)
        ]
        return "; ".join(short) or "the cluster has what it needs free: look at the Ray logs"

    def _worker_config(self, slot: int) -> WorkerConfig:
        # a CPU actor has one core of its own (actor_resources)
        local = self._config.worker_config(self._connect, slot, threads=1)
        return replace(
            local,
            worker_id=_slot_id(slot),
            # Ray gives a num_gpus=1 actor one device, visible as the first
            device="cuda:0" if gpu(local) else local.device,
            die_with_parent=False,
            curve=self._curve,
            # an actor runs in its raylet's folder (where `ray start` ran), not the engine's: a relative --model named
            # a folder there, or none, where a local worker's names the one beside the engine
            model=os.path.abspath(local.model) if local.model else None,
        )


def _said_if_failed(killed: asyncio.Future) -> None:
    if not killed.cancelled() and killed.exception() is not None:
        log.warning("could not kill a Ray actor: %s", reasons(killed.exception()))


def gpu(config: WorkerConfig) -> bool:
    return config.device.startswith("cuda")


def actor_resources(config: WorkerConfig) -> dict[str, int]:
    if config.backend == "sim":  # it sleeps: no core of its own, so a thousand of them need no thousand CPUs
        return {"num_cpus": 0}
    return {"num_gpus": 1} if gpu(config) else {"num_cpus": 1}


def _slot_id(slot: int) -> str:
    return f"ray-{slot}"
