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


def encode_image(image: Image.Image, fmt: str) -> bytes:
    options = _SAVE_OPTIONS.get(fmt)
    if options is None:
        raise ValueError(f"unsupported output format {fmt!r}; expected one of {sorted(_SAVE_OPTIONS)}")
    if image.mode != "RGB":  # JPEG has no alpha; keep every format alike
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return buffer.getvalue()
