"""Encodes generated images into the output formats a request may ask for."""

from __future__ import annotations

import io

from PIL import Image

_SAVE_OPTIONS: dict[str, dict[str, object]] = {
    # fastest zlib level: PNG encoding sits on the response path, and at
    # 1024x1024 the default level costs more time than it saves in bytes
    "png": {"format": "PNG", "compress_level": 1},
    "jpeg": {"format": "JPEG", "quality": 90},
    "webp": {"format": "WEBP", "quality": 90},
}


def encode_image(image: Image.Image, fmt: str, compression: int | None = None) -> bytes:
    """`compression` (0-100, OpenAI's output_compression) is the quality of a lossy format; a PNG is lossless
    whatever it says."""
    options = _SAVE_OPTIONS.get(fmt)
    if options is None:
        raise ValueError(f"unsupported output format {fmt!r}; expected one of {sorted(_SAVE_OPTIONS)}")
    if compression is not None and "quality" in options:
        options = {**options, "quality": compression}
    if image.mode != "RGB":  # JPEG has no alpha; keep every format alike
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return buffer.getvalue()
