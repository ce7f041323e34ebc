"""The latent store: (prompt_id, level) -> one latent array, bounded in bytes.

Two tiers, each ranked by LCBFU (engine/cache/lcbfu.py). New latents go to
memory; to make room, memory's lowest-ranked entry moves to the spill directory
(when there is one) and the spill directory's lowest-ranked entry is deleted for
good. A newcomer displaces entries only if the room it needs can be made from
entries ranked below it; otherwise it goes down a tier itself and displaces
nobody. So a budget is never exceeded, not even for a moment. A spilled
entry stays on disk (its hits are read from there, and the OS page cache keeps
the hot ones in RAM); its score keeps growing there and protects it.

The disk budget counts latent bytes: each spilled latent is one raw file of
exactly its bytes, with dtype and shape kept beside it. The memory budget counts
the latents held in memory (one contiguous array each) and what each prompt with
a latent in either tier holds in memory (its text, vector, index entry and
bookkeeping: `prompt_bytes`, given by the prompt cache with its latents, since a
spilled latent's prompt stays in memory). A new prompt's bytes take room from
the latents ranked below its first: memory's are spilled, then the disk's are
evicted (a prompt's bytes go with its last latent); if that is not room enough,
the newcomer is evicted. Arrays are copied in (a view could pin a whole message
buffer) and handed out read-only.

Not thread-safe: the prompt cache owns its store and uses it from one thread. A
snapshot (pin) hands another thread the store as it stands, in a few copies of
its tables: entries and LCBFU records are replaced, never changed, so the copies
keep them as they were; the arrays in memory are read-only, so shared; a spilled
latent's file is kept, not deleted, until unpin(), and a latent stored again
under the same key gets a file of its own, so no file a snapshot names changes.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from engine.cache import file_reads, gil_slices
from engine.cache.lcbfu import Lcbfu, Record
from engine.logs.plurals import counted

log = logging.getLogger("argus.cache")

Key = tuple[int, int]  # (prompt_id, level)
# what workers hand back; persistence refuses any other dtype in a file
ALLOWED_DTYPES = frozenset({"float16", "float32"})
# dtype objects compare without building a name: dtype.name costs microseconds, and every latent is checked
_ALLOWED = frozenset(np.dtype(name) for name in ALLOWED_DTYPES)
# a stored latent's dtype's name, as a save records it, looked up: dtype.name, 5 us, was a third of a snapshot's time
DTYPE_NAMES = {np.dtype(name): name for name in ALLOWED_DTYPES}
SPILL_FOLDER_PREFIX = "argus-spill-"


@dataclass(frozen=True, slots=True)
class StoredLatent:
    """Replaced, never changed (a spill stores a new one): a snapshot of the entries keeps each as it was."""

    dtype: np.dtype
    shape: tuple[int, ...]
    nbytes: int
    array: np.ndarray | None  # None while spilled to disk
    seq: int  # names its spill file: one per latent stored, never reused, so a file a snapshot reads never changes

    @property
    def on_disk(self) -> bool:
        return self.array is None


def check_latent(latent: np.ndarray) -> None:
    """A latent worth keeping: of an allowed dtype, and finite. A run that overflowed (fp16 on a GPU) hands back
    NaN or inf; cached, it would spoil the image of every later prompt that starts from it."""
    if latent.dtype not in _ALLOWED:
        raise TypeError(f"latent dtype {latent.dtype} is not one of {sorted(ALLOWED_DTYPES)}")
    if not np.isfinite(latent).all():
        raise ValueError("the latent holds NaN or infinite values")


class LatentStore:
    def __init__(
        self,
        max_bytes: int,
        spill_dir: str | None = None,
        spill_bytes: int = 0,
        on_evict: Callable[[Key], None] = lambda key: None,
    ):
        if max_bytes < 0 or spill_bytes < 0:
            raise ValueError("byte budgets must not be negative")
        self.max_bytes = max_bytes
        self.spill_bytes = spill_bytes if spill_dir else 0
        # the latents in memory, and the prompt_bytes of each prompt with a latent stored, whichever tier it is in:
        # 14 kB a prompt of 4,000 characters, left out of the budget, grew an engine of small images by gigabytes
        # before anything was evicted
        self.bytes_in_memory = 0
        self.bytes_on_disk = 0
        self._prompts: dict[int, _HeldPrompt] = {}
        self.spills = 0
        self.evictions = 0
        # spills failed since the last that worked: a full disk fails every one, and is logged once
        self._failed_spills = 0
        # spill files that could not be read back since the last read that worked, logged so too: a disk going bad,
        # or a spill folder deleted under the engine, lost its latents at their hits without a word in the log
        self._failed_reads = 0
        # a budget smaller than one latent (--cache-bytes 1000 for 128 KiB SD-XL latents) caches nothing: said once
        self._said_too_large = False
        self._on_evict = on_evict
        self._entries: dict[Key, StoredLatent] = {}
        self._memory = Lcbfu()
        self._disk = Lcbfu()
        self._seq = itertools.count()
        self._spill_path: Path | None = None
        # snapshots being written (pin) and the spill files they name that left the store meanwhile: deleted at the
        # last unpin, so a snapshot reads every file it names whole
        self._pins = 0
        self._doomed: list[Path] = []
        if self.spill_bytes:
            # a private folder: several engines may share one spill directory
            Path(spill_dir).mkdir(parents=True, exist_ok=True)
            self._spill_path = Path(tempfile.mkdtemp(prefix=SPILL_FOLDER_PREFIX, dir=spill_dir))
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._spill_path, True)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Key) -> bool:
        return key in self._entries

    def put(self, key: Key, latent: np.ndarray, prompt_bytes: int = 0) -> None:
        """Stores a latent of a prompt holding `prompt_bytes` in memory while it has a latent stored (charged with
        its first); may evict others, or this one."""
        entry, record = self._admit(key, latent, uses=0, prompt_bytes=prompt_bytes)
        self._place(key, entry, record)

    def restore(self, key: Key, latent: np.ndarray, uses: int, on_disk: bool, prompt_bytes: int = 0) -> None:
        """Stores a saved latent in the tier it was saved from while that has room, evicting nothing; else as put.

        Entries restored oldest first into budgets that held them all come back as they were: placed by LCBFU
        instead, a small newcomer could push a larger entry down to a full disk, and so out for good.
        """
        entry, record = self._admit(key, latent, uses, prompt_bytes)
        if self.bytes_in_memory > self.max_bytes:  # its prompt's bytes found no room
            self._place(key, entry, record)
        elif on_disk and self._spill_path is not None and self.bytes_on_disk + entry.nbytes <= self.spill_bytes:
            self._write_to_disk(key, entry, record)
        elif not on_disk and self.bytes_in_memory + entry.nbytes <= self.max_bytes:
            self._memory.add(key, record)
            self.bytes_in_memory += entry.nbytes
        else:
            self._to_memory(key, entry, record)

    def take(self, key: Key) -> np.ndarray | None:
        """The latent, counted as a hit; None if it is not stored (or its spill file is unreadable)."""
        array = self.read(key)
        if array is not None:
            self.credit(key)
        return array

    def credit(self, key: Key) -> None:
        """Counts a hit served from a stored latent, read before (read, peek)."""
        (self._disk if self._entries[key].on_disk else self._memory).hit(key)

    def read(self, key: Key) -> np.ndarray | None:
        """The latent, not counted as a hit; None if it is not stored, or if its spill file cannot be read or holds
        NaN (a bad sector, a hand, a tmp cleaner): then it is evicted."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.array is not None:
            return entry.array
        try:
            array = self._read_file(key, entry)
            check_latent(array)  # a spill file changed on disk: NaN would reach a worker
        except (OSError, ValueError) as error:
            if not self._failed_reads:
                log.warning(
                    "could not read latent %s back from disk (%s): evicted; further failures are not logged until a"
                    " read works again",
                    key,
                    error,
                )
            self._failed_reads += 1
            self._lose_spilled(key)
            return None
        if self._failed_reads:
            log.info("reading from disk works again: %s could not be read back", counted(self._failed_reads, "latent"))
            self._failed_reads = 0
        return array

    def peek(self, key: Key) -> np.ndarray | None:
        """The latent if it is stored and held in memory, not counted as a hit; None otherwise."""
        entry = self._entries.get(key)
        return None if entry is None else entry.array

    def stored(self) -> list[tuple[Key, Record, StoredLatent]]:
        """Every entry with its LCBFU record, oldest first."""
        tables = self._tables()
        return [(key, tables.records[key], tables.entries[key]) for key in tables.oldest_first()]

    def pin(self) -> StoreSnapshot:
        """The store as it is now, to be read on any thread until unpin(): copies of its tables (tens of ms for
        100,000 latents, a slice at a time), not of the latents. Its spill files are kept until then, even if evicted
        meanwhile."""
        self._pins += 1
        return self._tables()

    def unpin(self, lost: Iterable[tuple[Key, int]] = ()) -> None:
        """A snapshot is written: `lost`, the spilled latents (key, seq) it found missing, cut short or unreadable, are
        evicted if still stored as they were, and the spill files that left the store meanwhile deleted at the last."""
        self._pins -= 1
        self._lose_all([key for key, seq in lost if (entry := self._entries.get(key)) and entry.seq == seq])
        if not self._pins:
            doomed, self._doomed = self._doomed, []
            for path in doomed:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)

    def close(self) -> None:
        """Deletes the spill folder; the store is unusable afterwards."""
        if self._spill_path is not None:
            self._cleanup()

    def _tables(self) -> StoreSnapshot:
        # a slice at a time: a dict() each, of 100,000 entries and their records, paused other threads 8 to 39 ms
        records = gil_slices.copied(self._memory.records(), self._disk.records())
        return StoreSnapshot(gil_slices.copied(self._entries), records, self._spill_path)

    # -- tiers -----------------------------------------------------------------------
    def _place(self, key: Key, entry: StoredLatent, record: Record) -> None:
        """Makes room in memory for what a newcomer's prompt holds there (admitted, its bytes counted already), then
        stores its latent by LCBFU; evicts it if that room needs latents ranked above it.

        The room is taken from the latents ranked below the newcomer, lowest first: memory's are pushed down (spilled,
        each freeing its bytes, its prompt's staying; without a disk, evicted), then the disk's are evicted for good, a
        prompt's bytes freed with its last latent. Checked before any moves, so none are lost for a newcomer that does
        not fit after all."""
        if not self._room_for_prompts(key[0], record):
            self._evict(key)
            return
        for tier in (self._memory, self._disk):
            while self.bytes_in_memory > self.max_bytes:
                victim_key, victim = next(tier.lowest(), (None, None))
                if victim is None or record.rank < victim.rank:
                    break
                self._push_out(victim_key)
        self._to_memory(key, entry, record)

    def _room_for_prompts(self, newcomer_prompt: int, newcomer: Record) -> bool:
        """Whether the latents ranked below the newcomer free enough memory for it, pushed out as _place does: the
        bytes of those in memory, and of each prompt all of whose latents are among them."""
        excess = self.bytes_in_memory - self.max_bytes
        if excess <= 0:
            return True
        below: dict[int, int] = {}  # each prompt's latents ranked below the newcomer
        for tier in (self._memory, self._disk):
            for victim_key, victim in tier.lowest():
                if excess <= 0 or newcomer.rank < victim.rank:
                    break
                entry, prompt_id = self._entries[victim_key], victim_key[0]
                excess -= 0 if entry.on_disk else entry.nbytes
                below[prompt_id] = below.get(prompt_id, 0) + 1
                held = self._prompts[prompt_id]
                excess -= held.nbytes if below[prompt_id] == held.latents and prompt_id != newcomer_prompt else 0
        return excess <= 0

    def _push_out(self, key: Key) -> None:
        """Moves a latent down a tier: from memory to disk (evicted if there is no room there), from disk out."""
        if self._entries[key].on_disk:
            self._lose_spilled(key)
            return
        record = self._memory.remove(key)
        self.bytes_in_memory -= self._entries[key].nbytes
        self._to_disk(key, self._entries[key], record)

    def _to_memory(self, key: Key, entry: StoredLatent, record: Record) -> None:
        if entry.nbytes > max(self.max_bytes, self.spill_bytes) and not self._said_too_large:
            self._said_too_large = True
            # a spill budget of 0 is not named as --cache-dir-bytes: a --cache-dir that cannot be written spills
            # nothing whatever the operator gave (cache_dir.restore_only), and "(0, --cache-dir-bytes)" named a figure
            # they never set
            disk = f"its disk budget ({self.spill_bytes}, --cache-dir-bytes)" if self.spill_bytes else "it spills none"
            log.warning(
                "a latent of %d bytes is larger than the cache's memory budget (%d bytes, --cache-bytes) and %s: not"
                " cached, nor any other this large (said once)",
                entry.nbytes,
                self.max_bytes,
                disk,
            )
        victims = self._room(self._memory, self.bytes_in_memory, self.max_bytes, entry.nbytes, record)
        if victims is None:
            self._to_disk(key, entry, record)
            return
        for victim_key, victim in victims:
            self._memory.remove(victim_key)
            self.bytes_in_memory -= self._entries[victim_key].nbytes
            self._to_disk(victim_key, self._entries[victim_key], victim)
        self._memory.add(key, record)
        self.bytes_in_memory += entry.nbytes

    def _to_disk(self, key: Key, entry: StoredLatent, record: Record) -> None:
        victims = None
        if self._spill_path is not None:
            victims = self._room(self._disk, self.bytes_on_disk, self.spill_bytes, entry.nbytes, record)
        if victims is None:
            self._evict(key)
            return
        for victim_key, _ in victims:
            self._lose_spilled(victim_key)
        self._write_to_disk(key, entry, record)

    def _room(
        self, tier: Lcbfu, used: int, budget: int, needed: int, newcomer: Record
    ) -> list[tuple[Key, Record]] | None:
        """The entries to push out of a tier, lowest ranked first, to fit `needed` more bytes; None if that needs
        one ranked above the newcomer, or more than the tier's latents free (memory's `used` counts its prompts too).
        Chosen before any moves: pushing some out and then finding the newcomer cannot fit after all would lose them
        for nothing."""
        if needed > budget:
            return None
        victims = []
        for victim_key, victim in tier.lowest():
            if used + needed <= budget:
                break
            if newcomer.rank < victim.rank:
                return None
            victims.append((victim_key, victim))
            used -= self._entries[victim_key].nbytes
        return victims if used + needed <= budget else None

    def _write_to_disk(self, key: Key, entry: StoredLatent, record: Record) -> None:
        try:
            self._write_file(key, entry)
        except OSError as error:  # disk full, read-only: the latent is lost, the books stay right
            if not self._failed_spills:
                log.warning(
                    "could not spill latent %s to disk (%s): evicted instead; further failures are not logged"
                    " until a spill works again",
                    key,
                    error,
                )
            self._failed_spills += 1
            self._unlink(key)
            self._evict(key)
            return
        if self._failed_spills:
            log.info("spilling to disk works again: %s could not be spilled", counted(self._failed_spills, "latent"))
            self._failed_spills = 0
        self._entries[key] = replace(entry, array=None)
        self._disk.add(key, record)
        self.bytes_on_disk += entry.nbytes
        self.spills += 1

    def _write_file(self, key: Key, entry: StoredLatent) -> None:
        try:
            f = open(self._file(key, entry), "wb")
        except FileNotFoundError:
            # the folder was deleted under a running engine (a tmp cleaner, a hand tidying up): without it made
            # again, every later spill failed, and the disk tier stayed empty until a restart
            self._spill_path.mkdir(mode=0o700, parents=True, exist_ok=True)
            f = open(self._file(key, entry), "wb")
        with f:
            f.write(entry.array.data)

    def _admit(self, key: Key, latent: np.ndarray, uses: int, prompt_bytes: int) -> tuple[StoredLatent, Record]:
        """Takes a latent in, in no tier yet, and counts its prompt's bytes if it is the prompt's first."""
        if key in self._entries:
            raise KeyError(f"latent {key} is already stored")
        check_latent(latent)
        array = np.array(latent, order="C", copy=True)
        array.flags.writeable = False
        record = Record(level=key[1], uses=uses, seq=next(self._seq))
        entry = StoredLatent(array.dtype, array.shape, array.nbytes, array, record.seq)
        self._entries[key] = entry
        held = self._prompts.get(key[0])
        if held is None:
            held = self._prompts[key[0]] = _HeldPrompt(prompt_bytes)
            self.bytes_in_memory += prompt_bytes
        held.latents += 1
        return entry, record

    def _lose_all(self, lost: list[Key]) -> None:
        for key in lost:
            self._lose_spilled(key)
        if lost:
            # one line: a spill folder deleted under a large cache loses hundreds of thousands of files
            what = "%s missing, cut short or unreadable (latent %s the first): evicted"
            log.warning(what, counted(len(lost), "spill file was", "spill files were"), lost[0])

    def _lose_spilled(self, key: Key) -> None:
        self._delete_from_disk(key)
        self._evict(key)

    def _delete_from_disk(self, key: Key) -> None:
        self._disk.remove(key)
        self.bytes_on_disk -= self._entries[key].nbytes
        self._unlink(key)

    def _evict(self, key: Key) -> None:
        del self._entries[key]
        held = self._prompts[key[0]]
        held.latents -= 1
        if not held.latents:
            del self._prompts[key[0]]
            self.bytes_in_memory -= held.nbytes
        self.evictions += 1
        self._on_evict(key)

    def _file(self, key: Key, entry: StoredLatent) -> Path:
        return spill_file(self._spill_path, key, entry)

    def _unlink(self, key: Key) -> None:
        """Deletes a spill file if it can: a folder gone read-only (a filesystem remounted on errors) fails deletes
        too, and an exception here would leave the entry in no tier. What stays goes with the folder, at close() or
        at the engine's next start. A snapshot being written may still read it: then it goes at the last unpin()."""
        path = self._file(key, self._entries[key])
        if self._pins:
            self._doomed.append(path)
            return
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)

    def _read_file(self, key: Key, entry: StoredLatent) -> np.ndarray:
        return read_spill_file(self._file(key, entry), entry)


