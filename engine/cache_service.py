"""The request path's off-loop half: embed, look up, choose the level, fetch the latent; and cache inserts.

Everything that touches the prompt cache or the embedder runs on ONE dedicated
thread, so the cache needs no locks and the event loop never waits on a
lookup. Requests that arrive while the thread is busy are embedded and looked
up together in the next call, so a burst costs one numpy pass and one index
query rather than one per prompt. Without a cache there is nothing to look up
and a request's level is chosen at once, on the loop.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import random
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from controller.predictor import Lookup
from engine.arg_types import UsageError
from engine.cache.embedders import Embedder, make_embedder
from engine.cache.latent_store import SPILL_FOLDER_PREFIX
from engine.cache.persistence import FILE_NAME, TEMPORARY_PREFIX, CacheFileError
from engine.cache.prompt_cache import CacheStats, Neighbour, PromptCache, ShapeKey
from engine.config import CacheConfig
from engine.jobs import AdmittedRequest

log = logging.getLogger("argus.cache")

# (lookup, images) -> (K*, K'): the controller's choice, safe to call from the cache thread
Choose = Callable[[Lookup, int, random.Random], tuple[int, int]]
# (K*, K', the neighbour's levels) -> the levels a job may move up to (Policy.fallback_levels)
FallbackLevels = Callable[[int, int, tuple[int, ...]], tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class Preparation:
    k_star: int
    level: int  # K' the request is served at
    latent: np.ndarray | None  # the neighbour's latent after `level` steps (None at 0)
    similarity: float | None
    vector: np.ndarray | None  # the prompt's embedding, kept to cache what its generation brings back
    # (level, latent) pairs above `level`, ascending, for a job that must wait or would miss its deadline:
    # every level the neighbour holds in memory (see Dispatcher)
    fallbacks: tuple[tuple[int, np.ndarray], ...] = ()


# called on the loop with the request's preparation, or the error that prevented it
Prepared = Callable[[AdmittedRequest, Preparation | BaseException], None]


class CacheService:
    def __init__(
        self,
        cache: PromptCache | None,
        embedder: Embedder | None,
        choose: Choose,
        seed: int = 0,
        fallback_levels: FallbackLevels | None = None,
        directory_lock: int | None = None,
        config: CacheConfig | None = None,
    ):
        self._cache = cache
        self._config = config  # to open the saved cache once the model is named (adopt_model)
        self._directory_lock = directory_lock  # held until close(): the save at the drain is still this engine's
        self._embedder = embedder
        self._choose = choose
        self._fallback_levels = fallback_levels
        self._rng = random.Random(seed)  # used by one thread only: the cache thread, or the loop without a cache
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="argus-cache")
        self._waiting: list[tuple[AdmittedRequest, Prepared]] = []
        self._busy = False

    @property
    def enabled(self) -> bool:
        return self._cache is not None

    def prepare(self, request: AdmittedRequest, then: Prepared) -> None:
        """Chooses the request's level (and fetches its neighbour's latent); calls `then` on the loop."""
        if self._cache is None:
            try:
                preparation = self._decide(request, None, None)
            except Exception as error:  # answered, as on the cache thread: not left admitted, holding its room
                preparation = error
            then(request, preparation)
            return
        self._waiting.append((request, then))
        if not self._busy:
            self._start_batch()

    def insert(self, request: AdmittedRequest, vector: np.ndarray, latents: dict[int, np.ndarray]) -> None:
        """Caches what a generation passed through (fire and forget, in order with lookups)."""
        if self._cache is None or not latents:
            return
        shape = ShapeKey(request.steps, request.width, request.height)
        future = self._thread.submit(self._insert, request.spec.prompt, vector, shape, latents)
        future.add_done_callback(_log_failure)

    def adopt_model(self, model: str) -> None:
        """The model the engine could not name at start, named by the first worker welcomed: the saved cache is
        restored now if that model made it, and set aside if another did. Until now the cache held nothing (no
        worker had made anything), and the saved one was left unread: its latents may be another model's."""
        if self._cache is None or self._cache.model:
            return
        future = self._thread.submit(self._adopt_model, model)
        future.add_done_callback(_log_failure)

    async def stats(self) -> CacheStats | None:
        if self._cache is None:
            return None
        return await asyncio.wrap_future(self._thread.submit(lambda: self._cache.stats()))

    async def close(self, save_to: str | None) -> None:
        """Saves the cache (warm restart) and stops the thread; a failed save still closes the cache and the thread."""
        try:
            if self._cache is not None and save_to:
                await asyncio.wrap_future(self._thread.submit(self._save, save_to))
        finally:
            if self._cache is not None:
                # on the thread, which reads self._cache there: an adopt_model queued before it replaced the cache
                await asyncio.wrap_future(self._thread.submit(lambda: self._cache.close()))
            self._thread.shutdown(wait=True)
            if self._directory_lock is not None:
                os.close(self._directory_lock)

    # -- batching onto the thread ------------------------------------------------------
    def _start_batch(self) -> None:
        batch, self._waiting = self._waiting, []
        self._busy = True
        requests = [request for request, _ in batch]
        done = asyncio.wrap_future(self._thread.submit(self._prepare_all, requests))
        done.add_done_callback(lambda result: self._finish_batch(batch, result))

    def _finish_batch(self, batch: list[tuple[AdmittedRequest, Prepared]], result: asyncio.Future) -> None:
        self._busy = False
        if self._waiting:
            self._start_batch()  # the thread starts on the next burst while this one is handed on
        error = result.exception()
        preparations = [error] * len(batch) if error is not None else result.result()
        for (request, then), preparation in zip(batch, preparations, strict=True):
            then(request, preparation)

    # -- on the cache thread ---------------------------------------------------------------
    def _save(self, directory: str) -> None:
        if not self._cache.model:
            # no worker named the model: the last save, whichever model made it, is left for the next start
            log.info("no worker joined: the saved prompt cache in %s is left as it was", directory)
            return
        self._cache.save(directory)
        log.info("prompt cache saved to %s", directory)

    def _insert(self, prompt: str, vector: np.ndarray, shape: ShapeKey, latents: dict[int, np.ndarray]) -> None:
        # self._cache read here, not when queued (stats too): an adopt_model queued before it replaces the cache (a
        # request that waited for the first worker brings its latents while the saved cache is still being restored)
        self._cache.insert(prompt, vector, shape, latents)

    def _adopt_model(self, model: str) -> None:
        # inserts come after a worker's images, and so after this (one thread, in order): the cache is still empty
        self._cache.close()
        self._cache = open_prompt_cache(self._config, model, self._embedder, self._cache.levels)

    def _prepare_all(self, requests: list[AdmittedRequest]) -> list[Preparation]:
        vectors = self._embedder.embed([request.spec.prompt for request in requests])
        shapes = [ShapeKey(request.steps, request.width, request.height) for request in requests]
        neighbours = self._cache.lookup_many(vectors, shapes)
        return [
            self._decide(request, vector, neighbour)
            for request, vector, neighbour in zip(requests, vectors, neighbours, strict=True)
        ]

    def _decide(self, request: AdmittedRequest, vector: np.ndarray | None, neighbour: Neighbour | None) -> Preparation:
        lookup = Lookup(
            similarity=neighbour.similarity if neighbour else None,
            neighbour_levels=tuple(k for k in neighbour.levels if k < request.steps) if neighbour else (),
            prompt=request.spec.prompt,
            neighbour_prompt=neighbour.prompt if neighbour else None,
        )
        k_star, level = self._choose(lookup, len(request.jobs), self._rng)
        # a neighbour comes from the cache, so with one there is a cache to take its latent from
        latent = self._cache.take_latent(neighbour.prompt_id, level) if neighbour and level else None
        if level and latent is None:
            level = 0  # the policy picked a level the neighbour does not have: run in full
        if self._cache is not None and not level:
            self._cache.record_miss()
        fallbacks = self._fallbacks(neighbour, lookup, k_star, level)
        return Preparation(k_star, level, latent, lookup.similarity, vector, fallbacks)

    def _fallbacks(
        self, neighbour: Neighbour | None, lookup: Lookup, k_star: int, level: int
    ) -> tuple[tuple[int, np.ndarray], ...]:
        """The latents of the levels the policy lets the job move up to, held in memory, ascending."""
        if self._fallback_levels is None or neighbour is None:
            return ()
        levels = self._fallback_levels(k_star, level, lookup.neighbour_levels)
        found = ((k, self._cache.peek_latent(neighbour.prompt_id, k)) for k in levels)
        return tuple((k, latent) for k, latent in found if latent is not None)


