"""What `argus serve` refuses before it starts anything: flags that would start and then fail, or be ignored without a
word; and the identity of the model its workers must run, where this host can read it."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import logging
import os
import re
import resource
import socket

from controller.profiles import LatencyProfile
from engine.cache.cache_dir import cache_dir_problem
from engine.cache.embedder_flags import check_embedder_model
from engine.cache.table_file import TableFile, checked_table_file
from engine.commands.arg_types import UsageError, host_memory_bytes, none_empty
from engine.commands.worker import check_backend_flags, check_device, check_model
from engine.config import (
    API_KEY_ENV,
    DEFAULT_CLIENT_LISTEN,
    DEFAULT_WORKER_LISTEN,
    served_model_name,
)
from engine.http.api_keys import ApiKeys, key_problem
from engine.system.open_files import ENGINE_OWN_FILES, FILES_PER_WORKER, connections_that_fit, workers_that_fit
from protocols.endpoints import Endpoint, parse_endpoint
from workers.limits import DEFAULT_LEVELS, PLACEHOLDER_LATENTS
from workers.model_folder import sdxl_model_problem
from workers.model_id import SIM_PROFILE, folder_model_id, sim_model_id

log = logging.getLogger("argus.engine")


def check_serve_args(args: argparse.Namespace) -> None:
    """Refuses what would start and then fail, or silently ignore a flag."""
    if not args.host.strip():
        # a variable left unset (--host "$HOST"): asyncio takes "" for every interface, IPv4's and IPv6's, where the
        # default is loopback only, and the engine logged its address as http://:8000
        raise UsageError("--host is empty: give an address to listen on (0.0.0.0 or :: for every interface)")
    none_empty(
        args,
        "--model",
        "--latency-profile",
        "--quality-profile",
        "--predictor",
        "--embedder-path",
        "--api-keys",
        "--ray-address",
        "--curve-secret",
        "--curve-allow",
        "--curve-allow-workers",
    )
    if args.forwarded_allow_ips == []:  # no address in it: trusted no proxy, as the flag left out
        raise UsageError("--forwarded-allow-ips names no address (a variable left unset?): give one, or leave it out")
    if args.forwarded_allow_ips and args.api_keys:
        # every request a share is counted for carries a key, which names its client: X-Forwarded-For was never read
        raise UsageError(
            "--forwarded-allow-ips names a client by its address, and under --api-keys each request's key names its"
            " client: drop --forwarded-allow-ips (or give each client behind the proxy a key of its own)"
        )
    _check_curve_flags(args)
    _check_listeners_apart(args)
    memory = host_memory_bytes()
    # the engine would be killed for its memory as the store, or the prompt cache, filled
    for flag, size in (("--image-url-store-bytes", args.image_url_store_bytes), ("--cache-bytes", args.cache_bytes)):
        if memory is not None and size is not None and size > memory:
            raise UsageError(f"{flag} {size:,} is more than this host's memory ({memory:,} bytes)")
    most = workers_that_fit()
    if most is not None and args.workers > most:
        raise _out_of_files(f"--workers {args.workers:,}", "as they start", "each worker", f"room for {most:,}")
    fit = connections_that_fit(args.workers)
    if args.max_connections and fit is not None and args.max_connections > fit:
        # the engine ran out of files first: no worker started again, no /health answered (docs/reliability.md)
        flag = f"--max-connections {args.max_connections:,}"
        raise _out_of_files(flag, "before it is reached", f"each of --workers {args.workers}", f"{fit:,}")
    if args.backend == "sdxl" and args.workers and not args.model:
        raise UsageError("--backend sdxl needs --model DIR (a local diffusers SD-XL folder) for its --workers")
    if args.backend == "sdxl" and args.model:
        # Ray actors read --model on the hosts Ray places them on, which this one need not see, as workers started
        # by hand (--workers 0) read it on theirs
        if args.workers and args.launcher != "ray":
            check_model(args.model)
        else:
            _warn_if_model_elsewhere(args.model)
    check_backend_flags(args.backend, args.model, args.device, args.time_scale, args.sim_latents)
    if args.workers and args.device:
        # round-robin: past the --workers, a device got no worker, without a word
        used = args.device[: args.workers]
        unused = [device for device in dict.fromkeys(args.device) if device not in used]
        if unused:
            raise UsageError(
                f"--device {' '.join(unused)}: --workers {args.workers} run on {' '.join(dict.fromkeys(used))} alone"
                " (one each, round-robin): add workers, or drop it"
            )
    if args.workers and args.launcher != "ray":  # Ray places its actors on hosts of their own, with their devices
        for device in dict.fromkeys(args.device or ()):
            check_device(device)
    _check_embedder(args)
    if args.policy == "nirvana" and args.predictor is not None:
        # read, checked, and never asked: NIRVANA's level is the similarity table's (controller/policies.py)
        raise UsageError("--policy nirvana picks each prompt's level by the similarity table alone: drop --predictor")
    if args.launcher == "ray":
        if not args.workers:
            raise UsageError("--launcher ray starts --workers as Ray actors: with --workers 0 it has none to start")
        # found now, not once the engine is up and its launcher first imports it
        if importlib.util.find_spec("ray") is None:
            raise UsageError("--launcher ray needs Ray, which is not installed: pip install -e '.[ray]'")
    elif args.ray_address or args.ray_connect or args.ray_connect_timeout is not None:
        raise UsageError("--ray-address, --ray-connect and --ray-connect-timeout go with --launcher ray")
    if not args.workers:
        # only the launcher reads them, for the workers it starts; a worker started by hand has its own --device
        ignored = [
            flag
            for flag, given in (("--device", args.device), ("--startup-timeout", args.startup_timeout is not None))
            if given
        ]
        if ignored:
            many = len(ignored) > 1
            raise UsageError(
                f"{' and '.join(ignored)} {'are' if many else 'is'} for the workers the engine starts, and with"
                f" --workers 0 it starts none: drop {'them' if many else 'it'}"
            )


def _check_curve_flags(args: argparse.Namespace) -> None:
    """--curve-secret secures the sockets whose keys are given: --curve-allow both (its keys admitted on each, or on
    the client socket alone beside --curve-allow-workers), --curve-allow-workers the worker socket alone, the client
    socket left plain (workers on other hosts, clients on this one). A directory without the secret, or the secret
    without a directory, secures nothing: refused, as the engine would run without the CURVE it was asked for."""
    directories = [
        (flag, directory)
        for flag, directory in (
            ("--curve-allow", args.curve_allow),
            ("--curve-allow-workers", args.curve_allow_workers),
        )
        if directory
    ]
    if directories and not args.curve_secret:
        given = " and ".join(flag for flag, _ in directories)
        raise UsageError(
            f"{given} {'go' if len(directories) > 1 else 'goes'} with --curve-secret (the engine's .key_secret file)"
        )
    if args.curve_secret and not directories:
        raise UsageError(
            "--curve-secret goes with --curve-allow DIR (CURVE on both ZeroMQ sockets), --curve-allow-workers DIR"
            " (on the worker socket alone), or both (each socket its own keys)"
        )
    for flag, directory in directories:
        if not os.path.isdir(directory):
            # a mistyped directory would admit no key at all
            raise UsageError(f"{flag} {directory}: not a directory (it holds the admitted NAME.key files)")


def _out_of_files(flag: str, when: str, per_worker: str, leaves: str) -> UsageError:
    """A flag the hard limit on open files has no room for, said alike for each (the engine's own files, a worker's)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return UsageError(
        f"{flag} would run the engine out of open files {when}: this process may hold {hard:,} (ulimit -Hn), and the"
        f" engine keeps about {ENGINE_OWN_FILES} of its own and {FILES_PER_WORKER} for {per_worker}, which leaves"
        f" {leaves}: give at most that, or raise the limit"
    )


