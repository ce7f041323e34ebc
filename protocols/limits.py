"""Bounds every front door enforces on what a client may ask for."""

import math
from typing import Annotated, Literal, get_args

import msgspec

MAX_PROMPT_CHARS = 4000
# a character other than whitespace and control characters (Unicode Cc; searched for, as msgspec does a pattern): a
# prompt of spaces alone, which the model and the cache read as the empty prompt refused, was served (its cache
# similarity 0.0, where no neighbour says null); so was one of NULs alone, which the hash embedder reads as spaces
# (its embedding the zero vector, cached, and similar to nothing)
PROMPT_PATTERN = r"[^\s\x00-\x1f\x7f-\x9f]"
Prompt = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PROMPT_CHARS, pattern=PROMPT_PATTERN)]
MAX_IMAGES_PER_REQUEST = 10  # as the OpenAI images API
MAX_STEPS = 200
MAX_GUIDANCE = 50.0
MAX_SEED = 2**63 - 1
MAX_REQUEST_ID_CHARS = 128
# how soon a request refused for room (engine/dispatch/queue_pace.py), or answered no_worker while the engine's own
# workers are on their way back (engine/fleet/slot_supervision.py), is told to try again, in whole seconds: OpenAI's
# clients honour a Retry-After of up to 120 s, and give up past it
MIN_RETRY_AFTER_S = 1
MAX_RETRY_AFTER_S = 60
# the largest frame the engine's ZeroMQ client door reads: a request is one small frame (a prompt is at most 16 KB of
# UTF-8), and a peer that sends a larger one is cut off before the engine buffers it (engine/zmq/door.py)
MAX_CLIENT_FRAME_BYTES = 256 * 1024
# an HTTP request's line and headers together, at most (engine/http/head_limit.py): twice nginx's 32 KB, four times
# Node's 16 KB, past any real client's (a browser with its cookies, a proxy's added headers)
MAX_HEAD_BYTES = 64 * 1024
# a line of that head, and its header fields, at most: aiohttp's own bounds, handed to it (engine/server.py), answered
# 431 as the whole head is (engine/http/parse_errors.py)
MAX_HEAD_LINE_BYTES = 8190
MAX_HEADERS = 128
# the HTTP request bodies being read, all together, at most (engine/http/body_budget.py): 256 bodies at the 1 MiB limit,
# tens of thousands of real requests'
BODY_BUDGET_BYTES = 256 * 1024 * 1024
# request ids in one Inquire: at 512 bytes the longest id (128 characters of 4 bytes), within MAX_CLIENT_FRAME_BYTES;
# a client asks after more in as many messages
MAX_INQUIRED_IDS = 256
OutputFormat = Literal["png", "jpeg", "webp"]
OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)
# quality of a lossy format (jpeg, webp), as OpenAI's output_compression: lower is smaller and coarser
OutputCompression = Annotated[int, msgspec.Meta(ge=0, le=100)]
SIZE_MULTIPLE = 8
# the largest image side a worker may offer: its encoded image (48 MiB as raw RGB) fits a frame (MAX_FRAME_BYTES)
MAX_IMAGE_SIZE = 4096
# items in one worker batch: bounds the frames of a Generate and of its BatchDone
MAX_BATCH = 32


def retry_after_s(seconds: float) -> int:
    """A wait of `seconds` as a Retry-After says it: whole seconds, rounded up, from MIN_RETRY_AFTER_S to
    MAX_RETRY_AFTER_S."""
    return min(MAX_RETRY_AFTER_S, max(MIN_RETRY_AFTER_S, math.ceil(seconds)))
