"""The prompt cache's file, for a warm restart: one file, written atomically, checked before use.

Layout (integers little-endian):

    magic "ARGUSPC\\0" | version u32 | meta length u64 | blake2b-256 of meta | meta (msgpack)
    | vectors: float32 [prompts, dim], row i for meta.prompts[i]
    | latents: raw bytes, back to back, in meta.latents order (oldest first)
    | blake2b-256 of everything before it

The meta names the embedder, dim and the model that made the latents, so a
foreign file is refused after reading only its head; the trailing digest covers
the whole payload. It names the levels it was saved with too, but a file of other
levels is not foreign: its latents at the levels this engine keeps are restored
with their prompts, the others left out (see CacheFile). A part the disk cannot
read (a bad sector: its reads fail with EIO) leaves the digest unchecked, not the
file refused: the prompts and latents it holds are left out and the rest restored. Nothing is pickled: the
meta is msgpack decoded into typed records, arrays are raw bytes with dtype and
shape in the meta. The index graph itself is not stored: it is rebuilt from the
vectors, so no third-party binary format has to be trusted or kept compatible. A
file is only ever written under a temporary name and renamed over the old one, so
a crash mid-save leaves the previous file intact.

Versions: the preamble's version is the format's major one, raised by a change a build before it would misread (a
field removed or given another meaning, a new section): every other build refuses such a file. A change that only adds
fields, with defaults, to the meta or its records raises the minor one (the meta's `format_minor`) instead: a build
before it restores the file without them (a record's unknown fields are skipped as it is decoded), so a rollback keeps
its warm cache. Builds before this rule decoded strictly and refuse every file with a field they do not know.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np

from engine.cache import file_reads, gil_slices
from engine.cache.latent_store import ALLOWED_DTYPES
from engine.logs.plurals import counted

FILE_NAME = "prompt_cache.argus"
TEMPORARY_PREFIX = f"{FILE_NAME}.tmp-"  # a save in progress, or cut short by a crash
FORMAT_VERSION = 1  # the major version, in the preamble: a file of another is refused
FORMAT_MINOR = 0  # the fields this build writes: a file of a higher one has fields it drops (see above)
_MAGIC = b"ARGUSPC\0"
_PREAMBLE = struct.Struct("<8sIQ32s")  # magic, version, meta length, meta digest
_DIGEST_BYTES = 32
_MAX_META_BYTES = 1 << 30
_CHUNK = 1 << 20
# vectors read at a time, to check them and to restore them: 4 MiB at 1,024 dimensions. Read whole, a restore held
# the file's vectors, a float32 copy and each shape's gathered rows beside the index being built from them: 50,000
# prompts of 1,024 dimensions peaked 200 MB above the engine's memory once restored (docs/cache.md, "Restoring in
# chunks")
VECTOR_ROWS = 1024
_VECTOR_DTYPE = np.dtype("<f4")
_ENCODER = msgspec.msgpack.Encoder()
# hnswlib takes ids below 2**64: a file may not leave fewer than 2**63 ids to come
_MAX_NEXT_PROMPT_ID = 1 << 63

log = logging.getLogger("argus.cache")


class CacheFileError(Exception):
    """A saved cache that cannot be used: missing, corrupt, truncated, foreign or of another version."""


# gc=False: one of each a prompt and a latent, all alive at once as a save is written or a file read, they set off the
# garbage collector's full passes over every object the cache holds (tens of ms at 20,000 prompts, holding the GIL
# from the event loop); of ints, strings and a tuple of ints, they can be in no reference cycle.
# forbid_unknown_fields=False: fields a newer build added (trailing elements of a record) are skipped, so a rollback
# restores its file (FORMAT_MINOR); forbidden, they refused the whole file, and the rolled-back engine started cold
class SavedPrompt(msgspec.Struct, array_like=True, forbid_unknown_fields=False, gc=False):
    prompt_id: int
    text: str
    steps: int
    width: int
    height: int


class SavedLatent(msgspec.Struct, array_like=True, forbid_unknown_fields=False, gc=False):
    prompt_id: int
    level: int
    uses: int
    dtype: str
    shape: tuple[int, ...]  # the stored latent's own, shared: no list a latent (in the file, an array either way)
    offset: int  # from the start of the latents section
    nbytes: int
    on_disk: bool = False  # the tier it was saved from (absent in files saved before it was recorded)
    seed: int | None = None  # of the run it is of, where known (absent in files saved before it was recorded)


# omit_defaults: a file of minor 0 leaves `format_minor` out, and loads in the builds before it was written
class _Meta(msgspec.Struct, forbid_unknown_fields=False, omit_defaults=True):
    embedder: str  # Embedder.identity: `hash`, or a neural embedder's name and its folder's digest (`clip:...`)
    dim: int
    levels: list[int]
    next_prompt_id: int  # ids are never reused, not even across a restart
    prompts: list[SavedPrompt]
    latents: list[SavedLatent]
    # what made the latents: another model's, even of the same shape, would start hits from latents it never made
    # ("" in files saved before it was recorded, which no engine naming its model takes)
    model: str = ""
    format_minor: int = 0  # FORMAT_MINOR of the build that wrote it (absent in files of 0)


@dataclass(frozen=True, slots=True)
class CacheFile:
    """A validated cache file: its prompts in memory, its vectors (vector_blocks) and latents read on demand.

    A read the disk failed (`read_error`) left the whole file's digest unchecked: what could be read is taken as the
    disk returned it (a disk fails a sector it cannot read, it does not return other bytes), with every other check
    made as for a whole file, and the meta's own digest checked. The prompts whose vectors could not be read are left
    out with their latents (`latents_unread` of them); a latent that cannot be read is read_latent's OSError. The
    prompts of the zero vector, which files saved before 0a02a0e may hold, are left out with their latents.

    A file saved with other levels holds only its latents at the levels asked for, each at its own level (a level is
    a step count, never a position among the levels), and the prompts that have one of them."""

    path: Path
    next_prompt_id: int
    prompts: list[SavedPrompt]
    rows: np.ndarray  # the row of each of `prompts` among the file's vectors, ascending
    vectors_start: int
    dim: int
    latents: list[SavedLatent]  # oldest first
    latents_start: int
    read_error: OSError | None = None  # the first read that failed; None: the file was read whole and checked
    latents_unread: int = 0  # of the prompts left out (their vectors could not be read)
    empty_prompts: int = 0  # prompts of the zero vector, left out with their latents (found by no lookup)

    def vector_blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """The prompts' vectors, float32, read VECTOR_ROWS rows of the file at a time: (the index in `prompts` of a
        block's first, its vectors). A block with a row the disk could not read (left out) has its others read one
        by one; OSError if one of them cannot be read now."""
        stored = int(self.rows[-1]) + 1 if len(self.rows) else 0
        first = 0
        with file_reads.opened(self.path) as fd:
            for start in range(0, stored, VECTOR_ROWS):
                count = min(VECTOR_ROWS, stored - start)
                end = int(np.searchsorted(self.rows, start + count))
                if end == first:
                    continue
                rows = self.rows[first:end]
                try:
                    block = file_reads.read_array(fd, _VECTOR_DTYPE, (count, self.dim), self._row_offset(start))
                    block = block if len(rows) == count else block[rows - start]
                except OSError:
                    block = np.empty((len(rows), self.dim), _VECTOR_DTYPE)
                    for i, row in enumerate(rows.tolist()):
                        file_reads.read_into(fd, block[i].view(np.uint8), self._row_offset(row))
                except file_reads.FileEndsEarly:
                    raise CacheFileError(f"{self.path} changed while it was being loaded") from None
                yield first, block.astype(np.float32, copy=False)
                first = end

    def _row_offset(self, row: int) -> int:
        return self.vectors_start + row * self.dim * _VECTOR_DTYPE.itemsize

    def read_latent(self, latent: SavedLatent) -> np.ndarray:
        """The latent; OSError if the disk cannot read it."""
        dtype = np.dtype(latent.dtype).newbyteorder("<")
        try:
            with file_reads.opened(self.path) as fd:
                array = file_reads.read_array(fd, dtype, latent.shape, self.latents_start + latent.offset)
        except file_reads.FileEndsEarly:
            raise CacheFileError(f"{self.path} changed while it was being loaded") from None
        return array.astype(dtype.newbyteorder("="), copy=False)


def write_cache_file(
    path: Path,
    embedder: str,
    dim: int,
    levels: tuple[int, ...],
    next_prompt_id: int,
    prompts: Iterable[SavedPrompt],
    vectors: np.ndarray,
    latents: Iterable[SavedLatent],
    arrays: Iterable[np.ndarray],
    model: str,
) -> None:
    """Writes the file under a temporary name, then renames it over `path` (offsets in `latents` are set here).
    `prompts` and `latents` are taken a slice at a time (a generator's records are built only as they are encoded,
    and freed once they are); `arrays` yields each latent's array, in `latents` order, as the file is written."""
    # the record lists go in as msgpack already made (msgspec.Raw), a slice at a time: see _encoded_array
    records = _encoded_array(prompts), _encoded_array(_placed(latents))
    header = embedder, dim, list(levels), next_prompt_id
    meta = _ENCODER.encode(_Meta(*header, *records, model, FORMAT_MINOR))  # type: ignore[arg-type]
    vectors = np.ascontiguousarray(vectors, dtype=_VECTOR_DTYPE)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TEMPORARY_PREFIX}{os.getpid()}")
    try:
        # users' prompts: for this engine's user alone, whatever the umask (the mode of a file left there too)
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            digest = hashlib.blake2b(digest_size=_DIGEST_BYTES)
            meta_digest = hashlib.blake2b(meta, digest_size=_DIGEST_BYTES).digest()
            head = _PREAMBLE.pack(_MAGIC, FORMAT_VERSION, len(meta), meta_digest)
            for chunk in _chunks(head, meta, vectors, arrays):
                digest.update(chunk)
                f.write(chunk)
            f.write(digest.digest())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        # a folder gone read-only refuses this as it refused the rename: raised here, this error took the place of
        # the rename's, and the save's failure was said as one of a temporary file. One left is removed at the next
        # start (remove_leftovers), or written over by the next save, of the same name
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def read_cache_file(path: Path, embedder: str, dim: int, levels: tuple[int, ...], model: str) -> CacheFile:
    """Checks everything a load depends on, reading the latents only to verify the digest. A read that fails past
    the meta leaves the digest unchecked and the vectors it holds unread (see CacheFile); one that fails in the meta,
    or in every vector, leaves nothing to restore: CacheFileError. The latents at levels other than `levels` (a file
    saved with other --levels) are left out, with one warning, and the prompts left without a latent with them; a
    file of latents at none of `levels` is refused whole (CacheFileError: a good cache for the levels it names)."""
    try:
        with file_reads.opened(path) as fd:
            size = os.fstat(fd).st_size
            meta, meta_length = _read_meta(fd, path, size)
            _check_identity(meta, path, embedder, dim, model)
            latents_bytes = sum(latent.nbytes for latent in meta.latents)
            vectors_start = _PREAMBLE.size + meta_length
            latents_start = vectors_start + len(meta.prompts) * dim * 4
            expected = latents_start + latents_bytes + _DIGEST_BYTES
            if size != expected:
                raise CacheFileError(f"{path} is {size} bytes, its header describes {expected}: truncated or damaged")
            digest_error = _check_digest(fd, path, size)
            scan = _scan_vectors(fd, vectors_start, len(meta.prompts), dim)
    except FileNotFoundError:
        raise CacheFileError(f"no saved cache at {path}") from None
    except file_reads.FileEndsEarly:
        raise CacheFileError(f"{path} shrank while it was being read") from None
    except OSError as exc:
        raise CacheFileError(f"cannot read {path}: {exc}") from exc
    _check_contents(meta, scan.finite, path)  # an unread vector is not checked: it goes with its prompt
    read_error = digest_error or scan.error
    if meta.format_minor > FORMAT_MINOR:
        log.warning(
            "%s was saved by a newer build (format %d.%d; this build's is %d.%d): restored without the fields this"
            " build does not know, which a save by this build leaves out",
            path,
            FORMAT_VERSION,
            meta.format_minor,
            FORMAT_VERSION,
            FORMAT_MINOR,
        )
    if scan.unread and len(scan.unread) == len(meta.prompts):
        raise CacheFileError(f"cannot read {path}: no prompt's vector could be read ({read_error})")
    kept = _latents_at(meta, path, levels)
    unread = {meta.prompts[row].prompt_id for row in scan.unread}
    # zero vectors (prompts of NULs as far as the embedder reads) saved before 0a02a0e: no lookup finds them, and
    # restored they held their latents' memory for good (an unread vector is counted as unread, above, not here)
    empty = {meta.prompts[row].prompt_id for row in scan.zero}
    if not unread and not empty and len(kept) == len(meta.latents):
        every = np.arange(len(meta.prompts))
        return CacheFile(
            path, meta.next_prompt_id, meta.prompts, every, vectors_start, dim, meta.latents, latents_start, read_error
        )
    gone = unread | empty
    latents = [latent for latent in kept if latent.prompt_id not in gone]
    # a prompt whose every latent is at a level no longer kept goes too. Made once, not per prompt as the test of each
    # row read it: restoring 20,000 prompts with one left out made the set 20,000 times
    restored = {latent.prompt_id for latent in kept} - gone
    rows = [row for row, prompt in enumerate(meta.prompts) if prompt.prompt_id in restored]
    return CacheFile(
        path,
        meta.next_prompt_id,
        [meta.prompts[row] for row in rows],
        np.array(rows, dtype=np.int64),
        vectors_start,
        dim,
        latents,
        latents_start,
        read_error,
        sum(latent.prompt_id in unread for latent in kept),
        len(empty),
    )


