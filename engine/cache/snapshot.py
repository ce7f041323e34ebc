"""A prompt cache at one moment, for a save: taken on the cache's thread in milliseconds, written on any other.

PromptCache.snapshot() copies the tables that say what is cached (prompts, the
store's entries and their LCBFU records: a few dict copies, a slice at a time,
see gil_slices) and the prompts' vectors, and pins the store's spill files; the
latents are not copied (those in memory are read-only arrays). Everything a
save's header needs is built here, as the snapshot is written, off the cache's
thread (built there, 100,000 latents' records took 0.6 to 0.9 s of it), a slice
of records at a time, each encoded and freed before the next is built. A
spilled latent whose file is missing or cut short (a tmp cleaner), or cannot be
read, is left out, with its prompt if it was the prompt's last, and evicted at
the release, as a hit reading it would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.cache import persistence
from engine.cache.latent_store import DTYPE_NAMES, Key, StoreSnapshot

if TYPE_CHECKING:
    from engine.cache.prompt_cache import _Prompt


log = logging.getLogger("argus.cache")

# times a save is written, each without one more latent whose spill file could not be read: a disk failing reads of
# many fails the save, and those found are evicted at the release, so the next save gets further
_WRITES = 4


class _Unreadable(Exception):
    """A spill file that could not be read as the save was written."""

    def __init__(self, key: Key, seq: int, error: Exception):
        super().__init__(f"the spill file of latent {key} could not be read ({error})")
        self.key, self.seq = key, seq


@dataclass(slots=True)
class CacheSnapshot:
    """Written on any thread (write), then released on the cache's (release)."""

    changes: int  # the cache's `changes` when it was taken
    header: tuple[str, int, tuple[int, ...], int]  # embedder, dim, levels, next prompt id
    model: str
    prompt_ids: list[int]  # ascending
    prompts: dict[int, _Prompt]  # a copy of the cache's table: their text and shape never change
    vectors: np.ndarray  # row i: the vector of prompt_ids[i]
    store: StoreSnapshot
    seeds: dict[Key, int]  # a copy of the cache's: the seed of the run each latent is of, where known
    unpin: Callable[[Iterable[tuple[Key, int]]], None] | None  # the store's, called by the release
    lost: list[tuple[Key, int]] = field(default_factory=list)  # (key, seq) of spill files found unreadable

    def write(self, directory: str) -> None:
        """Writes `directory`/prompt_cache.argus atomically; reads nothing of the cache but the files it keeps.

        A spill file that passes the check by size but cannot be read (a directory in its place, a permission, a bad
        sector) is left out and the file written again without it, up to _WRITES times: it failed the save, and,
        never evicted, every later one, for the engine's life."""
        keys = self.store.oldest_first()
        entries = self.store.entries
        self.lost = [(key, entries[key].seq) for key in keys if not self.store.intact(key, entries[key])]
        for attempt in range(1, _WRITES + 1):
            lost = {key for key, _ in self.lost}
            try:
                self._write(directory, [key for key in keys if key not in lost])
                return
            except _Unreadable as unreadable:
                self.lost.append((unreadable.key, unreadable.seq))  # evicted at the release, as a hit reading it would
                if attempt == _WRITES:
                    raise
                log.warning("%s: the save is written again without it", unreadable)

    def _write(self, directory: str, keys: list[Key]) -> None:
        kept = {prompt_id for prompt_id, _ in keys}  # a prompt whose every latent was lost is left out with them
        prompt_ids = self.prompt_ids
        rows = [row for row, prompt_id in enumerate(prompt_ids) if prompt_id in kept]
        # built as they are encoded, a slice at a time: see persistence._encoded_array
        prompts = (self._saved_prompt(prompt_ids[row]) for row in rows)
        saved = (self._saved_latent(key) for key in keys)
        vectors = self.vectors if len(rows) == len(prompt_ids) else self.vectors[rows]
        path = Path(directory) / persistence.FILE_NAME
        persistence.write_cache_file(path, *self.header, prompts, vectors, saved, self._arrays(keys), self.model)

    def _arrays(self, keys: list[Key]) -> Iterator[np.ndarray]:
        for key in keys:
            entry = self.store.entries[key]
            try:
                yield self.store.read(key, entry)
            except (OSError, ValueError) as error:  # ValueError: cut short since it was checked
                raise _Unreadable(key, entry.seq, error) from error

    def _saved_prompt(self, prompt_id: int) -> persistence.SavedPrompt:
        prompt = self.prompts[prompt_id]
        shape = prompt.shape
        return persistence.SavedPrompt(prompt_id, prompt.text, shape.steps, shape.width, shape.height)

    def _saved_latent(self, key: Key) -> persistence.SavedLatent:
        entry = self.store.entries[key]
        dtype, uses = DTYPE_NAMES[entry.dtype], self.store.records[key].uses
        return persistence.SavedLatent(
            *key, uses, dtype, entry.shape, 0, entry.nbytes, entry.on_disk, self.seeds.get(key)
        )

    def release(self) -> None:
        """On the cache's thread, once written (or not): the spill files found lost are evicted, those evicted
        meanwhile may go, and the snapshot's tables are emptied. Once only."""
        unpin, self.unpin = self.unpin, None
        if unpin is not None:
            unpin(self.lost)
        # each freed by a call of its own, between which other threads can take the GIL: freed in one go as the
        # snapshot's last reference went, they held it 7 to 30 ms at 100,000 prompts, pausing the event loop
        # (docs/cache.md, "Freeing a snapshot")
        for table in (self.prompts, self.prompt_ids, self.store.entries, self.store.records, self.seeds):
            table.clear()
