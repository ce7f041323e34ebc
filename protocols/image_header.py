"""The format and size an encoded image says it has, read from its header alone.

The engine checks every image a worker answers against what its batch asked for (engine/dispatch/dispatcher.py): a
worker of another build, another model, or a bug may answer any bytes. It checks on the event loop, so it reads a few
dozen bytes and never decodes: Pillow's open reads a WebP whole into a decoder (0.4 ms for a 1024x1024 one, where
these read any image in microseconds). The pixels after a header that reads right are not checked.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG markers that start a frame, and so hold its size: SOF0-SOF15 but DHT (C4), JPG (C8) and DAC (CC)
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# markers with no length after them: TEM and the restart markers
_JPEG_ALONE = frozenset({0x01, *range(0xD0, 0xD8)})
# segments read before a frame's: an encoder writes a handful (APPn, DQT, DRI, COM); a peer sending megabytes of
# tiny segments must not keep the loop for seconds
_JPEG_MAX_SEGMENTS = 1000
_VP8_START_CODE = b"\x9d\x01\x2a"


class ImageHeader(NamedTuple):
    format: str  # as a request names it: png, jpeg or webp
    width: int
    height: int


def read_header(data: bytes) -> ImageHeader | None:
    """The image's format and size, or None when `data` does not start as a PNG, JPEG or WebP image does."""
    try:
        if data.startswith(_PNG_SIGNATURE):
            return _png(data)
        if data.startswith(b"\xff\xd8"):
            return _jpeg(data)
        if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
            return _webp(data)
    except struct.error:  # cut short inside the header
        return None
    return None


def _png(data: bytes) -> ImageHeader | None:
    if data[12:16] != b"IHDR":  # the first chunk, always
        return None
    width, height = struct.unpack_from(">II", data, 16)
    return ImageHeader("png", width, height)


def _jpeg(data: bytes) -> ImageHeader | None:
    at = 2
    for _ in range(_JPEG_MAX_SEGMENTS):
        if data[at : at + 1] != b"\xff":
            return None
        marker = data[at + 1 : at + 2]
        if marker == b"\xff":  # fill byte before a marker
            at += 1
            continue
        code = marker[0] if marker else -1
        if code in _JPEG_ALONE:
            at += 2
            continue
        if code in _JPEG_FRAMES:
            height, width = struct.unpack_from(">HH", data, at + 5)
            return ImageHeader("jpeg", width, height)
        if code in (-1, 0xDA, 0xD9):  # cut short, or the scan (or the end) before any frame
            return None
        (length,) = struct.unpack_from(">H", data, at + 2)
        if length < 2:
            return None
        at += 2 + length
    return None


def _webp(data: bytes) -> ImageHeader | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: a VP8 key frame, its size 14 bits each after the start code
        if data[23:26] != _VP8_START_CODE:
            return None
        width, height = struct.unpack_from("<HH", data, 26)
        return ImageHeader("webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L":  # lossless: a signature byte, then width - 1 and height - 1 in 14 bits each
        if data[20:21] != b"\x2f":
            return None
        (bits,) = struct.unpack_from("<I", data, 21)
        return ImageHeader("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":  # extended (metadata, alpha, animation): the canvas's width - 1 and height - 1, 24 bits
        if len(data) < 30:
            return None
        return ImageHeader("webp", int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1)
    return None


def mismatch(data: bytes, fmt: str, width: int, height: int) -> str | None:
    """How `data` differs from a `fmt` image of width x height, in words (None: it reads as one)."""
    header = read_header(data)
    if header == (fmt, width, height):
        return None
    found = f"a {header.width}x{header.height} {header.format}" if header else "bytes that are no png, jpeg or webp"
    return f"{found} where a {width}x{height} {fmt} was asked"
