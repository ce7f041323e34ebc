"""`argus serve --image-url-store-bytes` and `--image-url-ttl` size the store behind response_format=url, /metrics shows
what it holds and evicts, and an image URL's 404 says what became of the image and which flag keeps it longer.
Before, neither could be set (256 MiB, an hour: at SD-XL scale turned over in a minute or two), nothing showed the
store, and every 404 said "it may have expired"."""

import json
import urllib.request

import pytest
from waiting import wait_for

from engine_process import start_engine

# the tests marked own_engine find theirs started while the tests before them ran (tests/engines_ahead.py)
pytestmark = pytest.mark.usefixtures("engines_ahead")


def url_image(engine) -> str:
    """The path of a new 64x64 image asked for as a URL."""
    body = json.dumps({"prompt": "a lighthouse", "size": "64x64", "response_format": "url"}).encode()
    request = urllib.request.Request(engine.http + "/v1/images/generations", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        (entry,) = json.load(reply)["data"]
    return entry["url"].removeprefix(engine.http)


def not_found(engine, path: str) -> str | None:
    """The message of the 404 `path` is answered with; None while it is served."""
    status, body = engine.get(path)
    if status == 200:
        return None
    assert status == 404, body
    return json.loads(body)["error"]["message"]


def test_a_small_store_evicts_the_oldest_image_counts_it_and_says_which_flag_to_raise(tmp_path):
    # a flat sim 64x64 PNG and its bookkeeping take a few hundred bytes: a few fit in 3,000 (none would be evicted
    # in 256 MiB)
    budget = 3000
    engine = start_engine(
        tmp_path, "--time-scale", "0", "--image-url-store-bytes", str(budget), workers=1, backend="sim"
    )
    try:
        first = url_image(engine)
        assert not_found(engine, first) is None
        made = 1
        while not_found(engine, first) is None:
            assert made < 20, "the first image is still kept"
            url_image(engine)
            made += 1
        message = not_found(engine, first)
        assert "removed before its TTL ended, to make room" in message
        assert f"at most {budget} bytes" in message and "--image-url-store-bytes" in message
        assert engine.metric("argus_image_url_evicted_early_total") == 1
        held = engine.metric("argus_image_url_images")
        assert held == made - 1 and 0 < engine.metric("argus_image_url_bytes") <= budget
        never = not_found(engine, "/v1/images/files/never-handed-out.png")
        assert "--image-url-ttl" in never and "--image-url-store-bytes" in never  # both, not knowing which
    finally:
        assert engine.stop() == 0


@pytest.mark.own_engine("--time-scale", "0", "--image-url-ttl", "0.5", workers=1, backend="sim")
def test_a_short_ttl_ends_an_image_url_and_the_404_names_the_ttl_flag(own_engine):
    engine = own_engine
    try:
        path = url_image(engine)
        assert wait_for(lambda: not_found(engine, path) is not None)  # kept for an hour before
        message = not_found(engine, path)
        assert "expired" in message and "images are kept 0.5 s (--image-url-ttl)" in message
        assert "removed before its TTL ended" not in message
        # freed by the engine's sweep, not counted as evicted
        assert wait_for(lambda: engine.metric("argus_image_url_images") == 0)
        assert engine.metric("argus_image_url_bytes") == 0
        assert engine.metric("argus_image_url_evicted_early_total") == 0
        # and still told as expired: once freed, it was "no such image: it expired (...), was removed sooner to make
        # room (...), or never was"
        assert not_found(engine, path) == "this image has expired: images are kept 0.5 s (--image-url-ttl)"
    finally:
        assert engine.stop() == 0


@pytest.mark.own_engine("--time-scale", "0", workers=1, backend="sim")
def test_an_image_url_of_an_engine_since_restarted_says_so(tmp_path, own_engine):
    """Its 404 said "it expired (--image-url-ttl), was removed sooner to make room (--image-url-store-bytes), or never
    was": neither flag keeps an image across a restart, nor on an engine beside it behind a load balancer."""
    engine = own_engine
    try:
        path = url_image(engine)
    finally:
        assert engine.stop() == 0
    restarted = start_engine(tmp_path, "--time-scale", "0", workers=1, backend="sim")
    try:
        message = not_found(restarted, path)
        assert message.startswith("this image was made by another engine process: this one has restarted since")
        assert "--image-url-ttl" not in message
        assert "--image-url-ttl" in not_found(restarted, "/v1/images/files/never-handed-out.png")
    finally:
        assert restarted.stop() == 0
