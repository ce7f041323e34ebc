"""The engine's periodic tasks, each run under its TaskGroup while it serves and cancelled after the drain: the
sweep that answers expired deadlines (and frees expired image URLs), the cache checkpoints (--cache-save-interval)
and the reload on SIGHUP of the CURVE key directories and --api-keys's file.

A failed turn is logged and the task goes on: a bug here must not end the TaskGroup, and with it the engine,
without a drain.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from engine.commands.arg_types import UsageError
from engine.logs.plurals import counted

if TYPE_CHECKING:
    from engine.cache.service import CacheService
    from engine.config import CacheConfig
    from engine.dispatch.dispatcher import Dispatcher
    from engine.fleet.link import WorkerLink
    from engine.http.api_keys import ApiKeys
    from engine.http.image_files import ImageFiles
    from engine.metrics import EngineMetrics
    from engine.zmq.curve_gate import CurveGate

log = logging.getLogger("argus.engine")

# the sweep looks at queued jobs this often, and at least SWEEPS_PER_SLO times within a shorter SLO (a job
# that falls behind must be found while moving it up a level can still save it), but not more often than
# every _MIN_SWEEP_INTERVAL_S
_SWEEP_INTERVAL_S = 0.1
_SWEEPS_PER_SLO = 50
_MIN_SWEEP_INTERVAL_S = 0.005


async def sweep_forever(dispatcher: Dispatcher, image_files: ImageFiles, slo_s: float) -> None:
    # zero-latency simulated workers make the SLO zero: nothing to keep up with
    per_slo = slo_s / _SWEEPS_PER_SLO or _SWEEP_INTERVAL_S
    interval = max(_MIN_SWEEP_INTERVAL_S, min(_SWEEP_INTERVAL_S, per_slo))
    while True:
        await asyncio.sleep(interval)
        try:
            dispatcher.sweep()
            image_files.drop_expired()
        except Exception:
            log.exception("sweeping the queues failed")


async def checkpoint_forever(
    cache: CacheService, config: CacheConfig, draining: asyncio.Event, metrics: EngineMetrics
) -> None:
    """Saves the cache every --cache-save-interval, counted from the end of the last save, so a killed engine
    restarts warm. Stops as the drain starts (`draining` set): the drain's own save waits for a checkpoint still
    being written, never beside it. Each save written or failed is counted: a failing disk is alerted on there.
    The log says the first failure of a run of them, and how many failed once one is written again: a disk that
    stayed full or read-only logged a line every interval for as long as it did (every 5 s at an interval of 5)."""
    directory, interval = config.directory, config.save_interval_s
    if not (cache.enabled and directory and interval):
        return
    failed = 0  # checkpoints the disk failed since the last one written
    while True:
        await asyncio.sleep(interval)
        if draining.is_set():
            return
        # written aside and renamed over the last: a failed save leaves that whole
        checkpoints = metrics.cache_checkpoints
        try:
            if await cache.checkpoint(directory):
                checkpoints.labels("written").inc()
                if failed:
                    log.info(
                        "checkpointing the prompt cache works again: written to %s after %s",
                        directory,
                        counted(failed, "failed checkpoint"),
                    )
                    failed = 0
        except OSError as error:  # the disk's (full, read-only, the folder gone): one line, not a traceback each time
            if not failed:
                log.error(
                    "checkpointing the prompt cache to %s failed (%s); the last save stays, tried again every %g s"
                    " (further failures are not logged until a checkpoint is written:"
                    ' argus_cache_checkpoints_total{outcome="failed"} counts them)',
                    directory,
                    error,
                    interval,
                )
            failed += 1
            checkpoints.labels("failed").inc()
        except Exception:
            log.exception("checkpointing the prompt cache failed; the last save stays, tried again in %g s", interval)
            checkpoints.labels("failed").inc()


async def reload_keys_on_hangup(
    hangup: asyncio.Event, curve: CurveGate | None, link: WorkerLink, api_keys: ApiKeys | None
) -> None:
    """`curve`: the gate of the keys given with --curve-secret, None without (a Ray run's own keys are not reread).
    A worker whose key was revoked is dropped. `api_keys`: the HTTP door's, reread if they are --api-keys's file."""
    http_keys = api_keys if api_keys is not None and api_keys.named else None
    while True:
        await hangup.wait()
        hangup.clear()
        if curve is None and http_keys is None:
            log.warning("SIGHUP: nothing to reload (the engine runs without --curve-secret or --api-keys)")
            continue
        # each from its files, on a thread (not on the loop); one that cannot be read leaves the other reloaded
        if curve is not None:
            try:
                await asyncio.to_thread(curve.reload)
                link.drop_revoked()
            except UsageError as error:
                log.error("SIGHUP: CURVE keys not reloaded, those admitted until now still hold: %s", error)
            except Exception:  # pyzmq's reader raises IndexError for a `public-key` line without `=`, say
                log.exception("SIGHUP: CURVE keys not reloaded, those admitted until now still hold")
        if http_keys is not None:
            try:
                count = await asyncio.to_thread(http_keys.reload)
                log.info("SIGHUP: %s read from %s", counted(count, "API key"), http_keys.path)
            except UsageError as error:
                log.error("SIGHUP: API keys not reloaded, those until now still hold: %s", error)
            except Exception:
                log.exception("SIGHUP: API keys not reloaded, those until now still hold")
