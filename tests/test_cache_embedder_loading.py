"""A neural prompt embedder loads on a daemon thread of its own, which a stop's cancelled wait leaves alone
(engine/cache/embedder_loading.py); the engine's stops around it are tests/test_engine_start_signals.py."""

from __future__ import annotations

import asyncio
import threading

import pytest

from engine.cache import embedder_loading
from engine.cache.embedder_loading import EmbedderLoading


def held_load(monkeypatch, outcome, *args) -> tuple[EmbedderLoading, threading.Thread, threading.Event, list]:
    """A load that waits for the event set, then returns `outcome` (or raises it); and the thread it runs on."""
    started, release, asked, threads = threading.Event(), threading.Event(), [], []

    def make_embedder(name, model_path):
        asked.append((name, model_path))
        threads.append(threading.current_thread())
        started.set()
        release.wait()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    monkeypatch.setattr(embedder_loading, "make_embedder", make_embedder)
    loading = EmbedderLoading(*args)
    started.wait()
    return loading, threads[0], release, asked


async def test_a_wait_cancelled_by_a_stop_leaves_the_load_running_and_unfinished(monkeypatch):
    """cli.py exits at once while `unfinished`: the load's future, cancelled with the wait, was done at once, and the
    process then waited at its exit for what the thread had left to load."""
    embedder = object()
    loading, thread, release, asked = held_load(monkeypatch, embedder, "minilm", "/models/minilm")
    try:
        assert thread.daemon  # the interpreter's exit does not join it
        waiter = loading.loaded()
        waiter.cancel()
        await asyncio.sleep(0)
        assert waiter.cancelled() and loading.unfinished
    finally:
        release.set()
    thread.join()
    assert asked == [("minilm", "/models/minilm")]
    assert not loading.unfinished
    assert await loading.loaded() is embedder


class Interrupted(BaseException):
    pass


@pytest.mark.parametrize("error", [OSError("no such model"), Interrupted()])
async def test_whatever_fails_the_load_is_what_the_wait_raises(monkeypatch, error):
    """An error but an Exception's ended the thread with the load never done: the engine waited for it for ever."""
    unhandled = []
    monkeypatch.setattr(threading, "excepthook", unhandled.append)
    loading, thread, release, _ = held_load(monkeypatch, error, "clip", None)
    release.set()
    thread.join()
    assert not loading.unfinished
    with pytest.raises(type(error)):
        await loading.loaded()
    assert unhandled == []  # nothing after the error: no traceback of the thread's in the log
