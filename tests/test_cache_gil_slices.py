"""The cache's big tables copied and walked a slice at a time (engine/cache/gil_slices.py)."""

from __future__ import annotations

import gc

import numpy as np

from engine.cache import gil_slices


def test_slices_are_taken_from_the_iterator_as_they_are_asked_for(monkeypatch):
    monkeypatch.setattr(gil_slices, "SLICE", 3)
    items = iter(range(7))
    parts = gil_slices.slices(items)
    assert next(parts) == [0, 1, 2]
    assert next(items) == 3  # not taken yet: a generator's records are built only as they are encoded
    assert list(parts) == [[4, 5, 6]]
    assert list(gil_slices.slices([])) == []


def test_copied_is_one_dict_of_the_tables_in_order_the_last_one_winning(monkeypatch):
    monkeypatch.setattr(gil_slices, "SLICE", 3)
    first, second = {i: f"a{i}" for i in range(10)}, {i: f"b{i}" for i in range(8, 12)}
    copy = gil_slices.copied(first, second)
    assert list(copy.items()) == list((first | second).items())
    assert gil_slices.copied(first) == first  # alone too: the second table holds the first one's last keys
    first[0] = "changed"
    assert copy[0] == "a0"
    assert gil_slices.copied() == {}


def test_array_holds_every_item_in_order_across_slices(monkeypatch):
    monkeypatch.setattr(gil_slices, "SLICE", 3)
    ids = [5, 1, 2**64 - 1, 7, 3, 9, 0]  # a graph's ids go up to 2**64 - 1
    converted = gil_slices.array(ids, np.uint64)
    assert converted.dtype == np.uint64 and converted.tolist() == ids
    assert gil_slices.array([], np.uint64).shape == (0,)


def test_a_copy_holds_no_new_object_an_entry_for_the_garbage_collector():
    """A list of each slice's items, a tuple an entry, set off the collector's passes as a snapshot was taken (full
    ones over the whole cache, in time); the items' iterator hands them over in the one tuple it reuses."""
    collections = []

    def count(phase, info):
        if phase == "start":
            collections.append(info["generation"])

    table = {(i, 5): str(i) for i in range(20_000)}
    thresholds = gc.get_threshold()
    gc.collect()
    gc.set_threshold(100, 10, 10)
    gc.callbacks.append(count)
    try:
        copy = gil_slices.copied(table, table)
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*thresholds)
    assert collections == []
    assert copy == table
