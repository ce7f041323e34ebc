"""Images kept for response_format=url: a byte budget, oldest out first, and a TTL that frees them."""

import asyncio
import json
import tracemalloc

import aiohttp
import pytest
from fake_clock import Clock
from PIL import Image
from waiting import eventually

from engine.http.image_files import ENTRY_BYTES, MIN_GONE_NAMES, RUN_CHARS, ImageFiles, ImagesTooLarge, Missing
from engine.server import Engine
from engine_process import in_process_config, ready_sim_engine
from workers.image_encoding import encode_image


def test_the_oldest_images_make_room_within_the_budget():
    files = ImageFiles(max_bytes=2 * (4 + ENTRY_BYTES) + 2, ttl_s=60, clock=Clock(100.0))
    (first,) = files.put([b"a" * 4], "png")
    (second,) = files.put([b"b" * 4], "jpeg")
    (third,) = files.put([b"c" * 4], "webp")
    assert files.get(first) is None and files.bytes_held == 2 * (4 + ENTRY_BYTES)
    assert files.get(second)[:2] == (b"b" * 4, "image/jpeg")
    assert files.get(third)[:2] == (b"c" * 4, "image/webp")
    assert first != second and len(first) > 20  # names cannot be guessed


def test_images_over_the_whole_budget_are_refused_and_push_out_nothing():
    budget = 2 * (5 + ENTRY_BYTES)  # two images of 5 bytes
    files = ImageFiles(max_bytes=budget, ttl_s=60, clock=Clock(100.0))
    (kept,) = files.put([b"a" * 4], "png")
    with pytest.raises(ImagesTooLarge, match="b64_json"):
        files.put([b"b" * budget], "png")
    with pytest.raises(ImagesTooLarge):
        files.put([b"c" * 6, b"d" * 6], "png")  # one response's images, each within the budget
    assert files.get(kept)[:2] == (b"a" * 4, "image/png") and files.bytes_held == 4 + ENTRY_BYTES
    names = files.put([b"e" * 5, b"f" * 5], "png")
    assert [files.get(name)[0] for name in names] == [b"e" * 5, b"f" * 5] and files.get(kept) is None


def test_expired_images_are_not_served_and_are_freed_without_another_put():
    clock = Clock(100.0)
    files = ImageFiles(max_bytes=1000, ttl_s=60, clock=clock)
    (name,) = files.put([b"x" * 100], "png")
    clock.now += 59
    files.drop_expired()
    assert files.get(name) is not None and files.bytes_held == 100 + ENTRY_BYTES
    clock.now += 2
    assert files.get(name) is None
    files.drop_expired()
    assert files.bytes_held == 0


def test_a_store_filled_to_its_budget_keeps_every_image_until_its_ttl():
    clock = Clock(100.0)
    files = ImageFiles(max_bytes=2 * (10 + ENTRY_BYTES), ttl_s=60, clock=clock)
    names = files.put([b"a" * 10, b"b" * 10], "png")
    clock.now += 59
    files.drop_expired()
    assert [files.get(name)[0] for name in names] == [b"a" * 10, b"b" * 10] and files.evicted_early == 0


def test_an_image_evicted_for_room_is_told_from_one_expired_until_its_ttl_would_have_ended():
    """Both were "no such image (it may have expired)": an operator whose store turned over in minutes, long
    before the TTL, could not tell which flag to raise."""
    clock = Clock(100.0)
    files = ImageFiles(max_bytes=2 * (4 + ENTRY_BYTES), ttl_s=60, clock=clock)
    (evicted,) = files.put([b"a" * 4], "png")
    clock.now += 30
    (expiring,) = files.put([b"b" * 4], "png")
    files.put([b"c" * 4], "png")  # room for two: the first goes, 30 s before its TTL ends
    assert (files.get(evicted), files.why_missing(evicted)) == (None, Missing.EVICTED_EARLY)
    assert files.evicted_early == 1 and files.images_held == 2
    clock.now += 31  # the first's TTL has ended: it would have expired by now, and a longer TTL would have kept it
    assert files.why_missing(evicted) == Missing.EXPIRED
    clock.now += 30
    assert (files.get(expiring), files.why_missing(expiring)) == (None, Missing.EXPIRED)
    files.drop_expired()
    assert files.why_missing("never.png") == Missing.UNKNOWN
    assert files.evicted_early == 1 and files.images_held == 0  # expiries are not counted


