"""Nearest-prompt search by cosine similarity: exact over a few prompts, an hnswlib HNSW graph over many.

Ids are the prompt cache's prompt ids; vectors are stored unit-length. The cache
keeps one index per shape and clients choose the shapes, so a small index must
cost little. Every hnswlib index holds about 2.5 MB resident whatever its size (a
fixed table of 65,536 label locks): a cache with 2 prompts in each of 300 shapes
grew by 792 MB when each shape had a graph. Up to GRAPH_ABOVE prompts, a shape's
unit vectors are the rows of one numpy matrix and a lookup takes the dot product
with each (exact, so recall is 100%); the same cache now grows by 3.1 MB. A shape
that grows past GRAPH_ABOVE gets a graph built from its vectors, beside the
matrix, which it keeps in step and which hands the vectors back (a snapshot's,
a rebuild's): hnswlib gives its own back only in a copy of the whole graph that
holds the GIL, and with it every other thread (the engine's event loop
included) for as long as it takes (see _Graph). The shape goes back to
the matrix when it shrinks to EXACT_AT, or to GRAPH_ABOVE in a graph that grew to
four times what is left (a lookup walks past removed prompts' nodes), keeping the
matrix alone. Removal from the matrix moves its last row into the freed one;
from the graph it marks the id deleted too. A graph inserts into
fresh slots and, once its removed nodes outnumber its live ones, is built anew
from the live vectors on a thread of its own (`argus-cache-graph`) while the old
one serves; the cache thread takes the new one at its next call, with what came
and went meanwhile applied. Either way a cache that churns at a steady size keeps
a bounded index. Reusing a removed node's slot instead (hnswlib's
replace_deleted) repairs the links of every neighbour it had: 1.8 ms of the cache
thread an insert into a full cache of 2,000 hash-embedded prompts, 15 ms on
random vectors, against about 0.5 ms into a fresh slot (docs/cache.md); it is
the way only after a rebuild failed (out of memory), until one succeeds.

The graph parameters were chosen with 100k vectors of 1024 dimensions (`argus
bench cache`, numbers in docs/cache.md). They need a denser graph than hnswlib's default
M = 16: on hash-embedded synthetic prompts, M = 24 with ef_construction = 100 finds
the exact nearest prompt for 86-88% of near-duplicate queries at ef = 24-32 (84-86%
at M = 16), and on random unit vectors, the hard case, 62-70% (38-46% at M = 16).
ef = 24 rather than 32 trades two points of that recall for a quarter of the
lookup time, to keep the p99 near 1 ms even on random vectors.
Not thread-safe: owned by the prompt cache's thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

import hnswlib
import numpy as np

from engine.cache import gil_slices

log = logging.getLogger("argus.cache")

EF_SEARCH = 24
M = 24
EF_CONSTRUCTION = 100
# Measured through VectorIndex.nearest on this 2-core machine (load average about 3), random unit vectors of
# 1024 dims, CPU time per lookup, p50 of two runs: exact 53-54 us at 256 prompts, 73-77 at 512, 107-122 at
# 1024, 186-208 at 2048, 461-488 at 4096; the graph 67-72, 69-89, 102-112, 140-214 and 259-362 us, finding
# the exact nearest for 98%, 94%, 88%, 79% and 70% of the queries (at 384 dims, 1024 prompts: exact 64 us,
# graph 69 us). Up to 1024, then, exact search costs what the graph does, always finds the nearest, and
# holds less memory (a graph stores the vectors too, plus its links and its 2.5 MB); past it, it grows
# linearly. Not higher: building the graph as a shape crosses over stalls the cache thread once, 106-190 ms
# at 1024 prompts of 1024 dims, and the stall grows with the threshold.
GRAPH_ABOVE = 1024
# A graph goes back to exact only at a quarter of that, not as soon as it is below: a shape hovering near
# GRAPH_ABOVE would otherwise rebuild its graph on every crossing; this way at least 768 inserts come between
# two builds. Going back at all gives back the memory of a shape that shrank: a graph keeps the largest size it
# grew to, and its 2.5 MB.
EXACT_AT = GRAPH_ABOVE // 4
# the graph keeps ids as hnswlib labels, uint64
_ID_LIMIT = 1 << 64
# a graph is built anew once its removed nodes outnumber its live ones (and this many): a rebuild costs about 0.1 to
# 0.2 ms a live prompt of the builder thread, which hnswlib runs without the GIL
REBUILD_AFTER_REMOVED = GRAPH_ABOVE


def element_bytes(dim: int) -> int:
    """What one prompt holds in its shape's index, charged against the cache's memory budget: its row of the matrix
    (the rows a matrix keeps spare are never written, so numpy's fresh zeroed pages stay out of memory), and its node
    in a graph, charged whether or not its shape has one, so that a prompt's charge stays what it was as its shape
    crosses GRAPH_ABOVE: hnswlib's level-0 record (the vector, 2M links and their count, the label), the node's lock,
    level, link-list pointer and label-map entry (about 100 bytes), and on average 1/(M - 1) upper levels of M links
    and their count."""
    vector = 4 * dim
    level0 = vector + (2 * M + 1) * 4 + 8
    upper = -(-(M + 1) * 4 // (M - 1))
    return vector + level0 + 100 + upper


class _Builder:
    """Builds the graphs anew, one at a time for the whole engine (each shape's in turn), beside the cache thread. A
    daemon thread, not a ThreadPoolExecutor's: the interpreter's exit joins an executor's threads, which run every
    build queued first (a graph of 100k prompts takes seconds), and an engine's stop would wait for them."""

    def __init__(self):
        self._queue: queue.SimpleQueue[tuple[Future, Callable, tuple]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, work: Callable, *args) -> Future:
        future: Future = Future()
        self._queue.put((future, work, args))
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="argus-cache-graph", daemon=True)
            self._thread.start()
        return future

    def _serve(self) -> None:
        while True:
            # one job a call: this loop's own names for a job kept its arguments (a copy of the live vectors) and its
            # future (its graph, which no shape may use any more) while it waited for the next, which may never come
            self._run(*self._queue.get())

    @staticmethod
    def _run(future: Future, work: Callable, args: tuple) -> None:
        if not future.set_running_or_notify_cancel():
            return  # its graph went back to exact search, or its shape was dropped, before its turn
        try:
            future.set_result(work(*args))
        except BaseException as error:
            future.set_exception(error)


_BUILDER = _Builder()


class VectorIndex:
    """One shape's prompts: a matrix searched exactly up to GRAPH_ABOVE of them, an HNSW graph past it."""

    def __init__(self, dim: int):
        self.dim = dim
        self._search: _Exact | _Graph = _Exact(dim)
        self._reserved = 0  # room asked for: the graph made as the shape next crosses GRAPH_ABOVE takes it too

    def __len__(self) -> int:
        return len(self._search)

    def __contains__(self, item_id: int) -> bool:
        return item_id in self._search

    def reserve(self, count: int) -> None:
        """Room for `count` prompts, for an empty index given them a block at a time (a restore): the matrix made
        that size at once, and the graph when the shape crosses GRAPH_ABOVE, so no block doubles the matrix (a copy
        of its rows) or grows the graph. Rows not written yet are numpy's fresh zeroed pages, out of memory."""
        self._reserved = count
        self._search.reserve(count)

    def add(self, item_id: int, vector: np.ndarray) -> None:
        self.add_many([item_id], vector.reshape(1, -1))

    def add_many(self, ids: list[int], vectors: np.ndarray) -> None:
        """Inserts rows in one call (a graph spreads a batch over threads)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(ids) != len(vectors) or len(set(ids)) != len(ids) or any(i in self._search for i in ids):
            raise ValueError("ids must be new, unique and one per vector")
        # checked here, not by hnswlib: an id taken in the matrix must still be taken by the graph built later
        if not all(isinstance(i, int | np.integer) and 0 <= i < _ID_LIMIT for i in ids):
            raise ValueError("ids must be integers in [0, 2**64)")
        if not np.isfinite(vectors).all():
            raise ValueError("vectors must be finite")
        ids, vectors = [int(i) for i in ids], _unit(vectors)
        search = self._search
        crossing = isinstance(search, _Exact) and len(self) + len(ids) > GRAPH_ABOVE
        try:
            search.add(ids, vectors)
            if crossing:
                self._search = _Graph(search, self._reserved)  # built from all of them in one batch
                # taken: kept, the graph made as the shape grew back past GRAPH_ABOVE, long after, was of the
                # restore's size, which took it back to the matrix at the next removal (see VectorIndex.remove)
                self._reserved = 0
        except BaseException:
            # out of memory, most likely (the graph's build, a rebuild's copy of the live vectors): taken back, as an
            # id left here that its caller never registered was found by lookups, and failed each for good
            for item_id in ids:
                if item_id in search:
                    search.remove(item_id)
            raise

    def remove(self, item_id: int) -> None:
        self._search.remove(item_id)
        # sooner than EXACT_AT (up to GRAPH_ABOVE) in a graph that grew to 4 times the prompts it has left: a lookup
        # walks past the removed prompts' nodes (300 left of 20,000: 10.8 ms of CPU, exact search 65 us)
        search = self._search
        if isinstance(search, _Graph) and len(search) <= max(EXACT_AT, min(GRAPH_ABOVE, search.capacity // 4)):
            self._search = search.exact
            search.give_up_rebuild()

    def nearest(self, vector: np.ndarray) -> tuple[int, float] | None:
        """(id, cosine similarity) of the closest live vector, or None if the index is empty."""
        return self.nearest_many(np.reshape(vector, (1, -1)))[0]

    def nearest_many(self, vectors: np.ndarray) -> list[tuple[int, float] | None]:
        """`nearest` for each row, in one query (one pass over the index for a burst of prompts)."""
        if not self._search:
            return [None] * len(vectors)
        queries = _unit(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim))
        ids, similarities = self._search.nearest_many(queries)
        # rounding can put an exact repeat a hair above 1
        return list(zip(ids, np.minimum(1.0, similarities).tolist(), strict=True))

    def vectors(self, ids: list[int]) -> np.ndarray:
        """The stored (unit-length) vectors of these ids, float32 [len(ids), dim]."""
        if not ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._search.vectors(ids)

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """Every id (uint64) and its stored vector, row for row, in no order: a view of the matrix, which the next
        change to this index changes."""
        ids, vectors = self._search.items()
        return gil_slices.array(ids, np.uint64), vectors


def _unit(vectors: np.ndarray) -> np.ndarray:
    # np.linalg.norm's own sum for real rows, without the Python around it (half of this on a lookup of a few prompts)
    norms = np.sqrt(np.add.reduce(vectors * vectors, axis=1, keepdims=True))
    # a zero vector (an empty prompt's) stays zero, similar to nothing, as hnswlib's cosine space kept it
    return vectors / np.where(norms > 0, norms, 1)


class _Exact:
    """Live vectors packed in the first rows of one matrix: row i holds the vector of _ids[i]."""

    def __init__(self, dim: int):
        self.dim = dim
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._ids: list[int] = []
        self._rows: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: int) -> bool:
        return item_id in self._rows

    def add(self, ids: list[int], unit_vectors: np.ndarray) -> None:
        start, end = len(self._ids), len(self._ids) + len(ids)
        if end > len(self._matrix):
            self._resize(max(end, 2 * len(self._matrix)))
        self._matrix[start:end] = unit_vectors
        self._rows.update(zip(ids, range(start, end), strict=True))
        self._ids.extend(ids)

    def reserve(self, count: int) -> None:
        if count > len(self._matrix):
            self._resize(count)

    def remove(self, item_id: int) -> None:
        row = self._rows.pop(item_id)
        last_id = self._ids.pop()
        if last_id != item_id:  # the last row fills the hole, so live rows stay packed
            self._matrix[row] = self._matrix[len(self._ids)]
            self._ids[row] = last_id
            self._rows[last_id] = row
        # halved only at a quarter full: a shape that shrank gives its memory back, and one churning
        # around a size does not reallocate back and forth
        if len(self._ids) <= len(self._matrix) // 4:
            self._resize(len(self._matrix) // 2)

    def _resize(self, rows: int) -> None:
        matrix = np.zeros((rows, self._matrix.shape[1]), dtype=np.float32)
        matrix[: len(self._ids)] = self._matrix[: len(self._ids)]
        self._matrix = matrix

    def nearest_many(self, unit_queries: np.ndarray) -> tuple[list[int], np.ndarray]:
        live = self._matrix[: len(self._ids)]
        # a stack of (1 x dim) by (dim x 1) products, one per query and row, which numpy runs on this thread:
        # a matrix product (live @ query) spreads 512 prompts of 1024 dims over two OpenBLAS threads (256 it
        # keeps on one; measured), taking the machine's second core from the engine. (np.vecdot reads
        # better but needs numpy 2, and argus allows 1.26.)
        similarities = np.matmul(unit_queries[:, None, None, :], live[None, :, :, None])[:, :, 0, 0]
        rows = similarities.argmax(axis=1)
        best = similarities[np.arange(len(rows)), rows]
        return [self._ids[row] for row in rows.tolist()], best

    def vectors(self, ids: list[int]) -> np.ndarray:
        """A copy, which numpy takes without the GIL."""
        return self._matrix[[self._rows[i] for i in ids]]

    def items(self) -> tuple[list[int], np.ndarray]:
        """The live ids and their rows: a view, which the next change to this matrix changes."""
        return list(self._ids), self._matrix[: len(self._ids)]


class _Graph:
    """An HNSW graph of the vectors of a matrix (`exact`), kept in step with it; the matrix hands them back.

    hnswlib hands its vectors back only holding the GIL, which pauses every other Python thread, the engine's event
    loop included (HTTP replies, /health, worker messages), whichever thread asks: its pickle state
    (Index.__getstate__) copies the whole graph, links and all: a snapshot of 20,000 prompts of 1024 dims took 0.12 to
    0.49 s, and paused a thread ticking beside it 54 to 158 ms; get_items builds each vector through a list, 120 us a
    vector. numpy copies rows of the matrix letting the GIL go: 17 to 46 ms for those 20,000, and the ticking thread's
    longest pause during the snapshot 5 to 13 ms, as long as it pauses idle on this loaded 2-core machine.
    The price is the vectors a second time, 4 bytes a dimension a prompt (docs/cache.md, "What `max_bytes` counts").
    """

    def __init__(self, exact: _Exact, capacity: int = 0):
        self.exact = exact  # the live prompts, by id, with their vectors
        self._dim = exact.dim
        self._index = _new_graph(exact.dim, max(len(exact), capacity))
        _add(self._index, *exact.items())
        # a graph being built anew from the live vectors, and what came and went since its vectors were read: ids
        # added and ids removed, applied to it when it is taken
        self._rebuild: Future[hnswlib.Index] | None = None
        self._added_since: set[int] = set()
        self._removed_since: set[int] = set()
        # prompts removed since the graph was built (or a rebuild failed): built anew once they outnumber the live
        self._worn = 0
        # a rebuild failed (out of memory): until one succeeds, new prompts take removed ones' slots, the slower way
        # (hnswlib repairs the links of the slot's old neighbours), since fresh slots grew the graph without bound: a
        # builder that always failed took a graph of 2,000 live prompts to 32,000 slots in 20,000 inserts, 208 MB
        self._reuse_slots = False

    def __len__(self) -> int:
        return len(self.exact)

    def __contains__(self, item_id: int) -> bool:
        return item_id in self.exact

    @property
    def capacity(self) -> int:
        return self._index.get_max_elements()

    def reserve(self, count: int) -> None:
        self.exact.reserve(count)

    def add(self, ids: list[int], unit_vectors: np.ndarray) -> None:
        self._take_rebuilt()
        reusable = self._index.get_current_count() - len(self.exact) if self._reuse_slots else 0
        _add(self._index, ids, unit_vectors, reusable)
        try:
            self.exact.add(ids, unit_vectors)
        except BaseException:  # out of memory as the matrix doubled: the graph must not find what the matrix lacks
            for item_id in ids:
                self._index.mark_deleted(item_id)
            raise
        if self._rebuild is not None:
            self._added_since.update(ids)
        self._rebuild_if_worn()

    def remove(self, item_id: int) -> None:
        self._take_rebuilt()
        self._index.mark_deleted(item_id)
        self.exact.remove(item_id)
        self._worn += 1
        if self._rebuild is None:
            return
        if item_id in self._added_since:
            self._added_since.remove(item_id)
        else:
            self._removed_since.add(item_id)

    def give_up_rebuild(self) -> None:
        """No longer searched: a rebuild not started yet is dropped, not left to hold up other shapes' (one runs on)."""
        if self._rebuild is not None:
            self._rebuild.cancel()

    def _rebuild_if_worn(self) -> None:
        if self._rebuild is not None or self._worn <= max(len(self.exact), REBUILD_AFTER_REMOVED):
            return
        ids, vectors = self.exact.items()
        # a copy: the builder reads nothing the cache thread changes
        self._rebuild = _BUILDER.submit(_built, self._dim, ids, vectors.copy())

    def _take_rebuilt(self) -> None:
        """Serves from the graph built anew once it is done, with what came and went since applied to it."""
        if self._rebuild is None or not self._rebuild.done():
            return
        rebuild, self._rebuild = self._rebuild, None
        added, self._added_since = self._added_since, set()
        removed, self._removed_since = self._removed_since, set()
        # its exception, not result() raising it: raised here, its traceback held this frame, which held the future and
        # so the exception, a cycle keeping the vectors the build was given (8 MB at 2,000 prompts of 1024 dims) until
        # the garbage collector's next full pass (a builder that always failed: 16 MB more every 4,000 inserts)
        error = rebuild.exception()
        if error is not None:  # out of memory, most likely: the old graph serves on, built anew once worn as much again
            # (not at the next insert: each try copies the live vectors on this thread; a builder that kept failing
            # made every insert copy them and log a traceback, 5.8 ms an insert of 2,000 prompts instead of 0.95)
            log.error(
                "building a prompt cache graph anew failed: the old one serves on, new prompts taking removed ones'"
                " slots until a rebuild succeeds",
                exc_info=error,
            )
            self._worn, self._reuse_slots = 0, True
            return
        graph = rebuild.result()
        for item_id in removed:
            graph.mark_deleted(item_id)
        if added:
            _add(graph, list(added), self.exact.vectors(list(added)))
        self._index, self._worn, self._reuse_slots = graph, len(removed), False

    def nearest_many(self, unit_queries: np.ndarray) -> tuple[list[int], np.ndarray]:
        self._take_rebuilt()
        labels, distances = self._index.knn_query(unit_queries, k=1, num_threads=1)
        return labels[:, 0].tolist(), 1.0 - distances[:, 0]

    def vectors(self, ids: list[int]) -> np.ndarray:
        return self.exact.vectors(ids)

    def items(self) -> tuple[list[int], np.ndarray]:
        return self.exact.items()


def _new_graph(dim: int, capacity: int) -> hnswlib.Index:
    # inner product over unit vectors is hnswlib's cosine space without its own normalising, so the graph stores the
    # very vectors the matrix held: vectors(ids) does not change when a shape crosses over
    graph = hnswlib.Index(space="ip", dim=dim)
    # for after a failed rebuild only (_Graph._reuse_slots); allowed from the start, hnswlib keeps a set of the removed
    # nodes' ids beside the graph, which costs the path into fresh slots nothing measurable (docs/cache.md)
    graph.init_index(max_elements=capacity, M=M, ef_construction=EF_CONSTRUCTION, allow_replace_deleted=True)
    graph.set_ef(EF_SEARCH)
    return graph


def _add(graph: hnswlib.Index, ids: list[int], unit_vectors: np.ndarray, reusable: int = 0) -> None:
    """Into the slots of up to `reusable` removed nodes first, then fresh ones, the graph doubled as it fills."""
    needed, capacity = graph.get_current_count() + max(0, len(ids) - reusable), graph.get_max_elements()
    if needed > capacity:
        while capacity < needed:
            capacity *= 2
        graph.resize_index(capacity)
    # one thread for a single vector: waking a thread pool costs more than the insert
    graph.add_items(unit_vectors, ids, num_threads=1 if len(ids) == 1 else -1, replace_deleted=reusable > 0)


def _built(dim: int, ids: list[int], unit_vectors: np.ndarray) -> hnswlib.Index:
    """A graph of these vectors alone (on the builder thread), with room for the inserts until it is built anew in
    turn, at a steady size: it was sized twice them, and the cache thread doubled it to four times just before."""
    graph = _new_graph(dim, 2 * len(ids) + REBUILD_AFTER_REMOVED + 1)
    graph.add_items(unit_vectors, ids, num_threads=1)
    return graph
