"""What the engine makes of Ray's Python log records while it joins a cluster (engine/fleet/ray/launcher.py).

- A cluster that refuses the engine's token (Ray's token authentication) is dialled again once a second for about
  20 s, each try a line on stderr from Ray's C++ client, and then fails with the reason at the end of a traceback: an
  engine given a shorter --ray-connect-timeout said it timed out. Ray logs each try's traceback at DEBUG (`Connecting
  to GCS: ...`, ray._private.node): the first one that ends in an AuthenticationError is taken as the refusal, and
  the engine ends at once saying so.
- ray.init, called off the main thread (the engine must not wait on it), warns at every start `SIGTERM handler is not
  set because current thread is not the main thread.`: the engine handles SIGTERM itself, and drains on it as ever.
  That one record is dropped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_WORKER_LOG = "ray._private.worker"
_SIGTERM_WARNING = "SIGTERM handler is not set because current thread is not the main thread."
_NODE_LOG = "ray._private.node"
_GCS_TRY = "Connecting to GCS:"
_TOKEN_REFUSED = "ray.exceptions.AuthenticationError: "
AUTH_MODE_ENV = "RAY_AUTH_MODE"


class RayTokenRefused(ConnectionError):
    """The cluster's GCS answered, and refused the engine's token (or the lack of one)."""


def token_refusal(ray_says: str) -> RayTokenRefused:
    """The refusal in one line, with the cure: Ray's own hint follows its reason after `. Note:`."""
    reason = ray_says.split(". Note:")[0].rstrip(".")
    if os.environ.get(AUTH_MODE_ENV, "").lower() != "token":
        cure = (
            f"the engine sent no token ({AUTH_MODE_ENV} is not 'token'): start it with {AUTH_MODE_ENV}=token and the"
            " cluster's token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"
        )
    else:
        cure = "the engine's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) is not the cluster's"
    return RayTokenRefused(f"the cluster refused the engine's Ray token ({reason}): {cure}")


class _DropSigtermWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _SIGTERM_WARNING


class _WatchTokenRefusal(logging.Filter):
    """On ray._private.node, turned up to DEBUG to see each try: passes only what its level showed before."""

    def __init__(self, shown: int, refused: Callable[[RayTokenRefused], None]):
        super().__init__()
        self._shown = shown
        self._refused = refused

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self._shown:
            said = record.getMessage()
            if said.startswith(_GCS_TRY) and _TOKEN_REFUSED in said:
                self._refused(token_refusal(said.rpartition(_TOKEN_REFUSED)[2].strip()))
            return False
        return True


@contextmanager
def watching_ray_logs(refused: Callable[[RayTokenRefused], None]) -> Iterator[None]:
    """Around ray.init (ray imported): drops the SIGTERM warning, and calls `refused` at a token's refusal."""
    worker_log, node_log = logging.getLogger(_WORKER_LOG), logging.getLogger(_NODE_LOG)
    drop_sigterm_warning = _DropSigtermWarning()
    watch = _WatchTokenRefusal(node_log.getEffectiveLevel(), refused)
    level = node_log.level
    worker_log.addFilter(drop_sigterm_warning)
    node_log.addFilter(watch)
    node_log.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        node_log.setLevel(level)
        node_log.removeFilter(watch)
        worker_log.removeFilter(drop_sigterm_warning)
