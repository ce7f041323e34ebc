"""Images kept for `response_format=url`: bounded in bytes, each kept for a TTL."""

from __future__ import annotations

import enum
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
# what one kept image holds besides its bytes: its name, the bytes object's header, the expiry and the entry. 290
# bytes measured with tracemalloc (CPython 3.11); uncounted, a budget of small images held 5 times itself (a flat
# 64x64 WEBP takes 70 bytes: 256 MiB of them held 1.3 GB)
ENTRY_BYTES = 320
# the smallest image a worker could send: Pillow's smallest encoding of any picture (1x1, a lossless WEBP) takes 34
# bytes. A store smaller than that and its entry holds no image at all: it answered every response_format url with a
# 400, after making the images (--image-url-store-bytes 1 was taken without a word)
MIN_STORE_BYTES = ENTRY_BYTES + 34
# the names of images freed, expired or evicted before their TTL ended, are remembered so that their 404 can say which
# and which flag to raise. One takes 174 bytes (tracemalloc, CPython 3.11), outside the byte budget: the latest are
# kept, as many as 1% of the budget holds (15,000 for 256 MiB: at SD-XL scale, 1.5 MB PNGs, they cover 23 GB of images
# freed), or 16 for a budget too small for that; past it, the oldest are told apart no more
GONE_NAME_BYTES = 176
MIN_GONE_NAMES = 16
# an image's name: the store's own prefix (RUN_CHARS, drawn as it is made), the image's unguessable part, its format.
# The prefix tells a name another store handed out (an engine that ran on the address before a restart, or another
# behind the same load balancer) from one this store forgot or never made
RUN_CHARS = 6
_NAME = re.compile(rf"[\w-]{{{RUN_CHARS}}}[\w-]{{24}}\.({'|'.join(CONTENT_TYPES)})", re.ASCII)


class ImagesTooLarge(ValueError):
    pass


class StoredImage(NamedTuple):
    data: bytes
    content_type: str
    seconds_left: float  # until its TTL ends


class Missing(enum.Enum):
    """Why a name finds no image, as far as the store can tell."""

    EXPIRED = "expired"  # its TTL ended
    EVICTED_EARLY = "evicted_early"  # removed before its TTL ended, to make room for newer images
    # handed out by another store: the engine restarted since, or another engine answered (images live in the memory
    # of the one that made them)
    OTHER_ENGINE = "other_engine"
    UNKNOWN = "unknown"  # freed and forgotten, or never handed out


class ImageFiles:
    def __init__(self, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._files: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        # the names freed, oldest first: when their TTL ended or would have
        self._gone_names: OrderedDict[str, float] = OrderedDict()
        self._gone_names_kept = max(MIN_GONE_NAMES, max_bytes // 100 // GONE_NAME_BYTES)
        self.evicted_early = 0  # images removed before their TTL ended, ever
        self._run = secrets.token_urlsafe(RUN_CHARS * 3 // 4)

    @property
    def bytes_held(self) -> int:
        return self._bytes

    @property
    def images_held(self) -> int:
        return len(self._files)

    def put(self, images: list[bytes], output_format: str) -> list[str]:
        """Stores one response's images together; returns their file names (unguessable).

        Raises ImagesTooLarge, storing and evicting nothing, when they are more than the whole budget: stored,
        they would push out every other client's images, then the first of their own before the response is
        sent (or all of them at the next sweep)."""
        total = sum(len(data) + ENTRY_BYTES for data in images)
        if total > self.max_bytes:
            raise ImagesTooLarge(
                f"the {len(images)} image(s) take {total} bytes, more than the {self.max_bytes} bytes kept for"
                " image URLs (--image-url-store-bytes): ask for response_format b64_json"
            )
        now = self._clock()
        self._evict(now, room_for=total)
        names = [f"{self._run}{secrets.token_urlsafe(18)}.{output_format}" for _ in images]
        for name, data in zip(names, images, strict=True):
            self._files[name] = (now + self.ttl_s, data)
        self._bytes += total
        return names

    def get(self, name: str) -> StoredImage | None:
        entry = self._files.get(name)
        now = self._clock()
        if entry is None or entry[0] < now:
            return None
        return StoredImage(entry[1], CONTENT_TYPES[name.rsplit(".", 1)[1]], entry[0] - now)

    def why_missing(self, name: str) -> Missing:
        """Why `get(name)` found nothing. One evicted early is told as expired once its TTL would have ended: by then
        it would have been gone all the same, and --image-url-ttl is the flag that would have kept it."""
        expires = self._files[name][0] if name in self._files else self._gone_names.get(name)
        if expires is None:
            made_elsewhere = _NAME.fullmatch(name) and not name.startswith(self._run)
            return Missing.OTHER_ENGINE if made_elsewhere else Missing.UNKNOWN
        return Missing.EVICTED_EARLY if expires >= self._clock() else Missing.EXPIRED

    def missing_message(self, name: str) -> str:
        """What became of an image, and which flag keeps such images longer, for its 404: one pushed out for room got
        the same "may have expired" as one past its TTL, and an operator whose store turned over in minutes could not
        tell."""
        ttl = f"images are kept {self.ttl_s:g} s (--image-url-ttl)"
        room = f"at most {self.max_bytes} bytes of them (--image-url-store-bytes)"
        why = self.why_missing(name)
        if why is Missing.EXPIRED:
            return f"this image has expired: {ttl}"
        if why is Missing.EVICTED_EARLY:
            return f"this image was removed before its TTL ended, to make room for newer ones: the engine keeps {room}"
        if why is Missing.OTHER_ENGINE:
            # told "expired, evicted or never was", an operator raised the flags, which keep no image across a restart
            return (
                "this image was made by another engine process: this one has restarted since, or another behind the"
                " same address made it. Images are kept in the memory of the engine that made them, and lost when it"
                " stops; behind a load balancer, keep a client on one engine, or ask for response_format b64_json"
            )
        return (
            f"no such image: it expired ({ttl}), was removed sooner to make room (the engine keeps {room}), or never"
            " was"
        )

    def drop_expired(self) -> None:
        """Frees the images past their TTL (the engine calls it periodically: else only a put would)."""
        self._evict(self._clock(), room_for=0)

    def _evict(self, now: float, room_for: int) -> None:
        # oldest first: insertion order is expiry order, since the TTL is fixed
        while self._files:
            name, (expires, data) = next(iter(self._files.items()))
            if expires >= now:
                if self._bytes + room_for <= self.max_bytes:
                    return
                self.evicted_early += 1
            del self._files[name]
            self._bytes -= len(data) + ENTRY_BYTES
            self._gone_names[name] = expires
            if len(self._gone_names) > self._gone_names_kept:
                self._gone_names.popitem(last=False)