def _log_failure(future) -> None:
    if future.exception() is not None:
        log.error("caching a generation failed: %s", future.exception())


def open_prompt_cache(config: CacheConfig, model: str, embedder: Embedder, levels: tuple[int, ...]) -> PromptCache:
    """The cache saved in `config.directory` at the last shutdown if `model` made it, or a new one.

    A file that cannot be trusted (corrupt, foreign, another version) is set
    aside under a name of its own (never half-loaded, never overwritten), and the
    engine starts with an empty cache.
    The directory belongs to this engine: what an earlier one left there when it
    died without closing its cache is removed first.
    """
    spill = os.path.join(config.directory, "spill") if config.directory else None
    if config.directory:
        _remove_leftovers(config.directory, spill)
    arguments = (embedder.name, embedder.dim, levels, config.max_bytes, spill, config.directory_bytes, model)
    saved = os.path.join(config.directory, FILE_NAME) if config.directory else None
    if saved and model and os.path.exists(saved):
        try:
            cache = PromptCache.load(config.directory, *arguments)
            log.info("prompt cache restored from %s: %d prompts", saved, cache.stats().prompts)
            return cache
        except CacheFileError as error:
            # a name of its own: a refused file may be another embedder's good cache, to be renamed back
            aside = f"{saved}.rejected-{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}"
            os.replace(saved, aside)
            log.error("refused the saved prompt cache (%s); kept it as %s, starting empty", error, aside)
    return PromptCache(*arguments)


