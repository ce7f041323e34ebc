"""The engine's --cache-dir: one engine's own (a lock), cleared of what a dead engine left, and the saved cache in it.

The directory holds the saved cache (`prompt_cache.argus`) and the spill folders (in `spill/`), see docs/cache.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from engine.cache.embedders import Embedder
from engine.cache.latent_store import SPILL_FOLDER_PREFIX
from engine.cache.persistence import FILE_NAME, TEMPORARY_PREFIX, CacheFileError
from engine.cache.prompt_cache import PromptCache
from engine.commands.arg_types import UsageError
from engine.config import CacheConfig
from engine.logs.plurals import counted
from workers.model_id import backend_of, model_latent_shape

log = logging.getLogger("argus.cache")


def new_prompt_cache(config: CacheConfig, model: str, embedder: Embedder, levels: tuple[int, ...]) -> PromptCache:
    """An empty cache spilling to `config.directory`'s spill folder; UsageError if that cannot be made."""
    try:
        return PromptCache(*_cache_arguments(config, model, embedder, levels))
    except OSError as error:
        # `spill` made by another user (a run as root), read-only, or a file: lock_cache_dir checked the folder above
        # it only, and the engine ended in a traceback
        raise UsageError(f"--cache-dir {config.directory}: cannot make a spill folder in it ({error})") from None


def has_saved_cache(config: CacheConfig) -> bool:
    return bool(config.directory) and os.path.exists(os.path.join(config.directory, FILE_NAME))


def saved_file_identity(directory: str) -> tuple[int, int, int, int] | None:
    """The saved cache's file in `directory` as it is on disk (None: there is none), to tell the one a save wrote or a
    restore read from one put in its place or cut short since."""
    try:
        found = os.stat(os.path.join(directory, FILE_NAME))
    except OSError:
        return None
    return found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns


def load_saved_cache(
    config: CacheConfig, model: str, embedder: Embedder, levels: tuple[int, ...]
) -> PromptCache | None:
    """The cache saved in `config.directory` if `model` made it; None if there is none, or it was refused.

    A file that cannot be trusted (corrupt, foreign, another version) is set
    aside under a name of its own (never half-loaded, never overwritten); one that cannot be (a folder that cannot be
    written) raises its CacheFileError, said here, so that the caller leaves it as it is.
    """
    saved = os.path.join(config.directory, FILE_NAME)
    if not os.path.exists(saved):
        return None
    backend = backend_of(model)
    try:
        cache = PromptCache.load(
            config.directory,
            *_cache_arguments(config, model, embedder, levels),
            # what the model's workers take, resumed from a latent: a saved latent of another shape is left out
            latent_shape=lambda shape: model_latent_shape(backend, model, shape.width, shape.height),
        )
    except CacheFileError as error:
        # a name of its own: a refused file may be another embedder's good cache, to be renamed back
        aside = f"{saved}.rejected-{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}"
        try:
            os.replace(saved, aside)
        except FileNotFoundError:
            # deleted between the check above and the read (by hand, as the engine started): nothing to set aside.
            # Raised, it was a failed restore, and the engine never saved its cache for the rest of its life
            log.warning("the saved prompt cache %s went as it was read (%s): starting empty", saved, error)
            return None
        except OSError as refused:
            # a folder that cannot be written (restore_only): raised, the caller keeps the file from being saved over
            log.error(
                "refused the saved prompt cache (%s); it cannot be set aside (%s): left as it is, not saved over,"
                " starting empty",
                error,
                refused,
            )
            raise error from refused
        log.error("refused the saved prompt cache (%s); kept it as %s, starting empty", error, aside)
        return None
    stats = cache.stats()
    dropped = cache.empty_prompts_dropped
    # saved before 0a02a0e: a prompt no lookup finds (its vector zero), which held its latents' memory for good
    empty = f" ({counted(dropped, 'prompt')} of the zero vector left out, found by no lookup)" if dropped else ""
    log.info("prompt cache restored from %s: %s%s", saved, counted(stats.prompts, "prompt"), empty)
    if stats.evictions:
        # what the budgets held no room for: a restart with a lower --cache-bytes named what was kept alone, as if
        # the file held no more, and the next save wrote only that over it
        log.warning(
            "%s of the saved cache found no room (--cache-bytes %s, --cache-dir-bytes %s): left out, the best ranked"
            " kept (LCBFU); %s",
            counted(stats.evictions, "latent"),
            _size(config.max_bytes),
            *_no_room_words(config),
        )
    return cache


