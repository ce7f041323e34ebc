"""The engine's configuration: frozen, built in one place (engine.cli) from flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.fleet.restart_backoff import GIVEN_UP_RETRY_S, RestartBackoff
from engine.http.forwarded_for import IPNetwork
from protocols.curve import LOCAL_WORKER_KEYS_ENV
from workers.config import WorkerConfig, runs_on_cpu_threads
from workers.limits import DEFAULT_LEVELS, PLACEHOLDER_LATENTS

if TYPE_CHECKING:
    from engine.cache.table_file import TableFile
    from engine.http.api_keys import ApiKeys

# engine and workers beat this often; each counts the other lost after heartbeat_timeout_s of silence
HEARTBEAT_INTERVAL_S = 1.0
# a timeout nearer the interval loses healthy workers to one late beat (a long step, a loaded host): the chaos
# bench runs at this floor
MIN_HEARTBEAT_TIMEOUT_S = 2 * HEARTBEAT_INTERVAL_S
# ZeroMQ takes the timeout of its pings on the worker socket in milliseconds, in a C int: about 24.8 days
MAX_HEARTBEAT_TIMEOUT_S = (2**31 - 1) // 1000
# ZeroMQ counts the replies a client may leave queued (--max-queue and 256 more, engine/zmq/door.py) in a C int: a
# larger --max-queue failed the engine's start in a traceback
MAX_QUEUE = 1_000_000_000
# where the HTTP API key may come from instead of the command line, which ps shows
API_KEY_ENV = "ARGUS_API_KEY"

# a checkpoint of the prompt cache every 5 minutes, so a killed engine loses at most that much of it. A save holds up
# lookups only for its snapshot (the 1 GiB default: 10 to 40 ms here; the write, 2 to 4 s, runs beside them), but
# rewrites the whole file: at this interval, well under 1% of a core and 4 MB/s of disk writes for the default
# (docs/cache.md). It was off by default while the write held lookups for all of it.
DEFAULT_SAVE_INTERVAL_S = 300.0
DEFAULT_CACHE_BYTES = 1 << 30  # what the prompt cache holds in memory, latents and prompts (--cache-bytes)
# images kept for response_format=url: OpenAI's URLs last an hour. At SD-XL scale (1.5 MB PNGs) 256 MiB holds about
# 180 images: a fleet making hundreds a minute turns it over in a minute or two (--image-url-store-bytes)
DEFAULT_IMAGE_URL_TTL_S = 3600.0
DEFAULT_IMAGE_URL_STORE_BYTES = 256 * 1024 * 1024
# they are held in memory and lost at a restart: a week is more than a store of URLs is for, and catches a TTL given
# in milliseconds (an hour, 3600000, is 41 days)
MAX_IMAGE_URL_TTL_S = 7 * 24 * 3600
# local worker processes `argus serve` starts (--workers); profile latency and bench worker give a worker the threads
# each of these gets, so that they measure what it serves at
DEFAULT_LOCAL_WORKERS = 2
# time enough for a ZeroMQ client whose connection dropped to connect again (--client-gone-grace)
DEFAULT_CLIENT_GONE_GRACE_S = 10.0
# ZeroMQ client connections admitted at once (--max-client-connections): within the 1,024 descriptors the engine keeps
# beside its HTTP connections (engine/system/open_files.py) for its own files, these and workers started by hand, and
# about 12 MB of libzmq's buffers. A client program needs one per ArgusClient (AsyncArgusClient: one for any number of
# requests)
DEFAULT_CLIENT_MAX_CONNECTIONS = 512
# a local worker or Ray actor that has not said hello this long after its start is replaced (--startup-timeout)
DEFAULT_STARTUP_TIMEOUT_S = 180.0
# ray.init waits for ever on a cluster it cannot reach (--ray-connect-timeout)
DEFAULT_RAY_CONNECT_TIMEOUT_S = 60.0
# the ZeroMQ doors, on loopback: clients', and remote workers'
DEFAULT_CLIENT_LISTEN = "tcp://127.0.0.1:5555"
DEFAULT_WORKER_LISTEN = "tcp://127.0.0.1:5556"


def environment_for_children() -> dict[str, str]:
    """This process's environment but the engine's API key, which no process the engine starts has any use for (nor a
    benchmark's engine, which then required it), and the CURVE keys of a worker started by hand (set in the shell the
    engine started from): a local worker takes its keys from there, and of an engine without CURVE, each tried CURVE,
    heard that its engine has none, and was given up (so did a benchmark's fleets)."""
    return {name: value for name, value in os.environ.items() if name not in (API_KEY_ENV, LOCAL_WORKER_KEYS_ENV)}


def served_model_name(backend: str, model: str | None) -> str:
    """The name GET /v1/models gives: the --model folder's, else the backend's (tiny, sim: no folder). The folder's
    own name, made absolute first: `--model .` (serve run inside it) or `--model ..` was listed as '.' or '..'. A hub
    cache's snapshot (models--ORG--NAME/snapshots/REVISION) is its repository's NAME: it was listed as the 40 hex
    digits of the revision."""
    if not model:
        return f"argus-{backend}"
    folder = os.path.abspath(model)
    parent, name = os.path.split(folder)
    cache, snapshots = os.path.split(parent)
    if snapshots == "snapshots" and (repository := os.path.basename(cache)).startswith("models--"):
        return repository.split("--")[-1]  # the hub allows no "--" in a repository's names
    return name


@dataclass(frozen=True, slots=True)
class LaunchConfig:
    """Local worker processes the engine spawns and restarts."""

    count: int = 2
    backend: str = "tiny"
    devices: tuple[str, ...] = ("cpu",)  # assigned round-robin
    model: str | None = None
    time_scale: float = 1.0
    sim_latents: str = PLACEHOLDER_LATENTS  # sim only: workers/limits.py SIM_LATENTS
    max_batch: int | None = None
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S
    restart_backoff_s: float = 1.0
    max_restart_backoff_s: float = 30.0
    given_up_retry_s: float = GIVEN_UP_RETRY_S  # a slot given up is started again this often
    # the engine's `argus --log-level` and `--log-format`, which its workers log with too
    log_level: str = "INFO"
    log_format: str = "text"

    def restart_backoff(self) -> RestartBackoff:
        """A slot's wait before each restart, for either launcher."""
        return RestartBackoff(
            self.restart_backoff_s, self.max_restart_backoff_s, given_up_retry_s=self.given_up_retry_s
        )

    def worker_config(self, connect: str, slot: int, threads: int | None) -> WorkerConfig:
        """`threads`: given to a worker whose model runs on the CPU (the others refuse it)."""
        device = self.devices[slot % len(self.devices)]
        return WorkerConfig(
            connect=connect,
            worker_id=f"local-{slot}",
            backend=self.backend,
            device=device,
            model=self.model,
            time_scale=self.time_scale,
            sim_latents=self.sim_latents,
            max_batch=self.max_batch,
            threads=threads if runs_on_cpu_threads(self.backend, device) else None,
            die_with_parent=True,
            owned=True,
            log_level=self.log_level,
            log_format=self.log_format,
        )


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    max_queue: int = 1024  # images admitted but not finished; past it, Busy
    inflight_batches_per_worker: int = 2  # one running, one waiting on the worker
    max_attempts: int = 3  # a job whose worker died is re-dispatched this often
    no_worker_timeout_s: float = 60.0  # a job nobody can take fails after this
    # a job that can no longer meet its deadline: answered deadline_exceeded at once, or served late
    serve_late: bool = False


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    name: str = "argus"  # argus | clipper-ha | clipper-ht | nirvana | proteus
    slo_s: float | None = None  # None: three exact images on the latency profile
    window_s: float = 10.0
    latency_profile: str | None = None  # None: the bundled one for the backend
    quality_profile: str | None = None  # `argus profile quality` samples; None: the modelled quality
    predictor: str | None = None  # `argus train-predictor` output; None: the similarity table


@dataclass(frozen=True, slots=True)
class CacheConfig:
    enabled: bool = True
    levels: tuple[int, ...] = DEFAULT_LEVELS  # the levels K it keeps latents at, some of DEFAULT_LEVELS
    embedder: str = "hash"  # hash | minilm | clip
    embedder_path: str | None = None  # clip: a local CLIP text encoder directory
    max_bytes: int = DEFAULT_CACHE_BYTES
    directory: str | None = None  # spill directory and warm-restart file
    directory_bytes: int = 0
    # `directory` cannot be written but holds a save (cache_dir.restore_only): restored, and nothing spilled there,
    # directory_bytes kept as the operator's figure for the messages that name it
    read_only: bool = False
    # a checkpoint of the cache to `directory` this often (0: only at the drain), so a killed engine restarts warm
    save_interval_s: float = DEFAULT_SAVE_INTERVAL_S
    # --similarity-table, read and checked at start (engine/commands/serve_checks.py); None: the
    # embedder's bundled table
    table_file: TableFile | None = None


@dataclass(frozen=True, slots=True)
class EngineConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    client_listen: tuple[str, ...] = (DEFAULT_CLIENT_LISTEN,)
    worker_listen: tuple[str, ...] = (DEFAULT_WORKER_LISTEN,)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    # the model every worker must run (workers/model_id.py), and that made the saved cache's latents; "" when this
    # host cannot name it (tiny, built by each worker; an sdxl --model on other hosts): the first worker welcomed does
    model_id: str = ""
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    heartbeat_timeout_s: float = 10.0
    # a ZeroMQ client a reply found disconnected, and not back within this long, has its kept replies dropped and
    # its other requests cancelled (engine/zmq/door.py)
    client_gone_grace_s: float = DEFAULT_CLIENT_GONE_GRACE_S
    # ZeroMQ client connections open at once; past them, one is refused at its handshake (engine/zmq/zap_handler.py)
    client_max_connections: int = DEFAULT_CLIENT_MAX_CONNECTIONS
    shutdown_timeout_s: float = 30.0
    max_body_bytes: int = 1024 * 1024
    # an HTTP connection idle between requests, or still sending a request's headers, this long is closed (aiohttp's
    # own 3630 s held a connection that trickled its headers for an hour); nginx's default, above AWS's balancers' 60 s
    keepalive_timeout_s: float = 75.0
    send_timeout_s: float = 60.0  # an HTTP client that takes none of its answer this long is disconnected
    # HTTP connections open at once, past which one is answered 503 and closed (engine/http/connection_limit.py);
    # None: what the limit on open files leaves (engine/system/open_files.py)
    max_connections: int | None = None
    # when set, every HTTP route but /health and the image URLs (/v1/images/files/...) needs
    # "Authorization: Bearer KEY": --api-key's one key, or one of --api-keys's named keys (engine/http/api_keys.py),
    # that file read once, as it was checked: a second read at start could load what no check had seen
    api_keys: ApiKeys | None = None
    # CURVE with the engine's .key_secret file, on the sockets whose admitted public keys are given: curve_allowed_dir
    # admits on both, or on the client socket alone beside curve_workers_dir, which admits on the worker socket (and
    # alone leaves the client socket plain)
    curve_secret_file: str | None = None
    curve_allowed_dir: str | None = None
    curve_workers_dir: str | None = None
    # where clients reach the HTTP API (a TLS-terminating proxy's https://HOST/PATH), to make image URLs from;
    # None: the request's Host header, with scheme http
    public_url: str | None = None
    # the reverse proxies whose X-Forwarded-For names an HTTP request's client (engine/http/forwarded_for.py)
    forwarded_allow_ips: tuple[IPNetwork, ...] = ()
    image_url_ttl_s: float = DEFAULT_IMAGE_URL_TTL_S
    image_url_store_bytes: int = DEFAULT_IMAGE_URL_STORE_BYTES
    launcher: str = "local"  # local | ray
    ray_address: str | None = None  # None: a Ray instance of our own, loopback only
    ray_connect_timeout_s: float = DEFAULT_RAY_CONNECT_TIMEOUT_S
    ray_connect: str | None = None  # the worker address Ray actors dial; None: the first TCP worker_listen
