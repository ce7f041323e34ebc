"""protocols/image_header.py reads the format and size of what Pillow writes, in every way a worker may write it, and
answers None (never raises) for anything else: the engine runs it on every image a worker answers."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from protocols.image_header import ImageHeader, mismatch, read_header
from workers.image_encoding import encode_image

# sides that differ, odd ones, and the largest a worker may offer (protocols/limits.py MAX_IMAGE_SIZE)
SIZES = [(64, 64), (136, 72), (8, 4096), (4096, 8), (1, 1), (1023, 577)]
EXIF = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00"
# the encoders' options that change the header: lossless WebP (VP8L), a WebP with metadata (VP8X), a progressive JPEG
# (SOF2) and one with EXIF before its frame
SAVES = {
    "webp lossless": ("webp", {"format": "WEBP", "lossless": True}),
    "webp with exif": ("webp", {"format": "WEBP", "exif": EXIF}),
    "jpeg progressive": ("jpeg", {"format": "JPEG", "progressive": True}),
    "jpeg with exif": ("jpeg", {"format": "JPEG", "exif": EXIF, "quality": 5}),
}


def noise(width: int, height: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(width * height).integers(0, 255, (height, width, 3), np.uint8))


@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_what_a_worker_encodes_reads_as_its_format_and_size(fmt, size):
    for compression in (None, 0, 100):
        assert read_header(encode_image(noise(*size), fmt, compression)) == ImageHeader(fmt, *size)


@pytest.mark.parametrize("save", list(SAVES))
def test_other_encoder_options_read_too(save):
    fmt, options = SAVES[save]
    for size in SIZES:
        buffer = io.BytesIO()
        noise(*size).save(buffer, **options)
        assert read_header(buffer.getvalue()) == ImageHeader(fmt, *size)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_a_header_cut_short_or_garbled_is_none_never_an_exception(fmt):
    image = encode_image(noise(136, 72), fmt)
    for end in range(0, 800):
        header = read_header(image[:end])
        assert header is None or header == (fmt, 136, 72)  # cut after its size: the pixels are not read
    rng = np.random.default_rng(0)
    for _ in range(2000):
        garbled = bytearray(image[:200])
        garbled[rng.integers(0, 200)] = rng.integers(0, 256)
        read_header(bytes(garbled))
    for start in (b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBP"):
        for _ in range(500):
            read_header(start + os.urandom(40))


def test_a_jpeg_of_endless_segments_is_given_up_on():
    """A peer's bytes may hold segment after segment before any frame: the reader stops after a bound."""
    assert read_header(b"\xff\xd8" + b"\xff\xfe\x00\x02" * 100_000 + encode_image(noise(8, 8), "jpeg")[2:]) is None


def test_mismatch_says_what_came_and_what_was_asked():
    png = encode_image(noise(64, 72), "png")
    assert mismatch(png, "png", 64, 72) is None
    assert mismatch(png, "png", 72, 64) == "a 64x72 png where a 72x64 png was asked"
    assert mismatch(png, "webp", 64, 72) == "a 64x72 png where a 64x72 webp was asked"
    assert mismatch(b"img", "jpeg", 8, 8) == "bytes that are no png, jpeg or webp where a 8x8 jpeg was asked"
