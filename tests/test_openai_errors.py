"""What code written for OpenAI's API reads from argus's errors: the kind in `type` (argus's reason in `code`), and
whether the official client's retries (twice by default, of every 5xx and 429) are spent on an answer that a retry
cannot change."""

import json
import urllib.error
import urllib.request

import openai
import pytest
from openai import OpenAI
from queue_holding import hold_the_queue
from waiting import wait_for

from engine_process import start_engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    # one image queued at most: a long one fills the queue
    engine = start_engine(
        tmp_path_factory.mktemp("openai-errors"), "--time-scale", "0.5", "--max-queue", "1", backend="sim", workers=1
    )
    yield engine
    assert engine.stop() == 0


def client(engine, **options) -> OpenAI:
    return OpenAI(base_url=engine.http + "/v1", api_key="unused", timeout=60, **options)


def answers(engine, outcome: str, code: str) -> float:
    return engine.metric("argus_requests_total", outcome=outcome, code=code)


def test_a_request_past_its_deadline_is_not_sent_again(engine):
    """The client sent it three times (a 504 is retried): each came back past its deadline, and a client that asked
    for an image within 1 ms waited for three answers and loaded the engine three times."""
    before = answers(engine, "error", "deadline_exceeded")
    with pytest.raises(openai.InternalServerError) as raised:
        client(engine).images.generate(prompt="a fox", size="64x64", extra_body={"slo_ms": 1})
    assert answers(engine, "error", "deadline_exceeded") == before + 1
    assert raised.value.status_code == 504 and raised.value.response.headers["x-should-retry"] == "false"
    assert raised.value.body["type"] == "server_error" and raised.value.body["code"] == "deadline_exceeded"


def test_a_full_queue_is_a_rate_limit_error_to_retry_after_retry_after(engine):
    """The client retries it (no x-should-retry: false) after the Retry-After, a whole number of seconds
    (tests/test_retry_after.py: how many)."""
    held = hold_the_queue(engine)
    try:
        before = answers(engine, "busy", "queue_full")
        with pytest.raises(openai.RateLimitError) as raised:
            client(engine, max_retries=0).images.generate(prompt="a fox", size="64x64")
        assert raised.value.body["type"] == "rate_limit_error" and raised.value.body["code"] == "busy"
        assert raised.value.response.headers["Retry-After"].isdigit()
        assert "x-should-retry" not in raised.value.response.headers
        assert answers(engine, "busy", "queue_full") == before + 1
    finally:
        held.close()
    assert wait_for(engine.idle)  # the long one cancelled: the queue has room again for the tests after


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "kind", "code"),
    [
        ("POST", "/v1/images/generations", b"{", 400, "invalid_request_error", "invalid_request"),
        (
            "POST",
            "/v1/images/generations",
            b'{"prompt": "a", "size": "72x9"}',
            400,
            "invalid_request_error",
            "invalid_size",
        ),
        ("GET", "/v1/models/other", None, 404, "invalid_request_error", "model_not_found"),
        ("GET", "/v1/nothing", None, 404, "invalid_request_error", "not_found"),
        ("GET", "/v1/images/generations", None, 405, "invalid_request_error", "method_not_allowed"),
    ],
)
def test_each_error_is_of_an_openai_kind_with_argus_reason_in_code(engine, method, path, body, status, kind, code):
    """`type` was argus's reason for all but bad input (`busy`, `worker_error`, `not_found`, ...), kinds that code
    written for OpenAI's API does not know."""
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(engine.http + path, data=body, method=method, headers=headers)
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=30)
    assert raised.value.code == status
    error = json.loads(raised.value.read())["error"]
    assert (error["type"], error["code"]) == (kind, code)
    assert "x-should-retry" not in raised.value.headers
