"""`argus bench engine`: throughput and added latency of the whole engine, both front doors.

A real `argus serve` runs as a subprocess with SIMULATED workers at time scale 0
(`--backend sim --time-scale 0`: no model runs, a worker answers at once), so
what is measured is the engine itself: admission, dispatch, batching, the worker
links, and the replies. Each front door is compared, in the same run and with
the same client code, to a bare server answering messages of the same size:

- ZeroMQ: a closed-loop asyncio DEALER client with many requests in flight,
  against a bare pyzmq ROUTER that only decodes the request and encodes the reply.
- HTTP: an aiohttp client with a connection pool, against a bare aiohttp server
  whose handler parses the JSON body and returns a JSON body of the engine's size.

Baseline and engine measurements alternate round by round and medians are
reported. Latency is then measured open-loop at half the engine's measured peak.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import tempfile
import time
from pathlib import Path

from engine.commands.arg_types import UsageError, positive_int
from engine.logs.plurals import counted
from engine.system.proc_reads import local_workers_of, process_cpu_s
from loadgen.bench.engine_child import start_engine
from loadgen.bench.engine_load import (
    OPEN_LOOP_POOL,
    HttpLoad,
    first_reply,
    http_closed_loop,
    http_open_loop,
    zmq_closed_loop,
    zmq_open_loop,
)
from loadgen.bench.measured_seconds import measured_seconds
from loadgen.bench.output import table, write_json
from loadgen.bench.ports import LOOPBACK, free_port
from loadgen.bench.round_count import MAX_ROUNDS, round_count
from loadgen.bench.sim_flags import INSTANT_SIM_ENGINE, sim_image_side
from loadgen.bench.subprocesses import python_module, spawn, wait_http
from loadgen.stats import median, p99_caveat

# descriptors the bench holds besides its HTTP connections: stdio, the event loop, its children's pipes and logs
OWN_FILES = 64
TARGETS = {"zmq": 0.3, "http": 0.5}
P99_TARGET_MS = 5.0
DEFAULT_CONCURRENCY = {"zmq": 128, "http": 32}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration-s",
        type=measured_seconds(zero_allowed=False),
        default=2.0,
        help="seconds of each closed-loop (peak) measurement (default 2)",
    )
    parser.add_argument(
        "--rounds",
        type=round_count,
        default=3,
        help=f"alternating baseline/engine peak measurements per door (default 3, at most {MAX_ROUNDS:,})",
    )
    parser.add_argument(
        "--latency-s",
        type=measured_seconds(zero_allowed=False),
        default=4.0,
        help="seconds of the open-loop latency run at half the peak (default 4)",
    )
    parser.add_argument(
        "--warmup-s", type=measured_seconds(zero_allowed=True), default=0.5, help="unmeasured lead-in of every run"
    )
    # no default here, so that one given for a door not measured is told from one left out
    parser.add_argument(
        "--concurrency", type=positive_int, help=f"ZeroMQ requests in flight (default {DEFAULT_CONCURRENCY['zmq']})"
    )
    parser.add_argument(
        "--http-concurrency",
        type=positive_int,
        help=f"HTTP requests in flight, one pooled connection each (default {DEFAULT_CONCURRENCY['http']})",
    )
    parser.add_argument("--workers", type=positive_int, default=2, help="simulated local workers (default 2)")
    parser.add_argument("--size", type=sim_image_side, default=64, help="image side asked for (default 64)")
    parser.add_argument("--doors", default="zmq,http", help="front doors to measure (default zmq,http)")


def run(args: argparse.Namespace) -> int:
    import uvloop

    doors = [d.strip() for d in args.doors.split(",") if d.strip()]
    # a door named twice was measured twice, the second's figures printed in both rows
    if set(doors) - set(TARGETS) or not doors or len(set(doors)) < len(doors):
        raise UsageError(f"--doors takes zmq and/or http, each once, not {args.doors!r}")
    for flag, door, given in (
        ("--concurrency", "zmq", args.concurrency),
        ("--http-concurrency", "http", args.http_concurrency),
    ):
        if given is not None and door not in doors:
            # taken and never used: `--doors http --concurrency 256` measured HTTP at its default 32 in flight
            raise UsageError(f"{flag} is the {door} door's load, and --doors {args.doors} measures no {door}: drop it")
    args.concurrency = args.concurrency or DEFAULT_CONCURRENCY["zmq"]
    args.http_concurrency = args.http_concurrency or DEFAULT_CONCURRENCY["http"]
    if "http" in doors:
        _allow_http_connections(args.http_concurrency)
    with tempfile.TemporaryDirectory(prefix="argus-bench-engine-") as tmp:
        results = uvloop.run(_measure(args, doors, Path(tmp)))
    _report(args, doors, results)
    return 0


def _allow_http_connections(concurrency: int) -> None:
    """Raises the soft limit on open files to a descriptor per connection, the client's and the baseline server's
    (a child: it inherits the limit; the engine raises its own), or refuses a load the hard limit cannot hold. Under a
    shell's usual soft limit of 1,024, --http-concurrency 1500 ended in a `Too many open files` traceback."""
    import resource

    from protocols.sockets import allow_open_files

    needed = max(concurrency, OPEN_LOOP_POOL) + OWN_FILES
    if not allow_open_files(needed):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        raise UsageError(
            f"--http-concurrency {concurrency} needs about {needed} open files, a connection each and the bench's"
            f" own, and this process may hold at most {hard} (ulimit -Hn): raise that, or give a smaller one"
        )