def _check_listeners_apart(args: argparse.Namespace) -> None:
    """Two of the engine's own listeners on one address: the second failed to bind, said to be "in use" as if
    another process held it (and a second ipc:// socket on a path takes it over without a word)."""
    # asyncio listens on every address a --host name resolves to, IPv6's too (ipv6); ZeroMQ on its IPv4 one unless
    # HOST is an IPv6 address (protocols/sockets.py)
    listeners = [(f"--host {args.host} --port {args.port}", Endpoint("tcp", args.host, args.port, ipv6=True))]
    for flag, given, default in (
        ("--client-listen", args.client_listen, DEFAULT_CLIENT_LISTEN),
        ("--worker-listen", args.worker_listen, DEFAULT_WORKER_LISTEN),
    ):
        named = [(f"{flag} {address}", address) for address in given or ()]
        named += [] if given else [(f"{flag} {default} (its default)", default)]
        listeners += [(said, parse_endpoint(address, listening=True)) for said, address in named]
    for index, (flag, endpoint) in enumerate(listeners):
        for other_flag, other in listeners[:index]:
            if _same_listener(endpoint, other):
                raise UsageError(f"{other_flag} and {flag} would listen on one address: give each its own")


def _same_listener(one: Endpoint, other: Endpoint) -> bool:
    if one.scheme != other.scheme:
        return False
    if one.scheme == "ipc":
        return os.path.abspath(one.path) == os.path.abspath(other.path)
    # port 0 (or *): any free port, never another listener's
    return one.port == other.port != 0 and _hosts_overlap(one, other)


