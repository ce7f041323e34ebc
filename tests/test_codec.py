"""The wire codec: round trips, and strict refusal of anything malformed (never an exception)."""

import tracemalloc

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import client_messages, worker_messages
from protocols.codec import Blob, Codec, DecodeError
from protocols.limits import MAX_BATCH
from protocols.worker_messages import BatchDone, Generate, GenerateItem, ItemDone


def _generate_with_latent() -> Generate:
    latent = np.arange(4 * 8 * 8, dtype=np.float16).reshape(4, 8, 8)
    return Generate(
        batch_id=7,
        level=10,
        steps=50,
        width=64,
        height=64,
        guidance_scale=5.0,
        output_format="png",
        items=[GenerateItem("j1", "a cat", 3, latent), GenerateItem("j2", "a dog", 4, latent * 2)],
    )


def test_arrays_travel_as_frames_and_round_trip():
    message = _generate_with_latent()
    frames = worker_messages.engine_side_codec().encode(message)
    assert len(frames) == 3  # header + one frame per latent
    assert memoryview(frames[1]).nbytes == 4 * 8 * 8 * 2
    assert len(frames[0]) < 4 * 8 * 8 * 2  # the latents are not copied into the header
    decoded = worker_messages.worker_side_codec().decode(frames)
    assert decoded.items[1].prompt == "a dog"
    np.testing.assert_array_equal(decoded.items[1].latent, message.items[1].latent)
    assert decoded.items[0].latent.dtype == np.float16


def test_blob_and_latent_dict_round_trip():
    done = ItemDone("j1", Blob(b"\x89PNG..."), 10, [15], np.ones((1, 4, 8, 8), np.float16), 12.5, 40)
    frames = worker_messages.worker_side_codec().encode(BatchDone(7, [done]))
    (decoded,) = worker_messages.engine_side_codec().decode(frames).outcomes
    assert decoded.image == b"\x89PNG..." and isinstance(decoded.image, Blob)
    assert list(decoded.by_level()) == [15]
    np.testing.assert_array_equal(decoded.by_level()[15], done.by_level()[15])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=256), min_size=0, max_size=5))
def test_random_frames_decode_to_an_error_value(frames):
    for codec in (
        worker_messages.engine_side_codec(),
        worker_messages.worker_side_codec(),
        client_messages.engine_side_codec(),
        client_messages.client_side_codec(),
    ):
        result = codec.decode(frames)
        assert isinstance(result, DecodeError) or isinstance(result, msgspec.Struct)


def _header_with_array(index: int, dtype: str, shape: list[int], code: int = 1) -> bytes:
    ext = msgspec.msgpack.Ext(code, msgspec.msgpack.encode((index, dtype, shape)))
    item = {"request_id": "j", "prompt": "p", "seed": 1, "latent": ext}
    return msgspec.msgpack.encode(
        {
            "type": "generate",
            "batch_id": 1,
            "level": 5,
            "steps": 50,
            "width": 64,
            "height": 64,
            "guidance_scale": 5.0,
            "output_format": "png",
            "items": [item],
        }
    )


@pytest.mark.parametrize(
    ("header", "frames", "reason"),
    [
        (_header_with_array(1, "float16", [4, 8, 8]), [b"\0" * 512], "missing"),
        (_header_with_array(0, "float16", [4, 8, 8]), [b"\0" * 100], "does not match"),
        (_header_with_array(0, "float16", [4, 8, 8]), [b"\0" * 1024], "does not match"),  # a frame too long
        (_header_with_array(-1, "float16", [4, 8, 8]), [b"\0" * 512], "missing"),  # not the last frame
        # an optional array's field, not left None
        (_header_with_array(0, "float16", [4, 8, 8], code=7), [b"\0" * 512], "unknown extension code 7"),
        (_header_with_array(0, "object", [1]), [b"\0" * 8], "not allowed"),
        (_header_with_array(0, "float64", [1]), [b"\0" * 8], "not allowed"),  # twice a latent's size
        (_header_with_array(0, "float16", [-1]), [b""], "negative"),
        # nine dimensions of 1 would be a valid array: refused for its dimensions alone (tens of thousands of huge
        # ones took the size check seconds to hours)
        (_header_with_array(0, "float16", [1] * 9), [b"\0\0"], "at most 8"),
        (msgspec.msgpack.encode({"type": "no_such_kind"}), [], "Invalid value"),
        (msgspec.msgpack.encode({"type": "abort", "request_ids": "not a list"}), [], "Expected `array`"),
        (b"\xc1", [], "invalid"),
        (b"\x82\xa1x" + b"\x91" * 100_000 + b"\xc0\xa4type\xa5abort", [], "recursion"),  # nested too deep
    ],
)
def test_malformed_multipart_is_refused_with_a_reason(header, frames, reason):
    result = worker_messages.worker_side_codec().decode([header, *frames])
    assert isinstance(result, DecodeError)
    assert reason.lower() in result.reason.lower()


