"""`argus bench compare`: several policies, each on a fresh real engine with `sim` workers, fed the same load.

SIMULATED: workers sleep for SD-XL-on-A100 latencies (controller/data/sdxl_a100.json)
scaled by --time-scale, and report a modelled quality. Arrivals are compressed by
the same factor, so the run is a faithful replay of the trace on a faster clock;
latencies and rates are reported back on the simulated clock (wall / time_scale).

Defaults follow the paper's setting as far as the published figures allow
(../shared/data/reference.md): 8 workers; SLO 15 s, the SD-XL SLO DiffServe uses and
about three exact 50-step SD-XL images on an A100 (5.1 s each); load 1.3x the
cluster's exact-generation capacity in the trace's busiest minute (see docs/loadgen.md
for why not the mean), reached by thinning the trace on its own clock so that its bursts
last as long as they did in production; DiffusionDB prompts in their original order; the
whole trace (about an hour of arrivals).

Each baseline row gets a verdict against argus: better, worse or a tie on the violation
ratio and on quality, where a difference within VIOLATION_TIE or QUALITY_TIE is a tie (and
says how far argus is from it all the same).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import math
import tempfile
from pathlib import Path

from controller.policies import POLICY_NAMES
from controller.window import MIN_WINDOW_S
from engine.commands.arg_types import (
    MAX_SIM_TIME_SCALE,
    UsageError,
    between,
    distinct_outputs,
    non_negative_int,
    none_empty,
    not_an_input,
    output_file,
    positive_float,
    positive_int,
    read_user_file,
)
from loadgen.arrivals import RESCALE_MODES
from loadgen.bench.sim_flags import sim_image_size
from loadgen.plot_files import plot_format
from loadgen.shared_data import DIFFUSIONDB_PROMPTS, TRACES_DIR
from loadgen.stats import median, p99_caveat
from loadgen.wording import counted

DEFAULT_POLICIES = "argus,clipper-ha,clipper-ht,nirvana,proteus"
_WINDOW_S = 10.0  # the controller's window on the simulated clock, as Proteus re-solves
# wall seconds the answers still out after the last send are waited for, unless the SLO is longer (as loadgen's
# --drain-s default)
_DRAIN_S = 60.0
_TABLE_KEYS = (
    "requests",
    "no_image",
    "slo_violation_ratio",
    "mean_quality",
    "throughput_rps",
    "goodput_rps",
    "p50_ms",
    "p99_ms",
)
# ties: one run's violation ratio over a few thousand requests moves by about a third of this from binomial noise
# alone; half a point of quality (percent of the exact image) is the smallest difference counted as real
VIOLATION_TIE = 0.005
QUALITY_TIE = 0.5
# what a schedule needs to be compared on: a mean rate, the offered_rps of the JSON
_NEED = "; a comparison needs two arrivals, at different instants"
# past this share of the SLO, what a request spends outside its queue and its run (the engine's own work and the
# messages, wall time the simulated clock multiplies by 1 / --time-scale) is named in a WARNING: the figures are then
# the machine's as much as the policy's. At --time-scale 0.002 it was 1.1 to 2.1 s of each request (2 to 4 ms of wall
# time), and Clipper-HT missed 15 to 31% of a load it missed none of at the default 0.025 (0.1 s; docs/loadgen.md)
UNSIMULATED_WARNING_SHARE = 0.05


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policies", default=DEFAULT_POLICIES, help="comma-separated policies to compare")
    parser.add_argument("--backend", default="sim", choices=["sim"], help="only the simulated backend (a cluster)")
    parser.add_argument("--workers", type=positive_int, default=8, help="simulated workers of each engine")
    parser.add_argument("--trace", default=str(TRACES_DIR / "azure_llm2023_code.csv"), help="arrivals to replay")
    parser.add_argument("--prompts", default=str(DIFFUSIONDB_PROMPTS), help="prompts to send")
    parser.add_argument(
        "--load",
        type=positive_float,
        default=1.3,
        help="the trace's busiest minute as a multiple of exact-generation capacity",
    )
    parser.add_argument("--slo-ms", type=positive_float, default=15_000.0, help="SLO on the simulated clock")
    parser.add_argument(
        "--time-scale",
        # the engines' window is _WINDOW_S of the simulated clock, which `argus serve --window-s` takes from 0.01 s;
        # past the engines' own bound, each engine was started to refuse it, and the bench failed with exit 1
        type=between(
            float,
            MIN_WINDOW_S / _WINDOW_S,
            MAX_SIM_TIME_SCALE,
            "",
            f"the engines' window, {_WINDOW_S:g} s of the simulated clock, takes {MIN_WINDOW_S:g} s of wall time at"
            " least: argus serve --window-s; the engines take no larger --time-scale",
        ),
        default=0.025,
        help="wall seconds per simulated second",
    )
    parser.add_argument(
        "--rescale", choices=RESCALE_MODES, default="thin", help="how the trace meets --load (see argus loadgen)"
    )
    parser.add_argument(
        "--duration-s", type=positive_float, help="simulated seconds of the trace to replay (default: all of it)"
    )
    parser.add_argument(
        "--size",
        type=sim_image_size,
        default="1024x1024",
        help="WIDTHxHEIGHT with sides the sim backend takes (a multiple of 8 from 64 to 2048), or auto"
        " (default 1024x1024)",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seeds the thinning of the trace and the images' seeds (request i asks for seed + i); the prompts go in"
        " their order",
    )
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        type=output_file,
        help="bar chart of violations and quality per policy (.png, .pdf or .svg, by its name)",
    )
    parser.add_argument(
        "--log-dir", help="keep the engines' logs here (default: a temporary directory, removed at the end)"
    )
    parser.add_argument(
        "--records-dir",
        metavar="DIR",
        help="write each policy's per-request records here as POLICY.jsonl (times on the simulated clock)",
    )


def _policies(text: str) -> list[str]:
    """The policies named, checked before the first run: a typo in the last one would waste all the others."""
    policies = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICY_NAMES]
    if unknown or not policies or len(set(policies)) < len(policies):
        raise UsageError(f"--policies takes distinct names from {', '.join(POLICY_NAMES)}, not {text!r}")
    return policies


def run(args: argparse.Namespace) -> int:
    from controller.profiles import LatencyProfile
    from engine.system.whole_files import written_or_exit
    from loadgen.arrivals import mean_rate, peak_to_mean, shape, truncate
    from loadgen.bench.output import table, write_json
    from loadgen.plot import compare_plot
    from loadgen.prompts import load_prompts
    from loadgen.report import SEND_LAG_WARNING_MS, write_records
    from loadgen.schedule_errors import cut_too_far, thinned_too_far, unpaired_prompts
    from loadgen.traces import load_trace

    logging.basicConfig(level=logging.WARNING)
    # "" was read as no file (`: No such file or directory`), and --log-dir "" as a temporary folder
    none_empty(args, "--trace", "--prompts", "--log-dir", "--records-dir")
    for flag in ("--json", "--plot"):
        not_an_input(getattr(args, flag[2:]), args.trace, args.prompts, flag=flag)
    distinct_outputs(("--json", args.json), ("--plot", args.plot))
    if args.plot:  # before the first policy's run, not after the last
        try:
            plot_format(args.plot)
        except ValueError as error:
            raise UsageError(str(error)) from None
    policies = _policies(args.policies)
    slo_s = args.slo_ms / 1000.0
    # exact-generation capacity of the cluster, simulated clock: K = 0 at the largest batch within SLO/2
    capacity_rps = args.workers * LatencyProfile.bundled("sdxl_a100").capacity_rps(0, slo_s)
    trace = read_user_file(load_trace, args.trace)
    prompts = read_user_file(load_prompts, args.prompts)
    rate = args.load * capacity_rps / peak_to_mean(trace)
    try:
        rescaled = shape(trace, rate=rate, rescale=args.rescale, seed=args.seed)
    except ValueError as error:  # a trace of one arrival, or all at one instant: no rate of its own to rescale
        raise UsageError(f"--load cannot rescale --trace {args.trace}: {error}") from None
    # each step that leaves too few for a mean rate says so in its own flags: thinning to the load, then --duration-s
    try:
        mean_rate(rescaled)
    except ValueError:
        of = counted(args.workers, "sim worker")
        said = f"--load {args.load:g} x {capacity_rps:.3g} img/s (the exact capacity of {of})"
        raise UsageError(
            thinned_too_far(said, args.trace, trace, rate, args.seed, len(rescaled), by_load=True, need=_NEED)
        ) from None
    simulated = truncate(rescaled, duration_s=args.duration_s)
    try:
        offered_rps = mean_rate(simulated)
    except ValueError:
        raise UsageError(cut_too_far(args.duration_s, rescaled, " (simulated)", _NEED)) from None
    schedule = shape(simulated, time_scale=args.time_scale)
    # before the first engine starts: run_load's own check raised it as a traceback, once the engine was up
    if unpaired := unpaired_prompts(schedule, prompts, args.trace, args.prompts):
        raise UsageError(unpaired)
    width, height = args.size
    config = {
        "simulated": True,
        "backend": args.backend,
        "workers": args.workers,
        "trace": args.trace,
        "prompts": args.prompts,
        "load": args.load,
        "exact_capacity_rps": capacity_rps,
        "mean_load": rate / capacity_rps,  # the whole trace's mean as a multiple of exact capacity
        "offered_rps": offered_rps,
        "rescale": args.rescale,
        # it drew the thinning, and the images' seeds
        "seed": args.seed,
        "slo_ms": args.slo_ms,
        "time_scale": args.time_scale,
        "duration_s": args.duration_s,
        "requests": len(schedule),
        "size": f"{width}x{height}" if width else "auto",
        "clock": "simulated (wall / time_scale)",
        "ties": {"slo_violation_ratio": VIOLATION_TIE, "mean_quality": QUALITY_TIE},
    }
    for flag, directory in (("--log-dir", args.log_dir), ("--records-dir", args.records_dir)):
        if directory:
            try:
                Path(directory).mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise UsageError(f"{flag} {directory}: {error.strerror or error}") from None
    results = {}
    # without --log-dir the engines' logs go with the run: a failure shows the dead engine's log tail itself
    with tempfile.TemporaryDirectory(prefix="argus-compare-") as tmp:
        log_dir = Path(args.log_dir or tmp)
        for policy in policies:
            print(
                f"{policy}: {counted(len(schedule), 'request')} over {schedule[-1].offset_s:.3g} s (wall)", flush=True
            )
            records, summary = asyncio.run(_one_policy(policy, args, schedule, prompts, width, height, log_dir))
            results[policy] = _simulated_clock(summary, args.time_scale)
            results[policy]["unsimulated_p50_ms"] = unsimulated_p50_ms(records, args.time_scale)
            if (summary["max_send_lag_ms"] or 0.0) > SEND_LAG_WARNING_MS:
                print(
                    f"WARNING: {policy}: the generator fell behind its schedule by up to "
                    f"{summary['max_send_lag_ms']:.0f} ms of wall time: the engine did not see the offered load",
                    flush=True,
                )
            if warning := unsimulated_warning(policy, results[policy]["unsimulated_p50_ms"], args):
                print(warning, flush=True)
            # each policy's results as soon as they are in: a later failure (an engine that will not start, its
            # records that cannot be written) loses none
            write_json(args.json, {"config": config, "policies": results})
            if args.records_dir:
                simulated_records = [_record_on_simulated_clock(record, args.time_scale) for record in records]
                path = Path(args.records_dir) / f"{policy}.jsonl"
                written_or_exit(
                    "argus bench compare", "records", path, functools.partial(write_records, simulated_records, path)
                )
    verdicts = {p: verdict(results["argus"], results[p]) for p in policies if p != "argus" and "argus" in results}
    for policy, text in verdicts.items():
        results[policy]["argus_verdict"] = text
    rows = [[policy, *(results[policy][key] for key in _TABLE_KEYS), verdicts.get(policy, "")] for policy in policies]
    # what was replayed: the whole trace's mean said 0.28x of a slice that offered 0.40x
    replayed = "the trace" if args.duration_s is None else f"the {args.duration_s:g} s replayed"
    print(
        f"\nSIMULATED cluster ({counted(args.workers, 'sim worker')}), load {args.load}x exact capacity "
        f"({capacity_rps:.2f} img/s) in the trace's busiest minute ({config['offered_rps'] / capacity_rps:.2f}x on "
        f"average over {replayed}), "
        f"SLO {args.slo_ms:.0f} ms, {config['requests']} requests from {args.trace}"
    )
    print(table(["policy", *_TABLE_KEYS, "argus against it"], rows))
    for policy in policies:  # why: a run every request of which failed showed only n/a in its row
        if codes := results[policy]["error_codes"]:
            said = ", ".join(f"{code} {n}" for code, n in sorted(codes.items(), key=lambda item: -item[1]))
            print(f"{policy}: {counted(results[policy]['no_image'], 'request')} without an image: {said}")
        # a p99 over fewer than 100 requests served is the slowest of them, which the table, printing it bare beside a
        # p50, did not say (a --duration-s 300 run on 2 workers: 38 served), where loadgen's summary and the other
        # benches do
        served = results[policy]["requests"] - results[policy]["no_image"]
        if served and (caveat := p99_caveat(served)):
            print(f"{policy}: p99_ms is no tail figure: {caveat}")
    # the verdicts before the plot, which a full disk may refuse
    write_json(args.json, {"config": config, "policies": results})
    if args.plot:
        plotted = {p: _for_plot(results[p]) for p in policies}
        title = _plot_title(args)
        written_or_exit(
            "argus bench compare", "plot", args.plot, functools.partial(compare_plot, plotted, args.plot, title=title)
        )
    return 0


def _plot_title(args: argparse.Namespace) -> str:
    """The plot's title: the simulated cluster, its workers counted in words ("1 sim workers" was said), the load."""
    return (
        f"SIMULATED: {counted(args.workers, 'sim worker')}, {Path(args.trace).name}\n"
        f"load {args.load}x in the busiest minute, SLO {args.slo_ms / 1000:g} s"
    )