def _hosts_overlap(one: Endpoint, other: Endpoint) -> bool:
    """Whether two listeners' hosts share an address: the same one, or a wildcard that takes in the other's. A name
    is the addresses it resolves to, and an IPv6 address is one however written: `--host localhost` beside a
    --client-listen on 127.0.0.1, or 0:0:0:0:0:0:0:1 beside [::1], was said to be "in use" as the second bound."""
    return any(
        mine == theirs or _takes_in(mine, theirs) or _takes_in(theirs, mine)
        for mine in _host_addresses(one)
        for theirs in _host_addresses(other)
    )


def _host_addresses(endpoint: Endpoint) -> set[str]:
    """A listener's host as the addresses it stands for: a wildcard, or what cannot be resolved (an interface's name
    to ZeroMQ, a name the bind will refuse), stands for itself."""
    host = endpoint.host.lower()
    if host in ("", "*") or "%" in host:  # an IPv6 address with its zone is compared as written
        return {host}
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:  # a name
        pass
    family = socket.AF_UNSPEC if endpoint.ipv6 else socket.AF_INET
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)}
    except (OSError, UnicodeError):
        return {host}


def _takes_in(wildcard: str, host: str) -> bool:
    if wildcard in ("", "::"):  # every address (IPv6's wildcard takes IPv4 in too, unless the socket is V6ONLY)
        return True
    if wildcard not in ("*", "0.0.0.0"):  # ZeroMQ's * is IPv4's wildcard unless the socket has IPV6 on
        return False
    try:
        return ipaddress.ip_address(host.partition("%")[0]).version == 4
    except ValueError:  # a name (or an interface, to ZeroMQ): it may well be one of IPv4's addresses
        return True


def checked_api_keys(key: str | None, path: str | None) -> ApiKeys | None:
    """The HTTP door's keys, of --api-key `key` (None: not given, ARGUS_API_KEY's then) or --api-keys `path` (read
    here, once), None for neither; a UsageError for keys no engine could serve with, naming where the key came from:
    "--api-key (or $ARGUS_API_KEY)" sent the user of ARGUS_API_KEY= and --api-keys looking for a flag not given."""
    named, drop = "--api-key", "leave --api-key out"
    if key is None and (key := os.environ.get(API_KEY_ENV)) is not None:
        named, drop = f"${API_KEY_ENV}", f"unset {API_KEY_ENV}"
    if key is not None and path is not None:
        if not key:
            raise UsageError(f"{named} is empty, and --api-keys names the keys: {drop}")
        raise UsageError(f"{named} and --api-keys: give one (name {named}'s key in the file)")
    if path is not None:
        return ApiKeys.read(path)
    if key is None:
        return None
    if problem := key_problem(key):
        # an empty key is no key: every route would be open, with no word said (ARGUS_API_KEY= in an environment)
        hint = f": give a key, or {drop} for none" if not key else ""
        raise UsageError(f"{named} {problem}{hint}")
    return ApiKeys.single(key)


