"""Chaos: workers killed (SIGKILL) and hung (SIGSTOP) under open-loop load; every request answered exactly once.

The short run is `argus bench chaos` (loadgen/bench/chaos_bench.py) at a smaller
size: a real engine with SIMULATED workers, a raw DEALER that sees every reply on
the wire (duplicates included) and HTTP beside it. No assertion on any timing.
"""

import asyncio
import os
import threading
import time
from dataclasses import asdict

import msgspec
import pytest
import zmq
from pictures import image_as_asked
from test_hello_bounds import SIM_MODEL

from engine.client import ArgusClient
from engine_process import start_engine
from loadgen.bench.chaos_bench import ChaosConfig, _engine_figures, failures, measure, report
from loadgen.bench.chaos_ledger import Ledger
from loadgen.bench.process_watch import parse_metrics
from protocols.client_messages import Images
from protocols.worker_messages import (
    PROTOCOL_VERSION,
    BatchDone,
    Generate,
    Heartbeat,
    Hello,
    ItemDone,
    Welcome,
    worker_side_codec,
)

# errors the engine may answer when the workers holding an image keep dying: explicit, never silent
FAULT_ERRORS = {"worker_lost", "no_worker"}


@pytest.mark.timeout(240)
def test_kills_and_hangs_lose_nothing_and_duplicate_nothing(tmp_path):
    # 6 slots of 2 s: 4 SIGKILLs and 2 SIGSTOPs, each of a worker that holds work when one does; 2 may find no live
    # worker and be skipped (as 4 of 8 could when this ran 24 s)
    config = ChaosConfig(duration_s=12.0, kill_every_s=2.0, min_kills=3, hang_share=0.35, drain_s=60.0, seed=7)
    result = asyncio.run(asyncio.wait_for(measure(config, tmp_path), 200))

    assert result["kills"] + result["hangs"] >= 4 and result["kills"] >= 1 and result["hangs"] >= 1, result["faults"]
    assert result["lost"] == 0, result["by_door"]
    assert result["duplicates"] == 0, result["duplicate_ids"]
    assert result["replies"] == result["sent"] > 0
    # every reply is Images or an explicit Error: nothing else, nothing undecodable, nothing for ids never sent
    assert set(result["outcomes"]) <= {"images", "error"}, result["outcomes"]
    assert set(result["errors"]) <= FAULT_ERRORS, result["errors"]
    assert result["outcomes"].get("images", 0) > 0
    assert result["unexpected_replies"] == 0 and result["undecodable_replies"] == 0
    assert result["http_transport_errors"] == {}
    assert set(result["by_door"]) == {"zmq", "http"}
    # each hang was noticed by heartbeat and its process killed by the engine (not by the test)
    assert result["hangs_detected"] == result["hangs"]
    losses = result["engine_metrics"]["worker_losses"]
    # a kill is seen by the launcher (exited) or, when a batch goes out first, by the refused send (unreachable)
    killed_seen = losses.get("cause=exited", 0) + losses.get("cause=unreachable", 0)
    assert killed_seen >= result["kills"] and losses.get("cause=heartbeat", 0) >= result["hangs"], losses
    assert result["engine_metrics"]["worker_restarts"] >= result["kills"] + result["hangs"]
    # the engine's own count of terminal replies agrees with what the clients saw
    assert result["metrics_vs_clients"]["match"], result["metrics_vs_clients"]
    assert result["engine_exit_code"] == 0, result.get("engine_log_tail")
    assert not failures(result, config)


