"""`argus loadgen`: replay an arrival process against a running engine and report what came back.

Register it in the argus command line with
    p = sub.add_parser("loadgen", help=...); loadgen.cli.add_arguments(p); p.set_defaults(func=loadgen.cli.command)
or run it alone as `python -m loadgen.cli ...`; `run` and `main` are the same run for a program of one's own (a
test), which keeps its SIGINT handler. Nothing heavy is imported at
module level: `argus` builds every sub-command's parser at each start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from engine.commands.arg_types import (
    UsageError,
    client_keys,
    distinct_outputs,
    non_negative_int,
    none_empty,
    not_an_input,
    output_file,
    positive_float,
    positive_int,
    read_user_file,
    step_count,
)
from engine.config import API_KEY_ENV
from engine.http.api_keys import key_problem
from engine.logs.said import say
from engine.system.standard_streams import silence_standard_output
from loadgen.arrivals import RESCALE_MODES
from loadgen.interrupts import interruptible, sigint_after_the_run
from loadgen.outputs import say_records_stopped, write_outputs
from loadgen.plot_files import plot_format
from loadgen.shared_data import DIFFUSIONDB_PROMPTS
from loadgen.wording import counted, figure
from protocols.limits import SIZE_MULTIPLE

if TYPE_CHECKING:
    from loadgen.arrivals import Schedule
    from loadgen.clients import RequestOptions
    from loadgen.records import Record

DEFAULT_URL = "http://127.0.0.1:8000"
# descriptors the process holds besides its HTTP connections: stdio, the event loop, the status polls, the outputs
_OWN_FILES = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    door = parser.add_argument_group("engine")
    door.add_argument(
        "--url",
        help=f"the engine's HTTP address, without the /v1 of OpenAI's clients (default {DEFAULT_URL}, none with"
        " --zmq); with --zmq, only used to read"
        " /ready and /plan",
    )
    door.add_argument("--zmq", metavar="ADDRESS", help="send over ZeroMQ to this client address instead of HTTP")
    door.add_argument(
        "--api-key",
        help=f"for an engine started with --api-key: sent as 'Authorization: Bearer KEY' (default: ${API_KEY_ENV})",
    )
    door.add_argument("--curve-secret", metavar="FILE", help="for a CURVE engine over --zmq: this client's .key_secret")
    door.add_argument("--curve-server-key", metavar="FILE", help="with --curve-secret: the engine's public .key file")

    load = parser.add_argument_group("arrivals")
    load.add_argument(
        "--arrivals",
        choices=["poisson", "gamma", "trace"],
        help="arrival process (default: trace with --trace, else poisson)",
    )
    load.add_argument("--rate", type=positive_float, help="mean requests per second (a trace is rescaled to it)")
    load.add_argument(
        "--rescale",
        choices=RESCALE_MODES,
        help="how a trace meets --rate/--load: thin (default: keep its clock, draw a share of its arrivals) or "
        "stretch (scale its offsets, which stretches its bursts too)",
    )
    load.add_argument(
        "--load",
        type=positive_float,
        help="rate as a multiple of the exact-generation capacity (--capacity-rps or /ready): a trace's busiest "
        "minute (a trace of a minute or less: its mean), a poisson or gamma process's mean, as the engine sees it "
        "(whatever --time-scale; with --rescale stretch, the busiest minute of the trace's own clock, before its "
        "offsets are scaled)",
    )
    load.add_argument(
        "--capacity-rps",
        type=positive_float,
        help="exact-generation (K=0) capacity in requests/s; default: exact_capacity_rps of /ready, which is at the "
        "engine's default steps: --steps does not scale it",
    )
    load.add_argument(
        "--cv",
        type=positive_float,
        help="with --arrivals gamma: coefficient of variation of the gaps, at most 32 (default 1)",
    )
    load.add_argument("--trace", metavar="FILE", help="TIMESTAMP CSV or offset_ms[,prompt_index] lines")
    load.add_argument(
        "--time-scale",
        type=positive_float,
        default=1.0,
        help="multiply every offset after rescaling: 0.1 replays 10x faster, so the engine sees 10x --rate and "
        "bursts a tenth as long; --load stays a multiple of the capacity (default 1)",
    )
    load.add_argument(
        "--duration-s",
        type=positive_float,
        help="send only the arrivals in the run's first this many seconds (counted after --time-scale)",
    )
    load.add_argument("--max-requests", type=positive_int, help="send at most this many requests")
    load.add_argument(
        "--seed", type=non_negative_int, default=0, help="seeds the arrivals and the image seeds (default 0)"
    )

    req = parser.add_argument_group("requests")
    req.add_argument(
        "--prompts",
        default=str(DIFFUSIONDB_PROMPTS),
        help="a .txt (one a line), .tsv (Prompt column) or .json (list) file (default: DiffusionDB 5k)",
    )
    req.add_argument("--slo-ms", type=positive_float, help="latency objective, also sent to the engine (default: none)")
    req.add_argument("--size", default="auto", help="WIDTHxHEIGHT, e.g. 64x64 (default auto)")
    req.add_argument(
        "--steps",
        type=step_count,
        help="num_inference_steps (default: the backend's)",
    )
    req.add_argument(
        "--drain-s",
        type=positive_float,
        default=60.0,
        help="after the last send, wait this long for answers, then give up (default 60)",
    )

    out = parser.add_argument_group("output")
    out.add_argument(
        "--records", metavar="OUT.jsonl", type=output_file, help="write one record per request (-: stdout)"
    )
    out.add_argument("--json", metavar="SUMMARY.json", type=output_file, help="write the summary")
    out.add_argument(
        "--plot", metavar="OUT.png", type=output_file, help="write the timeline plot (.png, .pdf or .svg, by its name)"
    )
    out.add_argument("--bin-s", type=positive_float, help="timeline bin width in seconds (default: at most 60 bins)")
    out.add_argument(
        "--sample-every-s",
        type=positive_float,
        default=1.0,
        help="poll the engine for workers per level this often (default 1)",
    )
    out.add_argument("--no-progress", action="store_true", help="no progress bar")


def command(args: argparse.Namespace) -> int:
    """`argus loadgen`: once the run is over, a Ctrl-C ends the process as SIGINT does, quietly. A UsageError, an
    output not written, a Ctrl-C before the run are argus's to say, as every command's, in the log's format: printed
    here, each was a line of plain text under `argus --log-format json`, which a log collector could not parse."""
    with sigint_after_the_run(signal.SIG_DFL):
        return _run(args)


def run(args: argparse.Namespace) -> int:
    """The run, in a program of one's own: its SIGINT handler is put back as found. Set to the command's, a test that
    ran loadgen in pytest's process left SIGINT ending that process, and a later test's Ctrl-C killed it (a CI run
    lost a pytest-xdist worker, and hung)."""
    with sigint_after_the_run(signal.getsignal(signal.SIGINT)):
        return _refusal_said(args)


def _refusal_said(args: argparse.Namespace) -> int:
    """The run outside argus's command line: what ends it said here, as argus says it (engine/cli.py): a UsageError
    as argparse says its own, exit 2."""
    try:
        return _run(args)
    except UsageError as error:
        print(f"argus loadgen: error: {error}", file=sys.stderr)
        return 2
    except SystemExit as error:  # outputs not written; an exit of a code, not words, is the caller's
        if not isinstance(error.code, str):
            raise
        print(error.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the run started: nothing was sent
        print("argus loadgen: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    import uvloop

    try:
        _check(args)
        # made before the event loop runs, where a Ctrl-C ends the command at once: in the loop it was asyncio's
        # runner's, a cancellation that waited for the next await, the end of the making (30 s for a trace of 3
        # million rows, as long to draw 9 million Poisson arrivals)
        prepared = _prepare(args)
        records, summary, records_stopped = uvloop.run(_main(args, prepared))
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    from loadgen.report import format_summary

    # the files first: a reader of the summary that went away (`| head`) must not cost them
    failures = write_outputs(args, records, summary, records_stopped)
    try:
        print(format_summary(summary), flush=True)
    except OSError as error:
        silence_standard_output()
        if not isinstance(error, BrokenPipeError):  # a reader gone (`| head`) asked for no more; a full disk failed
            failures.append(f"the summary to the standard output: {error.strerror or error}")
    if failures:  # said as argus says a command's last words, in its log's format
        raise SystemExit("\n".join(f"argus loadgen: error writing {failure}" for failure in failures))
    return 0


def _check_api_key(args: argparse.Namespace) -> None:
    """--api-key, else $ARGUS_API_KEY's, refused as the engine refuses it at start when no HTTP client could send it:
    one read from a file with its newline was refused by aiohttp at each request, an ERROR traceback each, exit 0.
    Empty, it is none (no header sent)."""
    named = "--api-key"
    if args.api_key is None:
        args.api_key, named = os.environ.get(API_KEY_ENV), f"${API_KEY_ENV}"
    if args.api_key and (problem := key_problem(args.api_key)):
        raise UsageError(f"{named} {problem}")


def _check(args: argparse.Namespace) -> None:
    # read as left out, `--zmq "$ADDRESS"` with the variable unset sent over HTTP (or, with no --url, raised an
    # AttributeError), and `--trace "$TRACE"` ran a Poisson schedule
    none_empty(args, "--zmq", "--url", "--trace", "--prompts", "--curve-secret", "--curve-server-key")
    for flag in ("--records", "--json", "--plot"):
        not_an_input(getattr(args, flag[2:]), args.trace, args.prompts, flag=flag)
    distinct_outputs(*((flag, getattr(args, flag[2:])) for flag in ("--records", "--json", "--plot")))
    if args.plot:  # a name no format it is written in takes: said now, not once the run is over
        plot_format(args.plot)
    if args.arrivals is None:
        args.arrivals = "trace" if args.trace else "poisson"
    if (args.arrivals == "trace") != bool(args.trace):
        raise UsageError("--trace FILE goes with --arrivals trace (and only with it)")
    if args.cv is not None and args.arrivals != "gamma":  # else a run asked to be bursty would be Poisson, unsaid
        raise UsageError(f"--cv is for --arrivals gamma, not {args.arrivals}")
    # else each would be left out without a word: the run sent at a rate its user did not ask for
    if args.rescale is not None and not (args.trace and (args.rate is not None or args.load is not None)):
        raise UsageError("--rescale is for a --trace rescaled to --rate or --load")
    if args.capacity_rps is not None and args.load is None:
        raise UsageError("--capacity-rps is for --load, which it turns into a rate")
    _check_api_key(args)
    if bool(args.curve_secret) != bool(args.curve_server_key):
        raise UsageError("--curve-secret and --curve-server-key go together")
    if args.curve_secret and not args.zmq:
        raise UsageError("CURVE keys are for --zmq")
    if args.rate is not None and args.load is not None:
        raise UsageError("give --rate or --load, not both")
    if args.arrivals != "trace" and args.rate is None and args.load is None:
        raise UsageError(f"--arrivals {args.arrivals} needs --rate or --load")
    if args.arrivals != "trace" and args.duration_s is None and args.max_requests is None:
        raise UsageError(f"--arrivals {args.arrivals} needs --duration-s or --max-requests to end")
    if args.load is not None and args.capacity_rps is None and args.url is None and args.zmq:
        raise UsageError("--load over --zmq needs --capacity-rps, or --url to read it from /ready")
    if args.bin_s is not None and not args.plot:
        raise UsageError("--bin-s cuts the --plot timeline into bins: add --plot FILE.png, or drop it")
    if args.slo_ms is not None and args.drain_s * 1000.0 < args.slo_ms:
        # a request unanswered at the hard end is counted a violation, which one still within its SLO is not yet
        raise UsageError(f"--drain-s {args.drain_s:g} is shorter than --slo-ms {args.slo_ms:g}")
    if args.zmq is None and args.url is None:
        args.url = DEFAULT_URL
    if args.url is not None:
        url = urlsplit(args.url)
        # aiohttp would take anything else as a URL it cannot reach: every request a connection_error
        if url.scheme not in ("http", "https") or not url.hostname:
            raise UsageError(f"--url must be an http:// or https:// address, not {args.url!r}")


class _Rate(NamedTuple):
    """A rate on the schedule's own clock, and the flags that asked for it, for an error to name."""

    rps: float
    said: str