async def _one_policy(policy, args, schedule, prompts, width, height, log_dir: Path) -> tuple[list, dict]:
    from loadgen.bench.engine_child import start_engine
    from loadgen.clients import RequestOptions, ZmqLoadClient
    from loadgen.run import run_load

    wall_slo_ms = args.slo_ms * args.time_scale
    engine = start_engine(
        log_dir,
        "--backend", args.backend,
        "--time-scale", str(args.time_scale),
        "--policy", policy,
        "--slo-ms", str(wall_slo_ms),
        "--window-s", str(_WINDOW_S * args.time_scale),
        "--max-queue", "100000",
        workers=args.workers,
        name=f"engine-{policy}",  # a --log-dir of engine-PORT.log files did not say which policy each was
        log_kept=args.log_dir is not None,  # its death names the log there, not a copy
    )  # fmt: skip
    try:
        await asyncio.to_thread(engine.wait_ready, args.workers)
        client = ZmqLoadClient(engine.client_address, RequestOptions(width=width, height=height))
        try:
            # an engine that died left its requests to time out as violations: that row would blame the policy.
            # Failed as it dies: checked after the load, its run went on to the last arrival and the drain (at
            # --time-scale 1, the trace's hour)
            records, summary = await engine.child.while_alive(
                run_load(
                    schedule,
                    prompts,
                    client,
                    wall_slo_ms,
                    seed=args.seed,
                    # as long as an SLO at least: a request still within it at the hard end would count a violation
                    drain_s=max(_DRAIN_S, wall_slo_ms / 1000),
                    status_url=engine.http,
                    progress=None,  # on a terminal only
                )
            )
        finally:
            await client.close()
        # one that died as the last answers came in
        engine.child.check_alive()
        return records, summary
    finally:
        engine.stop()


