"""`argus bench controller`: how long the allocation MILP takes to solve, with the route-planner LP beside it.

For each fleet size (8, 64 and 1024 workers by default) and the six levels of
the bundled SD-XL profile, `--solves` MILP solves with varied demand: total
load drawn between 0.3x and 3x what the fleet serves at the middle level, the
K* mix drawn at random. Each solve starts from the previous plan's
allocation, as in the running controller. The LP re-derives the routes for
the allocation just solved, on the same demand. Times are wall clock around
the whole call (model build, solve, reading the solution); one unmeasured
solve of each kind comes first, so importing OR-Tools is not counted.

The solves run in a process of their own (`python -m
loadgen.bench.controller_bench FLAGS`), started with SIGINT blocked, as the
engine's are (engine/control/milp_process.py): CBC and SCIP take SIGINT for themselves
while they solve, to stop that solve early, and solving back to back in the
bench's own process they took a Ctrl-C that landed in a solve (1 in 5 with
CBC, 3 in 5 with SCIP), and the bench ran on to its end. Blocked there, a
Ctrl-C reaches the bench alone, which ends the solving process and says
`interrupted`, exit 130.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time

from controller.flow_model import SolverOptions
from engine.commands.arg_types import (
    UsageError,
    between,
    comma_separated,
    non_negative_int,
    positive_float,
    positive_int,
)
from engine.logs.plurals import counted
from loadgen.bench.output import table, write_json
from loadgen.stats import P99_MIN_SAMPLES, p99_caveat, percentile

# issue "Controller": p99 targets by fleet size
TARGET_P99_MS = {64: 100.0, 1024: 2000.0}
# the MIP backends the OR-Tools wheel carries that solve the allocation MILP (BOP takes 0/1 variables only, and
# solved none of it), named before OR-Tools is asked: it answers a name it does not know with absl log lines on
# stderr ahead of the refusal
MIP_SOLVERS = ("CBC", "SCIP", "HIGHS", "SAT")
# the longest --time-limit-ms: past OR-Tools' int64 the solving process ended in an OverflowError traceback, and the
# bench in a RuntimeError one; a solve the engine waits for each window is not given an hour
MAX_TIME_LIMIT_MS = 3_600_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=comma_separated(positive_int),
        default="8,64,1024",
        help="fleet sizes, comma separated (default 8,64,1024)",
    )
    parser.add_argument("--solves", type=positive_int, default=20, help="MILP solves per fleet size (default 20)")
    parser.add_argument(
        "--slo", type=positive_float, default=15.0, help="SLO in seconds the capacities are for (default 15)"
    )
    parser.add_argument(
        "--solver", type=str.upper, choices=MIP_SOLVERS, default="CBC", help="OR-Tools MIP backend (default CBC)"
    )
    parser.add_argument(
        "--time-limit-ms",
        type=between(int, 1, MAX_TIME_LIMIT_MS, " ms", "an hour: a longer one is a mistyped number"),
        default=SolverOptions.time_limit_ms,
        help=f"solver time limit (default {SolverOptions.time_limit_ms}: the engine's own)",
    )
    parser.add_argument("--seed", type=non_negative_int, default=1, help="seeds the demand mixes")


def run(args: argparse.Namespace) -> int:
    from ortools.linear_solver import pywraplp

    # allocate() falls back to the route LP when it gets no solver: what would be timed is not the MILP
    if pywraplp.Solver.CreateSolver(args.solver) is None:  # an OR-Tools built without it
        raise UsageError(f"--solver {args.solver}: this OR-Tools has no such MIP backend")
    if not args.workers:
        raise UsageError("--workers names no fleet size")
    flags = {name: getattr(args, name) for name in ("workers", "solves", "slo", "solver", "time_limit_ms", "seed")}
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:  # inherited by the process, which keeps it so: no Ctrl-C reaches its solver
        solving = subprocess.Popen(
            [sys.executable, "-m", "loadgen.bench.controller_bench", json.dumps(flags)], stdout=subprocess.PIPE
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    try:
        answer, _ = solving.communicate()
    finally:  # a Ctrl-C (KeyboardInterrupt), or a SIGTERM (commands.py unwinds on it), ends the solving too
        if solving.poll() is None:
            solving.kill()
            solving.wait()
    if solving.returncode != 0:  # its traceback is above, on the stderr both share
        raise RuntimeError(f"the solving process ended with exit code {solving.returncode}")
    measured = json.loads(answer)
    _report(args, measured["results"], measured["rows"], measured["profile"])
    return 0


def _measure(args: argparse.Namespace) -> dict:
    """The solves, timed, in the process run() starts: each fleet's JSON results and table row, and the profile's
    name."""
    from controller.allocation import allocate
    from controller.flow_model import FlowProblem
    from controller.profiles import DegradationMatrix, LatencyProfile, QualityModel
    from controller.route_planner import route
    from controller.similarity import SimilarityTable

    fleets = args.workers
    profile = LatencyProfile.bundled()
    degradation = DegradationMatrix.from_quality_model(QualityModel(SimilarityTable.bundled("clip")))
    levels = degradation.levels
    capacity = {k: profile.capacity_rps(k, args.slo) for k in levels}
    options = SolverOptions(mip_solver=args.solver, time_limit_ms=args.time_limit_ms)

    def problem(total: float, weights: list[float]) -> FlowProblem:
        demand = {k: total * w / sum(weights) for k, w in zip(levels, weights, strict=True)}
        return FlowProblem.per_class(degradation, capacity, demand)

    warm = problem(1.0, [1.0] * len(levels))
    route(warm, allocate(warm, 8, {}, options).workers_per_level, options)

    results, rows = [], []
    for workers in fleets:
        rng = random.Random(args.seed * 1_000_003 + workers)
        middle = workers * capacity[levels[len(levels) // 2]]
        milp_ms, lp_ms, statuses = [], [], []
        current: dict[int, int] = {}
        for _ in range(args.solves):
            p = problem(middle * rng.uniform(0.3, 3.0), [rng.random() for _ in levels])
            started = time.perf_counter()
            solution = allocate(p, workers, current, options)
            milp_ms.append((time.perf_counter() - started) * 1000.0)
            started = time.perf_counter()
            route(p, solution.workers_per_level, options)
            lp_ms.append((time.perf_counter() - started) * 1000.0)
            statuses.append(solution.status)
            current = solution.workers_per_level
        row, result = fleet_figures(workers, len(levels), milp_ms, lp_ms, statuses)
        rows.append(row)
        results.append(result)
    return {"results": results, "rows": rows, "profile": profile.name}


def fleet_figures(
    workers: int, levels: int, milp_ms: list[float], lp_ms: list[float], statuses: list[str | None]
) -> tuple[list, dict]:
    """One fleet's table row and JSON results from its solves' times. Every percentile is nearest-rank, an observed
    solve, as docs/controller.md says: the p50 was statistics.median's, which of the default 20 solves is the mean of
    the 10th and 11th, a time no solve took."""
    p50, p99 = percentile(milp_ms, 50), percentile(milp_ms, 99)
    lp_p50, lp_p99 = percentile(lp_ms, 50), percentile(lp_ms, 99)
    optimal = statuses.count("optimal")
    target = TARGET_P99_MS.get(workers)
    row = [
        workers,
        levels,
        p50,
        p99,
        lp_p50,
        lp_p99,
        p50 / lp_p50,
        f"{optimal}/{len(statuses)}",
        "" if target is None else f"<= {target:g} ({'met' if p99 <= target else 'MISSED'})",
    ]
    # the table's figures, the LP baseline and the ratio to it too: the JSON had the MILP's times alone
    result = {
        "workers": workers,
        "levels": levels,
        "solve_p50_ms": p50,
        "solve_p99_ms": p99,
        "lp_p50_ms": lp_p50,
        "lp_p99_ms": lp_p99,
        "milp_to_lp_p50": p50 / lp_p50,
        "optimal": optimal,
        "solves": len(statuses),
    }
    return row, result


def _report(args: argparse.Namespace, results: list[dict], rows: list[list], profile_name: str) -> None:
    print()
    print(
        f"argus bench controller: allocation MILP ({args.solver}) vs. route-planner LP (GLOP), "
        f"{counted(args.solves, 'solve')} per fleet with varied demand, SLO {args.slo:g} s,"
        f" bundled {profile_name} profile"
    )
    print("wall-clock ms per call on this machine (absolute times are noisy; the MILP/LP ratio less so)")
    print()
    print(
        table(
            [
                "workers",
                "levels",
                "MILP p50 ms",
                "MILP p99 ms",
                "LP p50 ms",
                "LP p99 ms",
                "MILP/LP p50",
                "optimal",
                "target p99 ms",
            ],
            rows,
        )
    )
    if caveat := p99_caveat(args.solves):
        # the default 20 solves: a target on the p99 is checked against the slowest solve of each fleet
        print(f"note: {caveat} (each fleet's slowest solve); --solves {P99_MIN_SAMPLES} or more for a tail figure")
    write_json(args.json, {"solver": args.solver, "slo_s": args.slo, "results": results})


if __name__ == "__main__":  # the solving process run() starts: its flags in, the measurements out, as JSON
    # the JSON goes out on stdout alone: HiGHS writes its banner there from C ("Running HiGHS 1.12.0 ..."), at every
    # solve, which made the answer no JSON and `--solver HIGHS` a traceback. What solvers write is theirs to drop
    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), sys.stdout.fileno())
    answer.write(json.dumps(_measure(argparse.Namespace(**json.loads(sys.argv[1])))))
    answer.close()
