"""LCBFU eviction bookkeeping (NIRVANA, NSDI 2024: least computationally beneficial and frequently used).

Each cached (prompt, level K) entry scores K x uses, where uses counts the hits
served from it (0 when stored). A hit adds K. The victim is the entry with the
lowest score; among equal scores the oldest, by the order entries were first
stored. One instance ranks one set of entries (a tier of the latent store);
an entry moves between sets with its record, so it keeps its score and age.

A binary heap with lazy invalidation: a hit pushes the entry's new rank and
leaves the old one in place, to be skipped when it surfaces. The first k victims
cost O(k log k) beyond the stale ranks skipped; the heap is rebuilt when stale
ranks outnumber live ones.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Record:
    """Replaced, never changed: a copy of the records (records()) keeps each entry's uses as they were."""

    level: int
    uses: int
    seq: int  # position in the order entries were first stored; unique

    @property
    def score(self) -> int:
        return self.level * self.uses

    @property
    def rank(self) -> tuple[int, int]:
        """Lower ranks are evicted first."""
        return (self.score, self.seq)


class Lcbfu:
    def __init__(self) -> None:
        self._records: dict[Hashable, Record] = {}
        self._heap: list[tuple[int, int, Hashable]] = []

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._records

    def add(self, key: Hashable, record: Record) -> None:
        if key in self._records:
            raise KeyError(f"{key!r} is already ranked")
        self._records[key] = record
        self._push(key, record)

    def hit(self, key: Hashable) -> None:
        old = self._records[key]
        record = self._records[key] = Record(old.level, old.uses + 1, old.seq)
        self._push(key, record)

    def remove(self, key: Hashable) -> Record:
        return self._records.pop(key)

    def record(self, key: Hashable) -> Record:
        return self._records[key]

    def records(self) -> Mapping[Hashable, Record]:
        """Every entry's record: the table itself, read-only, changing as entries come, go and are hit; a copy keeps
        them as they are now (the records themselves are never changed)."""
        return MappingProxyType(self._records)

    def lowest(self) -> Iterator[tuple[Hashable, Record]]:
        """Every entry, lowest rank (the next victim) first, left in place; do not change entries while walking.

        A lazy walk down the heap's tree, the lowest node reached so far first (a node never ranks above its
        children), so a caller can look at as many victims as it needs before it displaces any.
        """
        heap = self._heap
        while heap and not self._is_current(heap[0]):
            heapq.heappop(heap)
        frontier = [(heap[0][0], heap[0][1], 0)] if heap else []  # (score, seq, position in the heap)
        while frontier:
            *_, position = heapq.heappop(frontier)
            if self._is_current(heap[position]):
                key = heap[position][2]
                yield key, self._records[key]
            for child in (2 * position + 1, 2 * position + 2):
                if child < len(heap):
                    heapq.heappush(frontier, (heap[child][0], heap[child][1], child))

    def _is_current(self, item: tuple[int, int, Hashable]) -> bool:
        """Whether a heap item is its entry's present rank, not one left behind by a hit or a removal."""
        score, seq, key = item
        record = self._records.get(key)
        return record is not None and record.seq == seq and record.score == score

    def _push(self, key: Hashable, record: Record) -> None:
        # seq is unique, so the key itself is never compared
        heapq.heappush(self._heap, (record.score, record.seq, key))
        if len(self._heap) > 2 * len(self._records) + 64:
            self._heap = [(r.score, r.seq, k) for k, r in self._records.items()]
            heapq.heapify(self._heap)
