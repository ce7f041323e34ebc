"""`argus bench chaos`: exactly-once replies while workers are killed and hung under sustained load.

A real `argus serve` runs as a subprocess with SIMULATED workers (`--backend sim`:
no model runs, a batch sleeps for a profiled latency scaled by `--time-scale`).
Open-loop Poisson load at a share of the cluster's capacity goes in over ZeroMQ
(one raw DEALER, so every reply on the wire is seen, duplicates included) and
HTTP, while every `--kill-every` seconds a worker that holds work is picked at
random and either killed (SIGKILL) or hung (SIGSTOP: it stays alive but silent;
the engine must notice by heartbeat timeout, then kill and restart it).

Every reply is counted per request id. After the load a drain period lets the
engine answer what it holds, then the socket is watched a while longer for late
duplicates. `lost` is a request with no terminal reply at the end; `duplicates`
is every terminal reply beyond the first for one id. Faults stop with the load.

The ledger, the two load doors and the RSS sampler are reused by
tests/test_chaos.py and tests/test_overload.py. Nothing heavy is imported at
module level: `argus` imports the bench modules at every start.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.commands.arg_types import (
    MAX_SIM_TIME_SCALE,
    UsageError,
    batch_size,
    between,
    heartbeat_timeout,
    non_negative_float,
    non_negative_int,
    output_file,
    positive_float,
    positive_int,
    probability,
    queue_size,
)
from engine.logs.plurals import counted
from engine.system.proc_reads import alive_child
from loadgen.arrivals import MAX_ARRIVALS, Schedule, poisson
from loadgen.bench.chaos_faults import Fault, inject_faults
from loadgen.bench.chaos_ledger import HttpDoor, Ledger, ZmqDoor
from loadgen.bench.engine_child import start_engine
from loadgen.bench.measured_seconds import measured_seconds
from loadgen.bench.output import cell, table, write_json
from loadgen.bench.process_watch import RssSampler, metrics_vs_clients, parse_metrics
from loadgen.bench.subprocesses import ended_by_sigterm, unwind_on_sigterm
from loadgen.stats import median


# -- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ChaosConfig:
    duration_s: float = 75.0  # seconds of load (faults happen during it)
    kill_every_s: float = 4.0  # one fault in every slot of this length
    min_kills: int = 10  # SIGKILLs at least (hangs come on top)
    hang_share: float = 1 / 3  # of the faults, this share are hangs (SIGSTOP), kills permitting
    workers: int = 4
    time_scale: float = 0.06  # sim: 0.06 x 5.1 s = about 0.31 s per 50-step image at batch 1
    max_batch: int = 1
    load: float = 0.75  # offered load as a share of the workers' capacity at batch 1
    http_share: float = 0.2  # of the requests, this share go over HTTP (the rest over ZeroMQ)
    heartbeat_timeout_s: float = 2.0
    max_queue: int = 1024
    size: int = 64
    drain_s: float = 90.0  # after the load, at most this long for the engine to answer what it holds
    dup_watch_s: float = 3.0  # then this long watching for late (duplicate) replies
    seed: int = 0

    @property
    def seconds_per_image(self) -> float:
        from controller.profiles import LatencyProfile

        # the sim backend's own profile (controller/data/sdxl_a100.json): an exact image at batch 1
        return self.time_scale * LatencyProfile.bundled("sdxl_a100").latency(0, 1)

    @property
    def capacity_rps(self) -> float:
        return self.workers / self.seconds_per_image

    @property
    def rate_rps(self) -> float:
        return self.load * self.capacity_rps

    def fault_plan(self) -> list[str]:
        """The faults in order: 'kill' or 'hang', one per slot, at least min_kills kills (kill_every_s 0: none)."""
        if self.kill_every_s <= 0:
            if self.min_kills > 0:
                raise ValueError("--kill-every 0 (no faults) needs --min-kills 0")
            return []
        slots = int(self.duration_s // self.kill_every_s)
        if slots > MAX_ARRIVALS:  # a list of them all: --duration 1e11 ended in a MemoryError traceback
            raise ValueError(
                f"--duration {self.duration_s:g} s with --kill-every {self.kill_every_s:g} s gives {slots:.3g} faults,"
                f" more than a plan may hold ({MAX_ARRIVALS:,})"
            )
        if slots < self.min_kills:
            raise ValueError(
                f"--duration {self.duration_s:g} s with --kill-every {self.kill_every_s:g} s gives {slots} faults,"
                f" fewer than --min-kills {self.min_kills}"
            )
        hangs = min(round(slots * self.hang_share), slots - self.min_kills)
        plan = ["hang"] * hangs + ["kill"] * (slots - hangs)
        random.Random(self.seed).shuffle(plan)
        return plan

    def arrivals(self) -> Schedule:
        """The load's arrivals; a ValueError when there would be more than a schedule may hold."""
        return poisson(self.rate_rps, seed=self.seed, duration_s=self.duration_s)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = ChaosConfig()
    parser.add_argument(
        "--duration",
        # a span as the other benches bound theirs: 1e300 was refused for the faults it planned, naming no flag
        type=measured_seconds(zero_allowed=False),
        default=d.duration_s,
        help=f"seconds of load, at most an hour (default {d.duration_s:g})",
    )
    parser.add_argument(
        "--kill-every",
        type=non_negative_float,
        default=d.kill_every_s,
        help=f"one fault every S seconds; 0: none, load only (default {d.kill_every_s:g})",
    )
    parser.add_argument(
        "--min-kills",
        type=non_negative_int,
        default=d.min_kills,
        help=f"SIGKILLs at least; hangs come on top (default {d.min_kills})",
    )
    # a share outside 0..1 made a plan of faults running long after the load (-1: 36 kills over 144 s)
    parser.add_argument(
        "--hang-share", type=probability, default=d.hang_share, help="share of the faults that are hangs (default 1/3)"
    )
    parser.add_argument(
        "--workers", type=positive_int, default=d.workers, help=f"simulated local workers (default {d.workers})"
    )
    parser.add_argument(
        "--time-scale",
        # past the engine's bound, its engine was started to refuse it, and the bench failed with exit 1
        type=between(float, 0, MAX_SIM_TIME_SCALE, "", "as the engine takes", least_allowed=False),
        default=d.time_scale,
        help=f"sim time scale (default {d.time_scale:g}: about {d.seconds_per_image:.2f} s per image)",
    )
    parser.add_argument(
        "--max-batch", type=batch_size, default=d.max_batch, help=f"largest batch (default {d.max_batch})"
    )
    parser.add_argument(
        "--load",
        type=positive_float,
        default=d.load,
        help=f"offered load, share of capacity at batch 1 (default {d.load:g})",
    )
    parser.add_argument(
        "--http-share",
        type=probability,
        default=d.http_share,
        help=f"share of requests over HTTP (default {d.http_share:g})",
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=heartbeat_timeout,  # the engine's bounds, refused before it starts
        default=d.heartbeat_timeout_s,
        help=f"the engine's --heartbeat-timeout (default {d.heartbeat_timeout_s:g})",
    )
    parser.add_argument(
        "--max-queue",
        type=queue_size,
        default=d.max_queue,
        help="the engine's --max-queue",
    )
    parser.add_argument("--drain", type=non_negative_float, default=d.drain_s, help="seconds to wait for answers")
    parser.add_argument(
        "--seed", type=non_negative_int, default=d.seed, help="seed of arrivals, doors and faults (default 0)"
    )