def _simulated_clock(summary: dict, time_scale: float) -> dict:
    """The summary's headline figures with times and rates on the simulated clock."""

    def ms(key: str) -> float | None:
        value = summary.get(key)
        return None if value is None else value / time_scale

    def rps(key: str) -> float | None:
        value = summary.get(key)
        return None if value is None else value * time_scale

    outcomes = summary["outcomes"]
    return {
        "requests": summary["sent"],
        # requests that got no image, and why: a run refused outright had only None in its row
        "no_image": summary["sent"] - outcomes["ok"] - outcomes["late"],
        "error_codes": summary["error_codes"],
        "slo_violation_ratio": summary["slo_violation_ratio"],
        "mean_quality": summary["mean_quality_pct"],
        "throughput_rps": rps("throughput_rps"),
        "goodput_rps": rps("goodput_rps"),
        "p50_ms": ms("latency_p50_ms"),
        "p99_ms": ms("latency_p99_ms"),
        "outcomes": outcomes,
        "level_mix": summary["level_mix"],
        "cache_hit_rate": summary["cache_hit_rate"],
        # how far behind its schedule the generator sent: what the engine saw was not the offered load past a little
        "max_send_lag_ms": ms("max_send_lag_ms"),
    }


def unsimulated_p50_ms(records: list, time_scale: float) -> float | None:
    """The median, over the images, of what a request spent outside its queue and its run (latency - queue_ms -
    run_ms), on the simulated clock: the engine's own work and the messages, which no sim worker scales. None with no
    image."""
    outside = [
        r["latency_ms"] - r["queue_ms"] - r["run_ms"]
        for r in records
        if r["outcome"] in ("ok", "late") and None not in (r["latency_ms"], r["queue_ms"], r["run_ms"])
    ]
    return median(outside) / time_scale if outside else None


