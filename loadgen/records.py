"""The per-request record: what one request asked for, when, and how it ended.

Every request the load generator sends gets exactly one record with exactly
one outcome, so the counts per outcome always add up to the requests sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypedDict

Outcome = Literal["ok", "late", "rejected", "error", "deadline_exceeded", "cancelled"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "late", "rejected", "error", "deadline_exceeded", "cancelled")
# what counts against the SLO; "cancelled" (the engine gave up on a request while stopping) does not
VIOLATIONS: tuple[Outcome, ...] = ("late", "rejected", "error", "deadline_exceeded")
# the code of a request that had no answer when the run's hard timeout came
CLIENT_TIMEOUT = "client_timeout"
# the code of a request still unanswered when the user stopped waiting (Ctrl-C twice)
INTERRUPTED = "interrupted"


class Record(TypedDict):
    id: int
    prompt_index: int
    scheduled_at: float  # seconds from the start of the run, as planned
    sent_at: float  # seconds from the start of the run, when it was actually sent
    latency_ms: float | None  # send to answer; None when no answer came
    outcome: Outcome
    code: str | None  # the engine's error code ("busy", "deadline_exceeded", ...) or a client-side one
    status: int | None  # HTTP status; None over ZeroMQ or when no answer came
    level: int | None  # the cache level K of the (first) image
    similarity: float | None
    quality: float | None  # the sim backend's modelled quality; None from a real backend
    estimated_quality: float | None  # the engine's estimate, whatever the backend
    queue_ms: float | None
    run_ms: float | None
    worker: str | None
    simulated: bool | None  # made by a simulated worker: quality modelled, run_ms a scaled profile
    n_images: int


@dataclass(frozen=True, slots=True)
class ImageMeta:
    level: int
    similarity: float | None
    quality: float | None
    queue_ms: float
    run_ms: float
    worker: str
    simulated: bool = False
    estimated_quality: float | None = None  # None from an engine before it said one


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back for one request, whichever front door it went through."""

    kind: Literal["images", "busy", "error", "cancelled"]
    code: str | None = None
    status: int | None = None
    images: list[ImageMeta] = field(default_factory=list)


def classify(answer: Answer | None, latency_ms: float | None, slo_ms: float | None) -> Outcome:
    if answer is None:
        return "error"
    if answer.kind == "images":
        late = slo_ms is not None and latency_ms is not None and latency_ms > slo_ms
        return "late" if late else "ok"
    if answer.kind == "busy":
        return "rejected"
    if answer.kind == "cancelled":
        return "cancelled"
    return "deadline_exceeded" if answer.code == "deadline_exceeded" else "error"


def make_record(
    request_id: int,
    prompt_index: int,
    scheduled_at: float,
    sent_at: float,
    latency_ms: float | None,
    answer: Answer | None,
    slo_ms: float | None,
) -> Record:
    """answer None: no answer came before the run's hard timeout."""
    first = answer.images[0] if answer is not None and answer.images else None
    return Record(
        id=request_id,
        prompt_index=prompt_index,
        scheduled_at=round(scheduled_at, 6),
        sent_at=round(sent_at, 6),
        latency_ms=None if latency_ms is None else round(latency_ms, 3),
        outcome=classify(answer, latency_ms, slo_ms),
        code=CLIENT_TIMEOUT if answer is None else answer.code,
        status=None if answer is None else answer.status,
        level=first.level if first else None,
        similarity=first.similarity if first else None,
        quality=first.quality if first else None,
        estimated_quality=first.estimated_quality if first else None,
        # to the microsecond, as the HTTP API rounds them: over ZeroMQ they came as the engine's floats
        # (1.9954630006395746), the same run's records differing by their door
        queue_ms=round(first.queue_ms, 3) if first else None,
        run_ms=round(first.run_ms, 3) if first else None,
        worker=first.worker if first else None,
        simulated=first.simulated if first else None,
        n_images=0 if answer is None else len(answer.images),
    )
