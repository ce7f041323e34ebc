"""The shared approximate prompt cache: which earlier prompt is nearest, and its latents by level K.

One cache for the whole engine (docs/cache.md). A prompt generated in full
leaves its intermediate latents at the cache levels; a later, similar prompt in
the same shape (steps, width, height) starts from the neighbour's latent at
level K and runs only the remaining steps. Latents are evicted one (prompt,
level) entry at a time by LCBFU; a prompt leaves the index when its last
latent goes, so every level a lookup reports can be taken.

Thread-confined: the engine calls one cache from one dedicated thread only.
Nothing here locks; lookup and take_latent agree because nothing can run between
them. Arrays returned by take_latent are read-only and shared with the store.
The one exception is a snapshot: taken on that thread, it is written on any
other while the cache goes on serving (see snapshot()).
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from engine.cache import gil_slices, persistence
from engine.cache.index import VectorIndex, element_bytes
from engine.cache.latent_store import Key, LatentStore, check_latent
from engine.cache.snapshot import CacheSnapshot
from engine.logs.plurals import counted

log = logging.getLogger("argus.cache")

# Python's bookkeeping (measured with tracemalloc, rounded up): a prompt's record, its set of levels and its entries
# in the tables by id and by text, and its id in its index's; a latent's entry in the store and record in LCBFU, their
# table slots and heap item, its seed and its array's header
PROMPT_BOOKKEEPING_BYTES = 768
LATENT_BOOKKEEPING_BYTES = 640


def prompt_bytes(text: str, dim: int, levels: int) -> int:
    """What a cached prompt holds in memory beside its latents, whichever tier they are in, charged against the
    memory budget (max_bytes, --cache-bytes) while it has one: its text, its vector in its shape's index, and the
    bookkeeping of the prompt and of a latent at each of the cache's `levels`, held or not (docs/cache.md, "What
    `max_bytes` counts")."""
    return sys.getsizeof(text) + element_bytes(dim) + PROMPT_BOOKKEEPING_BYTES + levels * LATENT_BOOKKEEPING_BYTES


class ShapeKey(NamedTuple):
    """Latents are only reusable within one shape. A tuple, made and hashed a few times for every request and image
    (the loop and the cache thread): a frozen dataclass cost twice as much to make, and hashed in Python."""

    steps: int
    width: int
    height: int


class Neighbour(NamedTuple):
    """A tuple, as ShapeKey: one for every request with a neighbour, on the cache thread."""

    prompt_id: int
    prompt: str
    similarity: float
    levels: tuple[int, ...]  # the levels whose latents are stored, ascending


@dataclass(frozen=True, slots=True)
class CacheStats:
    entries: int  # stored (prompt, level) latents
    prompts: int
    bytes_in_memory: int  # the latents in memory, and every cached prompt's own bytes (prompt_bytes)
    bytes_on_disk: int
    max_bytes: int
    spill_bytes: int
    spills: int  # latents moved from memory to the spill directory
    evictions: int  # latents dropped for good
    hits_by_level: dict[int, int]
    misses: int


@dataclass(slots=True)
class _Prompt:
    """Its text and shape never change: a snapshot shares it."""

    text: str
    shape: ShapeKey
    levels: set[int]


