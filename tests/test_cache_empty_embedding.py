"""A prompt the cache's embedder reads nothing of (its embedding the zero vector) is served as a miss: no neighbour,
and nothing cached for it. The doors refuse a prompt of whitespace and control characters alone; what is left is a
prompt whose first 75 CLIP pieces, all the model reads, are NULs, which the hash embedder reads as spaces."""

import json
import urllib.request

import pytest
from waiting import wait_for

from engine.cache.embedders import HashEmbedder
from engine_process import start_engine

UNREAD = "\x00 " * 75 + "a lighthouse"  # the words past the 75th piece are cut, as the model cuts them


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = start_engine(tmp_path_factory.mktemp("empty-embedding"), "--time-scale", "0.01", backend="sim", workers=1)
    yield engine
    assert engine.stop() == 0


def _similarity(engine, prompt: str) -> float | None:
    body = json.dumps({"prompt": prompt, "size": "64x64"}).encode()
    request = urllib.request.Request(
        engine.http + "/v1/images/generations", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["data"][0]["argus"]["similarity"]


def test_a_prompt_embedded_as_the_zero_vector_has_no_neighbour_and_is_not_cached(engine):
    """It was matched with the first cached prompt at similarity 0.0 (a prompt without a neighbour says null), and
    cached, never to be found."""
    assert not HashEmbedder().embed([UNREAD]).any()
    assert _similarity(engine, "a lighthouse") is None
    assert [_similarity(engine, UNREAD) for _ in range(2)] == [None, None]
    assert _similarity(engine, "a red barn") is not None  # a neighbour, however far: the lighthouse
    # inserts are taken in order: once the last prompt's is, the ones before it are
    assert wait_for(lambda: engine.metric("argus_cache_prompts") >= 2)
    assert engine.metric("argus_cache_prompts") == 2
