"""The request path's off-loop half: embed, look up, choose the level, fetch the latent; and cache inserts.

Everything that touches the prompt cache or the embedder runs on ONE dedicated
thread, so the cache needs no locks and the event loop never waits on a
lookup. Requests that arrive while the thread is busy are embedded and looked
up together in the next call, so a burst costs one numpy pass and one index
query rather than one per prompt (and a prompt the cache holds costs neither:
PromptCache.find_many). Without a cache there is nothing to look up and a
request's level is chosen at once, on the loop.

The cache saved in --cache-dir is read on a thread of its own while the cache
thread serves: until it is handed over, lookups see what generations brought
since the start (most prompts miss), and a checkpoint waits for the next turn.
The hand-over inserts what they brought into the restored cache, so nothing is
lost; the drain waits for it before its save.

A save (a checkpoint, or the drain's) takes a snapshot on the cache thread, which
costs milliseconds, and writes it on a thread of its own (`argus-cache-save`)
while lookups go on: written on the cache thread, a 1 GiB save held every lookup
for 2 to 3 s. One save is written at a time: a checkpoint due while one is still
written is skipped, and the drain's save waits for it, then saves what came since.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from engine.cache.cache_dir import (
    has_saved_cache,
    load_saved_cache,
    lock_cache_dir,
    new_prompt_cache,
    relock_if_replaced,
    remove_leftovers,
    restore_only,
    saved_file_identity,
    warn_if_disk_short,
    writable,
    writable_again,
)
from engine.cache.embedders import Embedder, make_embedder
from engine.cache.persistence import CacheFileError
from engine.cache.preparation import Choose, FallbackLevels, Preparation, Preparer
from engine.cache.prompt_cache import CacheSnapshot, CacheStats, PromptCache, ShapeKey
from engine.cache.returned_latents import latents_problem
from engine.commands.arg_types import UsageError
from engine.config import CacheConfig
from engine.dispatch.jobs import AdmittedRequest
from engine.logs.plurals import counted
from protocols.worker_messages import ItemDone
from workers.limits import guided

log = logging.getLogger("argus.cache")


class Returned(NamedTuple):
    """What a worker's image brought back to cache: checked before it is (latents_problem). A tuple, as Start is."""

    done: ItemDone
    worker: str  # named in the warning when they do not fit
    run_level: int  # the level the run started from: it passed through the levels above it only
    latent_shape: tuple[int, int, int]  # of one latent, for the worker's backend at the request's size
    seed: int | None = None  # of the run the latents are of (Job.run_seed; None: not known)


class Start(NamedTuple):
    """What a request's first image was made from, to count: a hit at `step` of `neighbour`'s latents, or a miss
    (step 0). A tuple, made on the loop for every request: a frozen dataclass cost twice as much to make."""

    shape: ShapeKey
    neighbour: str | None
    step: int


# called on the loop with the request's preparation, or the error that prevented it
Prepared = Callable[[AdmittedRequest, Preparation | BaseException], None]
# a burst of requests being prepared, each with what to call with its preparation
Burst = list[tuple[AdmittedRequest, Prepared]]
# what a generation brought to cache: (prompt, its vector, its shape, what its worker returned)
Insert = tuple[str, np.ndarray, ShapeKey, Returned]
# what images brought (their latents, and what each started from) waits this long at most for lookups to ride with
_IMAGES_WAIT_S = 0.05