class PromptCache:
    def __init__(
        self,
        embedder_name: str,
        dim: int,
        levels: Iterable[int],
        max_bytes: int,
        spill_dir: str | None = None,
        spill_bytes: int = 0,
        model: str = "",
    ):
        """`model` names what makes the latents, `embedder_name` what makes the vectors (Embedder.identity: a neural
        embedder's names its model folder by content); both are saved with them, and a file of others is refused."""
        self.embedder_name = embedder_name
        self.model = model
        self.dim = dim
        self.levels = tuple(sorted(set(levels)))
        if not self.levels or self.levels[0] <= 0:
            raise ValueError(f"levels must be positive step counts, got {self.levels}")
        self._store = LatentStore(max_bytes, spill_dir, spill_bytes, on_evict=self._forget)
        self._indexes: dict[ShapeKey, VectorIndex] = {}
        self._prompts: dict[int, _Prompt] = {}
        self._ids_by_text: dict[tuple[ShapeKey, str], int] = {}
        # the seed of the run each latent is of, where known (saved with it). A request's image of that seed resumes
        # from it: its first, of another seed, was that seed's picture a second time
        self._seeds: dict[Key, int] = {}
        self._next_id = 1
        self._hits = dict.fromkeys(self.levels, 0)
        self._misses = 0
        # counts what a save writes changing (inserts, and hits: a latent's uses rank it): a checkpoint with nothing
        # new since the last save is skipped. Not saved: a loaded cache starts at 0, as the file it came from, or
        # above if it left some of the file out (see load)
        self.changes = 0
        # prompts of the zero vector a restored file held, left out (persistence.CacheFile.empty_prompts)
        self.empty_prompts_dropped = 0

    # -- serving ---------------------------------------------------------------------
    def lookup(self, vector: np.ndarray, shape: ShapeKey) -> Neighbour | None:
        """The most similar cached prompt in this shape, with the levels it still has; None if none."""
        return self.lookup_many(self._checked(vector).reshape(1, -1), [shape])[0]

    def lookup_many(self, vectors: np.ndarray, shapes: Sequence[ShapeKey]) -> list[Neighbour | None]:
        """`lookup` for each row of `vectors` in its shape: one index query per shape present."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(shapes), self.dim):
            raise ValueError(f"expected {len(shapes)} vectors of {self.dim} values, got shape {vectors.shape}")
        found: list[tuple[int, float] | None] = [None] * len(shapes)
        # grouped in one pass: a scan of the batch per shape was quadratic in a burst of many shapes (4,096 requests
        # in as many cached shapes: 3.4 s of the cache thread)
        rows_by_shape: dict[ShapeKey, list[int]] = {}
        # an embedding of NaN or inf (a broken model's) is similar to nothing: searched, the first prompt was its
        # neighbour at similarity NaN. So is the zero vector (a prompt of which the embedder reads nothing, NULs up to
        # where the model stops reading): searched, the first prompt was its neighbour at similarity 0.0, where a
        # prompt without one says null
        usable = (np.isfinite(vectors).all(axis=1) & vectors.any(axis=1)).tolist()
        for row, shape in enumerate(shapes):
            if usable[row]:
                rows_by_shape.setdefault(shape, []).append(row)
        for shape, rows in rows_by_shape.items():
            index = self._indexes.get(shape)
            if index is None:
                continue
            # the rows themselves when the burst is of one shape, as most are: no copy
            of_shape = vectors if len(rows) == len(vectors) else vectors[rows]
            for row, hit in zip(rows, index.nearest_many(of_shape), strict=True):
                found[row] = hit
        return [self._neighbour(*hit) if hit is not None else None for hit in found]

    def find_many(
        self, prompts: Sequence[str], shapes: Sequence[ShapeKey], embed: Callable[[list[str]], np.ndarray]
    ) -> tuple[list[np.ndarray], list[Neighbour | None]]:
        """Each prompt's vector and its nearest cached prompt in its shape (lookup_many), `embed` asked only for the
        prompts the cache does not hold. A prompt it holds in its shape is its own nearest, at similarity 1, with the
        vector stored for it: embedded, it is that vector, and searched for, it was found but for a rounding of its
        similarity (0.99999994), a twin text of the same vector (case, spacing) taken first, or a graph's search
        missing it. The embedding and the search were most of the cache thread's time a request, on the GIL the
        engine's loop waits for; 655 of diffusiondb_5k's 4,999 prompts repeat an earlier one's text, and every request
        of `argus bench engine` its one prompt."""
        held = [self._ids_by_text.get(key) for key in zip(shapes, prompts, strict=True)]
        vectors: list = [None] * len(prompts)  # each row's set below
        found: list[Neighbour | None] = [None] * len(prompts)
        new = [row for row, prompt_id in enumerate(held) if prompt_id is None]
        if new:
            embedded = embed([prompts[row] for row in new])
            nearest = self.lookup_many(embedded, [shapes[row] for row in new])
            for row, vector, neighbour in zip(new, embedded, nearest, strict=True):
                vectors[row], found[row] = vector, neighbour
        if len(new) == len(prompts):
            return vectors, found
        rows_by_shape: dict[ShapeKey, list[int]] = {}
        for row, prompt_id in enumerate(held):
            if prompt_id is not None:
                rows_by_shape.setdefault(shapes[row], []).append(row)
        for shape, rows in rows_by_shape.items():
            stored = self._indexes[shape].vectors([held[row] for row in rows])  # a copy, kept by its request
            for row, vector in zip(rows, stored, strict=True):
                vectors[row], found[row] = vector, self._neighbour(held[row], 1.0)
        return vectors, found

    def _neighbour(self, prompt_id: int, similarity: float) -> Neighbour:
        prompt = self._prompts[prompt_id]
        return Neighbour(prompt_id, prompt.text, similarity, tuple(sorted(prompt.levels)))

    def take_latent(self, prompt_id: int, level: int) -> np.ndarray | None:
        """The latent after `level` steps, counted as a hit; None if it is no longer stored."""
        latent = self.read_latent(prompt_id, level)
        if latent is not None:
            self._hit(prompt_id, level)
        return latent

    def read_latent(self, prompt_id: int, level: int) -> np.ndarray | None:
        """The latent after `level` steps, not counted: record_hit once a run starts from it (the engine: once the
        image is made, at the level it was run at, which a busy dispatcher may move up); None if it is no longer
        stored."""
        latent = self._store.read((prompt_id, level))
        self.changes += latent is None  # its spill file was found unreadable, and evicted
        return latent

    def record_hit(self, shape: ShapeKey, prompt: str, level: int) -> None:
        """A run started from the latent of cached `prompt` after `level` steps (read_latent, peek_latent): a hit,
        credited to that latent in LCBFU if it is still stored. Named by its text, not its id: the restore's hand-over
        (absorb) gives the prompts it takes in ids of the restored cache."""
        self._hit(self._ids_by_text.get((shape, prompt)), level)

    def _hit(self, prompt_id: int | None, level: int) -> None:
        self._hits[level] += 1
        self.changes += 1  # a latent's uses, which a save writes
        if prompt_id is not None and (prompt_id, level) in self._store:
            self._store.credit((prompt_id, level))

    def peek_latent(self, prompt_id: int, level: int) -> np.ndarray | None:
        """The latent after `level` steps if it is held in memory, without counting a hit: a fallback
        that may go unused is worth a reference, not a file read on the request path."""
        return self._store.peek((prompt_id, level))

    def record_miss(self) -> None:
        self._misses += 1

    def holds(self, prompt: str, shape: ShapeKey, levels: Iterable[int]) -> bool:
        """Whether `prompt` in `shape` has a latent stored at each of `levels`: an insert of those would keep what it
        has, and store nothing."""
        prompt_id = self._ids_by_text.get((shape, prompt))
        return prompt_id is not None and self._prompts[prompt_id].levels.issuperset(levels)

    def insert(
        self,
        prompt: str,
        vector: np.ndarray,
        shape: ShapeKey,
        latents: Mapping[int, np.ndarray],
        seed: int | None = None,
    ) -> int:
        """Stores a generation's latents by level, and the seed its run drew from (latent_seed); returns the
        prompt's id.

        The same prompt text in the same shape is one entry: new levels join it,
        levels it already has are kept as they are (with their hits). Storing may
        evict other entries, or, when these rank lowest, some of these latents.
        """
        vector = self._checked(vector)
        if not latents:
            raise ValueError("no latents to insert")
        unknown = set(latents) - set(self.levels)
        if unknown:
            raise ValueError(f"levels {sorted(unknown)} are not cache levels {self.levels}")
        prompt_id = self._ids_by_text.get((shape, prompt))
        known = self._prompts[prompt_id].levels if prompt_id is not None else set()
        new_levels = sorted(set(latents) - known)
        # only what is stored is checked: a prompt asked for again brings back levels it has, kept as they are
        for level in new_levels:
            check_latent(latents[level])
        if prompt_id is None:
            prompt_id = self._next_id
            self._next_id += 1
            # first: it refuses a bad vector, and the shape's index is kept only once it holds one (one made for a
            # vector refused stayed, empty, for good)
            index = self._indexes.get(shape)
            if index is None:
                index = VectorIndex(self.dim)
            index.add(prompt_id, vector)
            self._indexes[shape] = index
            self._register(prompt_id, prompt, shape, set())
        self.changes += bool(new_levels)  # a prompt asked for again may bring only levels it has
        entry = self._prompts[prompt_id]
        # every new level is registered before any is stored: storing one may evict
        # another, and the prompt must not leave the index while some are still to come
        entry.levels.update(new_levels)
        held = self._prompt_bytes(prompt)
        # lowest level first: among a prompt's fresh latents it is the oldest, so the first evicted
        for level in new_levels:
            if seed is not None:
                self._seeds[(prompt_id, level)] = seed
            self._store.put((prompt_id, level), latents[level], held)
        return prompt_id

    def latent_seed(self, prompt_id: int, level: int) -> int | None:
        """The seed of the run the latent after `level` steps is of; None if not known."""
        return self._seeds.get((prompt_id, level))

    def absorb(self, newer: PromptCache) -> None:
        """Inserts what `newer` holds (what generations brought while this cache was being restored), oldest
        prompt first, and adds its hit, miss, spill and eviction counts to this one's (/metrics shows them as
        counters: the evictions of the cache served while this one was read went missing, and the counter fell at
        the hand-over); `newer` is left as it was, but for the spilled latents it finds unreadable (evicted).

        A prompt both hold keeps this cache's latents and gains the levels only `newer` has, with the seeds of their
        runs; the hits a latent of `newer` served are not carried over (its uses start at 0, as a fresh insert's).
        A spilled latent whose file
        is gone, cut short, unreadable or NaN is left out, with one warning: it raised, and the engine served on
        without the restored cache, never saving over its file again.
        """
        unreadable = 0
        for prompt_id, vector in zip(*newer._vectors(), strict=True):
            prompt = newer._prompts[prompt_id]
            levels = sorted(prompt.levels)
            found = {level: newer._store.read((prompt_id, level)) for level in levels}
            latents = {level: latent for level, latent in found.items() if latent is not None}
            unreadable += len(levels) - len(latents)
            by_seed: dict[int | None, dict[int, np.ndarray]] = {}  # the levels of one run, inserted with its seed
            for level, latent in latents.items():
                by_seed.setdefault(newer.latent_seed(prompt_id, level), {})[level] = latent
            for seed, of_run in by_seed.items():
                self.insert(prompt.text, vector, prompt.shape, of_run, seed)
        if unreadable:
            log.warning(
                "%s cached while the saved cache was read could not be read back: left out",
                counted(unreadable, "latent"),
            )
        for level, hits in newer._hits.items():
            self._hits[level] += hits
        self._misses += newer._misses
        self._store.spills += newer._store.spills
        self._store.evictions += newer._store.evictions

    def stats(self) -> CacheStats:
        store = self._store
        return CacheStats(
            entries=len(store),
            prompts=len(self._prompts),
            bytes_in_memory=store.bytes_in_memory,
            bytes_on_disk=store.bytes_on_disk,
            max_bytes=store.max_bytes,
            spill_bytes=store.spill_bytes,
            spills=store.spills,
            evictions=store.evictions,
            hits_by_level=dict(self._hits),
            misses=self._misses,
        )

    def close(self) -> None:
        """Deletes the spill folder. Call save() first to keep the contents."""
        self._store.close()

    # -- warm restart ------------------------------------------------------------------
    def save(self, directory: str) -> None:
        """Writes everything to `directory`/prompt_cache.argus, atomically replacing an older save.

        Spilled latents whose files are missing, cut short or unreadable are left out and evicted, not fatal.
        """
        snapshot = self.snapshot()
        try:
            snapshot.write(directory)
        finally:
            snapshot.release()

    def snapshot(self) -> CacheSnapshot:
        """What save() writes, as the cache is now: write() it on any thread while this cache goes on serving, then
        release() it on this cache's thread.

        Cheap, so that lookups hardly wait for a checkpoint (the write, 2 to 3 s for 1 GiB, held them up for all of
        it): copies of the tables that say what is cached (their entries are never changed, only replaced), not of
        the latents (those in memory are read-only arrays, shared; a spilled one's file is kept until the release,
        even if it is evicted meanwhile); and the prompts' vectors, 4 bytes a dimension each (hnswlib's own copy of
        an index would be its whole graph). The rest, the header's records, is built as it is written.
        """
        header = (self.embedder_name, self.dim, self.levels, self._next_id)
        prompts = gil_slices.copied(self._prompts)  # a prompt's text and shape never change
        prompt_ids, vectors = self._vectors()
        store, seeds = self._store.pin(), gil_slices.copied(self._seeds)
        return CacheSnapshot(
            self.changes, header, self.model, prompt_ids, prompts, vectors, store, seeds, self._store.unpin
        )

    @classmethod
    def load(
        cls,
        directory: str,
        embedder_name: str,
        dim: int,
        levels: Iterable[int],
        max_bytes: int,
        spill_dir: str | None = None,
        spill_bytes: int = 0,
        model: str = "",
        latent_shape: Callable[[ShapeKey], tuple[int, ...]] | None = None,
    ) -> PromptCache:
        """A cache holding what save() wrote; raises CacheFileError, having built nothing, if the file is unusable.

        Hit and miss counters start at zero. If the budgets are smaller than the
        saved contents, LCBFU keeps the best-ranked latents and evicts the rest.
        A file saved with other levels gives its latents at `levels` alone, each
        at its own level, and the prompts that have one (read_cache_file).
        Latents no run can start from are left out, with one warning: NaN or
        infinite ones, and, given `latent_shape` (the shape `model`'s workers take
        at a prompt's shape), those of another shape. So are those the disk cannot
        read (a bad sector), and the prompts whose vectors it cannot read, with one
        warning: the rest is restored, unless none of the file's latents could be
        read (CacheFileError). Each latent left out counts as a change (as a spill
        file found unreadable at a hit does), and so does a read that failed, which
        left the file's digest unchecked: `changes` above 0 says the next save
        should write the file anew, not skip it as this cache's equal.
        """
        path = Path(directory) / persistence.FILE_NAME
        saved = persistence.read_cache_file(path, embedder_name, dim, tuple(sorted(set(levels))), model)
        cache = cls(embedder_name, dim, levels, max_bytes, spill_dir, spill_bytes, model)
        try:
            try:
                cache._restore(saved, latent_shape)
            except (ValueError, OverflowError, OSError) as exc:  # what the checks missed is still the file's fault
                raise persistence.CacheFileError(f"{path} cannot be restored: {exc}") from exc
        except BaseException:
            cache.close()
            raise
        return cache

    def _restore(
        self, saved: persistence.CacheFile, latent_shape: Callable[[ShapeKey], tuple[int, ...]] | None
    ) -> None:
        levels_by_id: dict[int, set[int]] = {}
        for latent in saved.latents:
            levels_by_id.setdefault(latent.prompt_id, set()).add(latent.level)
        shapes = [ShapeKey(p.steps, p.width, p.height) for p in saved.prompts]
        for p, shape in zip(saved.prompts, shapes, strict=True):
            self._register(p.prompt_id, p.text, shape, levels_by_id[p.prompt_id])
        for shape, count in Counter(shapes).items():
            self._indexes[shape] = VectorIndex(self.dim)
            self._indexes[shape].reserve(count)
        # the vectors a block at a time, each shape's rows of it into its index: see persistence.VECTOR_ROWS
        for first, vectors in saved.vector_blocks():
            rows_by_shape: dict[ShapeKey, list[int]] = {}
            for row, shape in enumerate(shapes[first : first + len(vectors)]):
                rows_by_shape.setdefault(shape, []).append(row)
            for shape, rows in rows_by_shape.items():
                ids = [saved.prompts[first + row].prompt_id for row in rows]
                self._indexes[shape].add_many(ids, vectors if len(rows) == len(vectors) else vectors[rows])
        self._next_id = saved.next_prompt_id
        expected = {shape: tuple(latent_shape(shape)) for shape in self._indexes} if latent_shape else {}
        # oldest first, so the restored entries keep their relative age for LCBFU's tie-break
        unusable: list[tuple[Key, str]] = []
        unread: list[OSError] = []
        for latent in saved.latents:
            key = (latent.prompt_id, latent.level)
            try:
                array = saved.read_latent(latent)
            except OSError as error:  # a bad sector: the latents beside it read, and are restored
                unread.append(error)
                self._forget(key)
                continue
            problem = _restore_problem(array, self._prompts[latent.prompt_id].shape, expected)
            if problem:
                unusable.append((key, problem))
                self._forget(key)
                continue
            if latent.seed is not None:  # first: a latent the budgets hold no room for forgets it as it goes
                self._seeds[key] = latent.seed
            held = self._prompt_bytes(self._prompts[latent.prompt_id].text)
            self._store.restore(key, array, latent.uses, latent.on_disk, held)
        if unusable:
            log.warning(
                "%s no run can start from, left out (%s the first: %s)",
                counted(len(unusable), "saved latent"),
                *unusable[0],
            )
        self._report_unread(saved, unread)
        # the dropped zero-vector prompts too: else a save with nothing new skips the file, which keeps them
        self.empty_prompts_dropped = saved.empty_prompts
        left_out = len(unusable) + len(unread) + saved.latents_unread + saved.empty_prompts
        self.changes += left_out + bool(saved.read_error)

    @staticmethod
    def _report_unread(saved: persistence.CacheFile, unread: list[OSError]) -> None:
        """One warning for what the disk could not read; CacheFileError if that was every latent (nothing to restore:
        the file is set aside, whole, as the disk may read it again)."""
        error = saved.read_error or (unread[0] if unread else None)
        if error is None:
            return
        left_out, in_file = len(unread) + saved.latents_unread, len(saved.latents) + saved.latents_unread
        if left_out == in_file:
            raise persistence.CacheFileError(f"cannot read {saved.path}: none of its latents could be read ({error})")
        if left_out:
            log.warning(
                "%d of %s could not be read from %s (%s): left out, the rest restored; the next save writes the file"
                " anew",
                left_out,
                counted(in_file, "saved latent"),
                saved.path,
                error,
            )
        else:
            log.warning(
                "a read of %s failed (%s), so its checksum went unchecked; every latent in it was read and restored,"
                " and the next save writes the file anew",
                saved.path,
                error,
            )

    # -- internals ---------------------------------------------------------------------
    def _register(self, prompt_id: int, text: str, shape: ShapeKey, levels: set[int]) -> None:
        self._prompts[prompt_id] = _Prompt(text, shape, levels)
        self._ids_by_text[(shape, text)] = prompt_id

    def _prompt_bytes(self, text: str) -> int:
        return prompt_bytes(text, self.dim, len(self.levels))

    def _forget(self, key: Key) -> None:
        """The store dropped a latent for good: the prompt leaves the index with its last one."""
        prompt_id, level = key
        self._seeds.pop(key, None)
        prompt = self._prompts[prompt_id]
        prompt.levels.discard(level)
        if not prompt.levels:
            del self._prompts[prompt_id]
            del self._ids_by_text[(prompt.shape, prompt.text)]
            index = self._indexes[prompt.shape]
            index.remove(prompt_id)
            if not index:  # clients choose the shapes: an empty index kept for each would grow without bound
                del self._indexes[prompt.shape]

    def _vectors(self) -> tuple[list[int], np.ndarray]:
        """Every prompt's id, ascending, and its vector, row for row.

        Each shape's vectors go into their rows through a numpy index array. Built from Python lists, one int a prompt,
        each list's conversion (one numpy call) and the sorting of the ids (one sorted()) held the GIL 3 to 16 ms each
        at 100,000 prompts, pausing the engine's event loop; numpy sorts and copies arrays letting it go."""
        parts = [index.items() for index in self._indexes.values()]
        ids = np.concatenate([np.zeros(0, np.uint64), *(part_ids for part_ids, _ in parts)])
        order = np.argsort(ids)
        rows = np.empty_like(order)
        rows[order] = np.arange(len(order))  # the row each prompt takes, shape after shape
        vectors = np.empty((len(ids), self.dim), dtype=np.float32)
        start = 0
        for _, part in parts:
            vectors[rows[start : start + len(part)]] = part
            start += len(part)
        return ids[order].tolist(), vectors

    def _checked(self, vector: np.ndarray) -> np.ndarray:
        vector = np.asarray(vector, dtype=np.float32)
        if vector.shape != (self.dim,):
            raise ValueError(f"expected a vector of shape ({self.dim},), got {vector.shape}")
        return vector


def _restore_problem(array: np.ndarray, shape: ShapeKey, expected: dict[ShapeKey, tuple[int, ...]]) -> str | None:
    """Why a saved latent cannot start a run at its prompt's shape, or None.

    A spill file damaged on disk is saved as read (NaN): one such latent refused the whole save. One of another shape
    than the model's workers take (an edited file, one saved by a build that cached what a worker of another build
    returned) failed every similar prompt resumed from it at its worker (worker_error)."""
    wanted = expected.get(shape)
    if wanted is not None and array.shape != wanted:
        return f"of shape {array.shape}, not the {wanted} the model takes at {shape.width}x{shape.height}"
    try:
        check_latent(array)
    except (TypeError, ValueError) as error:
        return str(error)
    return None