def test_too_many_frames_are_refused():
    result = worker_messages.worker_side_codec().decode([b"x"] * 1000)
    assert isinstance(result, DecodeError) and "too many frames" in result.reason


def test_the_largest_batch_with_an_image_and_latents_each_is_not_too_many_frames():
    """MAX_BATCH items of an image and a latent stack each, after the header: the most frames a message may be."""
    done = [
        ItemDone(f"j{i}", Blob(b"img%d" % i), 5, [10], np.full((1, 4, 8, 8), i, dtype=np.float16), 3.0, 45)
        for i in range(MAX_BATCH)
    ]
    frames = worker_messages.worker_side_codec().encode(BatchDone(1, done))
    codec = worker_messages.engine_side_codec()
    decoded = codec.decode(frames).outcomes
    # each item's image and latents are its own frames, not another's
    assert [(bytes(d.image), float(d.latents.max())) for d in decoded] == [(b"img%d" % i, i) for i in range(MAX_BATCH)]
    result = codec.decode([*frames, b""])
    assert isinstance(result, DecodeError) and "too many frames" in result.reason


def test_an_array_not_contiguous_in_memory_travels_as_its_values():
    latent = np.arange(4 * 8 * 8, dtype=np.float16).reshape(4, 8, 8).transpose(0, 2, 1)  # a view, strided
    message = Generate(1, 10, 50, 64, 64, 5.0, "png", [GenerateItem("j", "a cat", 3, latent)])
    frames = worker_messages.engine_side_codec().encode(message)
    decoded = worker_messages.worker_side_codec().decode(frames)
    np.testing.assert_array_equal(decoded.items[0].latent, latent)


def test_a_codec_keeps_no_hold_on_the_frames_it_encoded_or_decoded():
    """Held after the call, a message's frames (megabytes of latents) stayed alive until the next one."""
    frame = bytearray(b"\0" * 512)
    result = worker_messages.worker_side_codec().decode([_header_with_array(0, "float16", [4, 8, 8]), frame])
    del result
    frame.extend(b"\0")  # a buffer still viewed cannot be resized: BufferError
    latent = bytearray(b"\0" * 512)
    item = GenerateItem("j", "a cat", 3, np.frombuffer(latent, np.float16))
    message = Generate(1, 10, 50, 64, 64, 5.0, "png", [item])
    frames = worker_messages.engine_side_codec().encode(message)
    del frames, message, item
    latent.extend(b"\0")


def test_only_its_own_types_are_encoded():
    class Foreign:
        pass

    with pytest.raises(NotImplementedError):
        worker_messages.engine_side_codec().encode(worker_messages.Abort([Foreign()]))  # type: ignore[list-item]


class _ImageResultBefore(msgspec.Struct, frozen=True):
    """An image of a reply as clients made before 2026-12-05 decode it: without `estimated_quality`."""

    image: Blob
    seed: int
    level: int
    similarity: float | None
    queue_ms: float
    run_ms: float
    steps_run: int
    worker: str
    quality: float | None = None
    simulated: bool = False


class _ImagesBefore(msgspec.Struct, tag="images", frozen=True):
    request_id: str
    images: list[_ImageResultBefore]