def test_an_expired_image_is_told_as_expired_after_it_is_freed():
    """The engine's sweep frees an expired image within a second: only its 404s in that second said "expired", and
    every later one "it expired, was removed sooner to make room, or never was"."""
    clock = Clock(100.0)
    files = ImageFiles(max_bytes=1000, ttl_s=60, clock=clock)
    (name,) = files.put([b"x" * 4], "png")
    clock.now += 61
    files.drop_expired()
    assert files.images_held == 0 and (files.get(name), files.why_missing(name)) == (None, Missing.EXPIRED)


def test_the_names_freed_are_remembered_within_a_bound():
    clock = Clock(100.0)
    files = ImageFiles(max_bytes=4 + ENTRY_BYTES, ttl_s=60, clock=clock)
    names = [files.put([b"x" * 4], "png")[0] for _ in range(MIN_GONE_NAMES + 3)]  # each evicts the one before
    told = [files.why_missing(name) for name in names[:-1]]
    assert told == [Missing.UNKNOWN] * 2 + [Missing.EVICTED_EARLY] * MIN_GONE_NAMES
    assert files.evicted_early == MIN_GONE_NAMES + 2
    clock.now += 61
    files.drop_expired()  # the last one expires: it takes the place of the oldest remembered
    assert [files.why_missing(name) for name in names[-2:]] == [Missing.EXPIRED] * 2
    assert files.why_missing(names[2]) == Missing.UNKNOWN


def test_a_name_another_store_handed_out_is_told_from_one_this_store_forgot():
    """An engine restarted, or another behind the same address, told a URL of the first's "it expired, was removed
    sooner to make room, or never was", and an operator raised flags that keep no image across a restart."""
    before_restart = ImageFiles(max_bytes=1000, ttl_s=60, clock=Clock(100.0))
    (made_before,) = before_restart.put([b"x" * 4], "webp")
    files = ImageFiles(max_bytes=1000, ttl_s=60, clock=Clock(100.0))
    (own,) = files.put([b"y" * 4], "webp")
    assert files.get(made_before) is None and files.why_missing(made_before) == Missing.OTHER_ENGINE
    never_made_here = own[:RUN_CHARS] + "x" * 24 + ".webp"  # this store's prefix: forgotten, or never handed out
    assert files.why_missing(never_made_here) == Missing.UNKNOWN
    assert files.why_missing("never.png") == Missing.UNKNOWN


async def test_the_engine_frees_expired_images_on_its_own(tmp_path):
    engine = Engine(in_process_config(tmp_path, image_url_ttl_s=0.05))
    engine.image_files.put([b"x" * 100], "png")
    running = asyncio.create_task(engine.run())
    try:
        assert await eventually(lambda: engine.image_files.bytes_held == 0)
    finally:
        engine.request_stop()
        await asyncio.wait_for(running, 30)


def counted(engine: Engine, outcome: str, code: str = "") -> float:
    return engine.metrics.registry.get_sample_value("argus_requests_total", {"outcome": outcome, "code": code}) or 0


async def test_a_url_response_larger_than_the_store_is_a_400_and_every_url_handed_out_works(tmp_path):
    # a sim 64x64 PNG takes a few hundred bytes: two fit, three do not
    budget = 600 + 2 * ENTRY_BYTES
    async with ready_sim_engine(tmp_path, image_url_store_bytes=budget) as (engine, port):
        url = f"http://127.0.0.1:{port}/v1/images/generations"
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json={"prompt": "a", "size": "64x64", "response_format": "url"}) as reply:
                assert reply.status == 200
                (first,) = (await reply.json())["data"]
            held = engine.image_files.bytes_held
            body = {"prompt": "b", "size": "64x64", "n": 3, "response_format": "url"}
            async with session.post(url, json=body) as reply:
                assert reply.status == 400
                error = (await reply.json())["error"]
            assert error["param"] == "response_format" and "b64_json" in error["message"]
            # counted as the client saw it: before, an ok (its images were made)
            assert (counted(engine, "ok"), counted(engine, "error", "invalid_request")) == (1, 1)
            assert engine.image_files.bytes_held == held
            engine.image_files.drop_expired()
            async with session.get(first["url"]) as image:
                assert image.status == 200 and (await image.read()).startswith(b"\x89PNG")
            async with session.post(url, json=body | {"response_format": "b64_json"}) as reply:
                data = (await reply.json())["data"]
                assert reply.status == 200 and len(data) == 3
                assert all(entry["argus"]["simulated"] for entry in data)  # sim workers: said so with every image