def _target_rate(args: argparse.Namespace) -> _Rate | None:
    """The rate on the schedule's own clock. --load is what the engine is to see, so it is slowed by
    --time-scale here for the compression to bring it back."""
    if args.load is None:
        return None if args.rate is None else _Rate(args.rate, f"--rate {args.rate:g}")
    if args.capacity_rps is not None:
        capacity, of = args.capacity_rps, f"--capacity-rps {args.capacity_rps:g}"
    else:
        import uvloop

        from loadgen.engine_status import CapacityUnknown, EngineUnreachable, exact_capacity_rps

        try:
            capacity, workers, default_steps = uvloop.run(exact_capacity_rps(args.url, args.api_key))
        except CapacityUnknown as exc:
            raise UsageError(f"{exc}; pass --capacity-rps") from None
        except EngineUnreachable as exc:  # no capacity passed would make a run of it
            raise UsageError(str(exc)) from None
        of = f"the engine's {capacity:.3g} requests/s"
        # the workers ready now: an engine whose others still load their model is sized for these alone
        said = (
            f"--load {args.load:g} x {capacity:.3g} requests/s: the exact capacity of the"
            f" {counted(workers, 'worker')} ready at {args.url}"
        )
        if args.steps is not None and args.steps != default_steps:
            # the engine's capacity is its profile's, at its default steps: scaled by steps alone it would leave out
            # what a run costs whatever its steps (the VAE decode, the text encoders), so it is not scaled at all
            at = f"its default {default_steps} steps" if default_steps else "its default steps"
            said += f", at {at}: the engine gives none at --steps {args.steps}, and this one is not scaled for them"
        say(args, said)
    scaled = f" x --time-scale {args.time_scale:g}" if args.time_scale != 1.0 else ""
    return _Rate(args.load * capacity * args.time_scale, f"--load {args.load:g} x {of}{scaled}")