def test_an_image_reply_decodes_on_clients_older_and_newer_than_its_estimated_quality():
    """A field added to a reply is skipped by a client that does not know it (its structs do not forbid unknown
    fields), and a reply without it, from an engine before it, decodes with it None."""
    image = client_messages.ImageResult(Blob(b"png"), 1, 25, 0.97, 1.5, 900.0, 25, "w/1", estimated_quality=96.8)
    sent = client_messages.engine_side_codec().encode(client_messages.Images("r1", [image]))
    (old,) = Codec(_ImagesBefore).decode(sent).images
    assert (bytes(old.image), old.level, old.similarity, old.quality) == (b"png", 25, 0.97, None)
    before = Codec(_ImagesBefore).encode(
        _ImagesBefore("r1", [_ImageResultBefore(Blob(b"png"), 1, 0, None, 1, 9, 50, "w")])
    )
    (new,) = client_messages.client_side_codec().decode(before).images
    assert (bytes(new.image), new.level, new.estimated_quality) == (b"png", 0, None)


class _GenerateBefore(msgspec.Struct, tag="generate", frozen=True, forbid_unknown_fields=True):
    """A request as engines before `exact` (2026-12-02) decode it, as strictly as engines do."""

    request_id: str
    prompt: str
    negative_prompt: str | None = None
    n: int = 1
    width: int = 0
    height: int = 0
    steps: int = 0
    guidance_scale: float = 5.0
    seed: int | None = None
    slo_ms: float | None = None
    output_format: str = "png"
    output_compression: int | None = None


def test_a_request_decodes_on_an_engine_older_than_a_field_it_leaves_at_its_default():
    """A request left out every field at its default: sent at its default (exact false), a field added since an
    engine was made had that engine refuse every request of a newer client, unknown field named, whatever it asked.
    A request that sets the field is still refused there, naming it: that engine cannot do what it asks."""
    codec = client_messages.client_side_codec()
    older = Codec(_GenerateBefore)
    plain = older.decode(codec.encode(client_messages.Generate("r1", "a cat", width=64, exact=False)))
    assert plain == _GenerateBefore("r1", "a cat", width=64)
    refused = older.decode(codec.encode(client_messages.Generate("r2", "a cat", exact=True)))
    assert isinstance(refused, DecodeError) and "exact" in refused.reason
    # and the engine of today reads each field left out as its default
    sent = client_messages.engine_side_codec().decode(codec.encode(client_messages.Generate("r3", "a cat", n=1)))
    assert sent == client_messages.Generate("r3", "a cat")


def test_numpy_scalars_are_sent_as_python_numbers():
    codec = client_messages.client_side_codec()
    request = client_messages.Generate("r1", "a cat", seed=np.int64(7), guidance_scale=np.float32(5.5))
    sent = client_messages.engine_side_codec().decode(codec.encode(request))
    assert (sent.seed, sent.guidance_scale) == (7, 5.5)
    assert type(sent.seed) is int and type(sent.guidance_scale) is float


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"prompt": ""}, "length >= 1"),
        ({"output_format": "png\n"}, "Invalid enum value 'png\\n'"),
        ({"output_compression": 101}, "<= 100"),
    ],
)
def test_client_request_bounds_are_part_of_decoding(fields, reason):
    codec = client_messages.engine_side_codec()
    frames = client_messages.client_side_codec()._encoder.encode(
        {"type": "generate", "request_id": "r", "prompt": "a", "n": 1, **fields}
    )
    result = codec.decode([frames])
    assert isinstance(result, DecodeError) and reason in result.reason


def test_a_long_value_refused_is_not_echoed_whole():
    # the reason goes back to the peer and into the engine's log: a megabyte value would be both
    frames = client_messages.client_side_codec()._encoder.encode(
        {"type": "generate", "request_id": "r", "prompt": "a", "output_format": "g" * 1_000_000}
    )
    result = client_messages.engine_side_codec().decode([frames])
    assert isinstance(result, DecodeError)
    assert len(result.reason) <= 300
    assert result.reason.startswith("Invalid enum value 'ggg") and result.reason.endswith("at `$.output_format`")


