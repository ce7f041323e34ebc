"""The nearest-prompt index: exact over few prompts, an hnswlib graph past GRAPH_ABOVE, and back below EXACT_AT."""

from __future__ import annotations

import contextlib
import gc
import threading
import weakref

import hnswlib
import numpy as np
import pytest
from waiting import wait_for

from engine.cache.index import (
    _BUILDER,
    EXACT_AT,
    GRAPH_ABOVE,
    REBUILD_AFTER_REMOVED,
    VectorIndex,
    _built,
    _Exact,
    _Graph,
)


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("count", [300, GRAPH_ABOVE + 300])
def test_nearest_is_the_most_similar_by_cosine(count):
    vectors = unit_rows(count, 32)
    index = VectorIndex(32)
    for i, v in enumerate(vectors):
        index.add(i + 100, v * (i + 1))  # scale does not matter to cosine
    query = vectors[42] + 0.05 * unit_rows(1, 32, seed=1)[0]
    expected = vectors @ (query / np.linalg.norm(query))
    found, similarity = index.nearest(query)
    assert found == 142
    assert similarity == pytest.approx(expected.max(), abs=1e-5)
    assert len(index) == count


def test_a_small_index_is_exact_search_and_agrees_with_brute_force():
    vectors = unit_rows(GRAPH_ABOVE, 64)
    index = VectorIndex(64)
    index.add_many(list(range(1, GRAPH_ABOVE + 1)), vectors * 3)
    assert isinstance(index._search, _Exact)
    queries = unit_rows(500, 64, seed=1)  # unrelated: the case a graph gets wrong most often
    similarities = queries @ vectors.T
    found = index.nearest_many(queries * 0.5)
    assert [prompt_id for prompt_id, _ in found] == (similarities.argmax(axis=1) + 1).tolist()
    np.testing.assert_allclose([s for _, s in found], similarities.max(axis=1), atol=1e-5)
    assert index.nearest(queries[7]) == found[7]


def test_crossing_the_threshold_keeps_every_id_and_vector_both_ways():
    dim = 16
    vectors = unit_rows(GRAPH_ABOVE + 1, dim)
    ids = list(range(10, 10 + GRAPH_ABOVE + 1))
    index = VectorIndex(dim)
    index.add_many(ids[:-1], vectors[:-1])
    before = index.vectors(ids[:-1])
    assert isinstance(index._search, _Exact)
    index.add(ids[-1], vectors[-1])
    assert isinstance(index._search, _Graph)
    assert len(index) == len(ids) and all(i in index for i in ids)
    np.testing.assert_array_equal(index.vectors(ids[:-1]), before)  # the graph holds the very same vectors
    found = index.nearest_many(vectors)
    assert sum(prompt_id == i for (prompt_id, _), i in zip(found, ids, strict=True)) >= 0.99 * len(ids)
    assert all(similarity == pytest.approx(1.0, abs=1e-5) for _, similarity in found)

    # hysteresis: back to exact only at EXACT_AT, not as soon as the count is under GRAPH_ABOVE
    live = ids[: EXACT_AT + 1]
    for i in ids[EXACT_AT + 1 :]:
        index.remove(i)
    assert isinstance(index._search, _Graph) and len(index) == EXACT_AT + 1
    index.remove(live.pop())
    assert isinstance(index._search, _Exact) and len(index) == EXACT_AT
    np.testing.assert_array_equal(index.vectors(live), before[: len(live)])
    assert [prompt_id for prompt_id, _ in index.nearest_many(vectors[: len(live)])] == live
    # and it stays exact up to GRAPH_ABOVE again
    index.add_many(list(range(5000, 5000 + GRAPH_ABOVE - EXACT_AT)), unit_rows(GRAPH_ABOVE - EXACT_AT, dim, seed=3))
    assert isinstance(index._search, _Exact) and len(index) == GRAPH_ABOVE