# -- the run -----------------------------------------------------------------------------
async def _measure(args: argparse.Namespace, doors: list[str], tmp: Path) -> dict:
    print(f"starting `argus serve --backend sim --time-scale 0 --workers {args.workers}` ...", flush=True)
    engine = start_engine(tmp, *INSTANT_SIM_ENGINE, workers=args.workers)
    baselines = []
    results: dict = {}
    try:
        status = await _in_thread(engine.wait_ready, args.workers)
        results["workers"] = status["workers"]
        for door in doors:
            measure = _zmq_door if door == "zmq" else _http_door
            results[door] = await measure(args, engine, tmp, baselines)
    finally:
        for child in baselines:
            child.stop(timeout_s=5.0)
        engine.stop_warning_on_failure()
    return results


async def _in_thread(fn, *a):
    import asyncio

    return await asyncio.to_thread(fn, *a)


async def _zmq_door(args, engine, tmp: Path, baselines: list) -> dict:
    from protocols.client_messages import Images

    # one engine reply, to size the baseline's answers like it
    reply, frames = await first_reply(engine.client_address, args.size)
    if not isinstance(reply, Images):
        raise RuntimeError(f"the engine answered {reply}")
    image = reply.images[0]
    reply_bytes = sum(len(f.buffer) for f in frames)
    address = f"tcp://{LOOPBACK}:{free_port()}"
    baseline = spawn(
        python_module(
            "loadgen.bench.baselines",
            "zmq-echo",
            "--bind",
            address,
            "--image-bytes",
            str(len(image.image)),
            "--worker-name",
            image.worker,
        ),
        tmp,
        "zmq-baseline",
    )
    baselines.append(baseline)
    await _wait_log(baseline, "ready")
    result = await _door(
        args,
        engine,
        baseline,
        door="ZeroMQ",
        load=f"{args.concurrency} in flight (reply {reply_bytes} bytes)",
        engine_target=engine.client_address,
        baseline_target=address,
        closed_loop=zmq_closed_loop,
        open_loop=zmq_open_loop,
    )
    result["reply_bytes"] = reply_bytes
    result["concurrency"] = args.concurrency
    return result