def _valid_messages():
    latent = np.ones((4, 8, 8), np.float16)
    return [
        (worker_messages.engine_side_codec(), worker_messages.worker_side_codec(), _generate_with_latent()),
        (
            worker_messages.worker_side_codec(),
            worker_messages.engine_side_codec(),
            BatchDone(1, [ItemDone("j", Blob(b"img"), 5, [10, 15], np.stack([latent, latent]), 3.0, 45)]),
        ),
        (
            client_messages.client_side_codec(),
            client_messages.engine_side_codec(),
            client_messages.Generate("r", "a prompt", n=2, width=64, height=64, seed=3),
        ),
    ]


@settings(max_examples=400, deadline=None)
@given(
    which=st.integers(0, 2),
    frame=st.integers(0, 10),
    position=st.integers(0, 10_000),
    value=st.integers(0, 255),
    cut=st.integers(0, 10_000),
    drop_frame=st.booleans(),
)
def test_mutated_frames_decode_to_a_message_or_an_error(which, frame, position, value, cut, drop_frame):
    sender, receiver, message = _valid_messages()[which]
    frames = [bytearray(memoryview(f).cast("B")) for f in sender.encode(message)]
    target = frames[frame % len(frames)]
    if target:
        target[position % len(target)] = value
        del target[cut % (len(target) + 1) :]
    if drop_frame and len(frames) > 1:
        frames.pop()
    result = receiver.decode([bytes(f) for f in frames])
    assert isinstance(result, (DecodeError, msgspec.Struct))
    if which == 2 and isinstance(result, DecodeError) and frames:
        # the client door words each refusal from the header again: that never raises either
        assert isinstance(client_messages.refusal_words(result.reason, bytes(frames[0])), str)


def test_a_request_id_is_salvaged_from_nesting_too_deep_to_decode_as_nothing():
    nested = b"\x82\xa1x" + b"\x91" * 100_000 + b"\xc0" + b"\xaarequest_id\xa1a"
    assert client_messages.salvage_request_id(nested) == ""


@pytest.mark.parametrize(
    ("value", "kind"), [([[[]] * 10] * 20_000, "list"), ({str(i): [] for i in range(20_000)}, "map")]
)
def test_a_large_list_or_map_refused_is_named_by_its_size_not_read_back(value, kind):
    """The client door quotes the value it refused: it read the whole message back to do so, 37 ms and 11 MB for
    220 KB of empty lists, and a client sending such requests held the engine's loop for seconds at a time."""
    header = msgspec.msgpack.encode({"type": "generate", "request_id": "r", "prompt": "p", "n": value})
    reason = client_messages.engine_side_codec().decode([header]).reason
    tracemalloc.start()
    try:
        words = client_messages.refusal_words(reason, header)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert words == f"n must be an integer, got a {kind} of {len(msgspec.msgpack.encode(value))} bytes"
    assert peak < 100_000  # none of its items built
    small = msgspec.msgpack.encode({"type": "generate", "request_id": "r", "prompt": "p", "n": [1, 2]})
    assert client_messages.refusal_words(reason, small) == "n must be an integer, got [1, 2]"  # still quoted


@pytest.mark.parametrize("sent", [msgspec.msgpack.Ext(5, b"x" * 1000), [msgspec.msgpack.Ext(5, b"")]])
def test_an_extension_value_refused_is_named_by_its_type_not_by_where_the_engine_holds_it(sent):
    """msgpack's extension values have no Python spelling: the client was told `n must be an integer, got
    <msgspec.msgp...x7f35a3654370>`, the engine's own memory address."""
    header = msgspec.msgpack.encode({"type": "generate", "request_id": "r", "prompt": "p", "n": sent})
    reason = client_messages.engine_side_codec().decode([header]).reason
    words = client_messages.refusal_words(reason, header)
    assert "0x" not in words and words.startswith("n must be an integer, got ")
    assert "a msgpack ext of type 5" in words