def test_churn_at_a_steady_size_keeps_the_matrix_and_finds_only_live_ids():
    dim = 16
    index = VectorIndex(dim)
    vectors = unit_rows(3000, dim)
    index.add_many(list(range(100)), vectors[:100])
    rows = len(index._search._matrix)
    for new in range(100, 3000):  # the oldest leaves, a new one comes: 100 live all along
        index.remove(new - 100)
        index.add(new, vectors[new])
        assert len(index._search._matrix) == rows
    live = list(range(2900, 3000))
    assert [i for i in range(3000) if i in index] == live
    np.testing.assert_allclose(index.vectors(live), vectors[2900:], atol=1e-6)
    assert [prompt_id for prompt_id, _ in index.nearest_many(vectors[2900:])] == live
    assert all(index.nearest(v)[0] in live for v in vectors[:50])  # removed vectors are not found


def test_a_shrinking_matrix_gives_its_memory_back():
    index = VectorIndex(8)
    index.add_many(list(range(512)), unit_rows(512, 8))
    for i in range(510):
        index.remove(i)
    assert len(index._search._matrix) <= 8
    assert [prompt_id for prompt_id, _ in index.nearest_many(unit_rows(512, 8)[510:])] == [510, 511]


def churn(index: VectorIndex, vectors: np.ndarray, start: int, steps: int, live: int) -> None:
    """From row `start` on, each step adds the next vector (its id is its row) and removes the oldest of the `live`
    held, as a full cache does."""
    for i in range(start, start + steps):
        index.add(i, vectors[i])
        index.remove(i - live)


LIVE = GRAPH_ABOVE + 64  # prompts a churning graph holds


def full_graph(rows: int) -> tuple[VectorIndex, np.ndarray]:
    """A graph of LIVE prompts (ids 0 to LIVE - 1, their rows), and `rows` vectors in all to churn it with."""
    vectors = unit_rows(rows, 16)
    index = VectorIndex(16)
    index.add_many(list(range(LIVE)), vectors[:LIVE])
    return index, vectors


@contextlib.contextmanager
def builder_held():
    """Rebuilds asked for meanwhile wait their turn, behind this."""
    free = threading.Event()
    _BUILDER.submit(free.wait)
    try:
        yield
    finally:
        free.set()


def test_a_churning_graph_is_built_anew_and_stays_bounded():
    """Inserts go to fresh slots (reusing a removed one's repaired its old neighbours' links: 2.2 ms an insert into a
    full cache of 3,000 hash-embedded prompts, 26 ms on random vectors, against 0.7 and 1.1 ms); once removed nodes
    outnumber live ones, the graph is built anew beside the cache thread."""
    live = LIVE
    index, vectors = full_graph(live * 5)
    first = index._search._index
    # room for the inserts until the next rebuild (its live prompts, one just added, and as many removed again):
    # a graph built anew is never doubled at a steady size
    rebuilt_size = 2 * (live + 1) + REBUILD_AFTER_REMOVED + 1
    for round_start in range(live, live * 5, live):
        for i in range(round_start, round_start + live):
            churn(index, vectors, i, 1, live)
            graph = index._search
            assert graph._index is first or graph.capacity == rebuilt_size
            if graph._rebuild is not None:
                # built before the next insert: a builder that a loaded machine slows lets the inserts meanwhile
                # outgrow the graph it builds (and the graph doubles), which is not what this test is about
                graph._rebuild.result()
    index.nearest(vectors[0])  # takes a graph built anew
    assert graph._index is not first and graph.capacity == rebuilt_size and len(index) == live
    newest = list(range(4 * live, 5 * live))
    assert [found for found, _ in index.nearest_many(vectors[newest])] == newest
    assert all(index.nearest(vectors[i])[0] >= 4 * live for i in range(0, 4 * live, 97))  # removed: never found


