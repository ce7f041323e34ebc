"""`argus bench worker`: seconds per image by cache level K through a real worker process,
and the worker's overhead against the same diffusers pipeline called directly.

The worker (`argus worker --backend tiny`) is a subprocess driven over a ROUTER
socket the way the engine drives it: Hello -> Welcome, then Generate batches
answered by a BatchDone. A K=0 run hands back the latents at each cache level; the
level-K runs resume from them. The baseline is the same tiny SD-XL pipeline
(same weights, prompt, steps, size, seed, guidance and torch thread count)
called in this process. Worker and direct runs alternate, never overlap, and
medians are reported, so the noise of a shared machine falls on both alike.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from engine.commands.arg_types import (
    UsageError,
    between,
    comma_separated,
    non_negative_float,
    positive_int,
    step_count,
    thread_count,
)
from engine.config import DEFAULT_LOCAL_WORKERS
from engine.logs.plurals import counted
from loadgen.bench.output import table, write_json
from loadgen.bench.round_count import MAX_ROUNDS, round_count
from loadgen.stats import median
from protocols.limits import MAX_SEED
from workers.config import threads_each
from workers.limits import BACKEND_SIZES, DEFAULT_LEVELS

PROMPT = "a lighthouse on a cliff at dusk, highly detailed oil painting"
NEIGHBOUR_PROMPT = "a lighthouse on a cliff at night, highly detailed oil painting"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # the engine's bounds: past them the worker was sent them all the same, once its model was built, and the bench
    # ended in a traceback (--steps 1e11 the worker's MemoryError, a --seed past 2**64 the codec's OverflowError)
    parser.add_argument("--steps", type=step_count, default=50, help="denoising steps N (default 50)")
    parser.add_argument(
        "--levels",
        type=comma_separated(positive_int),
        default="10,25",
        help=f"cache levels K to resume from, comma separated, of the worker's {','.join(map(str, DEFAULT_LEVELS))}",
    )
    parser.add_argument(
        "--repeats",
        type=round_count,
        default=20,
        help=f"measurements of each kind (default 20, at most {MAX_ROUNDS:,})",
    )
    parser.add_argument("--size", type=positive_int, default=64, help="image side in pixels (default 64)")
    parser.add_argument(
        "--threads",
        type=thread_count,
        default=threads_each(DEFAULT_LOCAL_WORKERS),
        help="torch threads, worker and direct alike (default: half the CPUs this process may run on, at most"
        " $OMP_NUM_THREADS, what `argus serve` gives each of its 2 default local workers)",
    )
    parser.add_argument(
        "--seed", type=between(int, 0, MAX_SEED, "", "as the engine takes"), default=7, help="seeds the images"
    )
    parser.add_argument("--guidance", type=non_negative_float, default=5.0, help="guidance scale")
    parser.add_argument(
        "--warmup",
        type=round_count,
        default=1,
        help=f"unmeasured rounds of every kind of run first (default 1, at most {MAX_ROUNDS:,}, at least 1: its K=0"
        " run gives the latents the level-K runs resume from and the image compared with the direct call's, and a"
        " first run pays one-time costs no measured run should)",
    )


def run(args: argparse.Namespace) -> int:
    # refused before a worker starts and a pipeline is built, which the worker's first image would refuse after
    levels = sorted(set(args.levels))
    if not levels or any(k >= args.steps or k not in DEFAULT_LEVELS for k in levels):
        raise UsageError(f"--levels must be of the worker's {DEFAULT_LEVELS} and below --steps={args.steps}: {levels}")
    sizes = BACKEND_SIZES["tiny"]
    if not sizes.takes(args.size):
        raise UsageError(f"--size must be {sizes.rule}")
    with tempfile.TemporaryDirectory(prefix="argus-bench-worker-") as tmp:
        results = _measure(args, levels, Path(tmp))
    _report(args, levels, results)
    return 0


# -- the worker side -----------------------------------------------------------------
class WorkerRuns:
    """Single-image runs through a real worker process (the driver the profile commands use)."""

    def __init__(self, args: argparse.Namespace, log_dir: Path):
        from controller.profile_latency import WorkerProcess

        worker = argparse.Namespace(backend="tiny", device="cpu", model=None, threads=args.threads, time_scale=None)
        self.process = WorkerProcess(worker, 1, log_dir)
        self.last_cpu_s = 0.0

    def generate(self, args: argparse.Namespace, level: int, latent=None):
        """One image, end to end: (seconds from send to BatchDone received, the ItemDone)."""
        from protocols.worker_messages import GenerateItem

        item = GenerateItem(f"k{level}", PROMPT if level == 0 else NEIGHBOUR_PROMPT, args.seed, latent)
        cpu = self.process.cpu_seconds()
        seconds, (done,) = self.process.generate(level, args.steps, args.size, args.guidance, [item])
        self.last_cpu_s = self.process.cpu_seconds() - cpu
        return seconds, done


# -- the direct baseline -------------------------------------------------------------
class DirectPipeline:
    """The same tiny SD-XL pipeline, called in this process."""

    def __init__(self, args: argparse.Namespace):
        import torch

        from workers.limits import latent_shape
        from workers.seed_noise import first_noise, step_generator
        from workers.tiny_pipeline import build_tiny_sdxl

        torch.set_num_threads(args.threads)
        self._torch = torch
        self.pipe = build_tiny_sdxl()  # seed 0, as the worker's load_tiny builds it
        self.pipe.set_progress_bar_config(disable=True)
        # the noise the worker starts from and the generator of its step noise (torch's generator alone draws the same
        # for seeds 2**32 apart), made at each call as the worker makes them
        self._first_noise = first_noise
        self._step_generator = step_generator
        self._shape = latent_shape("tiny", args.size, args.size)

    def generate(self, args: argparse.Namespace):
        torch = self._torch
        cpu = time.process_time()
        started = time.perf_counter()
        generator = self._step_generator(args.seed)
        with torch.inference_mode():
            out = self.pipe(
                prompt=PROMPT,
                num_inference_steps=args.steps,
                width=args.size,
                height=args.size,
                guidance_scale=args.guidance,
                generator=generator,
                latents=self._first_noise([args.seed], [generator], self._shape, self.pipe.unet.dtype),
            )
        seconds = time.perf_counter() - started
        self.last_cpu_s = time.process_time() - cpu
        return seconds, out.images[0]


# -- the measurement -------------------------------------------------------------------
def _measure(args: argparse.Namespace, levels: list[int], log_dir: Path) -> dict:
    import io

    import numpy as np
    from PIL import Image

    print(f"starting a tiny worker ({args.threads} torch threads) and building the direct pipeline ...", flush=True)
    worker = WorkerRuns(args, log_dir)
    try:
        # build the direct pipeline while the worker loads: both must be ready before timing starts
        direct = DirectPipeline(args)
        hello = worker.process.handshake()
        missing = [k for k in levels if k not in hello.levels]
        if missing:
            raise UsageError(f"the worker returns latents only at levels {hello.levels}; not at {missing}")

        # warm-up: every kind of run, unmeasured; the K=0 run gives the latents to resume from
        latents = {}
        for _ in range(args.warmup):
            _, full = worker.generate(args, 0)
            latents = {k: np.array(full.by_level()[k]) for k in levels}
            _, direct_image = direct.generate(args)
            for k in levels:
                worker.generate(args, k, latents[k])
        worker_image = Image.open(io.BytesIO(bytes(full.image))).convert("RGB")
        same_image = bool(np.array_equal(np.asarray(worker_image), np.asarray(direct_image.convert("RGB"))))

        kinds = [("worker", 0), ("direct", 0), *(("worker", k) for k in levels)]
        samples: dict[tuple[str, int], list[float]] = {kind: [] for kind in kinds}
        cpu: dict[tuple[str, int], list[float]] = {kind: [] for kind in kinds}
        internal: dict[int, list[float]] = {k: [] for k in [0, *levels]}
        print(
            f"measuring {counted(args.repeats, 'round')} of {len(kinds)} runs (worker and direct alternate) ...",
            flush=True,
        )
        for r in range(args.repeats):
            # worker K=0 and the direct call run back to back (which goes first alternates), so each
            # round gives a pair measured under the same conditions; the resumes rotate around them
            pair = [("worker", 0), ("direct", 0)]
            units = [pair if r % 2 == 0 else pair[::-1], *([("worker", k)] for k in levels)]
            shift = r % len(units)
            for source, level in (kind for unit in units[shift:] + units[:shift] for kind in unit):
                if source == "direct":
                    seconds, _ = direct.generate(args)
                    cpu[(source, level)].append(direct.last_cpu_s)
                else:
                    seconds, done = worker.generate(args, level, latents.get(level))
                    internal[level].append(done.run_ms / 1000.0)
                    cpu[(source, level)].append(worker.last_cpu_s)
                samples[(source, level)].append(seconds)
    finally:
        worker.process.close()
    return {
        "samples": samples,
        "cpu": cpu,
        "internal": internal,
        "same_image": same_image,
        "heartbeats": worker.process.heartbeats,
    }


def _run_line(args: argparse.Namespace) -> str:
    """What each run was, its threads and rounds counted in words ("1 torch thread(s), 1 interleaved repeats")."""
    return (
        f"{args.size}x{args.size}, batch 1, N={args.steps} steps, {counted(args.threads, 'torch thread')}, "
        f"{counted(args.repeats, 'interleaved repeat')}; s/image and CPU s are medians (end to end: Generate sent"
        " -> BatchDone received)"
    )


def _report(args: argparse.Namespace, levels: list[int], results: dict) -> None:
    samples, cpu, internal = results["samples"], results["cpu"], results["internal"]
    k0 = median(samples[("worker", 0)])
    direct_s = median(samples[("direct", 0)])
    overhead = k0 / direct_s
    # CPU seconds are far less disturbed by other load on a shared machine than wall time
    overhead_cpu = median(cpu[("worker", 0)]) / median(cpu[("direct", 0)])
    # the same ratio round by round (each pair ran back to back), then the median: robust to drift
    overhead_paired = median([w / d for w, d in zip(samples[("worker", 0)], samples[("direct", 0)], strict=False)])
    level_json = {}
    rows = []
    for k in [0, *levels]:
        runs = samples[("worker", k)]
        s = median(runs)
        ratio = 1.0 if k == 0 else s / k0
        level_json[str(k)] = {
            "s_per_image": s,
            "ratio_to_k0": ratio,
            "steps_run": args.steps - k,
            "min_s_per_image": min(runs),
            "paired_ratio_to_k0": median([x / k0_run for x, k0_run in zip(runs, samples[("worker", 0)], strict=False)]),
            "cpu_s_per_image": median(cpu[("worker", k)]),
            "backend_s_per_image": median(internal[k]),  # the worker's own run_ms: denoise, decode, PNG
        }
        rows.append(
            [
                f"worker K={k}",
                args.steps - k,
                s,
                min(runs),
                median(cpu[("worker", k)]),
                median(internal[k]),
                ratio,
                level_json[str(k)]["paired_ratio_to_k0"],
                "<= 0.6" if k == 25 else "",
            ]
        )
    direct_runs = samples[("direct", 0)]
    rows.append(
        [
            "direct diffusers call",
            args.steps,
            direct_s,
            min(direct_runs),
            median(cpu[("direct", 0)]),
            float("nan"),
            float("nan"),
            float("nan"),
            "",
        ]
    )

    print()
    print("argus bench worker: tiny backend (SD-XL-shaped, random weights) on CPU through a real `argus worker`")
    print(_run_line(args))
    print()
    print(
        table(
            ["run", "steps", "s/image", "min s", "CPU s", "in-backend s", "ratio to K=0", "paired ratio", "target"],
            rows,
        )
    )
    print()
    print(f"overhead ratio (worker K=0 s/image / direct call s/image) = {overhead:.3f}   target <= 1.05")
    print(f"  median of per-round ratios (each pair back to back)        = {overhead_paired:.3f}")
    print(f"  same ratio in CPU seconds (less sensitive to other load)  = {overhead_cpu:.3f}")
    print(f"worker image identical to the direct call's: {results['same_image']}")

    data = {
        "steps": args.steps,
        "levels": level_json,
        "overhead_ratio": overhead,
        "overhead_ratio_paired": overhead_paired,
        "overhead_ratio_cpu": overhead_cpu,
        "direct_s_per_image": direct_s,
        "direct_min_s_per_image": min(direct_runs),
        "direct_cpu_s_per_image": median(cpu[("direct", 0)]),
        "repeats": args.repeats,
        "threads": args.threads,
        "size": args.size,
        "same_image": results["same_image"],
        "samples_s": {f"{src}_k{k}": v for (src, k), v in samples.items()},
        "simulated": False,
        "backend": "tiny",
    }
    write_json(args.json, data)