def _latents_at(meta: _Meta, path: Path, levels: tuple[int, ...]) -> list[SavedLatent]:
    """The file's latents at `levels`, oldest first; the others counted in one warning. A level is a step count: a
    latent saved at K = 10 is restored at K = 10 whatever levels lie beside it. CacheFileError if none is left of
    latents the file holds: for this engine it holds nothing, and for the levels it names a good cache, set aside.

    Before, the levels were part of the file's identity: an operator tuning --levels (5,10,15,20,25 to 10,20,30) had
    the whole file set aside, every prompt lost with the latents at the levels both settings keep."""
    wanted = set(levels)
    kept = [latent for latent in meta.latents if latent.level in wanted]
    if len(kept) == len(meta.latents):
        return kept
    saved_with, keeping = _levels_flag(meta.levels), _levels_flag(levels)
    if not kept:
        raise CacheFileError(
            f"{path} was saved with --levels {saved_with} and holds no latent at the levels this engine keeps"
            f" (--levels {keeping})"
        )
    dropped = sorted({latent.level for latent in meta.latents} - wanted)
    gone = {latent.prompt_id for latent in meta.latents} - {latent.prompt_id for latent in kept}
    log.warning(
        "%s at levels no longer kept (%s) dropped from %s, saved with --levels %s (this engine keeps %s); %s"
        " with none at a kept level left out with them, the rest restored",
        counted(len(meta.latents) - len(kept), "latent"),
        _levels_flag(dropped),
        path,
        saved_with,
        keeping,
        counted(len(gone), "prompt"),
    )
    return kept