def _schedule(args: argparse.Namespace) -> Schedule:
    """The arrivals to send; a UsageError naming the flags (and the step of the shaping) that left none."""
    from loadgen import arrivals
    from loadgen.schedule_errors import cut_too_far, thinned_too_far
    from loadgen.traces import load_trace

    rate = _target_rate(args)
    if args.arrivals == "trace":
        base = read_user_file(load_trace, args.trace)
        shaped = base
        if rate is not None:
            try:
                arrivals.mean_rate(base)
            except ValueError as exc:  # it named neither the flag nor the file
                flag = "--rate" if args.load is None else "--load"
                raise UsageError(f"{flag} cannot rescale --trace {args.trace}: {exc}") from None
            # --load is what the busiest minute offers
            rps = rate.rps / arrivals.peak_to_mean(base) if args.load is not None else rate.rps
            shaped = arrivals.shape(base, rate=rps, rescale=args.rescale or "thin", seed=args.seed)
            if not shaped:
                raise UsageError(
                    thinned_too_far(rate.said, args.trace, base, rps, args.seed, 0, by_load=args.load is not None)
                )
    else:
        # drawn in the schedule's own time, up to where compression will leave duration_s of it
        horizon = None if args.duration_s is None else args.duration_s / args.time_scale
        cv = 1.0 if args.cv is None else args.cv  # poisson is gamma with cv 1
        shaped = arrivals.gamma(rate.rps, cv, seed=args.seed, duration_s=horizon, max_requests=args.max_requests)
        if not shaped:
            raise UsageError(f"{rate.said} drew no arrival in --duration-s {args.duration_s:g}: ask for more of either")
    schedule = arrivals.shape(
        shaped, time_scale=args.time_scale, duration_s=args.duration_s, max_requests=args.max_requests
    )
    if not schedule:  # --max-requests is at least 1: --duration-s cut them all
        clock = f" of the run (after --time-scale {args.time_scale:g})" if args.time_scale != 1.0 else ""
        raise UsageError(cut_too_far(args.duration_s, arrivals.compress_time(shaped, args.time_scale), clock))
    # a trace's rows, as many as its file holds (a rate's schedule was refused as it was drawn): each is held in memory,
    # and its record too as its request ends
    if len(schedule) > arrivals.MAX_ARRIVALS:
        raise UsageError(
            f"--trace {args.trace} makes {len(schedule):,} arrivals, more than a schedule may hold"
            f" ({arrivals.MAX_ARRIVALS:,}): cut it with --duration-s or --max-requests"
        )
    return schedule


