"""How many files the engine may hold open: its soft limit raised for this configuration, and what the hard one
bounds said once, as it starts."""

from __future__ import annotations

import logging
import resource

from protocols.sockets import allow_open_files

# descriptors the engine may hold: one per worker, HTTP connection and ZeroMQ client over TCP, and files; a soft
# limit of 1,024 took no more workers past about a thousand and left HTTP (even /health) unanswered, without a word
ENGINE_OPEN_FILES = 65536
# what a configuration is known to need: per worker its connection and, a local one, its process (measured: 32 held
# with 2 sim workers, 68 with 20); one connection per image a full queue holds; and room for the engine's own (about
# 30), idle keep-alive connections, ZeroMQ clients and workers started by hand, which no flag counts
FILES_PER_WORKER = 2
SPARE_OPEN_FILES = 1024
# what the engine holds of its own whatever comes: 29 measured at start with --workers 0 (its listeners, ZeroMQ's and
# the event loop's descriptors, its log), and room for the few it opens as it runs (a cache file saved, a worker
# started)
ENGINE_OWN_FILES = 64


def allow_engine_open_files(workers: int, max_queue: int, max_connections: int | None = None) -> None:
    """Raises the soft limit on open files as far as the hard one goes, and says what a hard limit under 65,536 bounds:
    a WARNING when this configuration's workers and a full queue need more, else INFO. Every start of a dev engine
    under a hard limit of 20,000 warned, where that bounds a thousand workers and their clients many times over.
    `max_connections`: --max-connections, whose HTTP connections need their files too (raised to 65,536 alone, a
    larger bound ran out of files before it was reached)."""
    connections = max(max_queue, max_connections or 0)
    needed = workers * FILES_PER_WORKER + connections + SPARE_OPEN_FILES
    if allow_open_files(max(needed, ENGINE_OPEN_FILES)):
        return
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    bound = (
        f"this process may hold at most {hard} open files (ulimit -Hn): past about that many workers, HTTP connections"
        " and ZeroMQ clients in all, it takes no more and leaves HTTP unanswered"
    )
    # named by what counted: a need set by --max-connections was said to be the full queue's
    held = f"a full queue (--max-queue {max_queue})" if connections == max_queue else f"--max-connections {connections}"
    log = logging.getLogger("argus.engine")
    if hard < needed:
        log.warning(
            "%s; --workers %d and %s need about %d: raise the hard limit to at least that", bound, workers, held, needed
        )
    else:
        log.info("%s (--workers %d and %s need about %d)", bound, workers, held, needed)


def workers_that_fit() -> int | None:
    """The most workers (--workers: local processes or Ray actors, a connection each) the hard limit on open files
    leaves room for, after the engine's own files: past them, the engine ran out of files as they started, and libzmq
    aborted the process (`Too many open files (src/ipc_listener.cpp)`, SIGABRT). None: no hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return None
    return max(0, (hard - ENGINE_OWN_FILES) // FILES_PER_WORKER)


def connections_that_fit(workers: int) -> int | None:
    """The most HTTP connections the hard limit on open files leaves room for, after the engine's own files and its
    workers': a larger --max-connections is never reached, the engine out of files first (docs/reliability.md). None:
    no hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return None
    return max(0, hard - ENGINE_OWN_FILES - workers * FILES_PER_WORKER)


def http_connection_bound(workers: int) -> int:
    """The HTTP connections the engine holds at once unless --max-connections says otherwise
    (engine/http/connection_limit.py): what its soft limit on open files leaves after its workers and SPARE_OPEN_FILES
    for its own files, ZeroMQ clients and workers started by hand; half the limit, where that leaves less."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        soft = ENGINE_OPEN_FILES
    return max(soft - workers * FILES_PER_WORKER - SPARE_OPEN_FILES, soft // 2)
