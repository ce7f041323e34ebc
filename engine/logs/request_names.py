"""Requests named in the engine's log lines by their ids, the ones their clients know them by (HTTP's X-Request-ID, a
ZeroMQ Generate's request_id), so that an operator told of a request can find what befell it.

An id is quoted as Python writes a string: a ZeroMQ client may choose any characters, and quoted, a newline in one
cannot forge a log line. A line about many requests names a few and counts the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from engine.logs.plurals import counted
from protocols.shortened import printable
from protocols.worker_messages import REFUSED, ItemFailed

_NAMED = 5
# of a worker's failure message, what its clients and the log are given: a worker may say anything (a backend's
# exception, 100 KB of it), and each image's client got it whole, in a log line too
MAX_FAILURE_CHARS = 1000


def requests_named(request_ids: Iterable[str]) -> str:
    """ "request 'a'", "requests 'a', 'b' and 3 more": each id once, in order."""
    ids = list(dict.fromkeys(request_ids))
    return f"request{'s' if len(ids) > 1 else ''} {first_named(list(map(repr, ids)))}"


def first_named(names: list[str]) -> str:
    """ "a, b, c, d, e and 3 more": the first few names, the rest counted."""
    more = f" and {len(names) - _NAMED} more" if len(names) > _NAMED else ""
    return ", ".join(names[:_NAMED]) + more


def failed_batch_line(worker: str, batch_id: int, batch_size: int, failures: Sequence[tuple[str, ItemFailed]]) -> str:
    """One line for the images of a batch a worker failed or refused (`failures`: each one's request id and outcome):
    which worker, which requests, why. A batch the worker refused is said so: it is the batch's fault."""
    verb = "refused" if all(failed.code == REFUSED for _, failed in failures) else "failed"
    count = len(failures)
    images = f"{count} of {batch_size} images" if count < batch_size else counted(count, "image")
    # the worker's words, escaped: a line break in them (a backend's exception over lines) began a line of the log
    reasons = list(dict.fromkeys(printable(failed.message) for _, failed in failures))
    others = f" (and {counted(len(reasons) - 1, 'other reason')})" if len(reasons) > 1 else ""
    named = requests_named(request_id for request_id, _ in failures)
    return f"worker {worker} {verb} batch {batch_id} ({images}, {named}): {reasons[0]}{others}"


def clipped(failed: ItemFailed) -> ItemFailed:
    """The failure with its message cut to MAX_FAILURE_CHARS, its start and end kept (an exception's type leads, and a
    traceback's last line ends it), and how much was cut said between them."""
    message = failed.message
    if len(message) <= MAX_FAILURE_CHARS:
        return failed
    kept = MAX_FAILURE_CHARS // 2
    cut = f"{message[:kept]} [{len(message) - 2 * kept} characters cut] {message[-kept:]}"
    return msgspec.structs.replace(failed, message=cut)