class CacheService:
    def __init__(
        self,
        cache: PromptCache | None,
        embedder: Embedder | None,
        choose: Choose,
        fallback_levels: FallbackLevels | None = None,
        directory_lock: int | None = None,
        config: CacheConfig | None = None,
    ):
        self._cache = cache
        self._config = config  # where the saved cache is, restored once the model is named
        # held until close(): the save at the drain is still this engine's. Replaced on the cache thread when the
        # folder was deleted and made again (_still_owns)
        self._directory_lock = directory_lock
        self._embedder = embedder
        # used by one thread only: the cache thread, or the loop without a cache
        self._preparer = Preparer(choose, fallback_levels)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="argus-cache")
        # reads the saved cache, which takes seconds (a 1 GiB save: 6 s), while the cache thread serves
        self._restorer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="argus-cache-restore")
        self._restore: Future[PromptCache | None] | None = None
        # writes the saves' snapshots while the cache thread serves; the one being written (read on the loop only)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="argus-cache-save")
        self._writing: Future | None = None
        # a restore not handed over yet: set on the loop as it is asked for (so /ready says so at once), then only
        # on the cache thread, which owns the rest: the cache's `changes` at its last save (None: never saved); a
        # restore failed unexpectedly, so its file is left as it was, not saved over
        self._restoring = False
        self._saved_changes: int | None = None
        # the saved file that holds them (saved_file_identity): one deleted, replaced or cut short since is saved again
        self._saved_file: tuple[int, int, int, int] | None = None
        self._keep_saved_file = False
        # why the last save found --cache-dir not this engine's (_still_owns), said once: None once it is again
        self._not_owned: str | None = None
        self._closed = False
        self._waiting: Burst = []
        self._busy = False
        # what images brought, not yet handed to the thread: it rides with the next lookups (see insert)
        self._images: list[Insert | Start] = []
        self._images_due: asyncio.TimerHandle | None = None

    @property
    def enabled(self) -> bool:
        return self._cache is not None

    @property
    def restoring(self) -> bool:
        """The saved cache is still being read: lookups find only what was cached since the start."""
        return self._restoring

    def restore_saved(self) -> None:
        """Starts restoring the saved cache, if the model the cache names made it (build_cache_service)."""
        self._restoring = True  # at once, as seen from the loop: _start_restore says so if there is nothing to read
        self._submit(self._start_restore).add_done_callback(_log_failure("restoring the prompt cache"))

    def prepare(self, request: AdmittedRequest, then: Prepared) -> None:
        """Chooses the request's level (and fetches its neighbour's latent); calls `then` on the loop."""
        if self._cache is None:
            try:
                preparation = self._preparer.prepare(None, request, None, None)
            except Exception as error:  # answered, as on the cache thread: not left admitted, holding its room
                preparation = error
            then(request, preparation)
            return
        self._waiting.append((request, then))
        if not self._busy:
            self._start_batch()

    def insert(self, request: AdmittedRequest, vector: np.ndarray, returned: Returned) -> None:
        """Caches what a generation passed through, once checked (fire and forget, in order with lookups).

        The insert goes to the thread with the next lookups, run before them, or within _IMAGES_WAIT_S when none
        come: handed over alone, each woke the thread for a few microseconds of work, and on this 2-core VM the
        wake-ups cost more than the work (1,000 req/s: 5.5 context switches of the cache thread a request, and 754
        us of engine CPU; with the inserts riding along, 2.8 and 695 us). Whatever else runs on the thread comes
        after the inserts queued before it.
        """
        if self._cache is None or not returned.done.brings_latents or not guided(request.spec.guidance_scale):
            return  # an unguided run's composition would start guided requests' images (Preparer)
        if not vector.any():
            return  # the zero vector is similar to nothing (PromptCache.lookup_many): no prompt would find these
        shape = ShapeKey(request.steps, request.width, request.height)
        self._brought((request.spec.prompt, vector, shape, returned))

    def count_start(self, request: AdmittedRequest, step: int) -> None:
        """Counts what the request's image its level was chosen for (request.resumer), once made, started from: a hit
        at `step` (where its neighbour's latent was held), or a miss at 0. Not as the request is prepared: a busy
        dispatcher moves a queued image up to another latent of its neighbour's (back to K*, or to make its deadline),
        and those counted misses, or hits at the level below (a sim run at twice its capacity: 37% of images from the
        cache, no hit counted). The request's other images run in full. An `exact` request asks nothing of the cache,
        and is not counted."""
        if self._cache is None or request.spec.exact:
            return
        self._brought(Start(ShapeKey(request.steps, request.width, request.height), request.neighbour, step))

    def _brought(self, item: Insert | Start) -> None:
        self._images.append(item)
        if self._images_due is None:
            self._images_due = asyncio.get_running_loop().call_later(_IMAGES_WAIT_S, self._hand_images_over)

    def adopt_model(self, model: str) -> None:
        """The model the engine could not name at start, named by the first worker welcomed: the saved cache is
        restored now if that model made it, and set aside if another did. Until now the cache held nothing (no
        worker had made anything), and the saved one was left unread: its latents may be another model's."""
        if self._cache is None or self._cache.model:
            return
        self._restoring = True
        self._submit(self._adopt_model, model).add_done_callback(_log_failure("restoring the prompt cache"))

    def current_stats(self) -> CacheStats | None:
        """The cache's figures now, read on the loop without waiting for the cache thread (a scrape of /metrics).

        Its counts are plain attributes the thread keeps, read under the GIL: a read lands between two statements of
        the thread, so each figure is whole, though a figure may be one statement of an insert ahead of another (the
        bytes held, not yet the prompts). The hit counts are copied from a dict whose keys never change; a restore's
        hand-over adds what the cache counted to the restored cache before serving from it, so no count goes back.
        What images brought in the last _IMAGES_WAIT_S, not handed to the thread yet, is not counted yet."""
        cache = self._cache
        return cache.stats() if cache is not None else None

    async def stats(self) -> CacheStats | None:
        if self._cache is None:
            return None
        return await asyncio.wrap_future(self._submit(lambda: self._cache.stats()))

    async def checkpoint(self, save_to: str) -> bool:
        """Saves the cache if it changed since the last save (a kill loses only what came after): a snapshot on the
        cache thread, written on the save thread while lookups go on. Skipped while the saved cache is being
        restored, and while the last save is still being written (never two writers of one file). True when a save
        was written; a write that fails raises."""
        if self._cache is None:
            return False
        if self._writing is not None and not self._writing.done():
            log.warning("the last checkpoint of the prompt cache is still being written: this one is skipped")
            return False
        # not cancelled with its caller (the drain ends the checkpoint task): a snapshot taken is always written and
        # released, and the drain waits for the write
        return await asyncio.shield(self._save(save_to, final=False))

    async def close(self, save_to: str | None) -> None:
        """Saves the cache (warm restart) and stops the threads; a failed save still closes the cache and the
        threads. A restore still running is waited for, and saved with the rest; so is a checkpoint still being
        written, and what came after it is saved then. Once closed, it is not closed again."""
        if self._closed:
            return
        try:
            if self._cache is not None and save_to:
                await self._written()
                await self._save(save_to, final=True)
        finally:
            if self._cache is not None:
                await self._written()  # the write reads the spill folder, which closing the cache deletes
                # on the thread, which reads self._cache there: a restore handed over before it replaced the cache
                await asyncio.wrap_future(self._submit(self._close_cache))
            self._stop_threads()

    def abandon(self) -> None:
        """Closes it unsaved, waiting here, for an engine that never served (a port in use): its threads, a restore
        still reading, its spill folder and the --cache-dir lock stayed, and another engine in the process was refused
        the directory. Nothing if closed already."""
        if self._closed:
            return
        self._writer.shutdown(wait=True)  # the write reads the spill folder, which closing the cache deletes
        if self._cache is not None:
            self._submit(self._close_cache).result()
        self._stop_threads()

    def _stop_threads(self) -> None:
        self._closed = True
        self._thread.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        self._restorer.shutdown(wait=True)
        if self._directory_lock is not None:
            os.close(self._directory_lock)

    async def _save(self, directory: str, final: bool) -> bool:
        taken = await asyncio.wrap_future(self._submit(self._snapshot, directory, final))
        if taken is None:
            return False
        snapshot, started, on_thread = taken
        writing = self._writing = self._writer.submit(snapshot.write, directory)
        # added before anything awaits the write, so it runs first: the cache thread takes its outcome before any
        # work a waiter queues there (the drain's save after a checkpoint compares with what that wrote)
        writing.add_done_callback(
            lambda done: self._thread.submit(self._saved, snapshot, done, directory, final, (started, on_thread))
        )
        try:
            await asyncio.wrap_future(writing)
            return True
        finally:
            # let go of it once written: a future keeps its done callbacks, so this one held the snapshot, and every
            # latent in memory when it was taken, until the next save (300 s by default); those evicted or spilled
            # meanwhile stayed in memory beside the budget's (up to --cache-bytes more). Kept while still written
            # (the drain cancelled): close() waits for it
            if writing.done() and self._writing is writing:
                self._writing = None

    async def _written(self) -> None:
        """Waits for a save still being written; its failure is its checkpoint's to report."""
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(self._writing)

    # -- batching onto the thread ------------------------------------------------------
    def _submit(self, work: Callable, *args) -> Future:
        """Runs `work` on the cache thread after what images brought before it."""
        self._hand_images_over()
        return self._thread.submit(work, *args)

    def _hand_images_over(self) -> None:
        images = self._take_images()
        if images:
            self._thread.submit(self._take_in, images)

    def _take_images(self) -> list[Insert | Start]:
        if self._images_due is not None:
            self._images_due.cancel()
            self._images_due = None
        images, self._images = self._images, []
        return images

    def _start_batch(self) -> None:
        batch, self._waiting = self._waiting, []
        self._busy = True
        self._thread.submit(self._prepare_batch, asyncio.get_running_loop(), batch, self._take_images())

    def _finish_batch(self, batch: Burst, result: list[Preparation] | BaseException) -> None:
        self._busy = False
        if self._waiting:
            self._start_batch()  # the thread starts on the next burst while this one is handed on
        preparations = [result] * len(batch) if isinstance(result, BaseException) else result
        for (request, then), preparation in zip(batch, preparations, strict=True):
            then(request, preparation)

    # -- on the cache thread ---------------------------------------------------------------
    def _snapshot(self, directory: str, final: bool) -> tuple[CacheSnapshot, float, float] | None:
        """What to save, when its snapshot began (time.monotonic) and the seconds it took; None: nothing to save."""
        if final:
            self._hand_over()  # waits for a restore still running: saved without it, the file's contents were lost
        elif self._restoring:
            return None  # the file holds more than this cache yet: the next checkpoint saves
        if not self._cache.model:
            if final:  # no worker named the model: the last save, whichever model made it, is left for the next start
                log.info("no worker joined: the saved prompt cache in %s is left as it was", directory)
            return None
        if self._keep_saved_file:
            if final:
                log.warning(
                    "the saved prompt cache in %s could not be restored: left as it was, not saved over", directory
                )
            return None
        if not self._still_owns(directory, final):
            return None
        if self._config is not None and (spilling := writable_again(self._config)) is not None:
            # a restore without spilling (restore_only) kept what memory held: restored anew before the file is
            # written over
            self._config, self._restoring = spilling, True
            # as at a start, left while the folder could not be written (the folder is this engine's: _still_owns);
            # on the restore's thread, before it reads
            self._restorer.submit(remove_leftovers, spilling.directory)
            self._start_restore()
            # the drain's save: once handed over, saved as after any restore (not over a file it could not restore)
            return self._snapshot(directory, final) if final else None
        if self._cache.changes == self._saved_changes:
            found = saved_file_identity(directory)
            if found is not None and found == self._saved_file:
                return None  # nothing new since the last save: the file holds it all
            # gone or changed (a hand, a tmp cleaner): skipped, an engine with nothing new drained leaving no save
            if self._saved_file is not None:  # said once: a save that fails leaves it None, and the next tries again
                log.warning(
                    "the saved prompt cache in %s was deleted or changed since this engine wrote or restored it:"
                    " saved again",
                    directory,
                )
                self._saved_file = None
        started = time.monotonic()
        snapshot = self._cache.snapshot()
        return snapshot, started, time.monotonic() - started

    def _still_owns(self, directory: str, final: bool) -> bool:
        """Whether `directory` is still this engine's to save to: a folder deleted under it and made again is locked
        anew (and the save written in full: the last went with the folder); one another engine took meanwhile is
        left to it. Checked at each save, so a second engine is refused again from the first save after a deletion,
        and one that let go of the folder since leaves it to this engine again. Said once, and again at the drain's
        save: each checkpoint said it anew, a line every --cache-save-interval for as long as the other engine ran."""
        if self._directory_lock is None:  # a cache made without build_cache_service (tests, benchmarks)
            return True
        try:
            lock = relock_if_replaced(directory, self._directory_lock)
        except UsageError as error:
            if final or str(error) != self._not_owned:
                log.error("the prompt cache is not saved: %s (the folder was deleted under this engine)", error)
            self._not_owned = str(error)
            return False
        self._not_owned = None
        if lock != self._directory_lock:
            self._directory_lock, self._saved_changes = lock, None
            log.warning(
                "--cache-dir %s was deleted under this engine: made again, and the prompt cache saved there", directory
            )
        return True

    def _saved(
        self, snapshot: CacheSnapshot, writing: Future, directory: str, final: bool, timing: tuple[float, float]
    ) -> None:
        """A save's write ended (or failed): the files it kept may go, and what it wrote is the file's. `timing`:
        when its snapshot began, and the seconds the snapshot held the cache thread."""
        prompts = len(snapshot.prompt_ids)
        snapshot.release()  # empties it
        if writing.cancelled() or writing.exception() is not None:
            return  # reported by its caller; the next save writes it all again
        self._saved_changes, self._saved_file = snapshot.changes, saved_file_identity(directory)
        (started, on_thread), what = timing, "saved" if final else "checkpointed"
        log.info(
            "prompt cache %s to %s: %s in %.3f s (%.3f s of it on the cache thread, lookups waiting)",
            what,
            directory,
            counted(prompts, "prompt"),
            time.monotonic() - started,
            on_thread,
        )

    def _take_in(self, images: list[Insert | Start]) -> None:
        # self._cache read here, not when queued (stats too): the restore's hand-over, queued before, replaces it
        for item in images:
            try:
                if isinstance(item, Start):
                    self._count(item)
                else:
                    self._insert(*item)
            except Exception as error:  # costs only itself: the others, and the lookups after, go on
                log.error("taking in what an image brought failed: %s", error)

    def _count(self, start: Start) -> None:
        if start.step:
            self._cache.record_hit(start.shape, start.neighbour, start.step)
        else:
            self._cache.record_miss()

    def _insert(self, prompt: str, vector: np.ndarray, shape: ShapeKey, returned: Returned) -> None:
        done = returned.done
        if done.latent_levels and self._cache.holds(prompt, shape, done.latent_levels):
            # a prompt asked for again brings levels it has, which the cache keeps as they are: nothing to check or
            # store (the one-prompt load of `argus bench engine`: 5 to 7 us of the cache thread an image, of its 30 to
            # 40 a request)
            return
        problem = latents_problem(done, returned.run_level, shape.steps, self._cache.levels, returned.latent_shape)
        if problem:
            # cached, they would be the starting latent of every similar prompt after: each failed at its worker
            log.warning(
                "not caching the latents worker %s returned for image %s (%dx%d, from step %d of %d): %s",
                returned.worker,
                done.request_id,
                shape.width,
                shape.height,
                returned.run_level,
                shape.steps,
                problem,
            )
            return
        if levels := done.by_level():
            self._cache.insert(prompt, vector, shape, levels, returned.seed)

    def _adopt_model(self, model: str) -> None:
        # inserts come after a worker's images, and so after this (one thread, in order): the cache is still empty
        self._cache.model = model
        self._start_restore()

    def _start_restore(self) -> None:
        if not self._cache.model or self._config is None or not has_saved_cache(self._config):
            self._restoring = False
            return
        self._restore = self._restorer.submit(
            load_saved_cache, self._config, self._cache.model, self._embedder, self._cache.levels
        )
        self._restore.add_done_callback(self._restored)

    def _restored(self, _: Future) -> None:
        """On the restore thread, once the saved cache is read: hand it over on the cache thread."""
        with contextlib.suppress(RuntimeError):  # the cache thread has stopped: close() handed it over itself
            self._thread.submit(self._hand_over).add_done_callback(_log_failure("restoring the prompt cache"))

    def _hand_over(self) -> None:
        """Serves from the restored cache, with what generations brought while it was read inserted into it;
        waits for the restore if it is still running. Once per restore: later calls return at once."""
        if not self._restoring:
            return
        try:
            self._swap_in_restored()
        finally:
            self._restoring = False  # after the swap: a stats() or lookup that sees it done sees the restored cache

    def _swap_in_restored(self) -> None:
        # let go of the future: it keeps its result, and a restored cache given up (absorb failed) stayed in memory
        restore, self._restore = self._restore, None
        try:
            restored = restore.result()
        except CacheFileError:  # refused, and it could not be set aside: said by load_saved_cache
            self._keep_saved_file = True
            return
        except Exception:
            self._give_up_restore()
            return
        if restored is None:  # no file after all, or one refused and set aside
            return
        try:
            restored.absorb(self._cache)
        except Exception:
            restored.close()
            self._give_up_restore()
            return
        joined = self._cache.stats().prompts
        log.info(
            "serving from the restored prompt cache (%s cached while it was read joined it)", counted(joined, "prompt")
        )
        self._cache.close()
        # the file is the restored cache at 0 changes: one that left some of it out (a bad sector, a NaN latent) is
        # above, so the next checkpoint writes the file anew
        self._cache, self._saved_changes, self._saved_file = restored, 0, saved_file_identity(self._config.directory)

    def _give_up_restore(self) -> None:
        # a bug or no memory, not a bad file (that is set aside): the file may be good, so it is not saved over
        self._keep_saved_file = True
        log.exception("restoring the saved prompt cache failed: serving without it; the file is left as it was")

    def _close_cache(self) -> None:
        self._hand_over()  # a restore still running is waited for: its cache has a spill folder to delete
        self._cache.close()

    def _prepare_batch(self, loop: asyncio.AbstractEventLoop, batch: Burst, images: list[Insert | Start]) -> None:
        """Prepares a burst and hands it back to the loop in one call: through an asyncio future wrapping the
        executor's (asyncio.wrap_future), each burst cost the loop a future, two callbacks chained and a turn more."""
        try:
            result: list[Preparation] | BaseException = self._prepare_all(images, [request for request, _ in batch])
        except BaseException as error:  # each of the burst is answered with it, as a failed future answered them
            result = error
        with contextlib.suppress(RuntimeError):  # the loop is closed: an engine that stopped without draining
            loop.call_soon_threadsafe(self._finish_batch, batch, result)

    def _prepare_all(self, images: list[Insert | Start], requests: list[AdmittedRequest]) -> list[Preparation]:
        self._take_in(images)
        prompts = [request.spec.prompt for request in requests]
        shapes = [ShapeKey(request.steps, request.width, request.height) for request in requests]
        vectors, neighbours = self._cache.find_many(prompts, shapes, self._embedder.embed)
        return [
            self._preparer.prepare(self._cache, request, vector, neighbour)
            for request, vector, neighbour in zip(requests, vectors, neighbours, strict=True)
        ]


