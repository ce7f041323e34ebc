"""Engines started ahead for the tests that each need one of their own, marked
@pytest.mark.own_engine(*ARGS, **KEYWORDS) (start_engine's): one at a time, in a thread from the module's start, in the
order its tests run. Each engine's start (a second or more: its imports, its workers') then runs while the tests before
its own do, most of them waiting on sim images, not on the cores."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from engine_process import EngineProcess, start_engine


class EnginesAhead:
    def __init__(self, items: Iterable[pytest.Item], tmp_path_factory: pytest.TempPathFactory):
        """Starts the engines of the marked tests among `items` (those of one module, in the order they run)."""
        # one at a time: the engines' starts take turns with each other, not with the tests that run meanwhile
        self._pool = ThreadPoolExecutor(1)
        self._started: dict[str, Future[EngineProcess]] = {}
        for item in items:
            if (mark := item.get_closest_marker("own_engine")) is not None:
                folder = tmp_path_factory.mktemp("own-engine")
                self._started[item.nodeid] = self._pool.submit(start_engine, folder, *mark.args, **mark.kwargs)

    def take(self, item: pytest.Item) -> EngineProcess:
        """`item`'s engine, once ready (its start's error raised here, to fail the test that needed it)."""
        return self._started[item.nodeid].result()

    def close(self) -> None:
        """Stops every engine started, those of tests that never ran too (a run stopped at its first failure)."""
        self._pool.shutdown(cancel_futures=True)
        for future in self._started.values():
            if not future.cancelled() and future.exception() is None:
                future.result().stop()
