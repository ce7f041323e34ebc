"""A model whose scheduler makes N + 1 timesteps for some N (diffusers' "trailing" spacing: 61, 103, 121, 122 of
1..200): before, a request for 61 steps ran 62 UNet evaluations (37 resumed at K = 25, not 36) and cached its latents
as 61 steps'. Now the worker says which counts it cannot run exactly, admission refuses them naming the field, and a
worker sent one anyway refuses the batch."""

import json
import threading
import urllib.error
import urllib.request

import pytest
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
from fake_engine import FakeEngine
from pictures import image_as_asked
from test_diffusion_backend import RecordingControl, UnetCalls, batch, tiny_sizes
from test_worker_latents import engine_with_a_raw_worker
from waiting import wait_for

from engine.client import ArgusClient
from engine_process import start_engine, start_worker
from protocols.client_messages import Error, Images
from protocols.worker_messages import (
    PROTOCOL_VERSION,
    BatchDone,
    Generate,
    GenerateItem,
    Hello,
    ItemDone,
    ItemFailed,
    Welcome,
)
from workers.diffusion_backend import DiffusionBackend
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


@pytest.mark.timeout(180)
def test_a_worker_says_which_counts_it_refuses_and_fails_a_batch_of_one(trailing, tmp_path):
    trailing.save_pretrained(tmp_path)
    engine = FakeEngine()
    process = start_worker(engine.address, "sdxl", "--model", str(tmp_path), "--worker-id", "w0", "--threads", "1")
    try:
        hello = engine.receive(Hello)
        assert hello.refused_steps == UNEVEN
        engine.send(Welcome(PROTOCOL_VERSION, heartbeat_interval_s=0.5, engine_timeout_s=600, level=0))
        engine.send(Generate(1, 0, 61, 512, 512, 5.0, "png", [GenerateItem("r1", "a lighthouse", 7)]))
        (failed,) = engine.receive(BatchDone).outcomes
        assert isinstance(failed, ItemFailed) and "steps 61:" in failed.message, failed
    finally:
        process.kill()
        process.wait()
        engine.close()


@pytest.mark.timeout(180)
def test_a_batch_sent_before_any_worker_said_so_is_refused_in_one_engine_line_naming_worker_and_request(
    trailing, tmp_path
):
    """Admitted while no worker had said which counts it refuses, the request reaches one that does: it refused the
    batch with a traceback, in the engine's log for a worker the engine started, naming no request. Now one line of
    the engine's says which worker, which request (by the X-Request-ID its client sent) and why, and the client gets
    its one reply under that id."""
    folder = tmp_path / "model"
    trailing.save_pretrained(folder)
    engine = start_engine(tmp_path, "--model", str(folder), backend="sdxl", workers=0)
    replies: list = []

    def ask() -> None:
        body = json.dumps({"prompt": "a lighthouse", "size": "512x512", "num_inference_steps": 61}).encode()
        headers = {"Content-Type": "application/json", "X-Request-ID": "order-61"}
        request = urllib.request.Request(engine.http + "/v1/images/generations", body, headers)
        try:
            urllib.request.urlopen(request, timeout=120)
        except urllib.error.HTTPError as error:
            replies.append((error.code, error.headers["X-Request-ID"], json.loads(error.read())["error"]))

    asker = threading.Thread(target=ask)
    asker.start()
    worker_log = tmp_path / "worker.log"
    try:
        assert wait_for(lambda: engine.metric("argus_queued_images") == 1)
        with open(worker_log, "wb") as log:
            worker = start_worker(engine.worker_address, "sdxl", "--model", str(folder), "--worker-id", "w", stderr=log)
        try:
            asker.join(120)
        finally:
            worker.kill()
            worker.wait()
    finally:
        assert engine.stop() == 0
    ((status, request_id, error),) = replies
    assert (status, request_id, error["code"]) == (500, "order-61", "worker_error")
    assert error["message"].startswith("steps 61: ") and "ask for 60 or 62" in error["message"]
    said = [line for line in engine.log_path.read_text().splitlines() if "refused batch" in line]
    assert len(said) == 1 and "WARNING" in said[0], said
    assert "worker w/" in said[0] and "request 'order-61'" in said[0] and "steps 61: " in said[0], said
    assert "Traceback" not in engine.log_path.read_text() + worker_log.read_text()


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
