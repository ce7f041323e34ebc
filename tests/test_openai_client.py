"""The official `openai` client against a running engine with tiny workers."""

import base64
import inspect
import io
import urllib.request

import openai
import pytest
from openai import OpenAI
from PIL import Image

from engine.config import served_model_name
from engine_process import start_engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    # one worker: the tests ask one request at a time (n=2 is one batch), and each tiny worker's start imports torch
    # and diffusers, for seconds
    engine = start_engine(tmp_path_factory.mktemp("openai"), backend="tiny", workers=1)
    yield engine
    assert engine.stop() == 0


@pytest.fixture(scope="module")
def client(engine):
    return OpenAI(base_url=engine.http + "/v1", api_key="unused", max_retries=0, timeout=120)


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_b64_json_images_decode_at_the_requested_size(client):
    response = client.images.generate(
        model="sdxl-tiny",
        prompt="a watercolor fox in a forest",
        n=2,
        size="64x64",
        response_format="b64_json",
        extra_body={"seed": 3, "num_inference_steps": 10},
    )
    assert len(response.data) == 2
    for entry in response.data:
        assert decode(base64.b64decode(entry.b64_json)).size == (64, 64)
    assert response.size == "64x64"
    meta = [entry.model_extra["argus"] for entry in response.data]
    assert [m["seed"] for m in meta] == [3, 4]
    assert all(m["level"] == 0 and m["run_ms"] > 0 and m["queue_ms"] >= 0 for m in meta)
    assert all(m["similarity"] is None and m["quality"] is None and m["simulated"] is False for m in meta)


def test_url_images_are_served_by_the_engine(client):
    response = client.images.generate(
        prompt="a paper boat",
        size="128x64",
        response_format="url",
        extra_body={"output_format": "webp", "num_inference_steps": 8},
    )
    (entry,) = response.data
    with urllib.request.urlopen(entry.url, timeout=30) as reply:
        assert reply.headers["Content-Type"] == "image/webp"
        image = decode(reply.read())
    assert image.size == (128, 64) and image.format == "WEBP"


def test_same_seed_same_image(client):
    def once() -> bytes:
        response = client.images.generate(
            prompt="a red apple", size="64x64", extra_body={"seed": 42, "num_inference_steps": 6, "exact": True}
        )
        (entry,) = response.data
        # run in full, as the first was: comparable. Asked for, as the controller may staff level 5 by the second
        assert entry.model_extra["argus"]["level"] == 0
        return base64.b64decode(entry.b64_json)

    assert once() == once()


@pytest.mark.parametrize("response_format", ["b64_json", "url"])
def test_the_response_says_the_images_background_as_openais_does(client, response_format):
    """OpenAI's GPT image models report the background they made (ImagesResponse.background), which code written
    for them reads: it was None."""
    response = client.images.generate(
        prompt="a kite", response_format=response_format, extra_body={"num_inference_steps": 2}
    )
    assert response.background == "opaque"
    (entry,) = response.data
    if entry.url is not None:
        with urllib.request.urlopen(entry.url, timeout=30) as reply:
            assert decode(reply.read()).mode == "RGB"  # no alpha: opaque indeed
    else:
        assert decode(base64.b64decode(entry.b64_json)).mode == "RGB"


def images_counted(engine) -> float:
    """argus_images_total over every level the engine has counted images at."""
    _, body = engine.get("/metrics")
    lines = body.decode().splitlines()
    return sum(float(line.rpartition(" ")[2]) for line in lines if line.startswith("argus_images_total{"))


def test_model_is_echoed_and_default_size_applies(engine, client):
    """Its own image counted, by the level it ran at: it counted those of the tests before it in this file, and
    failed run alone or on another xdist worker than theirs."""
    before = images_counted(engine)
    response = client.images.generate(model="anything", prompt="a tree", extra_body={"num_inference_steps": 4})
    assert response.model_extra["model"] == "anything"
    (entry,) = response.data
    assert decode(base64.b64decode(entry.b64_json)).size == (64, 64)
    # counted before the reply is sent (engine/dispatch/dispatcher.py)
    assert images_counted(engine) == before + 1
    assert engine.metric("argus_images_total", level=str(entry.model_extra["argus"]["level"])) >= 1


