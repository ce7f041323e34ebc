"""The bare servers `argus bench engine` measures the engine against, each run as its own process (so it never shares
the load client's CPU): `python -m loadgen.bench.baselines zmq-echo|http-echo ...`."""

from __future__ import annotations

import argparse
import signal
import sys

from loadgen.bench.ports import LOOPBACK


def _zmq_echo(args: argparse.Namespace) -> int:
    """A bare pyzmq ROUTER: decode the client's Generate, answer Images of the engine's reply size.

    The codec work (strict decode, encode) is the least any server speaking this
    protocol does; everything the engine does beyond it is what is measured.
    """
    import zmq

    from protocols.client_messages import ImageResult, Images, engine_side_codec
    from protocols.codec import Blob
    from protocols.sockets import make_socket

    context = zmq.Context()
    sock = make_socket(context, zmq.ROUTER)
    sock.bind(args.bind)
    codec = engine_side_codec()
    image = Blob(b"\x00" * args.image_bytes)
    worker = args.worker_name
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    try:
        while True:
            frames = sock.recv_multipart(copy=False)
            request = codec.decode(frames[1:])
            reply = Images(
                request.request_id,
                [
                    ImageResult(
                        image=image,
                        seed=12345,
                        level=0,
                        similarity=None,
                        queue_ms=0.1,
                        run_ms=0.1,
                        steps_run=50,
                        worker=worker,
                        estimated_quality=100.0,  # as the engine's reply carries it
                    )
                ],
            )
            sock.send_multipart([frames[0], *codec.encode(reply)], copy=False)
    finally:
        sock.close(linger=0)
        context.term()


def _http_echo(args: argparse.Namespace) -> int:
    """A bare aiohttp server: read and parse the JSON body, answer the engine's JSON body, both with the JSON
    library the engine uses (msgspec; the standard library's would make the baseline slower, the ratio higher)."""
    import msgspec
    import uvloop
    from aiohttp import web

    from engine.http.listener import LISTEN_BACKLOG

    with open(args.template, "rb") as f:
        template = msgspec.json.decode(f.read())

    async def generate(request: web.Request) -> web.Response:
        body = msgspec.json.decode(await request.read())
        if not isinstance(body, dict) or "prompt" not in body:
            return web.json_response({"error": "no prompt"}, status=400)
        return web.Response(body=msgspec.json.encode(template), content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    app = web.Application()
    app.router.add_post("/v1/images/generations", generate)
    app.router.add_get("/health", health)
    # the engine's accept queue: at aiohttp's 128, a bench of many connections at once measured the baseline's SYN
    # retries
    web.run_app(
        app,
        host=LOOPBACK,
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
        backlog=LISTEN_BACKLOG,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadgen.bench.baselines", description="baseline servers")
    sub = parser.add_subparsers(dest="server", required=True)
    z = sub.add_parser("zmq-echo")
    z.add_argument("--bind", required=True)
    z.add_argument("--image-bytes", type=int, required=True)
    z.add_argument("--worker-name", default="local-0/00000000")
    z.set_defaults(func=_zmq_echo)
    h = sub.add_parser("http-echo")
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--template", required=True, help="JSON file: the response body")
    h.set_defaults(func=_http_echo)
    args = parser.parse_args(argv)
    if args.server == "zmq-echo" and not args.bind.startswith(f"tcp://{LOOPBACK}:"):
        parser.error("the baseline binds loopback only")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
