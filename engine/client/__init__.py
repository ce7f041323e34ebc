"""Client classes for pipelines that talk to the engine's ZeroMQ front door.

`ArgusClient` is blocking; `AsyncArgusClient` pipelines many requests over one
socket, resolving each reply's future by request id. Against an engine that
requires CURVE, pass `curve=ClientKeys.from_files(my.key_secret, engine.key)`. Both return the engine's
terminal message: Images, Error, Busy or Cancelled (never raise for those). Both raise ConnectionRefusedError,
saying why, once the engine refuses this client's CURVE key, CURVE is on at one end only, or the address is no
argus engine's ZeroMQ one (an HTTP port): no reply would ever come. The last is judged only until an engine was reached
at the address (a tunnel or proxy to an engine that is down takes each connection and closes it): after, handshakes that
all fail without a word (that, or an engine come back with another key pair, or with CURVE on at its end only) are
named in the TimeoutError of a call given `timeout_s`; one without waits on, as through an engine's restart.
Both raise EngineUnreachable, a TimeoutError, for a call that ran out of `timeout_s` with no engine ever reached at the
address (naming what the handshakes that failed there meanwhile suggest, as the refusal would once there are enough of
them); a call that waits UNANSWERED_WARNING_S so is logged as a warning, once per client. Refused for the engine's
--max-client-connections, a client dials again on a fresh socket after a backoff (link.FullDoor), its calls waiting
within their timeouts (a TimeoutError names the bound). A client
serves the process that made it: in one forked from it, a call raises RuntimeError (ZeroMQ's sockets do not survive a
fork), and close() does nothing; pickled (to be sent to another), it raises TypeError.

ArgusClient is in engine/client/sync_client.py, AsyncArgusClient in engine/client/async_client.py, what they share (the
socket to the engine, the request as sent, when a call sends it again) in engine/client/link.py, a call's timeout in
engine/client/timeouts.py.

Replies are matched to requests by request id. The engine answers every
request exactly once, even one the client gave up on (timed out or cancelled),
and that late reply cannot be told from the reply to a retry under the same id:
retry with a fresh id (the default when none is given). An id must be a string
of 1 to 128 characters: any other ("" included) raises ValueError before anything is sent.

While no engine is connected, a call waits to send its request until one is: one given up on meanwhile (its timeout,
a cancelled task) sends nothing, where the socket queued it, and its Cancel, for the engine that came back.

Connected again (a dropped connection, an engine restarted on the address), a
client asks after the requests it awaits (Inquire): each the engine does not
hold is answered Error request_lost, where it would never have been answered.
With `retries`, a call sends its request again, under its id, after a Busy, a
request_lost, or an answer that the engine is stopping (shutting_down, or the
Cancelled of a request still in flight as its drain ended: a call never returns
the Cancelled of a cancel its own client sent), after a backoff in which an
engine restarted on the address comes up: the engine holds nothing under that
id then, so no late reply can come for it. A request with slo_ms goes, each time (the
first too), with what is left of it, counted from the call; none left, the call returns Error deadline_exceeded,
sending nothing. A request_lost that answers the Inquire of an earlier attempt (it
follows that attempt's Busy) is no answer to the retry: ArgusClient skips it.
"""

from engine.client.async_client import AsyncArgusClient
from engine.client.link import ClientClosed, Reply
from engine.client.sync_client import ArgusClient
from engine.client.timeouts import EngineUnreachable

__all__ = ["ArgusClient", "AsyncArgusClient", "ClientClosed", "EngineUnreachable", "Reply"]
