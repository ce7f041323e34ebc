"""A client left idle while what it dials takes each connection and closes it (a tunnel, docker's published port or a
proxy, to an engine that is down) closes. Each such dial is two events on the client's monitor, which nothing reads
between calls: once they filled it, libzmq's I/O thread waited for room holding the lock close() takes, and close()
waited for ever with the GIL held, the whole process hung (Ctrl-C unheard)."""

import subprocess
import sys

from engine_process import ROOT

# in a process of its own: a hang holds the GIL, and would hang the test run with it
_IDLE_THEN_CLOSED = """
import asyncio, socket, sys, threading, time
import zmq
from engine.client import link as client_link
from engine.client import ArgusClient, AsyncArgusClient

made = client_link.make_socket

def dialling_fast(*args, **kwargs):
    # libzmq dials again every 100 ms: every 1 ms, the monitor fills in seconds rather than minutes
    sock = made(*args, **kwargs)
    sock.setsockopt(zmq.RECONNECT_IVL, 1)
    return sock

client_link.make_socket = dialling_fast
listener = socket.create_server(("127.0.0.1", 0))
taken = 0

def take_and_close():
    global taken
    while True:
        connection, _ = listener.accept()
        connection.close()
        taken += 1

threading.Thread(target=take_and_close, daemon=True).start()
address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
client = ArgusClient(address) if sys.argv[1] == "sync" else AsyncArgusClient(address)
# until libzmq dials no more: its I/O thread waits for room in the monitor (a safe bound should it never)
for _ in range(60):
    before = taken
    time.sleep(1)
    if taken == before and taken:
        break
client.close() if sys.argv[1] == "sync" else asyncio.run(client.close())
print("closed after", taken, "dials")
"""


def test_a_client_idle_while_its_dials_are_taken_and_closed_closes():
    """Of each kind, side by side: each process waits out seconds of dials with its client idle."""
    closing = {
        kind: subprocess.Popen(
            [sys.executable, "-c", _IDLE_THEN_CLOSED, kind],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for kind in ("sync", "async")
    }
    try:
        for kind, process in closing.items():
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0 and "closed after" in out, (kind, err)
    finally:
        for process in closing.values():
            process.kill()
            process.wait()