def chaos_result(config: ChaosConfig, **changes) -> dict:
    """What measure() returns, for a run of 10 images and 5 kills that passed, with `changes`."""
    result = {
        **dict.fromkeys(("sent", "replies"), 10),
        **dict.fromkeys(("lost", "duplicates", "busy", "hangs", "hangs_detected"), 0),
        "kills": 5,
        "hang_detect_s": {"median": None, "max": None},
        "outcomes": {"images": 10},
        "errors": {},
        **dict.fromkeys(("busy_p99_ms", "peak_rss_mb"), None),
        **dict.fromkeys(("p50_ms", "p99_ms", "max_ms"), 12.5),
        "workers_peak_rss_mb": 80.0,
        "ready_workers": {"mean": 2.0, "min": 1},
        "engine_metrics": dict.fromkeys(
            ("worker_losses", "worker_restarts", "redispatched_images", "requests", "queued_images_at_end"), 0
        ),
        "metrics_vs_clients": {"match": True},
        "config": {**asdict(config), "rate_rps": config.rate_rps, "capacity_rps": config.capacity_rps},
        "engine_exit_code": 0,
    }
    return result | changes


def test_the_report_prints_counts_as_counts_and_no_figure_as_n_a(capsys):
    """It printed 'worker restarts 5.0' (the exposition's float) and 'busy p99 ms None' for a run with no Busy."""
    config = ChaosConfig(duration_s=24.0, kill_every_s=3.0)
    metrics = parse_metrics(
        'argus_worker_restarts_total 5\nargus_worker_losses_total{cause="exited"} 4\n'
        'argus_worker_losses_total{cause="heartbeat"} 1\nargus_redispatched_images_total 7\n'
    )
    result = chaos_result(config, engine_metrics=_engine_figures(metrics))
    assert result["engine_metrics"]["worker_restarts"] == 5 and isinstance(
        result["engine_metrics"]["worker_restarts"], int
    )
    report(result)
    printed = {line.split("  ")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert printed["worker restarts"].split()[2] == "5"
    assert printed["redispatched images"].split()[2] == "7"
    assert printed["busy p99 ms"].split()[3] == "n/a"
    assert printed["hang detect s (median/max)"].split()[4] == "n/a/n/a"
    assert "None" not in "\n".join(printed.values())


@pytest.mark.parametrize(
    ("change", "verdict"),
    [
        ({}, True),
        ({"lost": 1}, False),
        ({"duplicates": 1}, False),
        ({"kills": 9}, False),
        ({"hangs_detected": 4}, False),
        ({"metrics_vs_clients": {"match": False}}, False),
        ({"engine_exit_code": 1}, False),
    ],
)
def test_the_bench_passes_only_with_nothing_lost_and_every_hang_found(change, verdict):
    result = {"lost": 0, "duplicates": 0, "kills": 12, "hangs": 5, "hangs_detected": 5} | change
    result = {"metrics_vs_clients": {"match": True}, "engine_exit_code": 0} | result
    assert (not failures(result, ChaosConfig(min_kills=10))) is verdict


def test_ledger_counts_duplicates_lost_and_strangers():
    """What the chaos run counts: a second reply for an id, an id never answered, a reply nobody asked for."""
    ledger = Ledger()
    for request_id in ("a", "b", "c"):
        ledger.record_sent(request_id, "zmq")
    ledger.record_reply("a", "images")
    ledger.record_reply("a", "error", "worker_lost")
    ledger.record_reply("b", "busy")
    ledger.record_reply("zzz", "images")
    summary = ledger.summary()
    assert (summary["sent"], summary["replies"], summary["lost"], summary["duplicates"]) == (3, 3, 1, 1)
    assert summary["outcomes"] == {"images": 1, "busy": 1} and summary["unexpected_replies"] == 1
    assert summary["duplicate_ids"] == ["a"]


# -- engine bug: a worker's second hello strands the batches it held -----------------------------------
class FakeWorker:
    """The worker protocol by hand, so a rejoin can be placed exactly: Hello, Welcome, heartbeats, ItemDone."""

    def __init__(self, address: str, worker_id: str = "rejoiner"):
        self.codec = worker_side_codec()
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.IDENTITY, f"{worker_id}/00000001".encode())
        self.socket.connect(address)
        self.hello = Hello(
            protocol=PROTOCOL_VERSION,
            worker_id=worker_id,
            backend="sim",
            model=SIM_MODEL,
            device="sim",
            simulated=True,
            levels=[5, 10],
            max_batch=1,
            default_steps=50,
            min_size=64,
            max_size=2048,
            default_size=64,
            level=0,
            pid=os.getpid(),
        )

    def send(self, message: object) -> None:
        self.socket.send_multipart(self.codec.encode(message))

    def receive(self, timeout_s: float) -> object | None:
        if self.socket.poll(int(timeout_s * 1000)):
            return self.codec.decode(self.socket.recv_multipart())
        return None

    def handshake(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.send(self.hello)
            retry_at = time.monotonic() + 1.0
            while (left := retry_at - time.monotonic()) > 0:
                if isinstance(self.receive(left), Welcome):
                    return  # what came before it (heartbeats, a Generate) is ignored, as the runtime does
        raise TimeoutError("no Welcome from the engine")

    def next_batch(self, timeout_s: float) -> Generate | None:
        """Heartbeats while waiting (so the engine never finds it silent); the next Generate, if any."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.send(Heartbeat(0, -1))
            message = self.receive(0.3)
            if isinstance(message, Generate):
                return message
        return None

    def close(self) -> None:
        self.socket.close()
        self.context.term()


@pytest.mark.timeout(120)
def test_worker_rejoin_does_not_strand_its_batches(tmp_path):
    """A worker that says hello again in a new session has dropped what it held: the engine routes it again.

    workers/runtime.py `_rejoin` (the worker heard nothing from the engine for
    `engine_timeout_s`) clears its queue, drops the outcomes of the batch it was
    running and says hello again, counting on the engine to re-dispatch. Left in
    the worker's `inflight`, nothing would ever answer those batches (no sweep
    looks at sent batches). It happens when the worker's timer fires before the
    engine's (both use the same timeout; the engine checks once per heartbeat
    interval), e.g. a link stall of just over the timeout, or an engine paused
    that long.
    """
    engine = start_engine(tmp_path, "--heartbeat-timeout", "5", workers=0, backend="sim", wait=False)
    worker = FakeWorker(engine.worker_address)
    replies: list[object] = []
    try:
        worker.handshake(timeout_s=30)
        asker = ask_in_background(engine.client_address, replies, "stranded?", timeout_s=20)
        batch = worker.next_batch(timeout_s=20)
        assert batch is not None, "the engine sent the only worker nothing"
        # the rejoin, exactly as WorkerRuntime._rejoin does it: forget the batch, say hello again in a new session
        worker.hello = msgspec.structs.replace(worker.hello, session=worker.hello.session + 1)
        worker.handshake(timeout_s=10)
        # from here on a well-behaved worker: it answers whatever it is sent
        deadline = time.monotonic() + 25
        while asker.is_alive() and time.monotonic() < deadline:
            again = worker.next_batch(timeout_s=0.5)
            if again is not None:
                done = [ItemDone(item.request_id, image_as_asked(again), 0, [], None, 1.0, 50) for item in again.items]
                worker.send(BatchDone(again.batch_id, done))
        asker.join(timeout=30)
    finally:
        worker.close()
        assert engine.stop() == 0
    (reply,) = replies
    assert isinstance(reply, Images), f"the request was never answered after the worker rejoined: {reply!r}"


def ask_in_background(address: str, replies: list, prompt: str, timeout_s: float, size: int = 64) -> threading.Thread:
    """One request (size x size) from a thread of its own: its reply, or the TimeoutError, goes to `replies`."""

    def ask() -> None:
        with ArgusClient(address, timeout_s=timeout_s) as client:
            try:
                replies.append(client.generate(prompt, width=size, height=size))
            except TimeoutError as error:
                replies.append(error)

    asker = threading.Thread(target=ask)
    asker.start()
    return asker