def test_models_lists_the_one_served_and_retrieves_only_it(client):
    """Tools that list models before they ask for images got a 404 for the list."""
    (served,) = client.models.list().data
    assert (served.id, served.object, served.owned_by) == ("argus-tiny", "model", "argus")
    assert client.models.retrieve("argus-tiny").id == "argus-tiny"
    with pytest.raises(openai.NotFoundError, match="no model 'dall-e-3': this engine serves one model, 'argus-tiny'"):
        client.models.retrieve("dall-e-3")


@pytest.mark.parametrize(
    ("model", "cwd", "listed"),
    [
        ("/models/sdxl-base", "/", "sdxl-base"),
        ("/models/sdxl-base/", "/", "sdxl-base"),
        ("sdxl-base", "/models", "sdxl-base"),
        (".", "/models/sdxl-base", "sdxl-base"),
        ("..", "/models/sdxl-base/unet", "sdxl-base"),
        # a hub cache's snapshot: listed as the revision's 40 hex digits
        (
            f"/hub/models--stabilityai--stable-diffusion-xl-base-1.0/snapshots/{'4' * 40}",
            "/",
            "stable-diffusion-xl-base-1.0",
        ),
        (".", f"/hub/models--org--sdxl/snapshots/{'4' * 40}", "sdxl"),
    ],
)
def test_an_sdxl_model_is_listed_by_its_folders_name_however_the_path_is_written(model, cwd, listed, monkeypatch):
    """`argus serve --model .` run inside the model's folder listed the model as '.'."""
    monkeypatch.setattr("os.getcwd", lambda: cwd)
    assert served_model_name("sdxl", model) == listed


def test_an_api_argus_does_not_serve_and_a_base_url_without_v1_are_404s_saying_so(engine, client):
    """Both were a 404 "Not Found", which reads as a wrong host."""
    with pytest.raises(openai.NotFoundError) as raised:
        client.images.edit(image=("a.png", b"\x89PNG\r\n\x1a\n", "image/png"), prompt="a kite")
    assert raised.value.body["message"].startswith("POST /v1/images/edits is not served here")
    assert "not image edits or variations" in raised.value.body["message"]
    without_v1 = OpenAI(base_url=engine.http, api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.NotFoundError) as raised:
        without_v1.images.generate(prompt="a kite")
    assert raised.value.body["message"].startswith("POST /images/generations is not served here")
    assert "POST /v1/images/generations (an OpenAI client's base_url ends in /v1)" in raised.value.body["message"]


def test_an_argument_given_as_none_is_its_default(client):
    # the client sends None as null, as OpenAI's API takes it
    response = client.images.generate(
        prompt="a kite",
        n=None,
        size=None,
        response_format=None,
        output_format=None,
        quality=None,
        style=None,
        model=None,
        extra_body={"seed": None, "num_inference_steps": 2},
    )
    (entry,) = response.data
    assert response.size == "64x64" and response.output_format == "png"
    assert decode(base64.b64decode(entry.b64_json)).format == "PNG"


def test_every_argument_of_the_clients_generate_may_be_none(client):
    """An app may pass every argument OpenAI's client takes, None where it wants the default: frame_count,
    frame_duration_ms and svg (of GIF and SVG output) were 400s as unknown fields."""
    arguments = set(inspect.signature(client.images.generate).parameters) - {
        "prompt",
        "extra_headers",
        "extra_query",
        "extra_body",
        "timeout",
    }
    assert {"frame_count", "svg", "quality", "user"} <= arguments  # what the test reads is there
    response = client.images.generate(
        prompt="a kite", **dict.fromkeys(arguments, None), extra_body={"num_inference_steps": 2}
    )
    (entry,) = response.data
    assert decode(base64.b64decode(entry.b64_json)).format == "PNG"


def test_stream_false_is_served_and_stream_true_refused(client):
    response = client.images.generate(prompt="a kite", stream=False, extra_body={"num_inference_steps": 2})
    assert len(response.data) == 1
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(prompt="a kite", stream=True)
    assert raised.value.body["param"] == "stream"


