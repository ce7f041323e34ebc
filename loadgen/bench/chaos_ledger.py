"""What came back on the wire, per request id, through the two doors (chaos and overload runs)."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from loadgen.cancelling import cancel_and_wait
from loadgen.stats import percentile

PROMPT = "a lighthouse on a cliff at dusk, oil painting"


# -- what came back, per request id ----------------------------------------------------------
@dataclass
class Ledger:
    """Every request sent and every reply seen on the wire, by request id."""

    sent: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> (door, perf_counter at send)
    replies: dict[str, list[tuple[str, str, float]]] = field(default_factory=dict)  # id -> [(kind, code, at)]
    unexpected: int = 0  # replies naming an id never sent
    undecodable: int = 0
    transport_errors: Counter = field(default_factory=Counter)  # HTTP exchanges that ended without a response
    http_busy_without_retry_after: int = 0

    def record_sent(self, request_id: str, door: str) -> None:
        self.sent[request_id] = (door, time.perf_counter())

    def record_reply(self, request_id: str, kind: str, code: str = "") -> None:
        if request_id not in self.sent:
            self.unexpected += 1
            return
        self.replies.setdefault(request_id, []).append((kind, code, time.perf_counter()))

    @property
    def unanswered(self) -> int:
        return sum(1 for request_id in self.sent if request_id not in self.replies)

    def summary(self) -> dict[str, Any]:
        outcomes: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        by_door: dict[str, Counter[str]] = {}
        latencies_ms: list[float] = []
        image_latencies_ms: list[float] = []
        busy_latencies_ms: list[float] = []
        duplicates = 0
        duplicate_ids: list[str] = []
        for request_id, (door, sent_at) in self.sent.items():
            seen = self.replies.get(request_id)
            door_counts = by_door.setdefault(door, Counter())
            door_counts["sent"] += 1
            if not seen:
                door_counts["lost"] += 1
                continue
            if len(seen) > 1:
                duplicates += len(seen) - 1
                duplicate_ids.append(request_id)
            kind, code, at = seen[0]
            outcomes[kind] += 1
            door_counts[kind] += 1
            if kind == "error":
                errors[code] += 1
            latency = (at - sent_at) * 1000.0
            latencies_ms.append(latency)
            if kind == "images":
                image_latencies_ms.append(latency)
            elif kind == "busy":
                busy_latencies_ms.append(latency)
        return {
            "sent": len(self.sent),
            "replies": sum(len(r) for r in self.replies.values()),
            "lost": self.unanswered,
            "duplicates": duplicates,
            "outcomes": dict(outcomes),
            "errors": dict(errors),
            "by_door": {door: dict(counts) for door, counts in by_door.items()},
            "p50_ms": finite(percentile(latencies_ms, 50)),
            "p99_ms": finite(percentile(latencies_ms, 99)),
            "max_ms": finite(max(latencies_ms)) if latencies_ms else None,
            "images_p99_ms": finite(percentile(image_latencies_ms, 99)),
            "busy_p99_ms": finite(percentile(busy_latencies_ms, 99)),
            "unexpected_replies": self.unexpected,
            "undecodable_replies": self.undecodable,
            "http_transport_errors": dict(self.transport_errors),
            "http_busy_without_retry_after": self.http_busy_without_retry_after,
            "duplicate_ids": duplicate_ids[:20],
        }


def finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 3)


# -- the two doors -------------------------------------------------------------------------------
class ZmqDoor:
    """One raw DEALER: Generate out, every reply in (a second reply for an id is counted, not dropped)."""

    def __init__(self, address: str, ledger: Ledger, size: int):
        import zmq
        import zmq.asyncio

        from protocols.client_messages import Busy, Cancelled, Error, Generate, Images, client_side_codec
        from protocols.sockets import make_socket

        self._types = {Images: "images", Busy: "busy", Error: "error", Cancelled: "cancelled"}
        self._error = Error
        self._generate = Generate
        self._context = zmq.asyncio.Context()
        self._socket = make_socket(self._context, zmq.DEALER, connect=address)
        self._codec = client_side_codec()
        self._ledger = ledger
        self._size = size
        self._prefix = uuid.uuid4().hex[:8]
        self._count = 0
        self._reader: asyncio.Task | None = None

    def start(self) -> None:
        import asyncio

        self._reader = asyncio.create_task(self._read())

    async def send(self, **fields: Any) -> str:
        request_id = f"z{self._prefix}-{self._count}"
        self._count += 1
        message = self._generate(request_id, PROMPT, width=self._size, height=self._size, **fields)
        self._ledger.record_sent(request_id, "zmq")
        await self._socket.send_multipart(self._codec.encode(message), copy=False)
        return request_id

    async def _read(self) -> None:
        from protocols.codec import DecodeError

        while True:
            reply = self._codec.decode(await self._socket.recv_multipart(copy=False))
            if isinstance(reply, DecodeError):
                self._ledger.undecodable += 1
                continue
            kind = self._types.get(type(reply), "other")
            code = reply.code if isinstance(reply, self._error) else "busy" if kind == "busy" else ""
            self._ledger.record_reply(reply.request_id, kind, code)

    async def close(self) -> None:
        import asyncio

        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self._socket.close(linger=0)
        self._context.term()


class HttpDoor:
    """POST /v1/images/generations, one task per request over a pooled session; the status is the reply."""

    def __init__(self, base_url: str, ledger: Ledger, size: int, timeout_s: float):
        import aiohttp

        self._aiohttp = aiohttp
        self._url = base_url + "/v1/images/generations"
        self._base_url = base_url
        self._body = json.dumps({"prompt": PROMPT, "n": 1, "size": f"{size}x{size}"}).encode()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            headers={"Content-Type": "application/json"},
        )
        self._ledger = ledger
        self._count = 0
        self._prefix = uuid.uuid4().hex[:8]
        self.tasks: set[asyncio.Task] = set()

    def send(self) -> str:
        import asyncio

        request_id = f"h{self._prefix}-{self._count}"
        self._count += 1
        self._ledger.record_sent(request_id, "http")
        task = asyncio.create_task(self._post(request_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return request_id

    async def _post(self, request_id: str) -> None:
        aiohttp = self._aiohttp
        try:
            async with self._session.post(self._url, data=self._body) as response:
                payload = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._ledger.transport_errors[type(exc).__name__] += 1
            return
        if status == 200:
            ok = len(json.loads(payload).get("data", [])) == 1
            self._ledger.record_reply(request_id, "images" if ok else "error", "" if ok else "bad_response")
            return
        try:
            code = json.loads(payload)["error"]["code"] or f"http_{status}"
        except (ValueError, KeyError, TypeError):
            code = f"http_{status}"
        if status == 429:
            if not (retry_after and retry_after.isdigit() and int(retry_after) >= 1):
                self._ledger.http_busy_without_retry_after += 1
            self._ledger.record_reply(request_id, "busy", code)
        else:
            self._ledger.record_reply(request_id, "error", code)

    async def get_json(self, path: str) -> Any:
        async with self._session.get(self._base_url + path) as response:
            return json.loads(await response.read())

    async def get_text(self, path: str) -> str:
        async with self._session.get(self._base_url + path) as response:
            return (await response.read()).decode()

    async def close(self) -> None:
        await cancel_and_wait(self.tasks)
        await self._session.close()
