"""Admitted requests and the jobs (one per image) they are made of.

A request ends exactly once: `finish` resolves its future with Images, Error or
Cancelled, and every later outcome for it (a late worker reply, a second
failure, a cancel racing a result) is ignored.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from protocols.client_messages import Cancelled, Error, Generate, ImageResult, Images

if TYPE_CHECKING:
    from engine.fleet.registry import WorkerHandle
    from protocols.worker_messages import ItemDone

Reply = Images | Error | Cancelled

_job_ids = itertools.count()


class Fallback(NamedTuple):
    """A level a queued job may move up to, and its neighbour's latent there."""

    level: int  # of the default steps, as the plan knows it
    start: int  # the step of the job's run it resumes at (controller/level_shares.py)
    latent: Any
    seed: int | None = None  # of the run the latent is of (None: not known)


class BatchKey(NamedTuple):
    """Jobs batch together only when all of these agree. A tuple: a job's key is made several times on its way to a
    worker (routed, batched, its image checked), and a frozen dataclass cost three times as much to make."""

    start: int  # the step their runs resume at
    steps: int
    width: int
    height: int
    guidance_scale: float
    output_format: str
    output_compression: int | None
    negative: bool  # has a negative prompt (GenerateItem says why a batch cannot mix)


@dataclass(eq=False, slots=True)
class Job:
    job_id: str
    request: AdmittedRequest
    index: int
    seed: int
    level: int = 0  # K', a level of the default steps (the plan's): the one it is routed and judged by
    # the step its run resumes at: its level's share of its own steps (controller/level_shares.py), the level itself
    # at the default steps; what it is batched, timed and sent at
    start: int = 0
    latent: np.ndarray | None = None
    latent_seed: int | None = None  # of the run `latent` is of (None: not known)
    similarity: float | None = None
    # levels above `level`, ascending, to move up to: those its neighbour holds in memory (argus only; empty for the
    # other policies)
    fallbacks: tuple[Fallback, ...] = ()
    k_star: int = 0  # its predicted best level
    escalated: bool = False  # moved up a level to make its deadline (counted once, however many times it moves)
    attempts: int = 0  # times handed to a worker
    given_back: int = 0  # of those, by workers that left as asked or rejoined (dispatcher.py, worker_lost): not tries
    sent_at: float = 0.0
    # its place in the order the workers take jobs (timing.py), once first queued on a worker: kept when it
    # is routed again (its worker lost or taken out of rotation, or left it out of an answer)
    rank: float | None = None
    # its client's fair point when it was ranked (fair_share.py FairClock), None if no other client shared the fleet
    fair_point: float | None = None
    waiting_since: float = 0.0  # when it last found no worker to take it (the no_worker timeout runs from here)
    # where the job is: queued on a worker (batch_id None), or sent in a batch
    worker: WorkerHandle | None = None
    batch_id: int | None = None

    @property
    def tries(self) -> int:
        """Sends that did not answer it and count against max_attempts (those given back do not)."""
        return self.attempts - self.given_back

    @property
    def prompt(self) -> str:
        return self.request.spec.prompt

    @property
    def negative_prompt(self) -> str | None:
        return self.request.spec.negative_prompt or None  # "" asks for none

    @property
    def key(self) -> BatchKey:
        spec = self.request.spec
        return BatchKey(
            self.start,
            self.request.steps,
            self.request.width,
            self.request.height,
            spec.guidance_scale,
            spec.output_format,
            # a PNG is lossless whatever it says: PNGs that differ only in it still batch together
            None if spec.output_format == "png" else spec.output_compression,
            bool(spec.negative_prompt),
        )

    @property
    def run_seed(self) -> int | None:
        """The seed of the run its image makes, which the latents it passes are of: resumed, its latent's run's (None:
        not known), which its own seed changes nothing in (docs/cache.md, The seed); else its own."""
        return self.latent_seed if self.start else self.seed

    @property
    def queued_s(self) -> float:
        """From its request's admission until the run that made its image was sent."""
        return self.sent_at - self.request.admitted_at

    def result(self, done: ItemDone, worker: WorkerHandle, estimated_quality: float | None) -> ImageResult:
        """What its client is told of the image `worker` made for it."""
        return ImageResult(
            image=done.image,
            seed=self.seed,
            level=self.start,  # the step it resumed at: steps_run is the request's steps less it
            similarity=self.similarity,
            queue_ms=self.queued_s * 1000.0,
            run_ms=done.run_ms,
            steps_run=done.steps_run,
            worker=worker.name,
            quality=done.quality,
            simulated=worker.hello.simulated,
            estimated_quality=estimated_quality,
        )


def image_of(seeds: list[int], seed: int | None) -> int:
    """Of a request's images, of `seeds`, the one a latent of a run of `seed` starts: that seed's, which it was near
    made (with its own prompt), else the first. Started by the first, it was a second picture of that seed's beside
    the image run in full from it."""
    return seeds.index(seed) if seed in seeds else 0


@dataclass(eq=False)
class AdmittedRequest:
    spec: Generate
    width: int
    height: int
    steps: int
    seeds: list[int]
    admitted_at: float
    deadline: float | None
    future: asyncio.Future[Reply]
    jobs: list[Job] = field(default_factory=list)
    results: dict[int, ImageResult] = field(default_factory=dict)
    vector: np.ndarray | None = None  # the prompt's embedding, once the cache thread made it
    neighbour: str | None = None  # the cached prompt its first image may start from (its latents), once looked up
    resumer: int = 0  # the image its level was chosen for (image_of); the others run in full (Dispatcher.route)
    latents_cached: bool = False
    client: str = ""  # who sent it, as its front door names clients (engine/dispatch/client_shares.py)
    # called as it is answered, not as a done-callback of its future a loop turn later: the dispatcher drops its jobs
    # then, and an image of it given back or answered meanwhile was routed again, or counted, for no reply
    on_answered: Callable[[AdmittedRequest], None] | None = None

    def __post_init__(self) -> None:
        self.jobs = [
            Job(job_id=f"j{next(_job_ids)}", request=self, index=i, seed=seed) for i, seed in enumerate(self.seeds)
        ]

    @property
    def done(self) -> bool:
        return self.future.done()

    def image_done(self, job: Job, result: ImageResult) -> None:
        """Records one image, and answers the request with its last."""
        if self.done:
            return
        self.results[job.index] = result
        if len(self.results) == len(self.jobs):
            self.finish(Images(self.spec.request_id, [self.results[i] for i in range(len(self.jobs))]))

    def finish(self, reply: Reply) -> bool:
        if self.done:
            return False
        self.future.set_result(reply)
        if self.on_answered is not None:
            self.on_answered(self)
        return True

    def fail(self, code: str, message: str) -> bool:
        return self.finish(Error(self.spec.request_id, code, message))

    def release_jobs(self) -> None:
        """Once the request is answered and retired: a request and its jobs point at each other, so until then
        they (with the latents they hold and the reply's images) are freed only by a full pass of the garbage
        collector, which a request that waited seconds reaches late; released, the last holder to let go frees
        them. A job still in a batch keeps its request until the worker answers it."""
        self.jobs = []

    def seconds_left(self, now: float | None = None) -> float | None:
        if self.deadline is None:
            return None
        return self.deadline - (time.monotonic() if now is None else now)