def config_from_args(args: argparse.Namespace) -> ChaosConfig:
    return ChaosConfig(
        duration_s=args.duration,
        kill_every_s=args.kill_every,
        min_kills=args.min_kills,
        hang_share=args.hang_share,
        workers=args.workers,
        time_scale=args.time_scale,
        max_batch=args.max_batch,
        load=args.load,
        http_share=args.http_share,
        heartbeat_timeout_s=args.heartbeat_timeout,
        max_queue=args.max_queue,
        drain_s=args.drain,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    import uvloop

    config = config_from_args(args)
    try:
        config.fault_plan()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        # drawn again once the engine is up: too many (--load 1e11) were a traceback there, after it started
        config.arrivals()
    except ValueError as exc:
        said = f"--load {config.load:g} ({config.rate_rps:.3g} req/s) for --duration {config.duration_s:g} s"
        raise UsageError(f"{said}: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="argus-bench-chaos-") as tmp:
        result = uvloop.run(measure(config, Path(tmp), progress=True))
    report(result)
    write_json(getattr(args, "json", None), result)
    # said, not only the exit code: a run that failed on the engine's exit or on too few kills printed a table that
    # looked like a pass. Said by argus, as a command's last words are, in its log's format (exit 1)
    if failed := failures(result, config):
        raise SystemExit(f"argus bench chaos: FAILED: {'; '.join(failed)}")
    return 0


def failures(result: dict, config: ChaosConfig) -> list[str]:
    """Why the run fails, in words; none when nothing was lost or answered twice, there were enough kills, every
    hang was found by the engine (an undetected one is a worker that stays stopped, holding its work, for good),
    the engine's own counts agree with what the clients saw, and it drained clean at the end (exit 0)."""
    found = []
    if result["lost"]:
        found.append(f"{counted(result['lost'], 'request')} lost")
    if result["duplicates"]:
        found.append(f"{counted(result['duplicates'], 'reply', 'replies')} beyond the first for a request")
    if result["kills"] < config.min_kills:
        found.append(f"{result['kills']} kills, fewer than --min-kills {config.min_kills}")
    if result["hangs_detected"] != result["hangs"]:
        found.append(f"{result['hangs'] - result['hangs_detected']} of {result['hangs']} hangs not found by the engine")
    if not result["metrics_vs_clients"]["match"]:
        found.append("the engine's argus_requests_total disagrees with the replies the clients saw")
    if result["engine_exit_code"] != 0:
        found.append(f"the engine exited with {result['engine_exit_code']}:\n{result.get('engine_log_tail', '')}")
    return found


# -- the run ---------------------------------------------------------------------------------------
async def measure(config: ChaosConfig, log_dir: Path, progress: bool = False) -> dict[str, Any]:
    """Starts the engine, runs load and faults, drains, stops the engine; returns the results."""
    import asyncio

    plan = config.fault_plan()
    engine = start_engine(
        log_dir,
        "--backend",
        "sim",
        "--time-scale",
        str(config.time_scale),
        "--max-batch",
        str(config.max_batch),
        "--heartbeat-timeout",
        str(config.heartbeat_timeout_s),
        "--max-queue",
        str(config.max_queue),
        workers=config.workers,
    )
    engine_pid = engine.child.process.pid
    try:
        await asyncio.to_thread(engine.wait_ready, config.workers)
        # an engine that dies is the run's failure, said at once: its load and drain would wait for nothing
        result = await engine.child.while_alive(_load_with_faults(config, plan, engine, engine_pid, progress))
    finally:
        code = await asyncio.to_thread(engine.stop)
    result["engine_exit_code"] = code
    if code != 0:
        result["engine_log_tail"] = engine.child.log_tail(3000)
    return result


async def _load_with_faults(config: ChaosConfig, plan: list[str], engine, engine_pid: int, progress: bool) -> dict:
    import asyncio

    ledger = Ledger()
    zmq_door = ZmqDoor(engine.client_address, ledger, config.size)
    http_door = HttpDoor(engine.http, ledger, config.size, timeout_s=config.duration_s + config.drain_s + 30.0)
    sampler = RssSampler(engine_pid)
    faults: list[Fault] = []
    arrivals = config.arrivals()
    doors = random.Random(config.seed + 1)
    say = print if progress else (lambda *a, **k: None)
    say(
        f"SIMULATED workers: {config.workers} x sim at --time-scale {config.time_scale:g} "
        f"(~{config.seconds_per_image:.2f} s/image), {len(arrivals)} requests at {config.rate_rps:.1f} req/s "
        f"({config.load:.0%} of {config.capacity_rps:.1f}), {len(plan)} faults over {config.duration_s:g} s ...",
        flush=True,
    )
    zmq_door.start()
    sampler.start()
    ready_counts: list[int] = []
    ready_sampler = asyncio.create_task(_sample_ready(http_door, ready_counts))
    started = time.perf_counter()
    chaos = asyncio.create_task(inject_faults(config, plan, engine_pid, http_door, faults, started, say))
    try:
        for arrival in arrivals:
            delay = started + arrival.offset_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if doors.random() < config.http_share:
                http_door.send()
            else:
                await zmq_door.send()
        await chaos
        load_s = time.perf_counter() - started
        ready_sampler.cancel()
        say(f"load done after {load_s:.1f} s; draining (at most {config.drain_s:g} s) ...", flush=True)
        drain_end = time.perf_counter() + config.drain_s
        while ledger.unanswered and time.perf_counter() < drain_end:
            await asyncio.sleep(0.1)
        drained_s = time.perf_counter() - started - load_s  # not the watch below: it said 3 s more than the drain took
        # late replies after every request had its first: a duplicate shows up here
        await asyncio.sleep(config.dup_watch_s)
        for fault in faults:
            if fault.action == "hang" and fault.gone_after_s is None and alive_child(fault.pid, engine_pid):
                os.kill(fault.pid, signal.SIGKILL)  # never detected: leave nothing stopped behind
        metrics = parse_metrics(await http_door.get_text("/metrics"))
        sampler.sample(time.perf_counter() - started)
        engine_peak = sampler.engine_peak_mb()
    finally:
        chaos.cancel()
        await asyncio.gather(chaos, return_exceptions=True)
        await sampler.stop()
        ready_sampler.cancel()
        await asyncio.gather(ready_sampler, return_exceptions=True)
        await zmq_door.close()
        await http_door.close()
    # an HTTP exchange that ended without a response has no reply recorded: it counts as lost
    summary = ledger.summary()
    kills = [f for f in faults if f.action == "kill"]
    hangs = [f for f in faults if f.action == "hang"]
    detected = [f.gone_after_s for f in hangs if f.gone_after_s is not None]
    rss = [mb for _, mb in sampler.samples]
    half = len(rss) // 2
    return {
        "sent": summary["sent"],
        "replies": summary["replies"],
        "lost": summary["lost"],
        "duplicates": summary["duplicates"],
        "kills": len(kills),
        "hangs": len(hangs),
        "p99_ms": summary["p99_ms"],
        "peak_rss_mb": None if engine_peak is None else round(engine_peak, 1),
        "simulated": True,
        "backend": "sim",
        "p50_ms": summary["p50_ms"],
        "max_ms": summary["max_ms"],
        "images_p99_ms": summary["images_p99_ms"],
        "busy_p99_ms": summary["busy_p99_ms"],
        "outcomes": summary["outcomes"],
        "errors": summary["errors"],
        "busy": summary["outcomes"].get("busy", 0),
        "by_door": summary["by_door"],
        "unexpected_replies": summary["unexpected_replies"],
        "undecodable_replies": summary["undecodable_replies"],
        "http_transport_errors": summary["http_transport_errors"],
        "http_busy_without_retry_after": summary["http_busy_without_retry_after"],
        "duplicate_ids": summary["duplicate_ids"],
        "hangs_detected": len(detected),
        "hang_detect_s": {
            "median": round(median(detected), 2) if detected else None,
            "max": round(max(detected), 2) if detected else None,
        },
        "workers_peak_rss_mb": round(sampler.worker_peak_mb, 1),
        # workers listed by /ready every 0.5 s during the load: what the faults left of the cluster
        "ready_workers": {
            "mean": round(sum(ready_counts) / len(ready_counts), 2) if ready_counts else None,
            "min": min(ready_counts) if ready_counts else None,
            "samples": len(ready_counts),
        },
        "engine_rss_mb": {
            "first": round(rss[0], 1) if rss else None,
            "last": round(rss[-1], 1) if rss else None,
            "max_first_half": round(max(rss[:half]), 1) if half else None,
            "max_second_half": round(max(rss[half:]), 1) if rss[half:] else None,
            "samples": len(rss),
        },
        "engine_metrics": _engine_figures(metrics),
        "metrics_vs_clients": metrics_vs_clients(metrics, summary),
        "load_s": round(load_s, 1),
        "drain_s": round(drained_s, 1),
        "config": {**asdict(config), "rate_rps": config.rate_rps, "capacity_rps": config.capacity_rps},
        "faults": [asdict(f) for f in faults],
    }


def _engine_figures(metrics: dict[str, dict[str, float]]) -> dict[str, Any]:
    def total(name: str) -> dict[str, int] | int:
        # counts, which the exposition writes as floats: a report said 'worker restarts 5.0'
        values = metrics.get(name, {})
        return int(values.get("", 0.0)) if set(values) <= {""} else {k: int(v) for k, v in values.items()}

    return {
        "worker_losses": total("argus_worker_losses_total"),
        "worker_restarts": total("argus_worker_restarts_total"),
        "redispatched_images": total("argus_redispatched_images_total"),
        "requests": total("argus_requests_total"),
        "queued_images_at_end": total("argus_queued_images"),
    }


async def _sample_ready(http, counts: list[int], every_s: float = 0.5) -> None:
    import asyncio

    while True:
        try:
            counts.append(len((await http.get_json("/ready")).get("workers", [])))
        except Exception:  # noqa: BLE001 - a failed probe is a missing sample, not a failed run
            pass
        await asyncio.sleep(every_s)


# -- output ------------------------------------------------------------------------------------------
def report(result: dict) -> None:
    c = result["config"]
    print()
    print(_heading(c))
    print(
        f"open-loop Poisson load {c['rate_rps']:.1f} req/s ({c['load']:.0%} of {c['capacity_rps']:.1f} req/s at"
        f" batch 1) for {c['duration_s']:g} s, {c['http_share']:.0%} over HTTP, --max-queue {c['max_queue']}; "
        + (
            f"one fault every {c['kill_every_s']:g} s (SIGKILL or SIGSTOP of a random worker holding work)"
            if c["kill_every_s"] > 0
            else "no faults"
        )
    )
    print()
    em = result["engine_metrics"]
    rows = [
        ["sent", result["sent"], "requests (zmq + http)"],
        ["replies", result["replies"], "terminal replies seen on the wire"],
        ["lost", result["lost"], "target 0"],
        ["duplicates", result["duplicates"], "target 0"],
        ["kills", result["kills"], "SIGKILL"],
        ["hangs", result["hangs"], f"SIGSTOP; {result['hangs_detected']} detected and killed by the engine"],
        [
            "hang detect s (median/max)",
            f"{cell(result['hang_detect_s']['median'])}/{cell(result['hang_detect_s']['max'])}",
            "",
        ],
        ["images", result["outcomes"].get("images", 0), ""],
        ["errors", sum(result["errors"].values()), _codes(result["errors"])],
        ["busy", result["busy"], "Busy / HTTP 429"],
        ["busy p99 ms", result["busy_p99_ms"], "send to Busy / 429"],
        ["p50 ms", result["p50_ms"], "send to reply, all replies"],
        ["p99 ms", result["p99_ms"], "send to reply, all replies"],
        ["max ms", result["max_ms"], ""],
        ["engine peak RSS MB", result["peak_rss_mb"], "VmHWM of the engine process"],
        ["worker peak RSS MB", result["workers_peak_rss_mb"], "largest VmHWM of any worker"],
        [
            "ready workers (mean/min)",
            f"{cell(result['ready_workers']['mean'])}/{cell(result['ready_workers']['min'])}",
            f"of {c['workers']}, sampled from /ready every 0.5 s",
        ],
        ["worker losses", _codes(em["worker_losses"]), "engine metric, by cause"],
        ["worker restarts", em["worker_restarts"], "engine metric"],
        ["redispatched images", em["redispatched_images"], "engine metric"],
        ["metrics match clients", result["metrics_vs_clients"]["match"], "argus_requests_total vs replies"],
    ]
    # through the table's cells: a figure with nothing to take it over is n/a (it said 'busy p99 ms None')
    print(table(["measure", "value", "note"], rows))
    print()
    keys = ("sent", "replies", "lost", "duplicates", "kills", "hangs", "p99_ms", "peak_rss_mb")
    print(json.dumps({k: result[k] for k in keys}))


def _heading(c: dict) -> str:
    """The first line of the report: what ran, with its workers counted in words ("1 workers" was said)."""
    return (
        f"argus bench chaos: SIMULATED workers (sim backend, --time-scale {c['time_scale']:g}, no model runs); "
        f"{counted(c['workers'], 'worker')}, max batch {c['max_batch']}, "
        f"--heartbeat-timeout {c['heartbeat_timeout_s']:g}"
    )


def _codes(values: dict | float) -> str:
    if not isinstance(values, dict):
        return str(values)
    return ", ".join(f"{k or '-'}: {int(v)}" for k, v in sorted(values.items())) or "none"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadgen.bench.chaos_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--json", metavar="FILE", type=output_file, help="write the results here as JSON")
    add_arguments(parser)
    args = parser.parse_args(argv)
    unwind_on_sigterm()
    try:
        return run(args)
    except UsageError as error:
        parser.error(str(error))
    except KeyboardInterrupt:
        if not ended_by_sigterm():
            raise
        return 128 + signal.SIGTERM


if __name__ == "__main__":
    raise SystemExit(main())