def _cache_arguments(config: CacheConfig, model: str, embedder: Embedder, levels: tuple[int, ...]) -> tuple:
    spill = os.path.join(config.directory, "spill") if config.directory else None
    spill_bytes = 0 if config.read_only else config.directory_bytes
    return embedder.identity, embedder.dim, levels, config.max_bytes, spill, spill_bytes, model


def _no_room_words(config: CacheConfig) -> tuple[str, str]:
    """--cache-dir-bytes as the operator gave it and why latents found no room, and what the next save holds. A
    folder that cannot be written spills nothing whatever was given: said `0 bytes`, a figure nobody gave."""
    if config.read_only and config.directory_bytes:
        return (
            f"{_size(config.directory_bytes)}, unused while the folder cannot be written",
            "the save is restored anew, spilling, once the folder can be written, before it is saved over",
        )
    return (
        f"{_size(config.directory_bytes)}: lower than it was saved with, or spills the disk refused",
        "the next save holds only what was kept",
    )


def remove_leftovers(directory: str) -> None:
    """Spill folders (latents only their dead engine knew of) and half-written saves: nobody can use them, and
    each crash would otherwise leave up to directory_bytes more on disk. The directory belongs to this engine
    (lock_cache_dir): what is there was left by an earlier one that died without closing its cache."""
    folders = list(Path(directory, "spill").glob(SPILL_FOLDER_PREFIX + "*"))
    # a save is a file: a directory of that name (made by hand) is not the engine's to delete, and failed its start
    saves = [path for path in Path(directory).glob(TEMPORARY_PREFIX + "*") if not path.is_dir()]
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    for save in saves:
        with contextlib.suppress(OSError):
            save.unlink(missing_ok=True)
    folders_removed = sum(not folder.exists() for folder in folders)
    saves_removed = sum(not save.exists() for save in saves)
    if folders_removed or saves_removed:
        removed = f"{counted(folders_removed, 'spill folder')} and {counted(saves_removed, 'unfinished save')}"
        log.warning("removed %s left in %s", removed, directory)
    # another user's (a run as root) may not be this one's to delete: said so, where all was said removed
    if left := [path for path in (*folders, *saves) if path.exists()]:
        log.warning(
            "could not remove %s left in %s (%s the first): they take disk space until deleted by hand",
            counted(len(left), "spill folder or unfinished save", "spill folders or unfinished saves"),
            directory,
            left[0],
        )


def writable(directory: str) -> bool:
    return os.access(directory, os.W_OK | os.X_OK)


def restore_only(config: CacheConfig) -> CacheConfig:
    """For a --cache-dir that holds a save but cannot be written (a file system remounted read-only after a disk
    error, a permission): the save is restored, and nothing is spilled there; checkpoints fail, the save left as it
    is, until the folder can be written again (then writable_again)."""
    unused = (
        f"; no latent is spilled there (--cache-dir-bytes {_size(config.directory_bytes)} unused), and once it can"
        " be, the save is restored anew, spilling, before it is saved over"
    )
    log.warning(
        "--cache-dir %s cannot be written (read-only or permission denied): its saved cache is restored, and saves"
        " fail, leaving it as it is, until the folder can be written again%s",
        config.directory,
        unused if config.directory_bytes else "",
    )
    return dataclasses.replace(config, read_only=True)


def writable_again(config: CacheConfig) -> CacheConfig | None:
    """The config to restore the save anew with, spilling, once a folder restore_only restored from without spilling
    can be written again; None while it cannot, or when spilling was not given (the restore was the operator's).

    Restored without spilling, the latents that had been spilled found no room in memory and were left out: saved
    as it was, the cache wrote over the file without them, where a restart once the disk was fixed restored them."""
    if not (config.read_only and config.directory_bytes and writable(config.directory)):
        return None
    log.warning(
        "--cache-dir %s can be written again: its saved cache is restored anew, spilling up to --cache-dir-bytes %s,"
        " and what was cached since joins it; saved from the next checkpoint on",
        config.directory,
        _size(config.directory_bytes),
    )
    warn_if_disk_short(config)
    return dataclasses.replace(config, read_only=False)