async def test_image_urls_start_with_the_public_url_whatever_the_host_header_or_forwarded_headers_say(tmp_path):
    """Before, behind a TLS-terminating proxy, image URLs were http:// and named the Host the proxy sent on; the
    X-Forwarded headers, which any client may send, are not believed either."""
    public = "https://images.example.com/argus"
    forwarded = {"Host": "argus:8000", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "evil.example"}
    async with ready_sim_engine(tmp_path, public_url=public) as (_, port):
        async with aiohttp.ClientSession() as session:
            body = {"prompt": "a", "size": "64x64", "response_format": "url"}
            url = f"http://127.0.0.1:{port}/v1/images/generations"
            async with session.post(url, json=body, headers=forwarded) as reply:
                assert reply.status == 200
                (entry,) = (await reply.json())["data"]
            assert entry["url"].startswith(f"{public}/v1/images/files/")
            # the proxy takes /argus off, as it does for every route
            async with session.get(f"http://127.0.0.1:{port}" + entry["url"].removeprefix(public)) as image:
                assert image.status == 200 and (await image.read()).startswith(b"\x89PNG")


async def test_a_request_without_a_host_header_gets_urls_on_the_port_it_came_to(tmp_path):
    """HTTP/1.0 needs no Host header: aiohttp then names the host by the address alone, and the image URL named
    port 80 rather than the engine's port."""
    async with ready_sim_engine(tmp_path) as (_, port):
        body = json.dumps({"prompt": "a", "size": "64x64", "response_format": "url"}).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = f"POST /v1/images/generations HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
        writer.write(head.encode() + b"\r\n\r\n" + body)
        reply = await reader.read()
        writer.close()
        status, _, payload = reply.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.0 200")
        (entry,) = json.loads(payload)["data"]
        assert entry["url"].startswith(f"http://127.0.0.1:{port}/v1/images/files/")
        async with aiohttp.ClientSession() as session, session.get(entry["url"]) as image:
            assert image.status == 200 and (await image.read()).startswith(b"\x89PNG")


async def test_an_image_may_be_kept_by_its_client_alone_and_no_longer_than_its_ttl(tmp_path):
    """It was sent with no Cache-Control: a proxy or CDN in front of the engine could keep it as long as it liked
    (RFC 9111 4.2.2), past the TTL and for everyone who could reach that cache. An image URL's 404 is kept by none."""
    async with ready_sim_engine(tmp_path, image_url_ttl_s=600) as (_, port):
        async with aiohttp.ClientSession() as session:
            body = {"prompt": "a", "size": "64x64", "response_format": "url"}
            async with session.post(f"http://127.0.0.1:{port}/v1/images/generations", json=body) as reply:
                (entry,) = (await reply.json())["data"]
            async with session.get(entry["url"]) as image:
                assert image.status == 200
                directives = dict(
                    d.strip().partition("=")[::2] for d in image.headers.get("Cache-Control", "").split(",")
                )
            assert "private" in directives and 590 <= int(directives["max-age"]) <= 600, directives
            # nor its 404, cacheable unless it says otherwise: a CDN kept that of an image another engine behind the
            # same balancer made, and the client's retry never reached the engine holding it
            base, _, name = entry["url"].rpartition("/")
            async with session.get(f"{base}/{'a' * RUN_CHARS}{name[RUN_CHARS:]}") as missing:
                assert missing.status == 404 and missing.headers.get("Cache-Control") == "no-store"


def test_the_budget_bounds_the_memory_held_for_small_images():
    """A flat 64x64 WEBP takes 70 bytes, and its name, entry and object headers near 300 more: counted by their bytes
    alone, a budget of such images held 5 times itself."""
    budget = 4 << 20
    image = encode_image(Image.new("RGB", (64, 64), (10, 20, 30)), "webp", 0)
    tracemalloc.start()
    try:
        files = ImageFiles(max_bytes=budget, ttl_s=60, clock=Clock(100.0))
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(3 * budget // len(image) // 5):  # the old count's fill, and more
            files.put([bytes(bytearray(image))], "webp")  # a copy each: a response's images are its own
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert files.bytes_held <= budget and held <= budget