def _log_failure(what: str) -> Callable[[Future], None]:
    def log_if_failed(future: Future) -> None:
        if future.exception() is not None:
            log.error("%s failed: %s", what, future.exception())

    return log_if_failed


def build_cache_service(
    config: CacheConfig,
    model: str,
    levels: tuple[int, ...],
    choose: Choose,
    fallback_levels: FallbackLevels | None = None,
    embedder: Embedder | None = None,
) -> CacheService:
    """`model`: what makes the latents ("" until the first worker names it: adopt_model). `fallback_levels`: also
    hand each hit the latents of these levels (a policy that escalates). `embedder`: config.embedder's, made here if
    None (the engine loads it on a thread of its own: engine/cache/embedder_loading.py)."""
    if not config.enabled:
        return CacheService(None, None, choose)
    embedder = embedder or make_embedder(config.embedder, config.embedder_path)
    lock = lock_cache_dir(config.directory) if config.directory else None
    try:
        if config.directory and not writable(config.directory):
            config = restore_only(config)
        elif config.directory:
            remove_leftovers(config.directory)
            warn_if_disk_short(config)
        cache = new_prompt_cache(config, model, embedder, levels)
    except BaseException:
        if lock is not None:
            os.close(lock)
        raise
    service = CacheService(cache, embedder, choose, fallback_levels=fallback_levels, directory_lock=lock, config=config)
    if model:  # else the first worker names it (adopt_model)
        service.restore_saved()  # the doors open meanwhile: they do not wait for it
    return service
