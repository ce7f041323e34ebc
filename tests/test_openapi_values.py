"""Every value GET /openapi.json lists for an image request's field is served. It listed partial_images 0-3 and
background "transparent", each a 400: a client or SDK generated from the document sent what the server refuses."""

import json

import pytest

from engine_process import start_engine

# their bounds are the workers' (a 400 names them), not the schema's: the document cannot know the backend's
BACKEND_BOUNDED = {"size", "num_inference_steps"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = start_engine(tmp_path_factory.mktemp("openapi"), "--time-scale", "0", workers=1, backend="sim")
    yield engine
    assert engine.stop() == 0


def listed_values(field: dict) -> list:
    """The values the schema names for one field: each of a list, and both ends of a range."""
    values = []
    for choice in field.get("anyOf", [field]):
        values += choice.get("enum", [])
        values += [choice[end] for end in ("minimum", "maximum") if end in choice]
    return values


def test_every_value_the_schema_lists_is_served(engine):
    status, document = engine.get("/openapi.json")
    assert status == 200
    fields = json.loads(document)["components"]["schemas"]["ImageGenerationRequest"]["properties"]
    sent = [
        (name, value) for name, field in fields.items() if name not in BACKEND_BOUNDED for value in listed_values(field)
    ]
    assert ("partial_images", 0) in sent and ("background", "opaque") in sent  # what the test reads is there
    refused = {}
    for name, value in sent:
        status, reply = engine.generate({"prompt": "a lighthouse", "size": "64x64", name: value})
        if status != 200:
            refused[f"{name}={value!r}"] = reply["error"]["message"]
    assert not refused, refused
