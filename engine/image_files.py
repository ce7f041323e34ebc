"""Images kept for `response_format=url`: bounded in bytes, each kept for a TTL."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


class ImageFiles:
    def __init__(self, max_bytes: int, ttl_s: float):
        self._max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._files: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0

    def put(self, data: bytes, output_format: str) -> str:
        """Stores an image; returns its file name (unguessable)."""
        name = f"{secrets.token_urlsafe(18)}.{output_format}"
        self._evict(time.monotonic(), room_for=len(data))
        self._files[name] = (time.monotonic() + self._ttl_s, data)
        self._bytes += len(data)
        return name

    def get(self, name: str) -> tuple[bytes, str] | None:
        entry = self._files.get(name)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1], CONTENT_TYPES[name.rsplit(".", 1)[1]]

    def _evict(self, now: float, room_for: int) -> None:
        # oldest first: insertion order is expiry order, since the TTL is fixed
        while self._files:
            name, (expires, data) = next(iter(self._files.items()))
            if expires >= now and self._bytes + room_for <= self._max_bytes:
                return
            del self._files[name]
            self._bytes -= len(data)