def unsimulated_warning(policy: str, unsimulated_ms: float | None, args: argparse.Namespace) -> str | None:
    """A WARNING when the time unsimulated_p50_ms measures is past UNSIMULATED_WARNING_SHARE of the SLO."""
    if unsimulated_ms is None or unsimulated_ms <= UNSIMULATED_WARNING_SHARE * args.slo_ms:
        return None
    return (
        f"WARNING: {policy}: half the requests spent {unsimulated_ms:,.0f} ms or more of the simulated clock outside"
        f" their queue and run ({unsimulated_ms * args.time_scale:.3g} ms of wall time, at --time-scale"
        f" {args.time_scale:g}), over {UNSIMULATED_WARNING_SHARE:.0%} of the SLO: the figures are the machine's as much"
        " as the policy's; a larger --time-scale shrinks it"
    )


# a record's times: seconds from the start of the run, and milliseconds
_RECORD_TIMES = ("scheduled_at", "sent_at", "latency_ms", "queue_ms", "run_ms")


def _record_on_simulated_clock(record: dict, time_scale: float) -> dict:
    return {
        key: value / time_scale if key in _RECORD_TIMES and value is not None else value
        for key, value in record.items()
    }


def verdict(argus: dict, baseline: dict) -> str:
    """Where argus is better, worse and level with `baseline` (`better violations, quality a tie (argus 0.25
    higher)`): fewer violations and higher quality are better, a difference within VIOLATION_TIE or QUALITY_TIE is a
    tie, and a tie says how far apart they are all the same. It said 'better: -; worse: violations', leaving out a
    quality of 98.52 against 98.48."""
    if argus["slo_violation_ratio"] is None or baseline["slo_violation_ratio"] is None:
        return "no verdict: a run whose every request was cancelled has no violation ratio"
    # (name, argus's gain on it, the tie, the difference as printed, argus's side of it when it gains)
    gains = (
        (
            "violations",
            baseline["slo_violation_ratio"] - argus["slo_violation_ratio"],
            VIOLATION_TIE,
            "{:.4f}",
            ("lower", "higher"),
        ),
        (
            "quality",
            (argus["mean_quality"] or 0.0) - (baseline["mean_quality"] or 0.0),
            QUALITY_TIE,
            "{:.2f}",
            ("higher", "lower"),
        ),
    )
    ties = {
        name: "equal" if float(shown.format(abs(gain))) == 0 else f"argus {shown.format(abs(gain))} {sides[gain < 0]}"
        for name, gain, tie, shown, sides in gains
        if _within(gain, tie)
    }
    better = [name for name, gain, _, _, _ in gains if name not in ties and gain > 0]
    worse = [name for name, gain, _, _, _ in gains if name not in ties and gain < 0]
    if len(better) == 2 or len(worse) == 2:
        return f"{'better' if better else 'worse'} on both"
    if len(ties) == 2:
        apart = [f"{apart} on {name}" for name, apart in ties.items() if apart != "equal"]
        return f"a tie on both ({', '.join(apart) or 'equal'})"
    said = [f"better {name}" for name in better] + [f"worse {name}" for name in worse]
    return ", ".join(said + [f"{name} a tie ({apart})" for name, apart in ties.items()])


def _within(gain: float, tie: float) -> bool:
    """A difference of the tie itself is within it: taken apart in floating point, 4 of 200 requests late against 3
    (0.02 - 0.015) came to 0.005000000000000001, and was said better, where the docs count it a tie."""
    return abs(gain) <= tie or math.isclose(abs(gain), tie)


def _for_plot(result: dict) -> dict:
    return {"slo_violation_ratio": result["slo_violation_ratio"], "mean_quality_pct": result["mean_quality"]}
