"""The `argus bench` sub-commands; each benchmark module is imported only when run."""

from __future__ import annotations

import argparse
import importlib

from engine.commands.arg_types import output_file
from loadgen.bench.subprocesses import unwind_on_sigterm

# name -> (module, help); the module defines add_arguments(parser) and run(args) -> int
BENCHMARKS = {
    "worker": ("loadgen.bench.worker_bench", "seconds per image by level K, and worker overhead vs. diffusers"),
    "engine": ("loadgen.bench.engine_bench", "engine throughput and added latency vs. bare ZeroMQ and aiohttp"),
    "cache": ("loadgen.bench.cache_bench", "prompt cache lookups, inserts and bytes per latent"),
    "checkpoint": ("loadgen.bench.checkpoint_bench", "how long lookups wait while the prompt cache is checkpointed"),
    "chaos": ("loadgen.bench.chaos_bench", "exactly-once replies while SIMULATED workers are killed and hung"),
    "compare": ("loadgen.bench.compare_bench", "policies side by side on one trace (simulated cluster)"),
    "controller": ("loadgen.bench.controller_bench", "allocation MILP solve time by fleet size, route LP beside it"),
    "scale": ("loadgen.bench.scale_bench", "one engine, a thousand simulated workers: peak req/s, p99, engine CPU"),
}


def add_bench_commands(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="run a benchmark (prints a table, writes --json)")
    kinds = bench.add_subparsers(dest="benchmark", required=True)
    for name, (module, help_text) in BENCHMARKS.items():
        parser = kinds.add_parser(name, help=help_text)
        parser.add_argument("--json", metavar="FILE", type=output_file, help="write the results here as JSON")
        parser.set_defaults(func=_runner(module), bench_module=module)
        _load(module).add_arguments(parser)


def _runner(module: str):
    def run(args: argparse.Namespace) -> int:
        unwind_on_sigterm()
        return _load(module).run(args)

    return run


def _load(module: str):
    return importlib.import_module(module)