async def _http_door(args, engine, tmp: Path, baselines: list) -> dict:
    client = HttpLoad(engine.http, args.size, 1)
    try:
        status, _, body = await client.post()
    finally:
        await client.close()
    if status != 200:
        raise RuntimeError(f"the engine answered HTTP {status}: {body[:500]!r}")
    template = tmp / "http-response.json"
    template.write_bytes(body)
    port = free_port()
    baseline = spawn(
        python_module("loadgen.bench.baselines", "http-echo", "--port", str(port), "--template", str(template)),
        tmp,
        "http-baseline",
    )
    baselines.append(baseline)
    url = f"http://{LOOPBACK}:{port}"
    await _in_thread(wait_http, baseline, url + "/health")
    result = await _door(
        args,
        engine,
        baseline,
        door="HTTP",
        load=f"{args.http_concurrency} connections (response {len(body)} bytes)",
        engine_target=engine.http,
        baseline_target=url,
        closed_loop=http_closed_loop,
        open_loop=http_open_loop,
    )
    result["response_bytes"] = len(body)
    result["concurrency"] = args.http_concurrency
    return result


async def _door(
    args,
    engine,
    baseline,
    *,
    door: str,
    load: str,
    engine_target: str,
    baseline_target: str,
    closed_loop,
    open_loop,
) -> dict:
    """One front door, engine against baseline: peak rates by alternating closed-loop rounds, then open-loop
    latency at half the engine's peak; `closed_loop` and `open_loop` are engine_load's clients for this door."""
    print(f"{door}: {counted(args.rounds, 'round')} of {args.duration_s:g} s closed loop, {load} ...", flush=True)

    def peak(target: str):
        return closed_loop(target, args, args.duration_s)

    async def latency(target: str, rate: float):
        return await open_loop(target, args, rate, args.latency_s)

    engine_pid = engine.child.process.pid
    processes = {
        "engine": [engine_pid],
        "workers": local_workers_of(engine_pid),
        "baseline": [baseline.process.pid],
    }

    async def measured(run, name: str, *a) -> dict:
        """Runs one measurement; adds the CPU its server processes used per request (microseconds)."""
        watched = ["engine", "workers"] if name == "engine" else ["baseline"]
        before = {w: sum(process_cpu_s(pid) for pid in processes[w]) for w in watched}
        # a server that dies fails the run at once, naming its exit: its clients waited NO_REPLY_S, then said only
        # that it stopped answering
        server = engine.child if name == "engine" else baseline
        with _no_gc():
            result = await server.while_alive(run(*a))
        if result["not_images"]:  # an error's latency or rate is not the engine's at serving images
            raise RuntimeError(f"{name}: {result['not_images']} replies were not images")
        for w in watched:
            used = sum(process_cpu_s(pid) for pid in processes[w]) - before[w]
            result[f"{w}_cpu_us_per_request"] = used / max(1, result["total"]) * 1e6
        return result

    runs: dict[str, list[dict]] = {"engine": [], "baseline": []}
    for r in range(args.rounds):
        # alternate which goes first, so drift on the machine falls on both alike
        order = [("baseline", baseline_target), ("engine", engine_target)]
        for name, target in order if r % 2 == 0 else order[::-1]:
            runs[name].append(await measured(peak, name, target))
        baseline.check_alive()
    engine_rps = median([x["rps"] for x in runs["engine"]])
    baseline_rps = median([x["rps"] for x in runs["baseline"]])
    if not engine_rps or not baseline_rps:
        # no ratio to take, and no half-peak rate to pace the latency run at: it ended in a ZeroDivisionError
        raise RuntimeError(
            f"{door}: a closed-loop run counted no reply in its measured {args.duration_s:g} s (engine"
            f" {engine_rps:g}, baseline {baseline_rps:g} req/s, medians): give a longer --duration-s"
        )
    rate = engine_rps / 2.0
    print(
        f"  peak: engine {engine_rps:,.0f} req/s, baseline {baseline_rps:,.0f} req/s; "
        f"latency at {rate:,.0f} req/s for {args.latency_s:g} s ...",
        flush=True,
    )
    engine_latency = await measured(latency, "engine", engine_target, rate)
    baseline_latency = await measured(latency, "baseline", baseline_target, rate)
    return {
        "engine_rps": engine_rps,
        "baseline_rps": baseline_rps,
        "ratio": engine_rps / baseline_rps,
        "engine_p99_ms": engine_latency["p99_ms"],
        "engine_p50_ms": engine_latency["p50_ms"],
        "baseline_p99_ms": baseline_latency["p99_ms"],
        "baseline_p50_ms": baseline_latency["p50_ms"],
        "latency_rate_rps": rate,
        # server CPU per request at peak (medians): steadier than req/s on a shared machine
        "engine_cpu_us_per_request": median([x["engine_cpu_us_per_request"] for x in runs["engine"]]),
        "workers_cpu_us_per_request": median([x["workers_cpu_us_per_request"] for x in runs["engine"]]),
        "baseline_cpu_us_per_request": median([x["baseline_cpu_us_per_request"] for x in runs["baseline"]]),
        "engine_rps_runs": [x["rps"] for x in runs["engine"]],
        "baseline_rps_runs": [x["rps"] for x in runs["baseline"]],
        "engine_latency": engine_latency,
        "baseline_latency": baseline_latency,
    }