@dataclass(slots=True)
class _HeldPrompt:
    """What a prompt holds in memory while it has latents stored, and how many it has."""

    nbytes: int
    latents: int = 0


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """A LatentStore's tables at one moment (pin), read on any thread: the entries and records in them are never
    changed, an entry's array is read-only, and the spill files they name are kept until unpin()."""

    entries: dict[Key, StoredLatent]
    records: dict[Key, Record]
    spill_path: Path | None

    def oldest_first(self) -> list[Key]:
        """The keys, oldest first: the table's own, no new object an entry (see CacheSnapshot.write)."""
        return sorted(self.entries, key=lambda key: self.records[key].seq)

    def intact(self, key: Key, entry: StoredLatent) -> bool:
        """Whether the latent can be read: held in memory, or its spill file whole."""
        return not entry.on_disk or file_intact(spill_file(self.spill_path, key, entry), entry)

    def read(self, key: Key, entry: StoredLatent) -> np.ndarray:
        return (
            entry.array if entry.array is not None else read_spill_file(spill_file(self.spill_path, key, entry), entry)
        )


def spill_file(folder: Path, key: Key, entry: StoredLatent) -> Path:
    return folder / f"{key[0]}_{key[1]}_{entry.seq}.latent"


def file_intact(path: Path, entry: StoredLatent) -> bool:
    try:
        return path.stat().st_size == entry.nbytes
    except OSError:
        return False


def read_spill_file(path: Path, entry: StoredLatent) -> np.ndarray:
    """A spilled latent, read-only; ValueError if the file is not its size (OSError if it cannot be read)."""
    with file_reads.opened(path) as fd:
        size = os.fstat(fd).st_size
        if size != entry.nbytes:
            raise ValueError(f"spill file {path.name} is {size} bytes, expected {entry.nbytes}")
        array = file_reads.read_array(fd, entry.dtype, entry.shape, 0)
    array.flags.writeable = False
    return array