def _remove_leftovers(directory: str, spill: str) -> None:
    """Spill folders (latents only their dead engine knew of) and half-written saves: nobody can use them, and
    each crash would otherwise leave up to directory_bytes more on disk."""
    folders = list(Path(spill).glob(SPILL_FOLDER_PREFIX + "*"))
    # a save is a file: a directory of that name (made by hand) is not the engine's to delete, and failed its start
    saves = [path for path in Path(directory).glob(TEMPORARY_PREFIX + "*") if not path.is_dir()]
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    for save in saves:
        save.unlink(missing_ok=True)
    if folders or saves:
        log.warning("removed %d spill folders and %d unfinished saves left in %s", len(folders), len(saves), directory)


def lock_cache_dir(directory: str) -> int:
    """Makes `directory` this engine's for as long as the returned descriptor is open (the kernel lets go of it
    when the process dies, however it dies); refuses one held by a live engine, or that cannot be written.

    A second engine would delete the first's spill folder as a dead engine's leftovers, and overwrite its save.
    """
    try:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        raise UsageError(f"--cache-dir {directory}: not writable ({error.strerror or error})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # checked now, not at the drain: without a spill folder nothing is written there until the save
        if not os.access(directory, os.W_OK | os.X_OK):
            raise UsageError(f"--cache-dir {directory}: not writable (read-only or permission denied)")
    except BlockingIOError:
        os.close(fd)
        raise UsageError(
            f"--cache-dir {directory} is in use by another engine: give each engine a --cache-dir of its own"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def build_cache_service(
    config: CacheConfig,
    model: str,
    levels: tuple[int, ...],
    choose: Choose,
    fallback_levels: FallbackLevels | None = None,
) -> CacheService:
    """`model`: what makes the latents ("" until the first worker names it: adopt_model). `fallback_levels`: also
    hand each hit the latents of these levels (a policy that escalates)."""
    if not config.enabled:
        return CacheService(None, None, choose)
    embedder = make_embedder(config.embedder, config.embedder_path)
    lock = lock_cache_dir(config.directory) if config.directory else None
    try:
        cache = open_prompt_cache(config, model, embedder, levels)
    except BaseException:
        if lock is not None:
            os.close(lock)
        raise
    return CacheService(cache, embedder, choose, fallback_levels=fallback_levels, directory_lock=lock, config=config)