def test_what_comes_and_goes_while_a_graph_is_built_is_applied_to_the_new_one():
    live = LIVE
    index, vectors = full_graph(live * 3)
    with builder_held():
        churn(index, vectors, live, live + 3, live)  # the removed outnumber the live: a rebuild is asked for
        graph = index._search
        assert graph._rebuild is not None and not graph._rebuild.done()
        churn(index, vectors, 2 * live + 3, live // 2, live)  # meanwhile: prompts added and removed, some of both
        # and one both added and removed meanwhile: in neither graph, so neither deleted from the new one nor added
        index.add(10**6, unit_rows(1, 16, seed=5)[0])
        index.remove(10**6)
    graph._rebuild.result()
    old = graph._index
    ids = list(range(live + 3 + live // 2, 2 * live + 3 + live // 2))  # those live now
    assert [found for found, _ in index.nearest_many(vectors[ids])] == ids
    assert graph._index is not old and len(index) == live and 10**6 not in index
    assert all(index.nearest(vectors[i])[0] in ids for i in range(0, ids[0], 37))  # removed: never found


def test_a_graph_is_built_anew_only_once_its_removed_nodes_outnumber_its_live_ones():
    live = LIVE
    index, vectors = full_graph(live * 3)
    with builder_held():
        # each step adds before it removes: the live are live + 1 when the removed are counted
        churn(index, vectors, live, live + 2, live)
        assert index._search._rebuild is None  # as many removed as live: not yet
        churn(index, vectors, 2 * live + 2, 1, live)
        assert index._search._rebuild is not None


@pytest.mark.parametrize("count", [300, GRAPH_ABOVE + 300])
def test_an_exact_repeat_is_no_more_than_perfectly_similar(count):
    """Rounding put the cosine of a unit vector with itself a hair above 1, which the replies report."""
    vectors = unit_rows(count, 32, seed=4)
    index = VectorIndex(32)
    index.add_many(list(range(count)), vectors)
    similarities = [similarity for _, similarity in index.nearest_many(vectors)]
    assert max(similarities) == 1.0


def hnswlib_copies_refused(monkeypatch) -> None:
    """hnswlib's ways to hand its vectors back raise: each holds the GIL, and its pickle state copies the whole graph
    (at 20,000 prompts of 1024 dims a checkpoint paused the engine's other threads 54 to 158 ms)."""

    def refused(*args, **kwargs):
        raise AssertionError("read hnswlib's copy of its vectors")

    for name in ("__getstate__", "get_items"):
        monkeypatch.setattr(hnswlib.Index, name, refused)


def assert_vectors_are_hnswlibs_without_asking_it(index: VectorIndex, ids: list[int], monkeypatch) -> None:
    graph = index._search._index
    expected = np.asarray(graph.get_items(ids, return_type="numpy"), dtype=np.float32)
    with monkeypatch.context() as patched:
        hnswlib_copies_refused(patched)
        np.testing.assert_array_equal(index.vectors(ids), expected)


def test_the_graph_hands_back_the_vectors_hnswlib_holds_without_asking_it(monkeypatch):
    """From the matrix kept beside it, for ids in any order, after removals and later inserts, and after a rebuild."""
    live = LIVE
    index, vectors = full_graph(live)
    for i in range(0, 64, 2):
        index.remove(i)
    index.add_many(list(range(5000, 5032)), unit_rows(32, 16, seed=2))
    assert_vectors_are_hnswlibs_without_asking_it(index, [5031, 1, live - 1, 5000, *range(64, 100)], monkeypatch)
    np.testing.assert_allclose(index.vectors([1, live - 1]), vectors[[1, live - 1]], rtol=1e-6)

    index, vectors = full_graph(live * 3)
    first = index._search._index
    churn(index, vectors, live, live + 3, live)  # the removed outnumber the live: a rebuild is asked for
    index._search._rebuild.result()
    index.nearest(vectors[0])  # takes it
    assert index._search._index is not first
    live_now = list(range(live + 3, 2 * live + 3))
    assert_vectors_are_hnswlibs_without_asking_it(index, live_now[::-1], monkeypatch)


def test_vectors_are_a_copy_that_later_changes_leave_as_they_were():
    """A snapshot keeps them while the cache goes on: removing a prompt moves the matrix's last row into its own."""
    index, vectors = full_graph(LIVE + 1)
    ids = list(range(LIVE))
    held = index.vectors(ids)
    index.remove(0)  # row 0 now holds the vector of LIVE - 1
    index.add(LIVE, vectors[LIVE])
    np.testing.assert_allclose(held, vectors[:LIVE], rtol=1e-6)
    np.testing.assert_array_equal(index.vectors(ids[1:]), held[1:])


@pytest.mark.parametrize("count", [1, GRAPH_ABOVE + 1])
def test_refuses_reused_ids_and_bad_vectors(count):
    index = VectorIndex(4)
    index.add_many(list(range(1, count + 1)), np.ones((count, 4)))
    for ids, vectors in [
        ([1], np.ones((1, 4))),  # taken
        ([0, 0], np.ones((2, 4))),  # repeated
        ([0], np.ones((2, 4))),  # one id for two vectors
        ([-1], np.ones((1, 4))),
        ([1 << 64], np.ones((1, 4))),
        ([0.5], np.ones((1, 4))),
        ([0], np.array([[1, np.inf, 0, 0]])),
    ]:
        with pytest.raises(ValueError):
            index.add_many(ids, vectors)
    assert len(index) == count and 0 not in index
    np.testing.assert_allclose(index.vectors([1]), np.full((1, 4), 0.5), atol=1e-6)


def test_a_zero_vector_is_similar_to_nothing():
    index = VectorIndex(4)
    index.add(1, np.zeros(4))
    assert index.nearest(np.array([1, 0, 0, 0])) == (1, 0.0)
    np.testing.assert_array_equal(index.vectors([1]), np.zeros((1, 4)))


def test_a_graph_that_shrank_to_a_quarter_of_its_size_goes_back_to_exact_search_sooner():
    """A lookup walks past removed prompts' nodes: 300 prompts left of 20,000 took 10.8 ms, 65 us exact."""
    dim = 16
    vectors = unit_rows(4 * GRAPH_ABOVE, dim)
    ids = list(range(1, 4 * GRAPH_ABOVE + 1))
    index = VectorIndex(dim)
    index.add_many(ids, vectors)
    for i in ids[GRAPH_ABOVE + 1 :]:
        index.remove(i)
    assert isinstance(index._search, _Graph)
    index.remove(ids[GRAPH_ABOVE])
    assert isinstance(index._search, _Exact) and len(index) == GRAPH_ABOVE
    np.testing.assert_allclose(index.vectors(ids[:GRAPH_ABOVE]), vectors[:GRAPH_ABOVE], rtol=1e-6)
    assert index.nearest(vectors[7]) == (ids[7], pytest.approx(1.0))


def test_a_failed_rebuild_leaves_a_working_graph_built_anew_once_worn_as_much_again(monkeypatch, caplog):
    """Not at the next insert: each try copies the live vectors on the cache thread, and a builder that kept failing
    (out of memory) made every insert copy them and log a traceback (5.8 ms an insert of 2,000 prompts, not 0.95)."""
    live = LIVE
    index, vectors = full_graph(live * 5)
    calls = []

    def fails_once(*args):
        calls.append(len(args[1]))
        if len(calls) == 1:
            raise MemoryError("injected")
        return _built(*args)

    monkeypatch.setattr("engine.cache.index._built", fails_once)
    # held: a build that fails at once was taken by the churn's last steps, before the test looked (alone, this
    # failed every run)
    with builder_held():
        churn(index, vectors, live, live + 3, live)  # the removed outnumber the live: a rebuild is asked for
    graph = index._search
    graph._rebuild.exception()  # failed, once let go
    old = graph._index
    start = 2 * live + 3
    for step in range(live):  # it is not asked for again until as many more are removed
        churn(index, vectors, start + step, 1, live)
        assert graph._rebuild is None and len(calls) == 1
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1
    ids = list(range(start, start + live))  # those live now: the old graph served on
    assert [found for found, _ in index.nearest_many(vectors[ids])] == ids
    churn(index, vectors, start + live, 100, live)
    if graph._rebuild is not None:  # else already taken: inserts into reused slots are slower than into fresh ones
        graph._rebuild.result()
    assert len(calls) == 2  # counted once the builder has run: asked for, it may not have begun on a loaded machine
    index.nearest(vectors[0])  # takes it
    ids = list(range(start + live + 100 - live, start + live + 100))
    assert (
        graph._index is not old and graph.capacity <= 2 * (live + 1) + REBUILD_AFTER_REMOVED + 1 and len(index) == live
    )
    assert [found for found, _ in index.nearest_many(vectors[ids])] == ids
    assert all(index.nearest(vectors[i])[0] in ids for i in range(0, ids[0], 37))  # removed: never found


def test_the_builder_lets_go_of_a_finished_rebuilds_vectors(monkeypatch):
    """The builder thread kept its last job's arguments (a copy of the live vectors: 400 MB at 100k prompts of 1024
    dims) and its result (a graph no shape may use any more) until the next rebuild, which may never come."""
    live = LIVE
    index, vectors = full_graph(live * 3)
    given = []

    def watched(*args):
        given.append(weakref.ref(args[2]))
        return _built(*args)

    monkeypatch.setattr("engine.cache.index._built", watched)
    with builder_held():  # not taken by the churn's last steps before the test looks
        churn(index, vectors, live, live + 3, live)  # the removed outnumber the live: a rebuild is asked for
    index._search._rebuild.result()
    index.nearest(vectors[0])  # takes it
    assert wait_for(lambda: gc.collect() is not None and given[0]() is None, timeout_s=10)


def test_a_rebuild_not_started_when_its_graph_goes_back_to_exact_search_is_dropped():
    """It would hold up the other shapes' rebuilds, one thread building for the whole engine."""
    live = LIVE
    index, vectors = full_graph(live * 3)
    with builder_held():
        churn(index, vectors, live, live + 3, live)  # a rebuild is asked for, and waits its turn
        rebuild = index._search._rebuild
        for i in range(live + 3, 2 * live + 3 - EXACT_AT):  # the shape shrinks to EXACT_AT prompts
            index.remove(i)
        assert isinstance(index._search, _Exact) and rebuild.cancelled()
    live_ids = list(range(2 * live + 3 - EXACT_AT, 2 * live + 3))
    assert [found for found, _ in index.nearest_many(vectors[live_ids])] == live_ids


def test_a_graph_whose_rebuilds_keep_failing_reuses_removed_slots_until_one_succeeds(monkeypatch):
    """Before, inserts went on into fresh slots after a failed rebuild: a builder that always failed (out of memory)
    grew a graph of 2,000 live prompts of 1024 dims to 32,000 slots in 20,000 inserts (208 MB, and 6.4 ms an
    insert), without bound."""
    live = LIVE
    index, vectors = full_graph(live * 10)

    def fails(*args):
        raise MemoryError("injected")

    monkeypatch.setattr("engine.cache.index._built", fails)
    with builder_held():  # the removed outnumber the live: a rebuild is asked for, and fails once let go
        churn(index, vectors, live, live + 3, live)
    graph = index._search
    graph._rebuild.exception()
    start = 2 * live + 3
    churn(index, vectors, start, 1, live)  # takes the failure
    nodes, capacity = graph._index.get_current_count(), graph.capacity
    churn(index, vectors, start + 1, 5 * live, live)  # rebuilds tried again meanwhile fail too
    assert (graph._index.get_current_count(), graph.capacity) == (nodes, capacity)
    ids = list(range(start + 1 + 4 * live, start + 1 + 5 * live))  # those live now
    assert [found for found, _ in index.nearest_many(vectors[ids])] == ids

    monkeypatch.setattr("engine.cache.index._built", _built)
    step = start + 1 + 5 * live
    while graph._reuse_slots:  # worn as much again: a rebuild that succeeds (one asked for before may still fail)
        if graph._rebuild is not None:
            graph._rebuild.exception()  # done: taken at the next call
        churn(index, vectors, step, 1, live)
        step += 1
    assert graph.capacity == 2 * (live + 1) + REBUILD_AFTER_REMOVED + 1  # fresh slots again, in a graph sized for them
    ids = list(range(step - live, step))
    assert [found for found, _ in index.nearest_many(vectors[ids])] == ids
    assert all(index.nearest(vectors[i])[0] in ids for i in range(0, ids[0], 37))  # removed: never found


@pytest.mark.parametrize("failing", ["the graph's build", "a rebuild's start", "the matrix's growth"])
def test_an_add_that_fails_leaves_the_index_as_it_was(monkeypatch, failing):
    """Out of memory as a shape's graph was built (its 1,025th prompt), as the live vectors were copied for a
    rebuild, or as a graph's matrix of vectors doubled once the graph had taken the prompt, the add raised with its id
    kept: the prompt cache, which registers a prompt once its index took it, never knew that id, and each lookup that
    found it failed (KeyError), with the requests looked up beside it, for good."""

    def out_of_memory(*args):
        raise MemoryError("injected")

    if failing == "the graph's build":
        vectors = unit_rows(GRAPH_ABOVE + 1, 16)
        index = VectorIndex(16)
        index.add_many(list(range(GRAPH_ABOVE)), vectors[:GRAPH_ABOVE])
        monkeypatch.setattr("engine.cache.index._new_graph", out_of_memory)
    elif failing == "the matrix's growth":
        index, vectors = full_graph(LIVE + 1)  # the matrix holds LIVE rows: the next prompt doubles it
        monkeypatch.setattr(_Exact, "_resize", out_of_memory)
    else:
        index, vectors = full_graph(2 * LIVE + 3)
        churn(index, vectors, LIVE, LIVE + 2, LIVE)  # worn one removal short of a rebuild, asked for at the next add
        monkeypatch.setattr(_BUILDER, "submit", out_of_memory)
    new = len(vectors) - 1
    held = len(index)
    with pytest.raises(MemoryError):
        index.add(new, vectors[new])
    assert new not in index and len(index) == held
    assert index.nearest(vectors[new])[0] != new


def test_a_restored_shape_back_on_its_matrix_grows_a_graph_as_any_other_does():
    """The room reserved for a restore is for the restore's own crossing: kept, the graph made as the shape grew past
    GRAPH_ABOVE again, long after, was of the restore's size, and four times the prompts it held, so the next removal
    took it back to the matrix, and the next insert built a graph anew: one each insert and eviction at that size."""
    dim, restored = 8, 4 * GRAPH_ABOVE
    index = VectorIndex(dim)
    index.reserve(restored)
    for first in range(0, restored, GRAPH_ABOVE):  # a block at a time, as PromptCache._restore gives them
        index.add_many(list(range(first, first + GRAPH_ABOVE)), unit_rows(GRAPH_ABOVE, dim, seed=first))
    for item_id in range(GRAPH_ABOVE, restored):  # evicted down to GRAPH_ABOVE: a graph of 4x that goes
        index.remove(item_id)
    assert isinstance(index._search, _Exact)
    index.add(restored, unit_rows(1, dim, seed=1)[0])  # grown past GRAPH_ABOVE: a graph of its size
    assert isinstance(index._search, _Graph) and index._search.capacity == GRAPH_ABOVE + 1
    index.remove(0)  # and the hysteresis of any graph: back to the matrix only at EXACT_AT
    assert isinstance(index._search, _Graph)