def _levels_flag(levels: Iterable[int]) -> str:
    """Levels as --levels takes them: 10,20."""
    return ",".join(map(str, levels))


# -- writing -----------------------------------------------------------------------
def _placed(latents: Iterable[SavedLatent]) -> Iterator[SavedLatent]:
    """Each latent with its offset in the latents section: where the one before it ends."""
    offset = 0
    for latent in latents:
        latent.offset = offset
        offset += latent.nbytes
        yield latent


def _encoded_array(records: Iterable[msgspec.Struct]) -> msgspec.Raw:
    """The msgpack array of `records` as msgspec encodes a list of them (byte for byte: a file loads in builds before
    and after), made a slice at a time: its header, then each slice's encoding without its own. In one call, 200,000
    records held the GIL from the event loop for 20 to 35 ms, and freeing them after the write about 20 ms more."""
    parts: list[memoryview] = []
    count = 0
    for part in gil_slices.slices(records):
        parts.append(memoryview(_ENCODER.encode(part))[len(_array_header(len(part))) :])
        count += len(part)
    return msgspec.Raw(b"".join([_array_header(count), *parts]))


def _array_header(length: int) -> bytes:
    """A msgpack array's header, in its shortest form (as msgspec writes it)."""
    if length < 16:
        return bytes([0x90 | length])
    if length < 1 << 16:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