class _Prepared(NamedTuple):
    """What a run sends: its requests' options, its prompts and its schedule."""

    options: RequestOptions
    prompts: list[str]
    schedule: Schedule


def _prepare(args: argparse.Namespace) -> _Prepared:
    """The run's requests, from the flags and the files they name; a UsageError for what no run can use."""
    from loadgen.clients import RequestOptions
    from loadgen.prompts import load_prompts
    from loadgen.schedule_errors import unpaired_prompts
    from protocols.openai_images import parse_size

    try:
        width, height = parse_size(args.size)  # as the HTTP API reads it
    except ValueError:  # its message, 'size "64" must be...', named no flag
        raise UsageError(f"--size must be auto or WIDTHxHEIGHT (1024x1024), not {args.size!r}") from None
    if width % SIZE_MULTIPLE or height % SIZE_MULTIPLE:  # every engine would refuse every request
        raise UsageError(f"--size {args.size}: each side must be a multiple of {SIZE_MULTIPLE}")
    prompts = read_user_file(load_prompts, args.prompts)
    schedule = _schedule(args)
    if unpaired := unpaired_prompts(schedule, prompts, args.trace, args.prompts):
        raise UsageError(unpaired)
    if args.bin_s:
        from loadgen.plot import MAX_BINS

        span = schedule[-1].offset_s
        # the sends alone: the plot runs on to the last worker sample, up to the drain, which is not known yet
        # (timeline_plot widens the bins then, and plot() says so)
        if span / args.bin_s > MAX_BINS:
            raise UsageError(f"--bin-s {args.bin_s:g} cuts {span:.0f} s into more than {MAX_BINS:,} bins")
    return _Prepared(RequestOptions(width=width, height=height, steps=args.steps), prompts, schedule)


