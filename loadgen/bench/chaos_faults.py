"""The faults of `argus bench chaos`: a worker that holds work, picked at random from the engine's /ready, killed
(SIGKILL) or hung (SIGSTOP: alive but silent, for the engine to find by heartbeat timeout, then kill and restart)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.system.proc_reads import alive_child

if TYPE_CHECKING:
    from loadgen.bench.chaos_bench import ChaosConfig


@dataclass
class Fault:
    at_s: float
    action: str  # kill or hang
    pid: int
    worker: str
    load: int
    gone_after_s: float | None = None  # hang: SIGSTOP until the engine had killed the process


async def inject_faults(
    config: ChaosConfig, plan: list[str], engine_pid: int, http, faults: list[Fault], started: float, say
) -> None:
    """One fault per slot of kill_every_s, at a random point in the slot's middle half; each one done is added to
    `faults`, a hang's once the engine has killed the stopped worker."""
    rng = random.Random(config.seed + 2)
    stopped: set[int] = set()
    watchers: list[asyncio.Task] = []
    try:
        for slot, action in enumerate(plan):
            at = started + (slot + rng.uniform(0.25, 0.75)) * config.kill_every_s
            slot_end = started + (slot + 1) * config.kill_every_s
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            victim = None
            while victim is None and time.perf_counter() < slot_end:
                victim = await _pick_victim(http, engine_pid, stopped, rng)
                if victim is None:
                    await asyncio.sleep(0.1)  # every worker is down or restarting
            if victim is None:
                say(f"  slot {slot}: no live worker to {action}; skipped", flush=True)
                continue
            fault = Fault(
                round(time.perf_counter() - started, 2), action, victim["pid"], victim["name"], victim["load"]
            )
            if not alive_child(fault.pid, engine_pid):
                say(f"  slot {slot}: {fault.worker} exited before its {action}; skipped", flush=True)
                continue
            if action == "kill":
                os.kill(fault.pid, signal.SIGKILL)
            else:
                os.kill(fault.pid, signal.SIGSTOP)
                stopped.add(fault.pid)
                watchers.append(asyncio.create_task(_watch_hang(fault, engine_pid, config)))
            faults.append(fault)
            say(f"  {fault.at_s:6.1f} s  {action:4s} {fault.worker} (pid {fault.pid}, load {fault.load})", flush=True)
        # the last hang's detection is part of the run
        await asyncio.gather(*watchers)
    finally:
        for task in watchers:
            task.cancel()


async def _pick_victim(http, engine_pid: int, stopped: set[int], rng: random.Random) -> dict | None:
    try:
        status = await http.get_json("/ready")
    except Exception:  # noqa: BLE001 - a failed probe just means: try again
        return None
    live = [w for w in status.get("workers", []) if w["pid"] not in stopped and alive_child(w["pid"], engine_pid)]
    busy = [w for w in live if w["load"] > 0]
    pool = busy or live
    return rng.choice(pool) if pool else None


async def _watch_hang(fault: Fault, engine_pid: int, config: ChaosConfig) -> None:
    """Waits for the engine to kill the stopped worker (heartbeat timeout), bounded."""
    stopped_at = time.perf_counter()
    limit = stopped_at + config.heartbeat_timeout_s * 4 + 10.0
    while time.perf_counter() < limit:
        if not alive_child(fault.pid, engine_pid):
            fault.gone_after_s = round(time.perf_counter() - stopped_at, 2)
            return
        await asyncio.sleep(0.05)
