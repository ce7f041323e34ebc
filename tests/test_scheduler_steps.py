"""A model whose scheduler makes N + 1 timesteps for some N (diffusers' "trailing" spacing: 61, 103, 121, 122 of
1..200): before, a request for 61 steps ran 62 UNet evaluations (37 resumed at K = 25, not 36) and cached its latents
as 61 steps'. Now the worker says which counts it cannot run exactly, admission refuses them naming the field (and the
engine, in the same words, one admitted before any worker had said so), and a worker sent one anyway refuses the
batch."""

import json
import threading
import urllib.error
import urllib.request

import msgspec
import pytest
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
from fake_engine import FakeEngine
from pictures import image_as_asked
from test_chaos import FakeWorker
from test_diffusion_backend import RecordingControl, UnetCalls, batch, tiny_sizes
from test_worker_latents import engine_with_a_raw_worker
from waiting import wait_for

from engine.client import ArgusClient
from engine_process import start_engine, start_worker
from protocols.client_messages import Error, Images
from protocols.limits import MAX_STEPS
from protocols.worker_messages import (
    PROTOCOL_VERSION,
    REFUSED,
    BatchDone,
    Generate,
    GenerateItem,
    Hello,
    ItemDone,
    ItemFailed,
    Welcome,
)
from workers import diffusion_backend
from workers.diffusion_backend import DiffusionBackend
from workers.limits import INPUT_REFUSALS
from workers.tiny_pipeline import build_tiny_sdxl

UNEVEN = [61, 103, 121, 122]  # of 1..MAX_STEPS, for SD-XL's scheduler config with trailing spacing


@pytest.fixture(scope="module")
def trailing():
    pipe = build_tiny_sdxl(seed=0)
    scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    return StableDiffusionXLPipeline(**{**pipe.components, "scheduler": scheduler})


def test_the_backend_refuses_the_counts_it_cannot_run_and_runs_the_others_exactly(trailing):
    backend = DiffusionBackend(trailing, "tiny", "cpu", "tiny:test", levels=(5, 10, 15, 20, 25), **tiny_sizes())
    assert list(backend.describe().refused_steps) == UNEVEN
    with pytest.raises(ValueError, match="steps 61: .* ask for 60 or 62"):
        backend.run(batch(steps=61), RecordingControl())
    calls = UnetCalls(trailing.unet)
    (full,) = backend.run(batch(steps=62), RecordingControl())
    assert calls.count == full.steps_run == 62
    calls.count = 0
    item = GenerateItem("r2", "a blue dog in the snow", 11, full.by_level()[25])
    (resumed,) = backend.run(batch(level=25, steps=62, items=(item,)), RecordingControl())
    assert calls.count == resumed.steps_run == 62 - 25


class RunsTheMiddleCounts:
    """Makes N timesteps for N from 2 to MAX_STEPS - 1 only: two for fewer, and refuses more (as LCM refuses a count
    above its original_inference_steps)."""

    def set_timesteps(self, steps: int) -> None:
        if steps >= MAX_STEPS:
            raise ValueError(f"{steps} steps: at most {MAX_STEPS - 1}")
        self.timesteps = list(range(max(steps, 2)))


def test_the_counts_a_client_may_ask_for_are_checked_from_1_to_max_steps_both_included():
    """SD-XL's uneven counts lie inside the range: a check that left out 1 or MAX_STEPS told the engine such a count
    runs exactly when it does not; one that went a count past either end sent a refused_steps the engine refuses the
    worker's hello for."""
    assert diffusion_backend._uneven_steps(RunsTheMiddleCounts()) == (1, MAX_STEPS)


@pytest.mark.timeout(180)
def test_a_worker_says_which_counts_it_refuses_and_refuses_a_batch_of_one(trailing, tmp_path):
    """Refused as the batch's fault (REFUSED, which the engine logs in one line), with no traceback at the worker."""
    folder, worker_log = tmp_path / "model", tmp_path / "worker.log"
    trailing.save_pretrained(folder)
    engine = FakeEngine()
    with open(worker_log, "wb") as log:
        process = start_worker(
            engine.address, "sdxl", "--model", str(folder), "--worker-id", "w0", "--threads", "1", stderr=log
        )
    try:
        hello = engine.receive(Hello)
        assert hello.refused_steps == UNEVEN
        engine.send(Welcome(PROTOCOL_VERSION, heartbeat_interval_s=0.5, engine_timeout_s=600, level=0))
        engine.send(Generate(1, 0, 61, 512, 512, 5.0, "png", [GenerateItem("r1", "a lighthouse", 7)]))
        (failed,) = engine.receive(BatchDone).outcomes
        assert isinstance(failed, ItemFailed) and failed.code == REFUSED and "steps 61:" in failed.message, failed
    finally:
        process.kill()
        process.wait()
        engine.close()
    assert "Traceback" not in worker_log.read_text()


