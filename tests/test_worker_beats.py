"""A worker keeps beating through the parts of a run that show no denoising step (here the VAE decode), for as long
as its stall timeout, and falls silent after it, so a run stuck for good is still caught by the engine's watch.

The worker runs in this process (a real tiny pipeline, a real DEALER) so that the test can hold its VAE decode.
"""

import contextlib
import threading

import pytest
from fake_engine import FakeEngine

from protocols.worker_messages import (
    PROTOCOL_VERSION,
    BatchDone,
    Generate,
    GenerateItem,
    Heartbeat,
    Hello,
    ItemDone,
    Welcome,
)
from workers.diffusion_backend import load_tiny
from workers.runtime import WorkerRuntime

BEAT_S = 0.2


@pytest.fixture(scope="module")
def backend():
    return load_tiny()


class HeldDecode:
    """Holds the pipeline's VAE decode (after the last step) until released: a decode that takes long."""

    def __init__(self, backend):
        self._vae = backend._text2img.vae
        self._decode = self._vae.decode
        self.started = threading.Event()
        self.release = threading.Event()

    def __enter__(self):
        def held(*args, **kwargs):
            self.started.set()
            assert self.release.wait(60), "the test never released the decode"
            return self._decode(*args, **kwargs)

        self._vae.decode = held
        return self

    def __exit__(self, *exc):
        self.release.set()
        del self._vae.decode  # back to the class's method


@contextlib.contextmanager
def running_worker(backend, stall_timeout_s: float):
    """A worker welcomed by a fake engine and sent one batch; stopped on the way out."""
    engine = FakeEngine()
    runtime = WorkerRuntime(backend, engine.address, "beats", stall_timeout_s=stall_timeout_s)
    thread = threading.Thread(target=runtime.serve, daemon=True)
    thread.start()
    try:
        engine.receive(Hello)
        engine.send(Welcome(PROTOCOL_VERSION, heartbeat_interval_s=BEAT_S, engine_timeout_s=600, level=0))
        yield engine
    finally:
        runtime.stop()
        thread.join(30)
        engine.close()
    assert not thread.is_alive()


def send_batch(engine) -> None:
    engine.send(Generate(1, 0, 4, 64, 64, 5.0, "png", [GenerateItem("r1", "a lighthouse at dusk", 7)]))


def next_message(engine, timeout_s: float):
    if not engine.socket.poll(int(timeout_s * 1000)):
        return None
    _, *frames = engine.socket.recv_multipart()
    return engine.codec.decode(frames)


def test_a_long_decode_is_covered_by_heartbeats(backend):
    # left in reverse: the decode is released before the worker is stopped
    with running_worker(backend, stall_timeout_s=60) as engine, HeldDecode(backend) as decode:
        send_batch(engine)
        assert decode.started.wait(60)
        beats = [next_message(engine, 10 * BEAT_S) for _ in range(6)][1:]  # the first may predate the batch
        # the run is still held in the decode: every message is a beat naming the batch it runs
        assert all(isinstance(b, Heartbeat) and b.running_batch == 1 for b in beats), beats
        decode.release.set()
        done = engine.receive(BatchDone)
        assert [type(o) for o in done.outcomes] == [ItemDone]


def test_a_run_that_stalls_past_its_stall_timeout_goes_silent(backend):
    with running_worker(backend, stall_timeout_s=4 * BEAT_S) as engine, HeldDecode(backend) as decode:
        send_batch(engine)
        assert decode.started.wait(60)
        for _ in range(100):
            message = next_message(engine, 10 * BEAT_S)
            if message is None:
                break  # silent for ten beats while the run is still held
            assert isinstance(message, Heartbeat), message
        else:
            pytest.fail("the worker kept beating for a run stuck past its stall timeout")
        decode.release.set()
        assert engine.receive(BatchDone).batch_id == 1  # and it answers once the run ends
