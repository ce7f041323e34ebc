"""`argus`: the command line. Every component's configuration is built here, in one place."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from types import ModuleType

from controller.policies import POLICY_NAMES
from controller.window import MIN_WINDOW_S
from engine.commands import keys as keys_command
from engine.commands.arg_types import (
    UsageError,
    at_least,
    batch_size,
    between,
    cache_levels,
    comma_separated,
    engine_address,
    heartbeat_timeout,
    http_host,
    ip_network,
    listen_address,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    public_url,
    queue_size,
    sim_time_scale,
    tcp_port,
    torch_device,
)
from engine.commands.help_format import BACKEND_HELP, DefaultsHelpFormatter, command_parsers
from engine.commands.serve_checks import check_serve_args, checked_api_keys, serve_model_id, similarity_table_file
from engine.commands.worker import (
    CommandParser,
    add_sim_latents_argument,
    add_worker_command,
    stopped_as_it_started,
    worker_log_name,
)
from engine.config import (
    API_KEY_ENV,
    DEFAULT_CACHE_BYTES,
    DEFAULT_CLIENT_GONE_GRACE_S,
    DEFAULT_CLIENT_LISTEN,
    DEFAULT_CLIENT_MAX_CONNECTIONS,
    DEFAULT_IMAGE_URL_STORE_BYTES,
    DEFAULT_IMAGE_URL_TTL_S,
    DEFAULT_LOCAL_WORKERS,
    DEFAULT_RAY_CONNECT_TIMEOUT_S,
    DEFAULT_SAVE_INTERVAL_S,
    DEFAULT_STARTUP_TIMEOUT_S,
    DEFAULT_WORKER_LISTEN,
    MAX_HEARTBEAT_TIMEOUT_S,
    MAX_IMAGE_URL_TTL_S,
    MAX_QUEUE,
    MIN_HEARTBEAT_TIMEOUT_S,
    CacheConfig,
    DispatchConfig,
    EngineConfig,
    LaunchConfig,
    PolicyConfig,
)
from engine.http.image_files import MIN_STORE_BYTES
from engine.logs.said import say_last
from engine.logs.setup import LOG_FORMATS, configure_logging
from engine.logs.thread import stop_log_thread
from engine.system.open_files import allow_engine_open_files
from engine.system.quick_exit import exit_at_once
from engine.system.standard_streams import (
    StandardOutputFailed,
    name_standard_output_failures,
    open_closed_standard_streams,
    silence_standard_output,
    standard_output_reader_gone,
)
from engine.system.stop_signals import HeldStopSignals
from engine.version import argus_version
from loadgen.bench.commands import add_bench_commands
from loadgen.bench.subprocesses import ChildDied, RunFailed, ended_by_sigterm
from protocols.limits import MAX_BATCH
from workers.limits import DEFAULT_LEVELS, PLACEHOLDER_LATENTS
from workers.main import INTERRUPTED_EXIT
from workers.model_loading import ModelLoadFailed

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the engine and its local workers")
    p.add_argument("--host", type=http_host, default="127.0.0.1", help="HTTP bind address (default: loopback only)")
    p.add_argument("--port", type=tcp_port, default=8000, help="HTTP port (0: any free port)")
    p.add_argument(
        "--public-url",
        type=public_url,
        metavar="URL",
        help="where clients reach the HTTP API, e.g. https://images.example.com/argus behind a proxy: image URLs"
        " (response_format url), and the server /openapi.json names, start with it (default: http:// and the"
        " request's Host header)",
    )
    p.add_argument(
        "--forwarded-allow-ips",
        type=comma_separated(ip_network),
        metavar="ADDRS",
        help="the reverse proxies (addresses or CIDR networks, comma-separated) whose X-Forwarded-For names the"
        " client an HTTP request came from, for its share of the queue (default: none, the socket's address)",
    )
    p.add_argument(
        "--image-url-ttl",
        # an hour given in ms held images in memory for 41 days
        type=between(
            float,
            0,
            MAX_IMAGE_URL_TTL_S,
            " s",
            "a week: the images are held in memory; it counts seconds, not ms",
            least_allowed=False,
        ),
        default=DEFAULT_IMAGE_URL_TTL_S,
        metavar="SECONDS",
        help=f"how long an image asked for as response_format url is kept, at most {MAX_IMAGE_URL_TTL_S:,} (a week)",
    )
    p.add_argument(
        "--image-url-store-bytes",
        type=at_least(
            int,
            MIN_STORE_BYTES,
            "",
            "each image is counted with 320 bytes of bookkeeping, and none is"
            " under 34 bytes: a smaller store holds no image",
        ),
        default=DEFAULT_IMAGE_URL_STORE_BYTES,
        metavar="BYTES",
        help="memory for those images, 320 bytes of bookkeeping each included; when full, the oldest go before their"
        " TTL ends (argus_image_url_evicted_early_total counts them): size it for the images made in a TTL",
    )
    p.add_argument(
        "--client-listen",
        action="append",
        type=listen_address,
        help=f"ZeroMQ address for client programs (repeatable; default {DEFAULT_CLIENT_LISTEN})",
    )
    p.add_argument(
        "--worker-listen",
        action="append",
        type=listen_address,
        help=f"ZeroMQ address remote workers connect to (repeatable; default {DEFAULT_WORKER_LISTEN})",
    )
    p.add_argument(
        "--workers",
        type=non_negative_int,
        default=DEFAULT_LOCAL_WORKERS,
        help="local worker processes to spawn (0: none)",
    )
    p.add_argument("--backend", default="tiny", choices=["tiny", "sdxl", "sim"], help=BACKEND_HELP)
    p.add_argument(
        "--device",
        type=torch_device,
        action="append",
        help="device for local workers, round-robin (cpu, cuda:0, ...; repeatable; default cpu)",
    )
    p.add_argument("--model", help="local diffusers SD-XL directory (sdxl backend)")
    p.add_argument(
        "--model-id",
        metavar="ID",
        help="the model every worker must run, as a worker's ready line names it (sdxl:16 hex digits); default:"
        " --model's when this host can read it, else the first worker's",
    )
    p.add_argument("--time-scale", type=sim_time_scale, help="sim backend: multiply simulated GPU time (default 1)")
    add_sim_latents_argument(p)
    p.add_argument(
        "--max-batch", type=batch_size, help=f"largest batch a worker runs, 1 to {MAX_BATCH} (default: the backend's)"
    )
    p.add_argument(
        "--max-queue",
        type=queue_size,
        default=1024,
        help=f"images admitted at once, at most {MAX_QUEUE:,}; past it, 429/Busy",
    )
    p.add_argument("--policy", default="argus", choices=POLICY_NAMES, help="allocation and level policy")
    p.add_argument("--slo-ms", type=positive_float, help="SLO the controller plans for (default: three exact images)")
    p.add_argument(
        "--window-s",
        type=at_least(float, MIN_WINDOW_S, " s", "the controller looks at its window every 10 ms at most"),
        default=10.0,
        help="controller window: a full re-plan this often",
    )
    p.add_argument("--latency-profile", metavar="FILE", help="`argus profile latency` output (default: bundled)")
    p.add_argument("--quality-profile", metavar="FILE", help="`argus profile quality` samples (default: modelled)")
    p.add_argument("--predictor", metavar="FILE", help="`argus train-predictor` output (default: similarity table)")
    p.add_argument("--serve-late", action="store_true", help="serve requests past their deadline instead of 504")
    p.add_argument("--embedder", default="hash", choices=["hash", "minilm", "clip"], help="prompt embedder")
    p.add_argument(
        "--embedder-path",
        metavar="DIR",
        help="clip: a local CLIP text encoder directory (needed); minilm: its model directory (default: the package's)",
    )
    p.add_argument("--no-cache", action="store_true", help="no approximate caching: every image runs in full")
    p.add_argument(
        "--levels",
        type=cache_levels,
        help="the levels K the cache keeps latents at and the controller plans, some of 5,10,15,20,25 of the default"
        " N = 50 steps (default: all five); fewer levels keep more prompts in --cache-bytes",
    )
    p.add_argument(
        "--similarity-table",
        metavar="FILE",
        help="`argus calibrate --json` output for --embedder: the similarity -> level thresholds the cache's levels,"
        " the controller's quality classes and its predictor use (default: the embedder's bundled table)",
    )
    p.add_argument(
        "--cache-bytes",
        type=non_negative_int,
        help=f"memory the prompt cache may hold, bytes (default {DEFAULT_CACHE_BYTES}): the latents in memory, and each"
        " cached prompt's text, vector and index entry (about 12 KiB at the default embedder), its latents in memory or"
        " spilled to --cache-dir",
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="spill directory, and where the cache is saved on shutdown (one engine's own)",
    )
    p.add_argument("--cache-dir-bytes", type=non_negative_int, default=0, help="latents spilled to --cache-dir, bytes")
    p.add_argument(
        "--cache-save-interval",
        type=non_negative_float,
        metavar="SECONDS",
        help="with --cache-dir: also save the cache this often (from the end of the last save) if it changed, so an"
        " engine killed (SIGKILL, OOM, a crash) restarts warm, losing only what came after the last save (default"
        f" {DEFAULT_SAVE_INTERVAL_S:g}; 0: only at a clean stop). A save holds up lookups for its snapshot only (10 to"
        " 40 ms for the default --cache-bytes) and is written beside them, but rewrites the whole file, spilled"
        " latents too: give a large --cache-dir-bytes a longer interval (docs/cache.md)",
    )
    p.add_argument(
        "--heartbeat-timeout",
        type=heartbeat_timeout,
        default=10.0,
        help=f"seconds of worker silence before it is lost, {MIN_HEARTBEAT_TIMEOUT_S:g} to {MAX_HEARTBEAT_TIMEOUT_S}",
    )
    p.add_argument(
        "--client-gone-grace",
        type=positive_float,
        default=DEFAULT_CLIENT_GONE_GRACE_S,
        help="seconds a ZeroMQ client whose connection dropped has to connect again: its replies are kept and tried"
        f" again until then, then dropped and its other requests cancelled (default {DEFAULT_CLIENT_GONE_GRACE_S:g})",
    )
    p.add_argument(
        "--max-client-connections",
        type=positive_int,
        default=DEFAULT_CLIENT_MAX_CONNECTIONS,
        help="ZeroMQ client connections admitted at once; past it, a new one is refused at its handshake and dials"
        f" again until one ends (default {DEFAULT_CLIENT_MAX_CONNECTIONS:,})",
    )
    p.add_argument(
        "--startup-timeout",
        type=positive_float,
        help="seconds a local worker or Ray actor has to start and say hello (load its model) before it is replaced"
        f" (default {DEFAULT_STARTUP_TIMEOUT_S:g}; not for --workers 0, which starts none)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=non_negative_float,
        default=30.0,
        help="seconds to finish in-flight work on SIGTERM or SIGINT; a second signal cancels what is left at once",
    )
    p.add_argument(
        "--keepalive-timeout",
        type=positive_float,
        default=75.0,
        help="seconds an HTTP connection may stay idle between requests, or take to send a request's headers; set it"
        " above the idle timeout of a load balancer in front (Google Cloud's: 600)",
    )
    p.add_argument(
        "--send-timeout",
        type=positive_float,
        default=60.0,
        help="seconds an HTTP client may take none of its answer before it is disconnected (its answer held in memory"
        " until then); a slow reader that takes some within each is served",
    )
    p.add_argument(
        "--max-connections",
        type=positive_int,
        help="HTTP connections held at once; past it, a new one is answered 503 and closed (default: what the limit"
        " on open files leaves after the workers and 1,024 for the engine's own files and ZeroMQ peers). One"
        " client may take them all: bound each client's at a reverse proxy",
    )
    p.add_argument(
        "--api-key",
        help="require 'Authorization: Bearer KEY' on every HTTP route but /health and the image URLs that"
        f" response_format url hands out (unguessable and short-lived) (default: ${API_KEY_ENV})",
    )
    p.add_argument(
        "--api-keys",
        metavar="FILE",
        help="as --api-key, with a key for each client: lines of 'NAME KEY' ('#' comments). A request's key names its"
        " client, whose share of the queue and of the workers its 'user' cannot change; reread on SIGHUP",
    )
    p.add_argument(
        "--launcher",
        default="local",
        choices=["local", "ray"],
        help="start --workers as local processes, or as Ray actors (pip install -e '.[ray]')",
    )
    p.add_argument(
        "--ray-address",
        help="with --launcher ray: the cluster to join (auto, HOST:PORT, ray://...); default: start one on loopback",
    )
    p.add_argument(
        "--ray-connect-timeout",
        type=positive_float,
        help="with --launcher ray: seconds to join the cluster or start a local one before the engine gives up"
        f" (default {DEFAULT_RAY_CONNECT_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--ray-connect",
        metavar="ADDR",
        type=engine_address,
        help="with --launcher ray: the worker address actors dial (default: the first TCP --worker-listen, a wildcard"
        " host replaced by this node's address in the Ray cluster)",
    )
    p.add_argument(
        "--curve-secret",
        metavar="FILE",
        help="require CURVE on ZeroMQ: the engine's .key_secret file, with --curve-allow (both sockets),"
        " --curve-allow-workers (the worker socket alone, the client socket plain) or both",
    )
    p.add_argument(
        "--curve-allow",
        metavar="DIR",
        help="with --curve-secret: CURVE on both sockets, admitting this directory's public keys (*.key) on both;"
        " beside --curve-allow-workers, its keys are admitted on the client socket only",
    )
    p.add_argument(
        "--curve-allow-workers",
        metavar="DIR",
        help="with --curve-secret: the keys admitted on the worker socket; without --curve-allow, the client socket"
        " stays plain, asking no keys (clients on this host)",
    )
    p.set_defaults(func=_serve)


def engine_config(args: argparse.Namespace) -> EngineConfig:
    check_serve_args(args)
    api_keys = checked_api_keys(args.api_key, args.api_keys)
    sim_latents = args.sim_latents or PLACEHOLDER_LATENTS
    return EngineConfig(
        host=args.host,
        port=args.port,
        client_listen=tuple(args.client_listen or [DEFAULT_CLIENT_LISTEN]),
        worker_listen=tuple(args.worker_listen or [DEFAULT_WORKER_LISTEN]),
        launch=LaunchConfig(
            count=args.workers,
            backend=args.backend,
            devices=tuple(args.device or ["cpu"]),
            model=args.model,
            time_scale=1.0 if args.time_scale is None else args.time_scale,
            sim_latents=sim_latents,
            max_batch=args.max_batch,
            startup_timeout_s=DEFAULT_STARTUP_TIMEOUT_S if args.startup_timeout is None else args.startup_timeout,
            log_level=args.log_level,
            log_format=args.log_format,
        ),
        dispatch=DispatchConfig(max_queue=args.max_queue, serve_late=args.serve_late),
        policy=PolicyConfig(
            name=args.policy,
            slo_s=args.slo_ms / 1000.0 if args.slo_ms else None,
            window_s=args.window_s,
            latency_profile=args.latency_profile,
            quality_profile=args.quality_profile,
            predictor=args.predictor,
        ),
        cache=CacheConfig(
            enabled=not args.no_cache,
            levels=args.levels or DEFAULT_LEVELS,
            embedder=args.embedder,
            embedder_path=args.embedder_path,
            max_bytes=DEFAULT_CACHE_BYTES if args.cache_bytes is None else args.cache_bytes,
            directory=args.cache_dir,
            directory_bytes=args.cache_dir_bytes,
            save_interval_s=DEFAULT_SAVE_INTERVAL_S if args.cache_save_interval is None else args.cache_save_interval,
            table_file=similarity_table_file(args),
        ),
        model_id=serve_model_id(args.backend, args.model, args.model_id, sim_latents),
        heartbeat_timeout_s=args.heartbeat_timeout,
        client_gone_grace_s=args.client_gone_grace,
        client_max_connections=args.max_client_connections,
        shutdown_timeout_s=args.shutdown_timeout,
        keepalive_timeout_s=args.keepalive_timeout,
        send_timeout_s=args.send_timeout,
        max_connections=args.max_connections,
        api_keys=api_keys,
        public_url=args.public_url,
        forwarded_allow_ips=tuple(args.forwarded_allow_ips or ()),
        image_url_ttl_s=args.image_url_ttl,
        image_url_store_bytes=args.image_url_store_bytes,
        curve_secret_file=args.curve_secret,
        curve_allowed_dir=args.curve_allow,
        curve_workers_dir=args.curve_allow_workers,
        launcher=args.launcher,
        ray_address=args.ray_address,
        ray_connect_timeout_s=(
            DEFAULT_RAY_CONNECT_TIMEOUT_S if args.ray_connect_timeout is None else args.ray_connect_timeout
        ),
        ray_connect=args.ray_connect,
    )


def _serve(args: argparse.Namespace, held: HeldStopSignals | None = None) -> int:
    """`held`: SIGTERM, SIGINT and SIGHUP held since the process started (engine/__main__.py), and kept held until it
    exits; held from now if None (`python -m engine.cli serve`, or a test calling main()), and given back once the
    engine has stopped: landing in the imports, the checks or the engine's build, they ended the process there
    (SIGTERM and SIGHUP left its temporary folder behind) or printed a traceback (SIGINT)."""
    own = held is None
    held = HeldStopSignals() if own else held
    try:
        return _serve_held(args, held)
    finally:
        # the engine has stopped: a signal that came since asks for nothing more. The process's own are kept held, as
        # it has only to exit: its interpreter's finalization took up to 2 s (torch's modules torn down, with
        # --embedder minilm), and a signal then, given Python's handlers back, killed it (exit 143, 129) or printed a
        # KeyboardInterrupt traceback, its stop done and logged
        if own:
            held.release(deliver=False)


def _serve_held(args: argparse.Namespace, held: HeldStopSignals) -> int:
    import gc

    import uvloop

    from engine.server import Engine

    config = engine_config(args)
    allow_engine_open_files(args.workers, args.max_queue, args.max_connections)
    # what start-up built lives as long as the process: spare full collections the walk over it
    gc.collect()
    gc.freeze()

    async def main() -> bool:
        engine = Engine(config)
        await engine.run(held)
        return engine.embedder_still_loading

    try:
        stopped_while_loading = uvloop.run(main())
    except BaseExceptionGroup as group:
        # a launcher whose workers cannot start (a Ray cluster it cannot join) ends the engine's task group
        refused, others = group.split(UsageError)
        if refused is None or others is not None:
            raise
        raise refused.exceptions[0] from None
    if stopped_while_loading:
        # no Python code can cut the prompt embedder's imports short (engine/cache/embedder_loading.py), and an exit
        # through the interpreter's finalization waits on the loading thread, which holds the GIL through the C parts
        # of torch's imports: 0.3 to 1.1 s from the signal to the exit in five stops during a minilm load, against
        # 0.03 to 0.12 s this way. Exit 0, as any stop asked for
        exit_at_once(0)
    return 0


def _add_command(
    sub: argparse._SubParsersAction,
    name: str,
    help_text: str,
    module: ModuleType,
    func: Callable[[argparse.Namespace], int] | None = None,
) -> None:
    """A sub-command whose options a module of its own adds (`add_arguments`), run by its `run` unless `func`."""
    p = sub.add_parser(name, help=help_text)
    module.add_arguments(p)
    p.set_defaults(func=func or module.run)


def build_parser() -> argparse.ArgumentParser:
    from controller import profile_latency, profile_quality, train_predictor
    from engine.cache import calibrate
    from loadgen import cli as loadgen_cli

    parser = CommandParser(prog="argus", description=__doc__)
    parser.add_argument("--version", action="version", version=f"argus {argus_version()}")
    parser.add_argument(
        "--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO", help="how much to log to stderr"
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text, or json: a JSON object a line (timestamp, level, logger, pid, a worker's id as worker, message,"
        " exc_info) for a log collector",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    add_worker_command(sub)
    _add_command(sub, "keys", "make a CURVE key pair (NAME.key public, NAME.key_secret private)", keys_command)
    _add_command(sub, "train-predictor", "fit the Optimal-K predictor on profiled quality samples", train_predictor)
    _add_command(
        sub,
        "loadgen",
        "replay arrivals (Poisson, gamma, a trace) against an engine and report",
        loadgen_cli,
        loadgen_cli.command,
    )
    _add_command(sub, "calibrate", "derive an embedder's similarity thresholds from a prompt set", calibrate)
    profile = sub.add_parser("profile", help="measure a backend: latency per level and batch, or quality per level")
    kinds = profile.add_subparsers(dest="profile", required=True)
    _add_command(
        kinds, "latency", "seconds per batch by level K and batch size -> LatencyProfile JSON", profile_latency
    )
    _add_command(kinds, "quality", "CLIPScore quality by level K and neighbour similarity -> JSONL", profile_quality)
    add_bench_commands(sub)
    argus_flags = frozenset(flag for action in parser._actions for flag in action.option_strings) - {"-h", "--help"}
    for command in command_parsers(parser):
        command.formatter_class = DefaultsHelpFormatter
        command.argus_flags = argus_flags
        # what the command's usage errors are said under, as argparse says its own: `argus profile quality`, not
        # `argus profile` (a sub-command's default overrides its parent's)
        command.set_defaults(prog=command.prog)
    return parser


def main(argv: list[str] | None = None, held: HeldStopSignals | None = None, *, own_process: bool = False) -> int:
    """`held`: SIGTERM, SIGINT and SIGHUP held since the process started (engine/__main__.py), for `argus serve` to
    act on; any other command gets Python's handlers back, and a signal held meanwhile as if it came now.
    `own_process`: the command is this process's (`argus`, `python -m engine.cli`), not a call of a program's."""
    if own_process:
        open_closed_standard_streams()  # before any event loop, socket or child process
    args = build_parser().parse_args(argv)
    if own_process:
        name_standard_output_failures()  # argparse's --help and usage errors print, and fail, as they always did
    # the engine's event loop must not wait on a standard error that takes nothing, nor a worker (a local one writes
    # to the engine's): their logs are a thread's to write. Started again while it took nothing, a worker waited on
    # its first line, and never served
    threaded = args.func is _serve or args.command == "worker"
    configure_logging(args.log_level, args.log_format, worker_log_name(args), threaded=threaded)
    try:
        if held is not None and args.func is not _serve:
            held.release(deliver=True)
        try:
            code = _serve(args, held) if args.func is _serve else args.func(args)
        finally:
            # all the command logged (the engine, a worker) is written before what ends it is printed: a usage
            # error's line, a model that failed to load, a traceback
            stop_log_thread()
        if own_process:
            sys.stdout.flush()  # its failure said as the command's, not as an exception ignored at exit
        if own_process and args.command == "worker":
            # served and stopped, its sockets closed: the interpreter's teardown of a model backend's modules took 2
            # to 3.4 s of CPU on a loaded 2-core VM, and an engine's two tiny workers, stopping together, missed the
            # 5 s it gives them (engine/fleet/launcher.py): each stop killed them, warning that they 'did not stop
            # within 5 s of being asked to'. A program that calls main keeps its process
            exit_at_once(code)
        return code
    except (UsageError, ModelLoadFailed) as error:
        say_last(args, f"{args.prog}: error: {error}")
        return 2
    except (ChildDied, RunFailed) as error:  # not a usage error: the command ran, and failed
        say_last(args, f"{args.prog}: error: {error}")
        return 1
    except BrokenPipeError:
        if not (own_process and standard_output_reader_gone()):
            raise
        # its reader took what it wanted (`argus bench controller | head`): the command ends as on SIGPIPE, without
        # a traceback of the print it was in
        silence_standard_output()
        return 1
    except StandardOutputFailed as error:
        silence_standard_output()  # else Python's flush at exit fails again on what it still holds
        say_last(args, f"{args.prog}: error: writing to the standard output: {error.strerror}")
        return 1
    except SystemExit as error:
        if not isinstance(error.code, str):
            raise
        # a command's last words (an output it could not write, a benchmark that failed): Python printed them as they
        # are, which under --log-format json was the one plain line; said as it says them, exit 1
        say_last(args, error.code)
        return 1
    except KeyboardInterrupt:
        if args.command == "worker":
            return stopped_as_it_started()
        # what the command started is stopped by then (a benchmark's engines, in its finally blocks): one line and
        # the shells' code for Ctrl-C, not a traceback of wherever it landed; a SIGTERM handed to Ctrl-C's handling
        # (loadgen/bench/subprocesses.py) ends the same way, with its own code
        if ended_by_sigterm():
            say_last(args, f"{args.prog}: terminated")
            return 128 + signal.SIGTERM
        say_last(args, f"{args.prog}: interrupted")
        return INTERRUPTED_EXIT


if __name__ == "__main__":
    sys.exit(main(own_process=True))
