"""A neural prompt embedder, loaded on a thread of its own that a stop does not wait for.

It takes seconds to load (`--embedder minilm`: about 8 s on a 2-core machine, most of it importing torch and
transformers), and no Python code can cut an import short. Loaded as the engine was built, on the loop's thread, it
held a SIGTERM or Ctrl-C until it was done. Loaded here, the engine's loop handles a stop meanwhile (Engine.run), and
the process exits without waiting for the load (engine/cli.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time

from engine.cache.embedders import Embedder, make_embedder

log = logging.getLogger("argus.cache")


class EmbedderLoading:
    """Starts loading at once; `loaded()` is what the loop waits on."""

    def __init__(self, name: str, model_path: str | None = None):
        self._name = name
        self._embedder: concurrent.futures.Future[Embedder] = concurrent.futures.Future()
        # running from now on: the loop's waiter cancelled (a stop) leaves the load alone, rather than cancel the
        # future its result is then set on
        self._embedder.set_running_or_notify_cancel()
        # a daemon: the interpreter's exit does not join it, which would wait for what it has left to load
        threading.Thread(target=self._load, args=(model_path,), name="argus-embedder-load", daemon=True).start()

    @property
    def unfinished(self) -> bool:
        """Still loading: a process that stops now must exit without waiting for it (engine/cli.py)."""
        return not self._embedder.done()

    def loaded(self) -> asyncio.Future[Embedder]:
        """The embedder (or the error that failed its load), on the running loop; cancelled, the load runs on."""
        return asyncio.wrap_future(self._embedder)

    def _load(self, model_path: str | None) -> None:
        started = time.monotonic()
        log.info("loading the %s prompt embedder", self._name)
        try:
            embedder = make_embedder(self._name, model_path)
        except BaseException as error:
            self._embedder.set_exception(error)
            return
        log.info("%s prompt embedder loaded in %.1f s", self._name, time.monotonic() - started)
        self._embedder.set_result(embedder)