@contextlib.contextmanager
def _no_gc():
    """No collector pauses in the load client while it measures (it collects between runs).

    A full collection in the client stalls every request in flight for milliseconds,
    which would show up as server latency, engine and baseline alike.
    """
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()
        gc.collect()


async def _wait_log(child, word: str, timeout_s: float = 30.0) -> None:
    import asyncio

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        child.check_alive()
        if word in child.log_tail():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{child.name} did not start:\n{child.log_tail()}")


def _report(args: argparse.Namespace, doors: list[str], results: dict) -> None:
    print()
    print("argus bench engine: the whole engine with SIMULATED workers (sim backend, --time-scale 0: no model")
    print(
        f"runs); {counted(args.workers, 'worker')}, {args.size}x{args.size} images; baselines are bare servers"
        " measured in the same run with the same client"
    )
    print(
        f"peak: median of {counted(args.rounds, f'alternating {args.duration_s:g} s closed-loop run')}; latency:"
        f" open loop for {args.latency_s:g} s at half the engine's peak, end to end from the client"
    )
    print()
    rows = []
    for door in doors:
        r = results[door]
        rows.append(
            [
                door,
                r["engine_rps"],
                r["baseline_rps"],
                r["ratio"],
                f">= {TARGETS[door]}",
                r["latency_rate_rps"],
                r["engine_p50_ms"],
                r["engine_p99_ms"],
                r["baseline_p99_ms"],
                f"< {P99_TARGET_MS:g}",
            ]
        )
    print(
        table(
            [
                "door",
                "engine req/s",
                "baseline req/s",
                "ratio",
                "target",
                "at req/s",
                "engine p50 ms",
                "engine p99 ms",
                "baseline p99 ms",
                "p99 target",
            ],
            rows,
        )
    )
    lateness = ", ".join(
        f"{door} {results[door]['engine_latency']['send_late_p99_ms']:.3g} ms (baseline"
        f" {results[door]['baseline_latency']['send_late_p99_ms']:.3g} ms)"
        for door in doors
    )
    print(f"the client's send lateness at the latency rate, p99 (latency is timed from the send): {lateness}")
    for door in doors:
        if caveat := p99_caveat(results[door]["engine_latency"]["requests"]):
            print(f"note: {door}: the engine's {caveat}; a longer --latency-s gives a tail figure")
    print()
    print("server CPU per request (microseconds; steadier than req/s when other load shares the machine):")
    print(
        table(
            [
                "door",
                "engine at peak",
                "its sim workers",
                "baseline at peak",
                "engine at latency rate",
                "workers at latency rate",
            ],
            [
                [
                    door,
                    results[door]["engine_cpu_us_per_request"],
                    results[door]["workers_cpu_us_per_request"],
                    results[door]["baseline_cpu_us_per_request"],
                    results[door]["engine_latency"]["engine_cpu_us_per_request"],
                    results[door]["engine_latency"]["workers_cpu_us_per_request"],
                ]
                for door in doors
            ],
        )
    )
    data: dict = {door: results[door] for door in doors}
    data.update(
        {
            "simulated": True,
            "backend": "sim",
            "time_scale": 0.0,
            "workers": args.workers,
            "size": args.size,
            "rounds": args.rounds,
            "duration_s": args.duration_s,
            "latency_s": args.latency_s,
        }
    )
    write_json(args.json, data)
