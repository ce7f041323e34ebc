"""HTTP connections whose client stops reading its answer are closed after `--send-timeout` seconds.

aiohttp has no write timeout: a client that sent a request and never read the answer kept its connection, the answer
in the transport's buffer (a base64 image: megabytes) and its handler waiting for the buffer to drain, until the
engine stopped; a few hundred such clients held gigabytes. asyncio tells a protocol when its transport's buffer
passes the high-water mark (`pause_writing`) and when it has drained below the low one (`resume_writing`). While
paused, what is unsent is looked at every `timeout_s`: the transport's buffer and the kernel's (its unacknowledged
bytes, SIOCOUTQ). When that has not shrunk since, the client took none of it, and the connection is aborted, which
aiohttp takes for the connection's loss (its handler is cancelled). Neither alone would do: paused says nothing (a
slow reader behind megabytes of answers stays paused until they fall below the low-water mark), and the transport's
buffer shrinks only once the kernel's, up to 4 MB, has a third free again: a client reading 200 KB/s showed no
progress there for seconds. nginx's `send_timeout` (60 s by default) is the same rule.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import struct
import termios
from collections.abc import Callable

from engine.http.protocol_layer import ProtocolLayer
from engine.logs.quiet_lines import QuietLines

log = logging.getLogger("argus.http")

# a client can have connections closed so at will (requests pipelined, their answers left unread): a line each is said
# at most this often, saying how many were closed meanwhile (all of them are counted in argus_http_send_timeouts_total)
_LOG_EVERY_S = 60.0


class SendTimeout(ProtocolLayer):
    """Stands between a connection's transport and aiohttp's protocol, passing all on, and aborts the connection when
    its writes are paused and its client has taken none of what is unsent for `timeout_s`."""

    def __init__(
        self, inner: asyncio.Protocol, timeout_s: float, timed_out: Callable[[], None], lines: QuietLines
    ) -> None:
        """`lines`: the connections' one, for the line said as one is closed."""
        super().__init__(inner)
        self._timeout_s = timeout_s
        self._timed_out = timed_out
        self._lines = lines
        self._timer: asyncio.TimerHandle | None = None
        self._unsent = 0  # bytes the client had not taken when last looked at

    def pause_writing(self) -> None:
        self._cancel_timer()
        self._look_again()
        super().pause_writing()

    def resume_writing(self) -> None:
        self._cancel_timer()
        super().resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def _look_again(self) -> None:
        if self._transport is not None:
            self._unsent = _unsent(self._transport)
            self._timer = asyncio.get_running_loop().call_later(self._timeout_s, self._check)

    def _check(self) -> None:
        self._timer = None
        if self._transport is None or self._transport.is_closing():
            return
        if _unsent(self._transport) < self._unsent:
            self._look_again()  # the client took some
            return
        self._timed_out()
        held = self._lines.due("timed_out")
        if held is not None:
            log.info(
                "closed an HTTP connection from %s that read nothing for %g s (--send-timeout)%s",
                self._transport.get_extra_info("peername"),
                self._timeout_s,
                f"; {held} more closed so since the last such line" if held else "",
            )
        self._transport.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _unsent(transport: asyncio.Transport) -> int:
    """Bytes written to the connection that its client has not acknowledged: in the transport's buffer, and in the
    kernel's (Linux's SIOCOUTQ; the transport's alone where that cannot be read)."""
    buffered = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if sock is None:
        return buffered
    try:
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, _INT)
    except OSError:
        return buffered
    return buffered + struct.unpack("i", queued)[0]


_INT = struct.pack("i", 0)


def send_timeout(
    make_protocol: Callable[[], asyncio.Protocol], timeout_s: float, timed_out: Callable[[], None]
) -> Callable[[], SendTimeout]:
    """A protocol factory for loop.create_server, from aiohttp's (a runner's `server`)."""
    lines = QuietLines(_LOG_EVERY_S)
    return lambda: SendTimeout(make_protocol(), timeout_s, timed_out, lines)
