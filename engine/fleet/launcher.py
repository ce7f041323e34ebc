"""Local worker processes: spawn one per slot, restart what dies, stop them all at the end.

The process exit is the fastest sign of a dead worker (faster than a missed
heartbeat), so the launcher tells the engine at once; it restarts with backoff so
a worker that cannot start, or dies soon after it starts, does not spin
(engine/fleet/restart_backoff.py). Before its hello a worker has no
heartbeat to miss: one that does not say hello within the startup timeout is
killed and restarted like one that died. One that exits saying it cannot serve as
configured (exit 2) before its hello, GIVE_UP_AFTER times in a row, is given up:
started again only every few minutes (engine/fleet/restart_backoff.py), and its exit tells the engine so; what
the Ray launcher does for its slots too is in engine/fleet/slot_supervision.py. Why it cannot serve, which it
tells the launcher over a pipe rather than print (workers/cannot_serve.py), is logged once, not at every start of
every slot.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable

from engine.config import LaunchConfig, environment_for_children
from engine.fleet.restart_backoff import GIVE_UP_AFTER
from engine.fleet.slot_supervision import SlotSupervisor, log_not_stopped, said_hello_or_ended
from engine.metrics import EngineMetrics
from engine.system.proc_reads import ending
from engine.system.process_ends import how_it_ended
from protocols.curve import LOCAL_WORKER_KEYS_ENV, ClientKeys
from workers.cannot_serve import ReasonPipe
from workers.config import WorkerConfig, threads_each
from workers.devices import on_device
from workers.main import CANNOT_SERVE_EXIT, ENGINE_STOP_SIGNAL, PARENT_PID_ENV, SIM_SIMILARITY_TABLE_ENV

log = logging.getLogger("argus.launcher")


# The Ctrl-C of the engine's terminal sends SIGINT to its whole process group, the workers it launched too, which
# ignore it (the engine stops them once drained: workers/main.py). A worker still in its first second (Python's
# start, its imports) died of it instead, a KeyboardInterrupt traceback in the engine's terminal; so it starts with
# SIGINT ignored, which Python then leaves ignored. So with the SIGTERM systemd's stop sends the engine's whole
# service: ignored from the start, the worker keeps it ignored and stops on ENGINE_STOP_SIGNAL (workers/main.py,
# stop_signal). The engine's loop (libuv) starts a process with every signal at its default, hence a shell in
# between, which ignores both and becomes the worker (exec: the same process). A Ctrl-C in the shell's first
# millisecond ends it without a word. Where there is no /bin/sh (a distroless image), a worker's first second keeps
# Python's handler, and SIGTERM stops it. SIGHUP too, which a closed terminal sends the engine's whole group: the
# engine takes it for a reload of its keys and serves on, and its workers died of it, to be started again (their
# model loaded again, their images made over)
_IGNORING_STOPS = ["/bin/sh", "-c", 'trap "" INT TERM HUP; exec "$0" "$@"'] if os.path.exists("/bin/sh") else []


def worker_command(config: WorkerConfig) -> list[str]:
    command = [
        *_IGNORING_STOPS,
        sys.executable,
        "-m",
        "engine.cli",
        "--log-level",
        config.log_level,
        "--log-format",
        config.log_format,
        "worker",
        "--connect",
        config.connect,
        "--worker-id",
        config.worker_id,
        "--backend",
        config.backend,
    ]
    if config.backend == "sim":  # the worker refuses it for a model backend, and a --device for sim
        command += ["--time-scale", str(config.time_scale), "--sim-latents", config.sim_latents]
    else:
        command += ["--device", config.device]
    if config.model and config.backend == "sdxl":  # the worker refuses it for the others, which read no model
        command.append(f"--model={config.model}")  # in one: argparse took a folder named -m for a flag
    if config.max_batch:
        command += ["--max-batch", str(config.max_batch)]
    if config.threads:
        command += ["--threads", str(config.threads)]
    if config.die_with_parent:
        command.append("--die-with-parent")
    return command


class LocalLauncher(SlotSupervisor):
    def __init__(
        self,
        config: LaunchConfig,
        connect: str,
        metrics: EngineMetrics,
        on_exit: Callable[[str, bool], None],
        curve: ClientKeys | None = None,
        embedder: str = "hash",
    ):
        threads = threads_each(config.count)
        self._slots = [config.worker_config(connect, slot, threads) for slot in range(config.count)]
        super().__init__(config, metrics, on_exit, [slot.worker_id for slot in self._slots])
        # a simulated worker models quality on the similarity table of the engine's embedder
        self._environment = {
            **environment_for_children(),
            SIM_SIMILARITY_TABLE_ENV: embedder,
            PARENT_PID_ENV: str(os.getpid()),
        }
        if curve is not None:
            self._environment[LOCAL_WORKER_KEYS_ENV] = curve.to_env()
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        # the processes this engine killed (silent, failing, or stuck before its hello), each said why as it did: their
        # exit is theirs to name, not a -9 that reads as the OOM killer's
        self._killed: set[asyncio.subprocess.Process] = set()
        self._last_reason: str | None = None  # why a worker last said it cannot serve, as logged

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for config in self._slots:
                group.create_task(self._supervise(config))

    def kill(self, worker_id: str) -> bool:
        """SIGKILLs the slot's process, which is then started again, unless it is ending already (its end then said as
        its own); False when no live process of ours has the id."""
        process = self._processes.get(worker_id)
        if process and process.returncode is None:
            self._kill(process)
            return True
        return False

    def _kill(self, process: asyncio.subprocess.Process) -> None:
        """SIGKILLs one of our processes, its exit then said to be the engine's doing, unless it is ending already.
        Its returncode is set only once the loop has handled its end: a worker killed from outside (the OOM killer)
        was often found gone first, its batch bounced or its beats unanswered, and its exit was said to be the
        engine's kill (19 of 64 kill -9s under load; none of 63 now)."""
        if ending(process.pid):
            return
        self._killed.add(process)
        process.send_signal(signal.SIGKILL)

    async def stop(self, timeout_s: float) -> None:
        """Signals every worker to stop, then SIGKILLs whatever is left after the timeout."""
        self._stopping = True
        live = {worker_id: p for worker_id, p in self._processes.items() if p.returncode is None}
        for process in live.values():
            process.send_signal(ENGINE_STOP_SIGNAL)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in live.values())), timeout_s)
        except TimeoutError:
            stuck = {worker_id: process for worker_id, process in live.items() if process.returncode is None}
            log_not_stopped("worker", {worker_id: process.pid for worker_id, process in stuck.items()}, timeout_s)
            for process in stuck.values():
                process.kill()
            await asyncio.gather(*(p.wait() for p in live.values()))

    def refusal(self, worker_id: str, pid: int) -> str | None:
        """Why a worker under a slot's id is not the slot's own process, or None. One started by hand under it took
        the id while the slot's process was down; the slot's next process was refused (the id in use), and its exit,
        taken for the namesake's, dropped the namesake as exited: at every restart, each second or so."""
        if worker_id not in self._backoff:
            return None  # not one of our slots
        process = self._processes.get(worker_id)
        if process is None or process.returncode is not None or process.pid != pid:
            return f"worker id {worker_id!r} is this engine's own local worker slot: give this worker another"
        return None

    async def _supervise(self, config: WorkerConfig) -> None:
        worker_id = config.worker_id
        backoff = self._backoff[worker_id]
        while not self._stopping:
            hello = self._starting(worker_id)
            try:
                process, reason = await self._spawn(config)
            except OSError as error:
                # fork or exec refused (EAGAIN under memory or pid pressure), or no file left for the reason's pipe
                # (EMFILE: the engine's clients hold them all): try again later. The pipe's error, raised before the
                # spawn was tried, ended the launcher's task group, and the engine with it, without a drain
                log.error("could not start worker %s: %s; retrying", worker_id, error)
                await self._restart_after(worker_id, backoff.after_exit())
                continue
            self._processes[worker_id] = process
            if self._stopping:  # started while stop() was signalling the others: it missed their signal
                process.send_signal(ENGINE_STOP_SIGNAL)
            where = on_device(config.device, config.backend == "sim")
            given_up = self._given_up(worker_id)  # its retry's one line is its end's
            level = logging.DEBUG if given_up else logging.INFO
            log.log(level, "started worker %s (pid %d, %s %s)", worker_id, process.pid, config.backend, where)
            exited = asyncio.ensure_future(process.wait())
            timeout_s = self._config.startup_timeout_s
            # a worker loading its model (minutes, for SD-XL from a slow disk) is capacity on its way, not missing
            with self._metrics.workers.labels("failed" if given_up else "starting").track_inprogress():
                started = await said_hello_or_ended(hello, exited, timeout_s)
            if not started and not self._stopping:
                # stuck loading its model or opening its device: no heartbeat watch covers it before its hello. The
                # flag named: a model that loads slower than that (SD-XL from a network disk) was killed and started
                # again for ever, by a line that named no way out
                log.error(
                    "worker %s (pid %d) said no hello within %g s (--startup-timeout); killing it",
                    worker_id,
                    process.pid,
                    timeout_s,
                )
                self._kill(process)
            code = await exited
            ended = "was killed by the engine (why is above)" if process in self._killed else how_it_ended(code)
            self._killed.discard(process)
            said = reason.reason()
            if self._stopping:
                return
            if said and said != self._last_reason:
                # once, not for every slot and start: each said the same, among their model loads' progress bars
                self._last_reason = said
                log.error("worker %s cannot serve as configured: %s", worker_id, said)
            await self._after_end(
                worker_id,
                code == CANNOT_SERVE_EXIT,
                giving_up=f"worker {worker_id} {how_it_ended(code)} before its hello {GIVE_UP_AFTER} times in a row: it"
                " cannot serve as configured (why is above); given up",
                restarting=f"worker {worker_id} (pid {process.pid}) {ended}; restarting",
            )

    async def _spawn(self, config: WorkerConfig) -> tuple[asyncio.subprocess.Process, ReasonPipe]:
        """A worker process for the slot, and the pipe it says on why it cannot serve; OSError if either is refused."""
        reason = ReasonPipe()
        try:
            process = await asyncio.create_subprocess_exec(
                *worker_command(config),
                stdin=asyncio.subprocess.DEVNULL,
                env={**self._environment, **reason.environment},
                pass_fds=(reason.fd,),
            )
        except BaseException:
            reason.close()
            raise
        reason.started()
        return process, reason