async def _main(args: argparse.Namespace, prepared: _Prepared) -> tuple[list[Record], dict[str, Any], list[OSError]]:
    """The records, their summary, and why --records did not have each as its request ended (empty: it did)."""
    from loadgen.clients import HttpLoadClient, LoadClient, ZmqLoadClient
    from loadgen.report import records_as_they_come
    from loadgen.run import run_load

    options, prompts, schedule = prepared
    if args.url is not None:
        from loadgen.engine_status import EngineUnreachable, check_reachable, request_refusal

        try:
            ready = await check_reachable(args.url, args.api_key)
        except EngineUnreachable as exc:
            raise UsageError(str(exc)) from None
        # a size the engine does not take was sent the whole run, every request refused invalid_size
        if refusal := request_refusal(ready, options.width, options.height, args.steps):
            raise UsageError(f"{refusal} (GET {args.url.rstrip('/')}/ready): every request would be refused")
    if args.zmq:
        import zmq

        from loadgen.zmq_check import zmq_refusal

        curve = client_keys(args.curve_secret, args.curve_server_key) if args.curve_secret else None
        try:
            client: LoadClient = ZmqLoadClient(args.zmq, options, curve)
        except (ValueError, zmq.ZMQError) as exc:  # ValueError: not an address (engine.client says what it takes)
            raise UsageError(f"--zmq: {exc}") from None
        # every request would be refused alike, the run sent whole: a key not admitted, as a refused --api-key
        if refused := await asyncio.to_thread(zmq_refusal, args.zmq, curve):
            await client.close()
            raise UsageError(f"--curve-secret {args.curve_secret}: {refused}" if curve else f"--zmq: {refused}")
    else:
        _allow_a_connection_each(args, len(schedule))
        client = HttpLoadClient(args.url, options, args.api_key)
    records_stopped: list[OSError] = []

    def on_records_stopped(error: OSError) -> None:
        records_stopped.append(error)
        say_records_stopped(args, error)

    try:
        # interruptible first: a Ctrl-C once the user is told the run is on is the run's; and a SIGTERM while the
        # records still queued are written does not cut them short
        with interruptible(args) as interrupt:
            async with (
                records_as_they_come(args.records, on_records_stopped)
                if args.records
                else contextlib.nullcontext() as on_record
            ):
                say(args, f"sending {_sending(schedule)} to {args.zmq or args.url}")
                records, summary = await run_load(
                    schedule,
                    prompts,
                    client,
                    args.slo_ms,
                    seed=args.seed,
                    drain_s=args.drain_s,
                    status_url=args.url,
                    api_key=args.api_key,
                    sample_every_s=args.sample_every_s,
                    progress=False if args.no_progress else None,  # a bar only on a terminal
                    interrupt=interrupt,
                    on_record=on_record,
                )
        # after the writer is left, which may have given up on --records only then
        return records, summary, records_stopped
    finally:
        await client.close()


