"""Images kept for response_format=url: a byte budget, oldest out first, and a TTL that frees them."""

import asyncio

from waiting import eventually

from engine.image_files import ImageFiles
from engine.server import Engine
from engine_process import in_process_config


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_oldest_images_make_room_within_the_budget():
    files = ImageFiles(max_bytes=10, ttl_s=60, clock=Clock())
    first = files.put(b"a" * 4, "png")
    second = files.put(b"b" * 4, "jpeg")
    third = files.put(b"c" * 4, "webp")
    assert files.get(first) is None and files.bytes_held == 8
    assert files.get(second) == (b"b" * 4, "image/jpeg")
    assert files.get(third) == (b"c" * 4, "image/webp")
    assert first != second and len(first) > 20  # names cannot be guessed


def test_expired_images_are_not_served_and_are_freed_without_another_put():
    clock = Clock()
    files = ImageFiles(max_bytes=1000, ttl_s=60, clock=clock)
    name = files.put(b"x" * 100, "png")
    clock.now += 59
    files.drop_expired()
    assert files.get(name) is not None and files.bytes_held == 100
    clock.now += 2
    assert files.get(name) is None
    files.drop_expired()
    assert files.bytes_held == 0


async def test_the_engine_frees_expired_images_on_its_own(tmp_path):
    engine = Engine(in_process_config(tmp_path, image_url_ttl_s=0.05))
    engine.image_files.put(b"x" * 100, "png")
    running = asyncio.create_task(engine.run())
    try:
        assert await eventually(lambda: engine.image_files.bytes_held == 0)
    finally:
        engine.request_stop()
        await asyncio.wait_for(running, 30)