def _chunks(
    head: bytes, meta: bytes, vectors: np.ndarray, arrays: Iterable[np.ndarray]
) -> Iterable[bytes | memoryview]:
    yield head
    yield meta
    yield _raw_bytes(vectors)
    for array in arrays:
        yield _raw_bytes(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")))


def _raw_bytes(array: np.ndarray) -> memoryview:
    """A contiguous array's bytes, without a copy."""
    return memoryview(array.reshape(-1).view(np.uint8))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- checking ------------------------------------------------------------------------
def _read_meta(fd: int, path: Path, size: int) -> tuple[_Meta, int]:
    if size < _PREAMBLE.size:
        raise CacheFileError(f"{path} is too short to be a prompt cache file ({size} bytes)")
    head = bytearray(_PREAMBLE.size)
    file_reads.read_into(fd, head, 0)
    magic, version, length, meta_digest = _PREAMBLE.unpack(head)
    if magic != _MAGIC:
        raise CacheFileError(f"{path} is not a prompt cache file")
    if version != FORMAT_VERSION:
        newer = "a newer build's" if version > FORMAT_VERSION else "another build's"
        raise CacheFileError(
            f"{path} is in format version {version}, {newer}: this build reads version {FORMAT_VERSION} alone (the"
            " build that wrote it restores it)"
        )
    if length > min(_MAX_META_BYTES, size - _PREAMBLE.size - _DIGEST_BYTES):
        raise CacheFileError(f"{path} is truncated or damaged (its header is cut short)")
    raw = bytearray(length)
    file_reads.read_into(fd, raw, _PREAMBLE.size)
    if hashlib.blake2b(raw, digest_size=_DIGEST_BYTES).digest() != meta_digest:
        raise CacheFileError(f"{path} is corrupt (its header fails its checksum)")
    try:
        return msgspec.msgpack.decode(raw, type=_Meta), length
    except msgspec.DecodeError as exc:
        raise CacheFileError(f"{path} has a malformed header: {exc}") from exc


def _check_identity(meta: _Meta, path: Path, embedder: str, dim: int, model: str) -> None:
    """What made the vectors and the latents: another's, the file is foreign. Not the levels (_latents_at)."""
    saved = (meta.embedder, meta.dim, meta.model)
    wanted = (embedder, dim, model)
    if saved != wanted:
        raise CacheFileError(
            f"{path} was saved for embedder {saved[0]!r}, dim {saved[1]}, model {saved[2]!r};"
            f" this cache uses embedder {wanted[0]!r}, dim {wanted[1]}, model {wanted[2]!r}"
        )


def _check_digest(fd: int, path: Path, size: int) -> OSError | None:
    """CacheFileError if the file fails its digest; the error of a read that failed, which leaves it unchecked."""
    digest = hashlib.blake2b(digest_size=_DIGEST_BYTES)
    chunk = memoryview(bytearray(_CHUNK))
    end = size - _DIGEST_BYTES
    stored = bytearray(_DIGEST_BYTES)
    try:
        for offset in range(0, end, _CHUNK):
            part = chunk[: min(_CHUNK, end - offset)]
            file_reads.read_into(fd, part, offset)
            digest.update(part)
        file_reads.read_into(fd, stored, end)
    except OSError as error:
        return error
    if stored != digest.digest():
        raise CacheFileError(f"{path} is corrupt (its contents fail their checksum)")
    return None


@dataclass(slots=True)
class _VectorScan:
    """What read_cache_file learns of the vectors, read VECTOR_ROWS at a time and not kept."""

    finite: bool = True
    zero: list[int] = field(default_factory=list)  # rows of the zero vector, read
    unread: list[int] = field(default_factory=list)  # rows the disk could not read
    error: OSError | None = None  # the first read that failed


def _scan_vectors(fd: int, start: int, count: int, dim: int) -> _VectorScan:
    """The vectors' rows checked a block at a time: after a failed read, the block's rows are read one by one, so a
    bad sector costs the prompts whose vectors it holds (one or two at 1,024 dimensions), not every prompt."""
    scan = _VectorScan()
    row_bytes = dim * _VECTOR_DTYPE.itemsize
    for first in range(0, count, VECTOR_ROWS):
        rows = min(VECTOR_ROWS, count - first)
        try:
            block = file_reads.read_array(fd, _VECTOR_DTYPE, (rows, dim), start + first * row_bytes)
            read = np.ones(rows, dtype=bool)
        except OSError as error:
            scan.error = scan.error or error
            block, read = np.zeros((rows, dim), _VECTOR_DTYPE), np.zeros(rows, dtype=bool)
            for row in range(rows):
                with contextlib.suppress(OSError):
                    file_reads.read_into(fd, block[row].view(np.uint8), start + (first + row) * row_bytes)
                    read[row] = True
            scan.unread += (first + np.flatnonzero(~read)).tolist()
        scan.finite = scan.finite and bool(np.isfinite(block).all())
        scan.zero += (first + np.flatnonzero(read & ~block.any(axis=1))).tolist()
    return scan


def _check_contents(meta: _Meta, finite_vectors: bool, path: Path) -> None:
    """What an intact file written by a buggy or hostile writer could still get wrong."""

    def bad(reason: str) -> CacheFileError:
        return CacheFileError(f"{path} is inconsistent: {reason}")

    prompt_ids = [p.prompt_id for p in meta.prompts]
    # ids start at 1: a file of no prompts is checked by this alone (at 0 its first prompt took an id its next save
    # was refused for; below, no insert was taken)
    if not 0 < meta.next_prompt_id <= _MAX_NEXT_PROMPT_ID:
        raise bad(f"next_prompt_id {meta.next_prompt_id} is not in [1, {_MAX_NEXT_PROMPT_ID}]")
    if len(set(prompt_ids)) != len(prompt_ids) or not all(0 < i < meta.next_prompt_id for i in prompt_ids):
        raise bad("prompt ids are not unique integers in [1, next_prompt_id)")
    if len({(p.steps, p.width, p.height, p.text) for p in meta.prompts}) != len(meta.prompts):
        raise bad("a prompt appears twice in one shape")
    if any(min(p.steps, p.width, p.height) <= 0 for p in meta.prompts):
        raise bad("a prompt has a non-positive shape")
    if not finite_vectors:
        raise bad("a vector is not finite")
    levels = set(meta.levels)  # the file's own: _latents_at keeps those of its latents the engine keeps
    known = set(prompt_ids)
    keys = set()
    offset = 0
    for latent in meta.latents:
        key = (latent.prompt_id, latent.level)
        if latent.prompt_id not in known or latent.level not in levels or key in keys:
            raise bad(f"latent {key} belongs to no prompt, has an unknown level, or repeats")
        keys.add(key)
        if latent.dtype not in ALLOWED_DTYPES or latent.uses < 0 or any(d < 0 for d in latent.shape):
            raise bad(f"latent {key} has dtype {latent.dtype!r}, uses {latent.uses}, shape {latent.shape}")
        # in Python ints: numpy's product wraps, and a huge shape would "match" a few bytes
        if math.prod(latent.shape) * np.dtype(latent.dtype).itemsize != latent.nbytes:
            raise bad(f"latent {key} has {latent.nbytes} bytes for shape {latent.shape} of {latent.dtype}")
        if latent.offset != offset:
            raise bad(f"latent {key} is not where the previous one ends")
        offset += latent.nbytes
    if {key[0] for key in keys} != known:
        raise bad("a prompt has no latents")
