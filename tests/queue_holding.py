"""A running engine's one place in its queue (--max-queue 1), held for as long as a test needs it."""

import json
import socket

from waiting import wait_for


def hold_the_queue(engine) -> socket.socket:
    """A long request, sent over a connection of its own: closed, the engine cancels it."""
    held = socket.create_connection(engine.http.removeprefix("http://").split(":"))
    body = json.dumps({"prompt": "a long one", "size": "64x64", "num_inference_steps": 200}).encode()
    held.sendall(
        b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    assert wait_for(lambda: engine.metric("argus_queued_images") == 1)
    return held
