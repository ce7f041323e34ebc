"""What the HTTP door's routes other than image generation answer, decided in process with an engine stood in
(tests/engine_stand_in.py): a model not served, a plan not made yet, an image's lifetime in caches."""

import pytest
from engine_stand_in import StandInEngine, http_door_of

from engine.http.image_files import ImageFiles

# in process, each in milliseconds: a hang is a failure, not a wait for the suite's 300 s
pytestmark = pytest.mark.timeout(30)


async def test_a_model_not_served_is_a_404_naming_the_model_field():
    async with http_door_of(StandInEngine()) as client:
        response = await client.get("/v1/models/dall-e-3")
        error = (await response.json())["error"]
        assert (response.status, error["code"], error["param"]) == (404, "model_not_found", "model")


async def test_the_plan_is_a_503_until_the_controller_made_one():
    engine = StandInEngine()
    async with http_door_of(engine) as client:
        response = await client.get("/plan")
        assert (response.status, (await response.json())["error"]["code"]) == (503, "no_plan")
        engine.plan = {"levels": [0]}
        response = await client.get("/plan")
        assert (response.status, await response.json()) == (200, {"levels": [0]})


async def test_an_image_may_be_kept_in_a_cache_only_for_what_is_left_of_its_ttl():
    """Not the whole TTL again at each fetch: a browser that fetched it late kept it past its end."""
    now = [100.0]
    engine = StandInEngine(image_url_ttl_s=60.0)
    engine.image_files = ImageFiles(engine.config.image_url_store_bytes, 60.0, clock=lambda: now[0])
    (name,) = engine.image_files.put([b"\x89PNG an image"], "png")
    now[0] += 45.0
    async with http_door_of(engine) as client:
        response = await client.get(f"/v1/images/files/{name}")
        assert (response.status, response.headers["Cache-Control"]) == (200, "private, max-age=15")