def _check_embedder(args: argparse.Namespace) -> None:
    """The prompt cache's embedder is loaded as the engine starts: what it cannot load is refused first."""
    if args.cache_dir == "":
        # a variable left unset (--cache-dir "$CACHE_DIR"): taken as no --cache-dir, the engine saved nothing, and
        # restarted cold, without a word
        raise UsageError("--cache-dir is empty: give a folder for the cache (made if missing)")
    if args.no_cache:
        # no embedder is loaded (--embedder only picks the controller's similarity table), nothing kept or saved; and
        # no prompt has a neighbour, so every image is exact: a predictor is never asked for a level above 0, and a
        # quality profile, of images resumed from a neighbour, has none to describe
        ignored = [
            flag
            for flag, given in (
                ("--cache-bytes", args.cache_bytes is not None),
                ("--cache-dir", args.cache_dir),
                ("--cache-dir-bytes", args.cache_dir_bytes),
                ("--cache-save-interval", args.cache_save_interval is not None),
                ("--embedder-path", args.embedder_path),
                ("--levels", args.levels is not None),
                ("--similarity-table", args.similarity_table is not None),
                ("--predictor", args.predictor is not None),
                ("--quality-profile", args.quality_profile is not None),
            )
            if given
        ]
        if ignored:
            raise UsageError(f"--no-cache keeps no prompt cache: drop {' and '.join(ignored)}")
        return
    if args.cache_dir_bytes and not args.cache_dir:
        raise UsageError("--cache-dir-bytes spills latents to --cache-dir: add --cache-dir DIR")
    if args.cache_bytes == 0:
        # the engine started, and every image was a miss with no word said: a cache of no room holds nothing, not even
        # with latents on disk (their prompts are held in memory, charged to --cache-bytes)
        raise UsageError(
            "--cache-bytes 0 holds nothing: each cached prompt keeps its text, vector and index entry in memory, its"
            " latents in memory or spilled to --cache-dir. Give --no-cache for none"
        )
    if args.cache_save_interval is not None and not args.cache_dir:
        raise UsageError("--cache-save-interval saves the cache to --cache-dir: add --cache-dir DIR")
    if args.cache_dir and (problem := cache_dir_problem(args.cache_dir)):
        raise UsageError(problem)  # now, not once a neural embedder has loaded and the cache is built
    check_embedder_model(args.embedder, args.embedder_path, "--embedder", "--embedder-path")


def similarity_table_file(args: argparse.Namespace) -> TableFile | None:
    """--similarity-table, read and checked against the engine's embedder and levels (after check_serve_args has
    checked those): a table the engine cannot serve with is one line naming the file. None: not given."""
    if args.similarity_table is None:
        return None
    return checked_table_file(
        args.similarity_table, args.embedder, args.embedder_path, "--embedder-path", args.levels or DEFAULT_LEVELS
    )


def _warn_if_model_elsewhere(model: str) -> None:
    """Not refused: workers started elsewhere may hold the folder this host lacks. But a mistyped one was taken without
    a word, listed by GET /v1/models, and only each worker that came to load it failed."""
    problem = sdxl_model_problem(model)
    if not problem:
        return
    here = f"is not an SD-XL model on this host ({problem})" if os.path.exists(model) else "is no folder on this host"
    log.warning(
        "--model %s %s: workers started elsewhere (argus worker, Ray actors) must find an SD-XL folder at %s on"
        " their hosts, and GET /v1/models lists it as %r",
        model,
        here,
        model,
        served_model_name("sdxl", model),
    )


def serve_model_id(
    backend: str, model: str | None, given: str | None = None, sim_latents: str = PLACEHOLDER_LATENTS
) -> str:
    """The identity of the model every worker must run: --model-id, or when this host can read it, sim's bundled
    profile passing `sim_latents` (--sim-latents) or an sdxl --model found here (a Ray actor's --model may be on its
    host only). "" leaves it to the first worker, which, if it runs the wrong model, refuses every right one until a
    restart."""
    if given is not None:
        if not re.fullmatch(rf"{backend}:[0-9a-f]{{16}}", given):
            raise UsageError(f"--model-id {given!r}: not a {backend} model's identity ({backend}: and 16 hex digits)")
        known = serve_model_id(backend, model, sim_latents=sim_latents)
        if known and known != given:
            read = f"--backend {backend}" + (f" --model {model}" if model else "")
            read += f" --sim-latents {sim_latents}" if sim_latents != PLACEHOLDER_LATENTS else ""
            raise UsageError(f"--model-id {given} is not the model of {read}, which this host reads as {known}")
        return given
    if backend == "sim":
        return sim_model_id(LatencyProfile.bundled(SIM_PROFILE), sim_latents)
    if backend != "sdxl" or not model or sdxl_model_problem(model):
        return ""
    try:
        return folder_model_id(model)
    except (OSError, ValueError) as error:
        raise UsageError(f"--model {model}: cannot read its model_index.json and configs ({error})") from None
