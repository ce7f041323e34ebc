"""A load generator of `argus bench scale`, run as its own process (`python -m loadgen.bench.scale_load ...`): raw
DEALER sockets and the msgspec codec, an evenly paced open-loop rate from one wall-clock moment on, what came back
written to --out as JSON for the parent to add up."""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
import uuid
from pathlib import Path

from loadgen.bench.engine_load import PROMPT
from loadgen.bench.ports import LOOPBACK


def sleep_until(moment: float) -> None:
    """Until `moment` of the wall clock (time.time()): the parent and its load processes meet at one."""
    time.sleep(max(0.0, moment - time.time()))


def _load(args: argparse.Namespace) -> int:
    """Sends Generate at an even rate from `start_at` on; writes what came back to --out as JSON."""
    import zmq

    from protocols.client_messages import Generate, Images, client_side_codec
    from protocols.sockets import make_socket

    context = zmq.Context()
    sock = make_socket(context, zmq.DEALER, connect=args.address)
    codec = client_side_codec()
    prefix = uuid.uuid4().hex[:8]
    total = max(1, round(args.rate * (args.warmup_s + args.duration_s)))
    sent_at: dict[str, float] = {}
    added_ms: list[float] = []
    send_late_ms: list[float] = []
    answered_in_window = not_images = 0
    gc.disable()  # a collection would stall every request in flight: it would count as latency
    sleep_until(args.start_at)
    # the schedule starts at --start-at, not when this process got there: the parent times the engine's CPU from it,
    # and a process that started late (a busy machine) sends what is due at once, and counts as late
    began = time.perf_counter() - max(0.0, time.time() - args.start_at)
    window = (began + args.warmup_s, began + args.warmup_s + args.duration_s)
    sent = 0
    try:
        while sent < total or sent_at:
            now = time.perf_counter()
            due = min(total, int((now - began) * args.rate) + 1)
            while sent < due:
                request_id = f"{prefix}-{sent}"
                frames = codec.encode(Generate(request_id, PROMPT, width=args.size, height=args.size))
                sent_at[request_id] = time.perf_counter()
                # of the sends due in the window, however late they went: judged by when each went, a process that
                # came up after the window (a loaded machine) counted none of its sends late, an empty list
                due_at = began + sent / args.rate
                if window[0] <= due_at < window[1]:
                    send_late_ms.append(max(0.0, sent_at[request_id] - due_at) * 1000.0)
                sock.send_multipart(frames, copy=False)
                sent += 1
            if sent < total:
                wait_ms = max(1, math.ceil((began + sent / args.rate - time.perf_counter()) * 1000))
            else:
                wait_ms = max(0, math.ceil((window[1] + args.drain_s - time.perf_counter()) * 1000))
                if not wait_ms:
                    break
            if not sock.poll(wait_ms, zmq.POLLIN):
                continue
            while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                reply = codec.decode(sock.recv_multipart(copy=False))
                now = time.perf_counter()
                started = sent_at.pop(getattr(reply, "request_id", ""), None)
                if started is None:
                    continue
                if not isinstance(reply, Images):
                    not_images += 1
                    continue
                if window[0] <= now < window[1]:
                    answered_in_window += 1
                if window[0] <= started < window[1]:
                    added_ms.append((now - started) * 1000.0 - reply.images[0].run_ms)
    finally:
        sock.close(linger=0)
        context.term()
    result = {
        "sent": sent,
        "answered_in_window": answered_in_window,
        "not_images": not_images,
        "unanswered": len(sent_at),
        "added_ms": added_ms,
        "send_late_ms": send_late_ms,
    }
    Path(args.out).write_text(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadgen.bench.scale_load", description="a load generator")
    parser.add_argument("--address", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--warmup-s", type=float, required=True)
    parser.add_argument("--duration-s", type=float, required=True)
    parser.add_argument("--start-at", type=float, required=True, help="wall-clock time (time.time()) to start")
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--drain-s", type=float, required=True, help="how long to wait for the last replies")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if not args.address.startswith(f"tcp://{LOOPBACK}:"):
        parser.error("the load generator sends to loopback only")
    return _load(args)


if __name__ == "__main__":
    sys.exit(main())