def _sending(schedule: Schedule) -> str:
    """How many, when, and at what mean rate, over the span that rate is of (it said 'sending 1 requests over 0.0 s',
    and a span from the start of the run beside a rate from the first send)."""
    from loadgen.arrivals import mean_rate

    first, last = schedule[0].offset_s, schedule[-1].offset_s
    if last == first:
        return f"{counted(len(schedule), 'request')} at {figure(first)} s"
    said = f"from {figure(first)} s to {figure(last)} s (mean {figure(mean_rate(schedule))}/s)"
    return f"{counted(len(schedule), 'request')} {said}"


def _allow_a_connection_each(args: argparse.Namespace, requests: int) -> None:
    """Over HTTP each request in flight holds a connection, a descriptor: under a shell's usual soft limit of 1,024,
    the sends past about a thousand in flight failed, recorded as the engine's connection_error."""
    import resource

    from loadgen.clients import CLIENT_OUT_OF_FILES
    from protocols.sockets import allow_open_files

    if not allow_open_files(requests + _OWN_FILES):  # raised as far as the hard limit goes
        say(
            args,
            f"argus loadgen: warning: this process may hold at most {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}"
            f" open files (ulimit -Hn): past about that many requests in flight, sends fail as {CLIENT_OUT_OF_FILES}",
            logging.WARNING,
        )


def main(argv: list[str] | None = None) -> int:
    """The run `argv` asks for, in this program (see run)."""
    return run(_parser().parse_args(argv))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadgen.cli", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return parser


if __name__ == "__main__":
    with sigint_after_the_run(signal.SIG_DFL):
        sys.exit(_refusal_said(_parser().parse_args()))