def warn_if_disk_short(config: CacheConfig) -> None:
    """Warns when --cache-dir's filesystem has less room than the cache may take there at its bounds: the latents
    spilled (--cache-dir-bytes), and the saved cache (every latent, spilled ones too) with its next save written
    beside it before the rename. Spills past the room failed one by one and then every save did, the disk full."""
    saved = os.path.join(config.directory, FILE_NAME)
    whole_cache = config.max_bytes + config.directory_bytes
    needed = config.directory_bytes + 2 * whole_cache
    free = shutil.disk_usage(config.directory).free + (os.path.getsize(saved) if os.path.isfile(saved) else 0)
    if free < needed:
        log.warning(
            "--cache-dir %s has %s free, and the cache may take up to %s there: the latents spilled"
            " (--cache-dir-bytes), and the saved cache (--cache-bytes and --cache-dir-bytes) twice over while a save"
            " is written beside the last. Once it is full, spills and then saves fail",
            config.directory,
            _size(free),
            _size(needed),
        )


# the binary units a size is said in, largest first
_UNITS = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def _size(size: int) -> str:
    """In the largest unit it holds one of: in GiB alone, a disk with 40 MiB free had "0.0 GiB free", and a small
    cache's need was "0.0 GiB" too, the warning saying 0.0 was short of 0.0."""
    for unit, scale in _UNITS:
        if round(size / scale, 1) >= 1:  # 2**20 - 1 bytes is "1.0 MiB", not "1024.0 KiB"
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def cache_dir_problem(directory: str) -> str | None:
    """A --cache-dir that is a file: said so, where making it as a folder said "not writable (File exists)"."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        return f"--cache-dir {directory} is a file, not a folder: give a folder for the cache (made if missing)"
    return None


def lock_cache_dir(directory: str) -> int:
    """Makes `directory` this engine's for as long as the returned descriptor is open (the kernel lets go of it
    when the process dies, however it dies); refuses one held by a live engine, or that cannot be written.

    A second engine would delete the first's spill folder as a dead engine's leftovers, and overwrite its save.
    """
    try:
        # one made here is the engine's user's alone, whatever the umask, as its save is (0600): under a umask of 000 it
        # was 0777, and any user could rename a cache file of their own making over the save, restored at next start
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        problem = cache_dir_problem(directory) or f"--cache-dir {directory}: not writable ({error.strerror or error})"
        raise UsageError(problem) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # checked now, not at the drain: without a spill folder nothing is written there until the save. One that
        # holds a save is let in (restore_only): refused, an engine restarted on a file system remounted read-only
        # after an error neither restored its last good save nor served at all
        if not writable(directory) and not os.path.isfile(os.path.join(directory, FILE_NAME)):
            raise UsageError(f"--cache-dir {directory}: not writable (read-only or permission denied)")
    except BlockingIOError:
        os.close(fd)
        raise UsageError(
            f"--cache-dir {directory} is in use by another engine: give each engine a --cache-dir of its own"
        ) from None
    except OSError as error:
        # ENOLCK: a network file system without its lock service (NFSv3 with no lockd); it ended the start in a
        # traceback. Unlocked, a second engine on the folder would delete this one's spills as a dead engine's
        os.close(fd)
        raise UsageError(
            f"--cache-dir {directory} cannot be locked ({error.strerror or error}), which keeps a second engine off"
            " it: give a folder on a file system that takes locks (a local disk)"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def relock_if_replaced(directory: str, lock: int) -> int:
    """`lock` if it is still on `directory`; else the lock on the folder in its place, taken now (made if missing).

    A --cache-dir deleted under a running engine (a hand freeing disk space, a tmp cleaner) left its lock on a
    folder nobody could find: a second engine started on the path was let in, deleted this one's spill folder as
    leftovers, and the two saved over each other. UsageError if another engine holds the new folder already.
    """
    held = os.fstat(lock)
    with contextlib.suppress(FileNotFoundError):
        current = os.stat(directory)
        if (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
            return lock
    new = lock_cache_dir(directory)
    os.close(lock)
    return new