def post(engine, request_id: str, steps: int = 50, size: str = "64x64") -> tuple[int, dict]:
    """A request for `steps` steps at `size` over HTTP: its status and its error (None when it made images)."""
    body = json.dumps({"prompt": "a lighthouse", "size": size, "num_inference_steps": steps}).encode()
    headers = {"Content-Type": "application/json", "X-Request-ID": request_id}
    request = urllib.request.Request(engine.http + "/v1/images/generations", body, headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as answered:
            return answered.status, None
    except urllib.error.HTTPError as error:
        assert error.headers["X-Request-ID"] == request_id
        return error.code, json.loads(error.read())["error"]


@pytest.mark.timeout(120)
def test_a_count_or_size_admitted_before_any_worker_said_so_is_refused_as_admission_refuses_it(tmp_path):
    """Admitted while no worker had said which counts it refuses, a request for one was sent to the first worker that
    did, which refused the batch: a 500 worker_error for the client's own bad input. Now the engine refuses it once a
    worker has said so, in the words admission uses (a 400 invalid_steps naming num_inference_steps over HTTP, the
    same Error over ZeroMQ), and sends the worker nothing of it; a request for a count it runs, queued beside them,
    is served. So is a size the worker does not take (admitted within the configured backend's sizes), and /metrics
    counts both as refused, not as the engine's errors."""
    engine = start_engine(tmp_path, workers=0, wait=False)
    worker = FakeWorker(engine.worker_address)
    worker.hello = msgspec.structs.replace(
        worker.hello, backend="tiny", model="tiny:0123456789abcdef", device="cpu", simulated=False,
        min_size=64, max_size=128, refused_steps=UNEVEN,
    )  # fmt: skip
    late: dict[str, object] = {}
    try:
        engine.wait_ready(workers=0)
        with ArgusClient(engine.client_address, timeout_s=60) as client:
            askers = [
                threading.Thread(target=lambda: late.update(http=post(engine, "order-61", steps=61))),
                threading.Thread(target=lambda: late.update(size=post(engine, "order-256", size="256x256"))),
                threading.Thread(target=lambda: late.update(zmq=client.generate("a lighthouse", steps=121))),
            ]
            with ArgusClient(engine.client_address, timeout_s=60) as other:
                askers.append(threading.Thread(target=lambda: late.update(ok=other.generate("a lighthouse", steps=62))))
                for asker in askers:
                    asker.start()
                assert wait_for(lambda: engine.metric("argus_queued_images") == 4), engine.log()
                worker.handshake(timeout_s=30)
                sent = worker.next_batch(timeout_s=30)
                assert sent is not None and sent.steps == 62, sent
                done = [ItemDone(item.request_id, image_as_asked(sent), 0, [], None, 1.0, 62) for item in sent.items]
                worker.send(BatchDone(sent.batch_id, done))
                for asker in askers:
                    asker.join(60)
                assert worker.next_batch(timeout_s=1) is None  # nothing of the refused counts reached the worker
            # the same requests now that a worker has said hello: refused at admission
            now = {
                "http": post(engine, "order-61", steps=61),
                "size": post(engine, "order-256", size="256x256"),
                "zmq": client.generate("a lighthouse", steps=121),
            }
            refusals = {
                code: engine.metric("argus_requests_total", outcome="rejected", code=code) for code in INPUT_REFUSALS
            }
            errors = sum(engine.metric("argus_requests_total", outcome="error", code=code) for code in INPUT_REFUSALS)
    finally:
        worker.close()
        assert engine.stop() == 0
    assert isinstance(late["ok"], Images), late["ok"]
    status, error = late["http"]
    assert (status, error["code"], error["param"]) == (400, "invalid_steps", "num_inference_steps"), late["http"]
    assert error["message"].startswith("steps 61: ") and "ask for 60 or 62" in error["message"]
    assert late["http"] == now["http"]
    refused = late["zmq"]
    assert isinstance(refused, Error) and refused.code == "invalid_steps" and "ask for 120 or 123" in refused.message
    assert (refused.code, refused.message) == (now["zmq"].code, now["zmq"].message)
    status, error = late["size"]
    assert (status, error["code"], error["param"]) == (400, "invalid_size", "size"), late["size"]
    assert error["message"] == "width 256 must be a multiple of 8 from 64 to 128"
    assert late["size"] == now["size"]
    assert refusals == {"invalid_steps": 4, "invalid_size": 2} and errors == 0, (refusals, errors)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with engine_with_a_raw_worker(tmp_path_factory.mktemp("steps"), refused_steps=UNEVEN) as joined:
        yield joined


def test_admission_refuses_them_over_http_naming_the_field(engine):
    engine, worker = engine
    body = json.dumps({"prompt": "a lighthouse", "size": "64x64", "num_inference_steps": 103}).encode()
    request = urllib.request.Request(engine.http + "/v1/images/generations", body, {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    error = json.loads(refused.value.read())["error"]
    assert refused.value.code == 400 and error["param"] == "num_inference_steps", error
    assert error["message"].startswith("steps 103:") and "ask for 102 or 104" in error["message"]
    assert worker.next_batch(timeout_s=1) is None  # nothing reached the worker


def test_admission_refuses_them_over_zeromq_and_takes_the_counts_beside_them(engine):
    engine, worker = engine
    with ArgusClient(engine.client_address, timeout_s=60) as client:
        refused = client.generate("a lighthouse", width=64, height=64, steps=121)
        assert isinstance(refused, Error) and refused.code == "invalid_steps", refused
        assert "ask for 120 or 123" in refused.message  # 122 is refused too
        assert worker.next_batch(timeout_s=1) is None
        # the next count is admitted and sent as asked
        replies = []
        asker = threading.Thread(target=lambda: replies.append(client.generate("a lighthouse", steps=62)))
        asker.start()
        sent = worker.next_batch(timeout_s=30)
        assert sent is not None and sent.steps == 62
        done = [ItemDone(item.request_id, image_as_asked(sent), 0, [], None, 1.0, 62) for item in sent.items]
        worker.send(BatchDone(sent.batch_id, done))
        asker.join(60)
    assert isinstance(replies[0], Images), replies
