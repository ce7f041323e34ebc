"""The dispatcher alone, without sockets: a harness that records what it sends, on an injected clock, and the
latency profiles its tests route by."""

import asyncio

import msgspec
from fake_clock import Clock
from pictures import image_as_asked

from controller.profiles import LatencyProfile, QualityModel
from controller.quality_estimate import QualityEstimate
from controller.similarity import SimilarityTable
from engine.config import DispatchConfig
from engine.dispatch.dispatcher import Dispatcher
from engine.dispatch.jobs import AdmittedRequest, Fallback
from engine.fleet.registry import WorkerRegistry
from engine.metrics import EngineMetrics
from protocols.client_messages import Generate, Images
from protocols.worker_messages import BatchDone, Hello, ItemDone
from protocols.worker_messages import Generate as Batch


class Harness:
    def __init__(self, profile=None, escalate=False, on_image=None, slo_s=10.0, latent_levels=None, **config):
        self.clock = Clock(1000.0)
        self.metrics = EngineMetrics()
        self.registry = WorkerRegistry(self.metrics)
        self.sent: list[tuple[str, object]] = []
        self.gone: set[str] = set()  # workers whose sends are refused, as a closed connection's are
        self.dispatcher = Dispatcher(
            self.registry,
            self._send,
            self.metrics,
            DispatchConfig(**config),
            clock=self.clock,
            profile=profile,
            on_image=on_image,
            escalate=escalate,
            slo_s=slo_s,
            quality=QualityEstimate(QualityModel(SimilarityTable.bundled("hash"))),
            latent_levels=latent_levels,
        )

    def _send(self, worker, message) -> bool:
        if worker.name in self.gone:
            return False
        self.sent.append((worker.name, message))
        return True

    def add_worker(self, name: str, max_batch: int = 4, level: int = 0, refused_steps: list[int] | None = None):
        hello = Hello(1, name, "sim", "sim:0", "sim", True, [5, 10], max_batch, 50, 64, 256, 64, level, 1)
        if refused_steps:
            hello = msgspec.structs.replace(hello, refused_steps=refused_steps)
        worker = self.registry.add(name.encode(), hello, level)
        self.dispatcher.worker_ready(worker)
        return worker

    def request(
        self,
        n=1,
        slo_ms=None,
        prompt="p",
        level=0,
        fallbacks=(),
        k_star=0,
        steps=50,
        start=None,
        chosen=True,
        negative=None,
        client="",
        **spec_fields,
    ) -> AdmittedRequest:
        """An admitted request, routed at `level` unless not yet `chosen` (its level still being chosen)."""
        spec = Generate(
            request_id=f"r{len(self.sent)}-{prompt}",
            prompt=prompt,
            n=n,
            slo_ms=slo_ms,
            steps=steps,
            negative_prompt=negative,
            **spec_fields,
        )
        request = AdmittedRequest(
            spec=spec,
            width=64,
            height=64,
            steps=steps,
            seeds=list(range(n)),
            admitted_at=self.clock.now,
            deadline=self.clock.now + slo_ms / 1000 if slo_ms else None,
            future=asyncio.get_running_loop().create_future(),
            client=client,
        )
        self.dispatcher.admit(request)
        if chosen:
            # a job at a level resumes from a neighbour, which has a similarity (its image's quality is estimated by it)
            similarity = 0.99 if level or fallbacks else None
            self.dispatcher.route(request, level, None, similarity, fallbacks, k_star, start)
        return request

    def batches(self, worker_name=None) -> list[Batch]:
        return [m for w, m in self.sent if isinstance(m, Batch) and worker_name in (None, w)]

    def finish(self, worker, batch: Batch, run_ms: float = 1.0):
        image = image_as_asked(batch)
        done = [ItemDone(item.request_id, image, batch.level, [], None, run_ms, 50) for item in batch.items]
        self.dispatcher.batch_done(worker, BatchDone(batch.batch_id, done))


async def settle():
    await asyncio.sleep(0)  # let done-callbacks run


async def serve_in_turn(h: Harness, worker, requests: list) -> None:
    """Runs each request's one image on `worker` in turn, each the batch it was sent last and unanswered until it
    ends, in the time TWO_LEVELS gives its level; then checks that each was answered with its images."""
    for request in requests:
        batch = h.batches()[-1]
        assert batch.items[0].request_id == request.jobs[0].job_id
        assert not request.done
        h.clock.now += 1.0 if batch.level == 0 else 0.5
        h.finish(worker, batch)
        h.dispatcher.sweep()
    await settle()
    assert all(isinstance(r.future.result(), Images) for r in requests)


# one second for one image, a second more for each further image
PROFILE = LatencyProfile("test", 50, {0: (1.0, 2.0, 3.0, 4.0)}, "made up for the test")
# level 25 runs in half the time of level 0
TWO_LEVELS = LatencyProfile("test", 50, {0: (1.0, 2.0), 25: (0.5, 1.0)}, "made up for the test")
# level 10 takes 0.8 s, level 25 half of level 0's time
THREE_LEVELS = LatencyProfile("test", 50, {0: (1.0, 2.0), 10: (0.8, 1.6), 25: (0.5, 1.0)}, "made up for the test")
# every cache level, a tenth of a second apart
SIX_LEVELS = LatencyProfile(
    "test", 50, {k: (1.0 - k / 50, 2.0 - k / 25) for k in (0, 5, 10, 15, 20, 25)}, "made up for the test"
)
LADDER = (Fallback(10, 10, "latent-10"), Fallback(25, 25, "latent-25"))
