"""Images answered as base64 (response_format b64_json, the default) are written a slice at a time. The answer was
built whole on the event loop: the images' base64, then the body holding it, then the transport's copy of what the
client had not yet taken, each larger than the images (for ten 2 MB PNGs, 27 MB each), in steps of 7 to 18 ms of
the loop's time that no other request and no worker's reply could use."""

import asyncio
import base64
import json
import sys
import threading
import tracemalloc

import numpy as np
import pytest
from PIL import Image
from test_chaos import FakeWorker
from waiting import eventually

from engine.config import LaunchConfig
from engine.http.readiness import readiness
from engine.server import Engine
from engine_process import free_port, in_process_config
from protocols.codec import Blob
from protocols.worker_messages import BatchDone, ItemDone
from workers.image_encoding import encode_image

SIDE = 512
IMAGES = 4


def noise_png(seed: int) -> bytes:
    """As large as a PNG of its size comes (noise does not compress): 790 KB."""
    pixels = np.random.default_rng(seed).integers(0, 255, (SIDE, SIDE, 3), np.uint8)
    return encode_image(Image.fromarray(pixels), "png")


def answer_every_batch(worker: FakeWorker, pictures: list[bytes], stop: threading.Event) -> None:
    """Each image its own picture, by its seed: the request's seeds are 0, 1, ..."""
    worker.handshake(timeout_s=60)
    while not stop.is_set():
        batch = worker.next_batch(timeout_s=0.5)
        if batch is not None:
            done = [ItemDone(item.request_id, Blob(pictures[item.seed]), 0, [], None, 1.0, 50) for item in batch.items]
            worker.send(BatchDone(batch.batch_id, done))


# fetched by a process of its own, so that the test's memory holds the engine's alone
FETCH = """
import sys, urllib.request
body = b'{"prompt": "a lighthouse", "size": "SIDExSIDE", "n": IMAGES, "seed": 0}'
request = urllib.request.Request(sys.argv[1], body, {"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=120) as reply, open(sys.argv[2], "wb") as out:
    out.write(reply.read())
""".replace("SIDE", str(SIDE)).replace("IMAGES", str(IMAGES))


@pytest.mark.timeout(180)
async def test_a_base64_answer_is_never_held_whole(tmp_path):
    pictures = [noise_png(seed) for seed in range(IMAGES)]
    port = free_port()
    engine = Engine(in_process_config(tmp_path, port=port, launch=LaunchConfig(count=0, backend="sim")))
    running = asyncio.create_task(engine.run())
    worker = FakeWorker(f"ipc://{tmp_path}/workers")
    stop = threading.Event()
    answering = threading.Thread(target=answer_every_batch, args=(worker, pictures, stop), daemon=True)
    answering.start()
    saved = tmp_path / "answer.json"
    try:
        assert await eventually(lambda: readiness(engine)["ready"], timeout_s=60)
        url = f"http://127.0.0.1:{port}/v1/images/generations"
        tracemalloc.start()
        try:
            fetch = await asyncio.create_subprocess_exec(sys.executable, "-c", FETCH, url, str(saved))
            assert await asyncio.wait_for(fetch.wait(), 120) == 0
            held, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        stop.set()
        answering.join(30)
        worker.close()
        engine.request_stop()
        await asyncio.wait_for(running, 30)
    data = json.loads(saved.read_bytes())["data"]
    assert [base64.b64decode(entry["b64_json"]) for entry in data] == pictures
    # the engine holds the images it was sent until it has answered them (and a frame's copy as it reads one); a
    # body built whole held their base64 twice over besides, and the transport's copy of what was not yet sent
    assert peak - held < 2 * sum(map(len, pictures)), (peak, held)
