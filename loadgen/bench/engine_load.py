"""The load clients of `argus bench engine`: the same client code drives the engine and its bare baselines.

Over ZeroMQ, one asyncio DEALER with many requests in flight; over HTTP, an
aiohttp session with a connection pool. Each door has a closed loop (peak: a
new request as each reply comes back) and an open loop (latency: requests paced
at a fixed rate whatever the replies).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

from engine.logs.plurals import counted
from loadgen.stats import percentile

# every request of `argus bench engine` and `argus bench scale` (loadgen/bench/scale_load.py) asks for it
PROMPT = "a photograph of a red fox in a snowy forest, golden light"
# a ZeroMQ peer that is gone (or silent) never fails a receive, it only never answers: past its lead-in and
# measured time, a closed-loop run waits this long for the reply that ends it, then fails rather than hang; an
# HTTP request waits as long for its response
NO_REPLY_S = 30.0
# the HTTP open loop's pooled connections, at the least: enough that pacing, not the pool, decides when a request goes
OPEN_LOOP_POOL = 256


# -- ZeroMQ client -----------------------------------------------------------------------
class ZmqLoad:
    """One DEALER, many requests in flight; latency per reply from its send."""

    def __init__(self, address: str, size: int):
        import zmq
        import zmq.asyncio

        from protocols.client_messages import Generate, client_side_codec
        from protocols.sockets import make_socket

        self._context = zmq.asyncio.Context()
        self._socket = make_socket(self._context, zmq.DEALER, connect=address)
        self._codec = client_side_codec()
        self._generate = Generate
        self._size = size
        self._prefix = uuid.uuid4().hex[:8]
        self._count = 0
        self.sent_count = 0
        self.sent: dict[str, float] = {}

    def send(self) -> None:
        request_id = f"{self._prefix}-{self._count}"
        self._count += 1
        self.sent_count = self._count
        frames = self._codec.encode(self._generate(request_id, PROMPT, width=self._size, height=self._size))
        self.sent[request_id] = time.perf_counter()
        # a DEALER below its high-water mark sends at once; the future needs no await
        self._socket.send_multipart(frames, copy=False)

    async def receive(self):
        """(reply, seconds since its request was sent, reply frames' total bytes); waits for ever."""
        frames = await self._socket.recv_multipart(copy=False)
        now = time.perf_counter()
        reply = self._codec.decode(frames)
        started = self.sent.pop(getattr(reply, "request_id", ""), now)
        return reply, now - started, frames

    async def drain(self, timeout_s: float = 20.0) -> None:
        import asyncio

        deadline = time.perf_counter() + timeout_s
        while self.sent and time.perf_counter() < deadline:
            try:
                await asyncio.wait_for(self.receive(), max(0.01, deadline - time.perf_counter()))
            except TimeoutError:
                break
        if self.sent:
            raise RuntimeError(f"{counted(len(self.sent), 'request')} never answered")

    def close(self) -> None:
        self._socket.close(linger=0)
        self._context.term()


async def first_reply(address: str, size: int):
    """One request's (reply, its frames), or a RuntimeError after NO_REPLY_S without one."""
    import asyncio

    client = ZmqLoad(address, size)
    try:
        client.send()
        async with asyncio.timeout(NO_REPLY_S):
            reply, _, frames = await client.receive()
    except TimeoutError:
        raise RuntimeError(f"{address} did not answer a request in {NO_REPLY_S:g} s") from None
    finally:
        client.close()
    return reply, frames


async def zmq_closed_loop(address: str, args: argparse.Namespace, duration_s: float) -> dict:
    import asyncio

    from protocols.client_messages import Images

    client = ZmqLoad(address, args.size)
    try:
        for _ in range(args.concurrency):
            client.send()
        begin = time.perf_counter() + args.warmup_s
        end = begin + duration_s
        done = failed = 0
        # one deadline for the whole loop, not one per receive: the client's own cost is part of what it measures
        async with asyncio.timeout(args.warmup_s + duration_s + NO_REPLY_S):
            while True:
                reply, _, _ = await client.receive()
                now = time.perf_counter()
                if now >= end:
                    break
                if now >= begin:
                    done += 1
                    failed += not isinstance(reply, Images)
                client.send()
        await client.drain()
    except TimeoutError:
        raise RuntimeError(f"{address} stopped answering: no reply for {NO_REPLY_S:g} s past the run") from None
    finally:
        client.close()
    # total: every request of the run, lead-in and drain included (what server CPU is divided by)
    return {"rps": done / duration_s, "replies": done, "not_images": failed, "total": client.sent_count}


async def zmq_open_loop(address: str, args: argparse.Namespace, rate: float, duration_s: float) -> dict:
    import asyncio

    from protocols.client_messages import Images

    client = ZmqLoad(address, args.size)
    total = max(1, int(rate * (args.warmup_s + duration_s)))
    latencies: list[float] = []
    failed = 0

    async def read() -> None:
        nonlocal failed
        for _ in range(total):
            reply, seconds, _ = await client.receive()
            latencies.append(seconds)
            failed += not isinstance(reply, Images)

    reader = asyncio.create_task(read())
    try:
        send_s, late = await _paced(rate, total, client.send)
        await asyncio.wait_for(reader, NO_REPLY_S)
    except TimeoutError:  # bare, it said neither which server nor what
        raise RuntimeError(f"{address} stopped answering: no reply for {NO_REPLY_S:g} s past the run") from None
    finally:
        # stopped before its socket closes: a Ctrl-C while sending left it to read the closed socket, and a
        # "Task exception was never retrieved" traceback followed the one-line "interrupted"
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        client.close()
    skip = int(rate * args.warmup_s)
    measured = latencies[skip:]  # replies come back in about send order
    return _latency_summary(measured, total, send_s, late[skip:], rate, failed)


# the pacer's shortest sleep: below the loop's timer resolution a sleep returns at once, and a
# client spinning on it would take a core from the servers it measures
_PACE_TICK_S = 0.001


async def _paced(rate: float, total: int, send) -> tuple[float, list[float]]:
    """Calls send() total times at `rate` per second: what is due each tick (at most 1 ms apart), catching up
    after a late wake-up. Returns the time it took and how late each send went out, in seconds.

    Latency is timed from the actual send, so a client too slow to keep its schedule would understate it
    (coordinated omission): its lateness is reported beside the latency, to judge the figure by."""
    import asyncio

    started = time.perf_counter()
    late: list[float] = []
    while len(late) < total:
        due = min(total, int((time.perf_counter() - started) * rate) + 1)
        while len(late) < due:
            late.append(max(0.0, time.perf_counter() - started - len(late) / rate))
            send()
        next_at = started + len(late) / rate
        await asyncio.sleep(max(_PACE_TICK_S, next_at - time.perf_counter()))
    return time.perf_counter() - started, late


def _latency_summary(
    latencies: list[float], total: int, send_s: float, late: list[float], rate: float, failed: int
) -> dict:
    """`late`: how late each measured request was sent (see _paced)."""
    ms = [x * 1000.0 for x in latencies]
    return {
        "rate_rps": rate,
        "total": total,
        "achieved_send_rps": total / send_s if send_s > 0 else float("nan"),
        "send_late_p99_ms": percentile([x * 1000.0 for x in late], 99),
        "requests": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else float("nan"),
        "not_images": failed,
    }


# -- HTTP client ---------------------------------------------------------------------------
class HttpLoad:
    def __init__(self, url: str, size: int, pool: int):
        import aiohttp

        from loadgen.stale_retry import pooled_session

        self._url = url + "/v1/images/generations"
        self._body = json.dumps({"prompt": PROMPT, "size": f"{size}x{size}"}).encode()
        self._session = pooled_session(
            connector=aiohttp.TCPConnector(limit=pool, limit_per_host=pool),
            headers={"Content-Type": "application/json"},
            # aiohttp's default waits 5 minutes a request: a hung server held the run that long per request
            timeout=aiohttp.ClientTimeout(sock_read=NO_REPLY_S),
        )

    async def post(self) -> tuple[int, float, bytes]:
        from loadgen.stale_retry import post

        started = time.perf_counter()
        try:
            # sent again on a new connection where the pooled one it went on was closed by the engine as idle
            status, _, body = await post(self._session, self._url, data=self._body)
            return status, time.perf_counter() - started, body
        except TimeoutError:
            raise RuntimeError(f"{self._url} stopped answering: no response for {NO_REPLY_S:g} s") from None

    async def close(self) -> None:
        await self._session.close()


async def http_closed_loop(url: str, args: argparse.Namespace, duration_s: float) -> dict:
    import asyncio

    client = HttpLoad(url, args.size, args.http_concurrency)
    begin = time.perf_counter() + args.warmup_s
    end = begin + duration_s
    counts = {"done": 0, "not_ok": 0, "total": 0}

    async def loop() -> None:
        while True:
            status, _, _ = await client.post()
            counts["total"] += 1
            now = time.perf_counter()
            if now >= end:
                return
            if now >= begin:
                counts["done"] += 1
                counts["not_ok"] += status != 200

    try:
        await asyncio.gather(*(loop() for _ in range(args.http_concurrency)))
    finally:
        await client.close()
    return {
        "rps": counts["done"] / duration_s,
        "replies": counts["done"],
        "not_images": counts["not_ok"],
        "total": counts["total"],
    }


async def http_open_loop(url: str, args: argparse.Namespace, rate: float, duration_s: float) -> dict:
    import asyncio

    from loadgen.cancelling import cancel_and_wait

    client = HttpLoad(url, args.size, max(args.http_concurrency, OPEN_LOOP_POOL))
    total = max(1, int(rate * (args.warmup_s + duration_s)))
    skip = int(rate * args.warmup_s)
    tasks: list[asyncio.Task] = []
    try:
        send_s, late = await _paced(rate, total, lambda: tasks.append(asyncio.create_task(client.post())))
        results = await asyncio.wait_for(asyncio.gather(*tasks), 60.0)
    finally:
        # a Ctrl-C while sending, or one request's failure, left the others in flight: each then failed on the
        # closed session, a "Task exception was never retrieved" traceback after the one-line "interrupted"
        await cancel_and_wait(tasks)
        await client.close()
    measured = results[skip:]
    failed = sum(status != 200 for status, _, _ in measured)
    return _latency_summary([seconds for _, seconds, _ in measured], total, send_s, late[skip:], rate, failed)