def test_openai_fields_clients_send_are_served(client):
    # what apps written for dall-e-3 and gpt-image send: before, background, moderation, output_compression,
    # safety_identifier and complexity were 400s as unknown fields
    response = client.images.generate(
        prompt="a kite",
        quality="hd",
        complexity="low",
        style="vivid",
        background="opaque",
        moderation="low",
        output_compression=80,
        output_format="jpeg",
        user="user-1234",
        safety_identifier="hashed-user-1234",
        partial_images=0,
        extra_body={"num_inference_steps": 2},
    )
    (entry,) = response.data
    assert decode(base64.b64decode(entry.b64_json)).format == "JPEG"


def quantization_at(quality: int) -> dict:
    """A JPEG's quantization tables follow from the quality it was saved at, whatever the picture."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="JPEG", quality=quality)
    return decode(buffer.getvalue()).quantization


@pytest.mark.parametrize("compression", [10, 95])
def test_output_compression_is_the_quality_a_jpeg_is_saved_at(client, compression):
    # before, it was taken and every JPEG came at quality 90
    response = client.images.generate(
        prompt="a kite",
        output_format="jpeg",
        output_compression=compression,
        extra_body={"num_inference_steps": 2},
    )
    (entry,) = response.data
    assert decode(base64.b64decode(entry.b64_json)).quantization == quantization_at(compression)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("quality", "ultra", 'quality "ultra" must be one of'),
        ("style", "noir", 'style "noir" must be one of'),
        ("complexity", "extreme", 'complexity "extreme" must be one of'),
        ("background", "transparent", "opaque"),
        ("moderation", "off", 'moderation "off" must be one of'),
        ("output_compression", 101, "<= 100"),
        ("partial_images", 2, "does not stream"),
        ("frame_count", 4, "argus makes no gifs"),
        ("frame_duration_ms", 100, "argus makes no gifs"),
        ("svg", {"model": "gpt-5"}, "argus makes no svgs"),
    ],
)
def test_a_value_argus_cannot_honour_is_a_400_naming_the_field(client, field, value, words):
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(prompt="a kite", **{field: value})
    assert raised.value.body["param"] == field
    assert words in raised.value.body["message"].lower()


def test_a_negative_prompt_rides_in_extra_body_and_steers_the_image(client):
    def image(**extra) -> bytes:
        response = client.images.generate(
            prompt="a lantern", extra_body={"seed": 11, "num_inference_steps": 4, **extra}
        )
        return base64.b64decode(response.data[0].b64_json)

    plain = image()
    assert image(negative_prompt="") == plain  # "" asks for none, as leaving it out does
    assert image(negative_prompt="blurry, washed out") != plain
    with pytest.raises(openai.BadRequestError) as raised:
        image(negative_prompt="x" * 4001)
    assert raised.value.body["param"] == "negative_prompt"


@pytest.mark.parametrize(
    ("field", "meant"),
    [("steps", "num_inference_steps"), ("negativ_prompt", "negative_prompt"), ("width", "size"), ("Seed", "seed")],
)
def test_a_misnamed_extra_body_field_is_a_400_naming_the_field_meant(client, field, meant):
    """extra_body is sent as written: a field named as argus's ZeroMQ client or diffusers name it, or mistyped, was
    "Object contains unknown field `steps`", msgspec's words, with no word of the name to send."""
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(prompt="a kite", extra_body={field: 4})
    assert raised.value.param == field
    assert raised.value.body["message"] == f'unknown field "{field}": did you mean "{meant}"?'


def test_exact_rides_in_extra_body_and_runs_every_step(client):
    response = client.images.generate(prompt="a lantern", extra_body={"exact": True, "num_inference_steps": 4})
    (entry,) = response.data
    assert (entry.model_extra["argus"]["level"], entry.model_extra["argus"]["similarity"]) == (0, None)


def test_the_request_id_is_what_the_client_reads_from_replies_and_errors(client):
    """OpenAI's client reads X-Request-ID from every reply (`_request_id`, `APIStatusError.request_id`): it was None."""
    mine = client.images.generate(
        prompt="a kite", size="64x64", extra_body={"num_inference_steps": 2}, extra_headers={"X-Request-ID": "kite-1"}
    )
    assert mine._request_id == "kite-1"
    made = client.images.generate(prompt="a kite", size="64x64", extra_body={"num_inference_steps": 2})
    assert made._request_id and made._request_id != "kite-1"
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(prompt="a kite", size="72x9", extra_headers={"X-Request-ID": "kite-2"})
    assert raised.value.request_id == "kite-2"
