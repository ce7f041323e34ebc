"""What GET /metrics of a real engine tells an operator: Prometheus's names, types and base units."""

import importlib.metadata
import json
import math
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_for

from engine.client import ArgusClient
from engine_process import raw_client, start_engine
from protocols.client_messages import Error, Generate, Images, client_side_codec


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = start_engine(tmp_path_factory.mktemp("metrics"), "--time-scale", "0", backend="sim")
    with ArgusClient(engine.client_address, timeout_s=60) as client:
        assert isinstance(client.generate("a red fox in the snow", width=64, height=64), Images)
    yield engine
    assert engine.stop() == 0


def families(engine) -> dict:
    return {family.name: family for family in text_string_to_metric_families(engine.get("/metrics")[1].decode())}


def test_running_counts_are_counters_and_times_are_in_seconds(engine):
    # the cache's counts reach /metrics once the cache thread takes the miss in; they were gauges, without _total
    assert wait_for(lambda: engine.metric("argus_cache_misses_total") == 1)
    found = families(engine)
    for name in ("argus_cache_hits", "argus_cache_misses", "argus_cache_evictions"):
        assert found[name].type == "counter", name
    # the solve time was argus_plan_solve_ms, in ms
    assert found["argus_plan_solve_seconds"].type == "histogram"
    assert not [name for name in found if name.endswith("_ms")]


def test_the_version_serving_is_said_by_metrics_and_health(engine):
    """Scraping a fleet of engines mid-upgrade, or reading a health check, tells which code answered."""
    installed = importlib.metadata.version("argus-serve")
    assert engine.metric("argus_build_info", version=installed) == 1
    status, body = engine.get("/health")
    assert status == 200 and json.loads(body) == {"status": "alive", "version": installed}


def post(engine, body: bytes, content_type: str = "application/json") -> tuple[int, str]:
    request = urllib.request.Request(engine.http + "/v1/images/generations", body, {"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, ""
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())["error"]["code"]


def test_every_refusal_a_client_sees_is_counted_by_its_code(engine):
    """Only those the engine itself refused were counted: a body the front door refused left no trace."""

    def rejected(code: str) -> float:
        return engine.metric("argus_requests_total", outcome="rejected", code=code)

    before = {code: rejected(code) for code in ("invalid_request", "unsupported_media_type", "body_too_large")}
    answers = [
        post(engine, b'{"prompt": 5}'),
        post(engine, b"not json"),
        post(engine, b'{"prompt": "x"}', "text/plain"),
        post(engine, b'{"prompt": "' + b"x" * 2_000_000 + b'"}'),
    ]
    assert [status for status, _ in answers] == [400, 400, 415, 413]
    context = zmq.Context()
    sock = raw_client(context, engine.client_address)
    codec = client_side_codec()
    try:
        sock.send_multipart([b"garbage"])
        request = codec.encode(Generate("same", "a fox", width=64, height=64))
        sock.send_multipart(request)
        sock.send_multipart(request)  # the same id while the first is in flight
        replies = [codec.decode(sock.recv_multipart()) for _ in range(3) if sock.poll(30_000)]
    finally:
        sock.close()
        context.term()
    zmq_refusals = [r for r in replies if isinstance(r, Error)]
    assert {r.code for r in zmq_refusals} == {"invalid_request"}
    for _, code in answers:
        before[code] += 1
    before["invalid_request"] += len(zmq_refusals)
    assert {code: rejected(code) for code in before} == before


def test_the_plan_says_when_it_was_made_in_unix_time(engine):
    """created_at was the controller's monotonic clock: seconds since the host booted, not a time."""
    before = time.time()
    made = json.loads(engine.get("/plan")[1])["created_at"]
    assert before - 3600 < made <= time.time()


def test_latency_buckets_reach_down_to_a_millisecond(engine):
    """A sim engine at time scale 0 answers in milliseconds: a third of its requests fell in the first bucket, 5 ms."""
    found = families(engine)
    for name in ("argus_request_seconds", "argus_queue_seconds"):
        bounds = [float(s.labels["le"]) for s in found[name].samples if s.name.endswith("_bucket")]
        assert min(bounds) <= 0.001 and max(b for b in bounds if b != float("inf")) >= 300, name


def test_the_profile_ratio_is_nan_until_a_batch_is_judged(engine):
    """It read 0, workers infinitely faster than their profile, before any batch was judged: at time scale 0, where
    none is (each is under 50 ms), for the engine's life. An alert on a gap either way fired on every such engine."""
    ratio = families(engine)["argus_batch_time_vs_profile"].samples[0].value
    assert math.isnan(ratio)


def test_a_counter_of_a_fixed_set_of_causes_is_at_0_before_the_first(engine):
    """A series born at its first increment has no sample before it: increase() read the first worker an engine lost as
    no change, and an alert on any loss missed it. Each cause the docs list is there at 0 from the start."""
    found = families(engine)

    def series(name: str, label: str) -> dict:
        return {s.labels[label]: s.value for s in found[name].samples if s.name == name + "_total"}

    causes = ("exited", "heartbeat", "left", "rejoined", "replaced", "revoked", "unreachable", "failing")
    assert series("argus_worker_losses", "cause") == dict.fromkeys(causes, 0.0)
    assert set(series("argus_deadline_exceeded", "cause")) == {"queued", "predicted", "shed", "running", "no_worker"}
    assert set(series("argus_replies_dropped", "reason")) == {"gone", "unread"}
    assert set(series("argus_bad_messages", "link")) == {"client", "worker"}
    assert set(series("argus_plans", "status")) == {"optimal", "feasible", "fallback", "fixed"}
    states = {s.labels["state"] for s in found["argus_workers"].samples}
    assert states == {"ready", "failing", "starting", "restarting", "failed"}
    # an alert on errors missed the first worker_error or internal_error (this engine has answered none)
    answers = {
        (s.labels["outcome"], s.labels["code"]): s.value
        for s in found["argus_requests"].samples
        if s.name.endswith("_total")
    }
    errors = [
        ("error", code) for code in ("worker_error", "worker_lost", "no_worker", "deadline_exceeded", "internal_error")
    ]
    busy = [("busy", "queue_full"), ("busy", "client_share")]
    assert {answer: answers.get(answer) for answer in errors + busy} == dict.fromkeys(errors + busy, 0.0)


def test_the_metrics_docs_architecture_md_tables_are_those_exposed(engine):
    """Each series of docs/architecture.md's table of metrics is in /metrics, and each family there is in the table."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "architecture.md").read_text()
    rows = [line.split("|")[1] for line in doc.splitlines() if line.startswith("| `argus_")]
    # a counter's family is named without _total, as Prometheus's parser names it
    tabled = {name.removesuffix("_total") for row in rows for name in re.findall(r"`(argus_\w+)", row)}
    exposed = {name for name in families(engine) if not name.endswith("_created")}
    assert tabled == exposed
