"""One msgpack codec for every ZeroMQ link.

A message travels as a multipart ZeroMQ message: frame 0 is the msgpack header
(a msgspec tagged struct), frames 1.. are raw buffers. Arrays and blobs in the
header are msgpack extension values naming their frame, dtype and shape, so big
payloads are never copied into (or parsed out of) the header. Decoding is
strict: anything that is not exactly one of the link's message types comes back
as a `DecodeError` value, never as an exception that could kill a loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from protocols.limits import MAX_BATCH
from protocols.shortened import cut_middle

_ARRAY_EXT = 1
_BLOB_EXT = 2
# dtypes that may cross the wire; anything else is refused at decode
_DTYPES = {name: np.dtype(name) for name in ("float16", "float32", "uint8")}
# their names, looked up as an array is encoded: dtype.name is a Python property of a few microseconds, and a batch
# sends a latent an image resumed from the cache (another dtype is named by the property, and refused at decode)
_DTYPE_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_ARRAY_META = msgspec.msgpack.Decoder(tuple[int, str, list[int]])
_BLOB_META = msgspec.msgpack.Decoder(int)
# a header, then an image and a latent stack per item of the largest batch
MAX_FRAMES = 1 + 2 * MAX_BATCH
# the most dimensions an array on the wire has (a latent stack: levels, channels, height, width), with room: the
# size check multiplies them, which for tens of thousands of huge ones took seconds to hours of the engine's loop
MAX_ARRAY_DIMS = 8


class Blob(bytes):
    """Bytes that travel as their own frame (encoded images)."""


@dataclass(frozen=True, slots=True)
class DecodeError:
    """What a malformed message decodes to."""

    reason: str


class Codec:
    """Encodes and decodes one link's union of message types.

    Not thread-safe: each socket-owning actor keeps its own instance.
    """

    def __init__(self, message_types: Any):
        self._encoder = msgspec.msgpack.Encoder(enc_hook=self._enc_hook)
        self._decoder = msgspec.msgpack.Decoder(message_types, ext_hook=self._ext_hook, dec_hook=self._dec_hook)
        self._out_frames: list[Any] = []
        self._in_frames: Sequence[Any] = ()

    def encode(self, message: msgspec.Struct) -> list[Any]:
        self._out_frames = []
        try:
            header = self._encoder.encode(message)
            return [header, *self._out_frames]
        finally:
            self._out_frames = []

    def decode(self, frames: Sequence[Any]) -> Any:
        if not frames:
            return DecodeError("empty message")
        if len(frames) > MAX_FRAMES:
            return DecodeError(f"too many frames ({len(frames)} > {MAX_FRAMES})")
        self._in_frames = [_as_buffer(f) for f in frames[1:]]
        try:
            return self._decoder.decode(_as_buffer(frames[0]))
        # RecursionError: msgspec's answer to deeply nested arrays or maps, which a peer can send
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError, RecursionError) as exc:
            return DecodeError(_brief(str(exc)))
        finally:
            self._in_frames = ()

    def _enc_hook(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            array = np.ascontiguousarray(obj)
            self._out_frames.append(array.data)
            meta = (len(self._out_frames) - 1, _DTYPE_NAMES.get(array.dtype) or array.dtype.name, list(array.shape))
            return msgspec.msgpack.Ext(_ARRAY_EXT, msgspec.msgpack.encode(meta))
        if isinstance(obj, Blob):
            self._out_frames.append(obj)
            return msgspec.msgpack.Ext(_BLOB_EXT, msgspec.msgpack.encode(len(self._out_frames) - 1))
        if isinstance(obj, np.generic):
            # a number a pipeline drew with numpy (a seed of np.int64, a guidance scale of np.float32): msgpack has
            # Python's; it was a NotImplementedError that named the type and not the field
            return obj.item()
        raise NotImplementedError(f"cannot encode {type(obj).__name__}")

    def _ext_hook(self, code: int, data: memoryview) -> Any:
        if code == _ARRAY_EXT:
            index, dtype, shape = _ARRAY_META.decode(data)
            dt = _DTYPES.get(dtype)
            if dt is None:
                raise ValueError(f"dtype {dtype!r} not allowed")
            if len(shape) > MAX_ARRAY_DIMS:
                raise ValueError(f"{len(shape)} dimensions; at most {MAX_ARRAY_DIMS}")
            if any(d < 0 for d in shape):
                raise ValueError("negative dimension")
            buffer = self._frame(index)
            if math.prod(shape) * dt.itemsize != len(buffer):
                raise ValueError("array frame size does not match its shape")
            return np.frombuffer(buffer, dtype=dt).reshape(shape)
        if code == _BLOB_EXT:
            index = _BLOB_META.decode(data)
            return Blob(self._frame(index))
        raise ValueError(f"unknown extension code {code}")

    def _frame(self, index: int) -> memoryview:
        if not 0 <= index < len(self._in_frames):
            raise ValueError(f"frame {index} missing")
        return self._in_frames[index]

    @staticmethod
    def _dec_hook(expected: type, obj: Any) -> Any:
        if isinstance(obj, expected):
            return obj
        raise TypeError(f"expected {expected.__name__}, got {type(obj).__name__}")


# msgspec quotes the value it refused ("Invalid enum value '...' - at `$.output_format`"): a peer may send it megabytes
# long, and the reason goes back to it and into the engine's logs
_MAX_REASON_CHARS = 300
_REASON_TAIL_CHARS = 80  # where msgspec names the field


def _brief(reason: str) -> str:
    """The reason with its middle cut out if long, its start (what is wrong) and end (where) kept."""
    return cut_middle(reason, _MAX_REASON_CHARS, _REASON_TAIL_CHARS, " ... ")


def _as_buffer(frame: Any) -> memoryview:
    """zmq.Frame, bytes or memoryview -> memoryview, without copying."""
    view = memoryview(getattr(frame, "buffer", frame))
    # an array's own buffer (in-process) is shaped; the wire always sees flat bytes
    return view if view.ndim == 1 and view.format == "B" else view.cast("B")
