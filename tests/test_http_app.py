"""HTTP request ids: unique in the process, from one random draw (not one per request); the app's own failures."""

import itertools
import uuid
from types import SimpleNamespace

from aiohttp.test_utils import TestClient, TestServer

from engine.config import EngineConfig
from engine.http_api import build_app, request_ids


def test_ids_share_one_random_prefix_and_never_repeat(monkeypatch):
    draws = []
    real = uuid.uuid4
    monkeypatch.setattr(uuid, "uuid4", lambda: draws.append(1) or real())
    ids = list(itertools.islice(request_ids(), 1000))
    assert len(set(ids)) == 1000
    assert len({i.rsplit("-", 1)[0] for i in ids}) == 1
    assert len(draws) == 1


async def test_a_failure_inside_the_engine_is_a_json_500_in_the_api_error_shape():
    engine = SimpleNamespace(config=EngineConfig(max_body_bytes=1024))
    app = build_app(engine)

    async def broken(request):
        raise RuntimeError("a defect")

    app.router.add_get("/broken", broken)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        response = await client.get("/broken")
        assert response.status == 500
        assert response.content_type == "application/json"
        assert (await response.json())["error"]["code"] == "internal_error"
        assert (await client.get("/broken")).status == 500  # and it goes on answering
