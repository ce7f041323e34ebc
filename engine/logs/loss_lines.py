"""The log lines of workers lost: one lost alone is a line of its own, naming the requests it held; workers lost
together are one line that counts them. A fleet's thousand workers are lost at once when its process dies (each gone
worker a re-routed image meets is lost as unreachable, in turn, and the others as the beats to them bounce), when its
CURVE key is revoked or when it goes silent, and a line each made a thousand WARNINGs (and, for silence, a thousand
ERRORs beside them). So are the workers that leave, gathered a while (`leaves`): a fleet stopped made a thousand INFOs,
and a thousand WARNINGs when it held images."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from engine.dispatch.jobs import Job
from engine.fleet.registry import WorkerHandle
from engine.logs.gathered_lines import GatheredLines
from engine.logs.plurals import counted
from engine.logs.request_names import first_named, requests_named

log = logging.getLogger("argus.dispatcher")

# a worker's Leaving opens a window this long, in which the workers that leave are said in one line:
# the Leavings of a fleet of 200 sim workers stopped came within 50 ms. Only the line waits (what a leaving worker
# held is routed again at once), as long as this at most
LEAVES_GATHERED_S = 1.0
# lost by silence: an ERROR, as WorkerLink says a lone silent worker before its loss; workers silent together it says
# in no line of its own, so theirs is
_SILENT = "heartbeat"


@dataclass(frozen=True)
class _Loss:
    name: str
    cause: str
    held: list[Job]


class LossLines:
    def __init__(self) -> None:
        self._open = 0  # the `together` blocks entered and not left
        self._losses: list[_Loss] = []
        # the workers that left: WorkerLink opens a window at a Leaving
        self.leaves: GatheredLines[_Loss] = GatheredLines(LEAVES_GATHERED_S, _say_leaves)
        # says the workers whose joins wait to be said (WorkerLink): a worker's join is said before its loss
        self.joins_first: Callable[[], None] = lambda: None

    @contextmanager
    def together(self) -> Iterator[None]:
        """The workers lost within are said as it ends (the outermost, if nested): alone, as `lost` says one; more
        than one, in a line for all."""
        self.hold()
        try:
            yield
        finally:
            self.release()

    def hold(self) -> None:
        """Opens a `together` that `release` ends: for workers found lost over a while, not within one call."""
        self._open += 1

    def release(self) -> None:
        self._open -= 1
        if not self._open:
            losses, self._losses = self._losses, []
            _say(losses)

    def lost(self, worker: WorkerHandle, cause: str, held: list[Job]) -> None:
        self.joins_first()
        if cause == "left":
            # gathered with the others leaving, holding images or not: a fleet stopped under load leaves as one
            self.leaves.add(_Loss(worker.name, cause, held))
            return
        with self.together():
            self._losses.append(_Loss(worker.name, cause, held))


def _say_leaves(left: list[_Loss]) -> None:
    if any(loss.held for loss in left):
        _say(left)  # what they held was routed again as each left: a warning, as for any loss of images
    elif len(left) == 1:
        # a worker leaving as asked (a drain, a stop, a scale-down) with nothing on it is no loss to warn of
        log.info("worker %s left", left[0].name)
    else:
        log.info("%d workers left together: %s", len(left), first_named([loss.name for loss in left]))


def _say(losses: list[_Loss]) -> None:
    if not losses:
        return
    # each once: an image routed again to a gone worker was held by each worker it met
    held = list({job.job_id: job for loss in losses for job in loss.held}.values())
    images = counted(len(held), "image")
    named = f" ({requests_named(job.request.spec.request_id for job in held)})" if held else ""
    if len(losses) == 1:
        (loss,) = losses
        log.warning("worker %s lost (%s) holding %s%s", loss.name, loss.cause, images, named)
        return
    causes = Counter(loss.cause for loss in losses)
    why = ", ".join(f"{count} {cause}" for cause, count in causes.items()) if len(causes) > 1 else next(iter(causes))
    log.log(
        logging.ERROR if _SILENT in causes else logging.WARNING,
        "%d workers lost together (%s) holding %s%s: %s",
        len(losses),
        why,
        images,
        named,
        first_named([loss.name for loss in losses]),
    )
