"""`argus bench checkpoint`: how long requests wait on the prompt cache while the engine checkpoints it.

A cache of `--cache-mib` MiB of SD-XL latents (4 x 128 x 128 float16, five
levels a prompt, in a 1024x1024 shape) is saved to a fresh `--cache-dir`
first, under the name of the sim model that passes SD-XL's latents, so a real
`argus serve --backend sim --sim-latents sdxl` (one worker, `--time-scale 0`:
an image costs no time) restores it at start. The default sim model's workers
take 4 x 2 x 2 placeholders, and its engine restores only those: 1 GiB of them
would be 6.7 million prompts of 160 bytes, whose 4 KiB embeddings alone come to
27 GiB, a cache no SD-XL engine holds. Once it is restored, requests go in
over ZeroMQ at `--rate` a second for `--duration` seconds, open loop (each sent
on time, whatever the others wait), each a new 64x64 prompt: a miss whose
latents (4 x 8 x 8) the engine inserts, so the cache changes and every
`--interval` the checkpoint writes the whole file again.

A request's time is from its send to its reply. The engine's log gives each
checkpoint's end and length, so requests are split into those sent while a
checkpoint ran and the rest; the table compares the two. Before checkpoints
were written off the cache thread, every lookup waited for the whole save.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from engine.commands.arg_types import UsageError, between, host_memory_bytes, positive_float, positive_int
from loadgen.bench.engine_child import start_engine
from loadgen.bench.measured_seconds import measured_seconds
from loadgen.bench.output import table, write_json
from loadgen.cancelling import cancel_and_wait
from loadgen.stats import percentile

SDXL_LATENT = (4, 128, 128)  # float16: 128 KiB
LEVELS = (5, 10, 15, 20, 25)
# the engine's INFO line for each checkpoint (engine/cache/service.py), with the log's own time stamp; the share
# on the cache thread is logged since the save was moved off it
_CHECKPOINT_LINE = re.compile(
    r"^(\S+ \S+) INFO .*prompt cache checkpointed to .* in ([\d.]+) s(?: \(([\d.]+) s of it on the cache thread)?"
)

# the engine's INFO line once the saved cache is read (engine/cache/cache_dir.py)
_RESTORED_LINE = re.compile(r"prompt cache restored from .*: ([\d,]+) prompts?$", re.MULTILINE)

# the highest --rate: each probe is a task and a request until answered, and the engine admits 1,024 images (its
# default --max-queue) before it answers Busy, which fails the run; at 2,000 a second its queue filled within 3 s on a
# 2-core machine, at 1,000 it kept up. Unbounded, 1e11 created tasks as fast as the loop could
MAX_RATE = 1000.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-mib",
        type=positive_int,
        default=1024,
        help="SD-XL latents cached, MiB: at most this host's memory, and half the temporary folder's free space"
        " (default 1024)",
    )
    parser.add_argument("--interval", type=positive_float, default=5.0, help="--cache-save-interval (default 5 s)")
    parser.add_argument(
        "--duration", type=measured_seconds(zero_allowed=False), default=30.0, help="seconds of load (default 30)"
    )
    parser.add_argument(
        "--rate",
        type=between(
            float,
            0,
            MAX_RATE,
            " requests a second",
            "the engine's default queue fills past it, and the run fails",
            least_allowed=False,
        ),
        default=20.0,
        help=f"requests a second, at most {MAX_RATE:,g} (default 20)",
    )


def run(args: argparse.Namespace) -> int:
    if int(args.rate * args.duration) < 1:  # it built and restored a cache, sent nothing, and printed a table of none
        raise UsageError(f"--rate {args.rate:g} for --duration {args.duration:g} s sends no request")
    _check_room(args.cache_mib << 20, tempfile.gettempdir())
    with tempfile.TemporaryDirectory(prefix="argus-checkpoint-") as work:
        work = Path(work)
        cache_dir = work / "cache"
        prompts = _save_a_cache(cache_dir, args.cache_mib << 20)
        print("starting an engine (sim backend) to restore it ...", flush=True)
        engine = start_engine(
            work,
            "--backend",
            "sim",
            "--time-scale",
            "0",
            "--sim-latents",
            "sdxl",
            "--cache-dir",
            str(cache_dir),
            "--cache-bytes",
            str((args.cache_mib + 64) << 20),  # room for the probes' latents beside the restored ones
            "--cache-save-interval",
            str(args.interval),
            workers=1,
            log_level="INFO",
        )
        try:
            _wait_restored(engine)
            restored = _check_restored(engine.child.log_path.read_text(errors="replace"), prompts)
            print(
                f"restored {restored:,} prompts; a new prompt {args.rate:g} times a second for {args.duration:g} s ...",
                flush=True,
            )
            # an engine that dies fails the run at once, saying so: its probes waited 2 minutes for replies, then
            # failed with a bare TimeoutError
            sent = asyncio.run(engine.child.while_alive(_probe(engine.client_address, args.rate, args.duration)))
        finally:
            engine.stop_warning_on_failure()
        checkpoints = _checkpoints(engine.child.log_path.read_text())
    during = [latency for at, latency in sent if any(c.start <= at < c.end for c in checkpoints)]
    outside = [latency for at, latency in sent if not any(c.start <= at < c.end for c in checkpoints)]
    rows = [_row(name, values) for name, values in (("during a checkpoint", during), ("outside", outside))]
    print("argus bench checkpoint: a real engine with a SIMULATED worker (sim backend, --sim-latents sdxl,")
    print("--time-scale 0: an image costs no time, what is timed is the engine's)")
    print(f"{prompts} prompts, {args.cache_mib} MiB of SD-XL latents; checkpoints, s (on the cache thread):", end=" ")
    print(", ".join(f"{c.length_s:.3f} ({c.on_cache_thread_s})" for c in checkpoints) or "none")
    print(table(["requests sent", "count", "p50 ms", "p99 ms", "max ms"], rows))
    write_json(
        args.json,
        {
            "simulated": True,  # as bench engine's: a sim worker at time scale 0
            "backend": "sim",
            "sim_latents": "sdxl",
            "cache_mib": args.cache_mib,
            "prompts": prompts,
            "restored_prompts": restored,
            "checkpoint_s": [c.length_s for c in checkpoints],
            "on_cache_thread_s": [c.on_cache_thread_s for c in checkpoints],
            "during": _summary(during),
            "outside": _summary(outside),
        },
    )
    return 0


def _check_room(cache_bytes: int, temporary: str) -> None:
    """Refuses a cache the run cannot hold, before it is built (at about 4 s a GiB): it is held in memory whole, in
    this process as it is built, then in the engine that restores it; its file is written in `temporary`, and a
    checkpoint writes the next one beside it before replacing it. 100,000 MiB ran silently for minutes."""
    memory = host_memory_bytes()
    if memory is not None and cache_bytes > memory:
        raise UsageError(
            f"--cache-mib {cache_bytes >> 20:,} is more than this host's memory ({memory >> 20:,} MiB):"
            " the cache is held in memory whole"
        )
    free = shutil.disk_usage(temporary).free
    if 2 * cache_bytes > free:
        raise UsageError(
            f"--cache-mib {cache_bytes >> 20:,}: {temporary} has {free >> 20:,} MiB free, and a checkpoint writes"
            " the cache's file there beside the last one"
        )


def _save_a_cache(directory: Path, cache_bytes: int) -> int:
    """Saves `cache_bytes` of SD-XL latents as the engine of sim workers passing them names its model; returns the
    prompts."""
    import numpy as np
    from tqdm import tqdm

    from controller.profiles import LatencyProfile
    from engine.cache.embedders import HashEmbedder
    from engine.cache.prompt_cache import PromptCache, ShapeKey, prompt_bytes
    from workers.model_id import SIM_PROFILE, sim_model_id

    latent = np.random.default_rng(0).standard_normal(SDXL_LATENT).astype(np.float16)
    embedder = HashEmbedder()
    # as many as the budget holds, their latents, texts and vectors (each text's bytes counted as the longest's)
    longest = f"a saved prompt, number {cache_bytes}"
    prompts = cache_bytes // (len(LEVELS) * latent.nbytes + prompt_bytes(longest, embedder.dim, len(LEVELS)))
    model = sim_model_id(LatencyProfile.bundled(SIM_PROFILE), "sdxl")
    cache = PromptCache("hash", embedder.dim, LEVELS, max_bytes=cache_bytes, model=model)
    texts = [f"a saved prompt, number {i}" for i in range(prompts)]
    shape = ShapeKey(50, 1024, 1024)
    print(
        f"building a cache of {cache_bytes >> 20:,} MiB: {prompts:,} prompts x {len(LEVELS)} SD-XL latents ...",
        flush=True,
    )
    vectors = embedder.embed(texts)
    # a bar on a terminal only (disable=None): a log or a pipe gets the lines around it
    for text, vector in tqdm(zip(texts, vectors, strict=True), total=prompts, unit="prompt", disable=None):
        cache.insert(text, vector, shape, dict.fromkeys(LEVELS, latent))
    print(f"saving it to {directory} ...", flush=True)
    directory.mkdir()
    cache.save(str(directory))
    cache.close()
    return prompts


def _wait_restored(engine, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = engine.wait_ready(1)
        if not status["cache_restoring"]:
            return
        time.sleep(0.2)
    raise TimeoutError(f"the saved cache was not restored in {timeout_s:g} s:\n{engine.child.log_tail()}")


def _check_restored(log: str, saved: int) -> int:
    """Refuses a run whose engine restored less than the cache saved for it: its checkpoints were of what the engine
    held, a cache of kilobytes, while the table said 1,024 MiB (from 8ddb067, until the bench ran its sim workers
    with SD-XL's latents, its engine left out every saved latent, of a shape its workers did not take, and the bench
    reported checkpoints of 0.01 to 0.3 s)."""
    found = _RESTORED_LINE.search(log)
    restored = int(found[1].replace(",", "")) if found else 0
    if restored < saved:
        why = [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line]
        raise RuntimeError(
            f"the engine restored {restored:,} of the {saved:,} prompts saved for it, so its checkpoints would not be"
            " of the cache this bench builds:\n" + "\n".join(why[-5:])
        )
    return restored


async def _probe(address: str, rate: float, duration_s: float) -> list[tuple[float, float]]:
    """(wall-clock time sent, milliseconds to the reply) of each request, sent open loop."""
    from engine.client import AsyncArgusClient
    from protocols.client_messages import Images

    client = AsyncArgusClient(address)

    async def one(i: int) -> tuple[float, float]:
        at, started = time.time(), time.perf_counter()
        reply = await asyncio.wait_for(client.generate(f"probe {i}: a fox in the snow", width=64, height=64), 120)
        if not isinstance(reply, Images):
            raise RuntimeError(f"probe {i} was answered {reply}")
        return at, (time.perf_counter() - started) * 1000

    tasks: list[asyncio.Task] = []
    try:
        start = time.perf_counter()
        for i in range(int(rate * duration_s)):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i)))
        return list(await asyncio.gather(*tasks))
    finally:
        # cancelled as its engine died (Child.while_alive) while it still sent, the probes in flight failed on the
        # closed client unheard, and asyncio printed each one's traceback under the line that said the engine died
        await cancel_and_wait(tasks)
        await client.close()


class Checkpoint(NamedTuple):
    """One checkpoint the engine logged: its end in wall-clock seconds, its length and its seconds on the cache
    thread (None: all of it, as the engine logged before the save was moved off that thread), as logged."""

    end: float
    length_s: float
    on_cache_thread_s: float | None

    @property
    def start(self) -> float:
        return self.end - self.length_s


def _checkpoints(log: str) -> list[Checkpoint]:
    found = []
    for line in log.splitlines():
        if match := _CHECKPOINT_LINE.match(line):
            end = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            found.append(Checkpoint(end, float(match[2]), float(match[3]) if match[3] else None))
    return found


def _summary(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    p50, p99 = percentile(values, 50), percentile(values, 99)
    return {"count": len(values), "p50_ms": p50, "p99_ms": p99, "max_ms": max(values)}


def _row(name: str, values: list[float]) -> list:
    summary = _summary(values)
    return [name, summary["count"], *(summary.get(k, "") for k in ("p50_ms", "p99_ms", "max_ms"))]
