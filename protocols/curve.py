"""CURVE authentication for ZeroMQ links over TCP: key files, and socket options set before bind/connect.

Key files are the ones `zmq.auth.create_certificates` writes (`argus keys`):
NAME.key holds a public key, NAME.key_secret the pair. Keys are z85 text.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message
from zmq.utils.z85 import Z85CHARS

from protocols.secret_files import warn_if_open_to_others
from protocols.zmq_greeting import greets_as_zeromq

log = logging.getLogger("argus.curve")

# how the engine hands its local workers their keys: an environment variable
# (readable only by the owner, unlike a command line)
LOCAL_WORKER_KEYS_ENV = "ARGUS_WORKER_CURVE"
# a 32-byte key in z85
_KEY_CHARS = 40
# what a key pair made on a libzmq without CURVE is refused as (argus keys; the Ray launcher's keys for a run)
_NONE_MADE = "CURVE keys cannot be made"


@dataclass(frozen=True, slots=True)
class KeyPair:
    public: bytes
    secret: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        _refuse_without_curve(_NONE_MADE, otherwise="")
        public, secret = zmq.curve_keypair()
        return cls(public, secret)

    @classmethod
    def load(cls, secret_file: str | Path) -> KeyPair:
        _refuse_without_curve(str(secret_file))
        public, secret = _read_key_file(secret_file)
        if secret is None:
            raise ValueError(f"{secret_file} holds no secret key (pass the .key_secret file)")
        # warned, not refused: a Kubernetes Secret is mounted 0644 unless told otherwise. One others may write to
        # (0620) was said to be readable by them: whoever writes it puts in a key pair of their own, which they know
        warn_if_open_to_others(
            secret_file,
            "whoever reads it can pose as its owner, and whoever writes it can put in a pair they know; chmod 600 it",
            log,
            readable=True,
        )
        if zmq.curve_public(secret) != public:
            # the secret serves, but the engine would hand its local workers this public key: none would join
            raise ValueError(f"{secret_file}: its public key is not the secret key's")
        return cls(public, secret)


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """What a worker or a client needs to reach a CURVE engine."""

    own: KeyPair
    server_public: bytes

    @classmethod
    def from_files(cls, secret_file: str | Path, server_public_file: str | Path) -> ClientKeys:
        keys = cls(KeyPair.load(secret_file), load_public_key(server_public_file))
        keys._refuse_one_pair(f"{secret_file} and {server_public_file} are one key pair")
        return keys

    def _refuse_one_pair(self, given: str) -> None:
        """A ValueError saying `given` when this side's key pair is the one whose public key is given as the engine's:
        the engine's own (engine.key_secret copied where a worker's belongs), refused at the handshake and said to be
        a key to admit, and admitted so, every host holding it could pose as the engine; or this side's own public key
        given for the engine's, every handshake failing, said to be a wrong engine key after a second and a half."""
        if self.own.public == self.server_public:
            raise ValueError(
                f"{given}, given as this side's own and as the engine's: a worker or client needs a key pair of its own"
                " (argus keys) and the engine's public key, its NAME.key; the engine's secret key belongs on its host"
                " alone"
            )

    def to_env(self) -> str:
        return b" ".join((self.own.public, self.own.secret, self.server_public)).decode()

    @classmethod
    def from_env(cls) -> ClientKeys | None:
        """The keys of ARGUS_WORKER_CURVE, None if unset. One set by hand that cannot be used is a ValueError naming
        the variable, never its value (a secret key): it was a traceback, or a socket option's "Invalid argument"."""
        value = os.environ.get(LOCAL_WORKER_KEYS_ENV)
        if not value:
            return None
        _refuse_without_curve(f"${LOCAL_WORKER_KEYS_ENV}")
        keys = value.encode().split()
        if len(keys) != 3 or not all(map(_is_key, keys)):
            raise ValueError(
                f"${LOCAL_WORKER_KEYS_ENV} is not three CURVE keys ({_KEY_CHARS} z85 characters each, space-separated:"
                " this worker's public key, its secret key, the engine's public key)"
            )
        public, secret, server_public = keys
        if zmq.curve_public(secret) != public:
            # every handshake would fail without a word, said to be a wrong engine key
            raise ValueError(f"${LOCAL_WORKER_KEYS_ENV}: its first key is not the public key of its second, the secret")
        keys = cls(KeyPair(public, secret), server_public)
        keys._refuse_one_pair(f"${LOCAL_WORKER_KEYS_ENV}: its first key and its third are one key pair")
        return keys


def _refuse_without_curve(keys: str, otherwise: str = ", or connect without CURVE keys") -> None:
    """A ValueError naming where the `keys` came from (or that they cannot be made) when this libzmq has no CURVE
    (built without libsodium or its own TweetNaCl): checking a pair, or making one, was zmq's "Operation not
    supported", in a traceback naming neither."""
    if not zmq.has("curve"):
        raise ValueError(
            f"{keys}: this libzmq ({zmq.zmq_version()}) is built without CURVE, which the keys are for: install a"
            f" pyzmq whose libzmq has it (PyPI's wheels do){otherwise}"
        )


def load_public_keys(directory: str | Path) -> set[bytes]:
    """Every public key (*.key) in a directory: the workers and clients an engine admits."""
    if not Path(directory).is_dir():
        # globbing a mistyped path finds nothing: an engine that admits no one, and no word why. Named as an OSError
        # names its file (read_user_file's line said the path twice)
        raise NotADirectoryError(errno.ENOTDIR, "not a directory of public keys", str(directory))
    # warned, as a readable secret is: the directory, and each key in it, is the engine's list of who may connect. A
    # key file others may write to was taken without a word, in a directory they could not write to
    admitted = "whoever writes a key there is admitted at the next start or SIGHUP; chmod go-w it"
    warn_if_open_to_others(directory, admitted, log)
    paths = sorted(Path(directory).glob("*.key"))
    for path in paths:
        warn_if_open_to_others(path, admitted, log)
    return {load_public_key(path) for path in paths}


def load_public_key(path: str | Path) -> bytes:
    public, secret = _read_key_file(path)
    if secret is not None:
        # a secret belongs to its owner alone: one handed to a peer as its public key (a .key_secret, or one
        # renamed .key into an allow directory) has leaked, and using it quietly would hide that
        raise ValueError(f"{path} holds a secret key: pass the public NAME.key, and keep the secret with its owner")
    return public


def _read_key_file(path: str | Path) -> tuple[bytes, bytes | None]:
    """The public key and the secret one (None in a .key file), checked: pyzmq's reader takes whatever stands
    between the quotes, and a key of the wrong length failed later as a socket option, "Invalid argument", naming
    no file. Errors are OSError or ValueError naming the file."""
    if not os.path.exists(path):  # pyzmq's own error for it gives no reason
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    try:
        keys = zmq.auth.load_certificate(path)  # ValueError naming the file when it holds no public key
    except IndexError:  # pyzmq's reader splits each key line at its '=' and takes what follows
        # a traceback at start (exit 1), and at a SIGHUP's reload the end of the engine, with no drain
        raise ValueError(f"{path}: a public-key or secret-key line without its '=' (public-key = \"...\")") from None
    for what, key in zip(("public", "secret"), keys, strict=True):
        if key is not None and not _is_key(key):
            raise ValueError(f"{path}: its {what} key is not a CURVE key ({_KEY_CHARS} z85 characters)")
    return keys


def _is_key(key: bytes) -> bool:
    return len(key) == _KEY_CHARS and set(key) <= set(Z85CHARS)


def make_server(sock: zmq.Socket, keys: KeyPair, domain: str) -> None:
    """`domain`: the ZAP domain the authenticator is asked in, so that each socket may admit keys of its own."""
    sock.zap_domain = domain.encode()
    sock.curve_server = True
    sock.curve_publickey = keys.public
    sock.curve_secretkey = keys.secret


def peer_key(frame: zmq.Frame) -> bytes:
    """The public key (z85) of the CURVE peer a received frame came from: zmq.auth's authenticator names an admitted
    peer by it (its User-Id), and libzmq attaches that to every message of the connection."""
    return frame.get("User-Id").encode()


def make_client(sock: zmq.Socket, keys: ClientKeys) -> None:
    sock.curve_publickey = keys.own.public
    sock.curve_secretkey = keys.own.secret
    sock.curve_serverkey = keys.server_public


# handshakes in a row that fail without a word (the peer hangs up): the address answers, and not as the engine the
# keys name. One could be an engine stopping mid-handshake; ten in a row (a second, libzmq dialling again every
# 100 ms) are not. A CURVE mismatch often ends so too, when the engine hangs up before this side names it: the
# count leaves the named reason time to come first
_SILENT_FAILURES = 10
# the ZAP status an engine refuses a client connection with past its --max-client-connections
# (engine/zmq/zap_handler.py); a CURVE key not admitted is refused 400
FULL_STATUS = 500
# the address greeting as ZeroMQ after as many silent failures as that: the silent failures since, before the engine
# is judged to fail every handshake. An engine come up with this side's keys (behind a proxy that took and closed the
# connections while it was down) takes the next one
_FAILURES_AFTER_GREETING = 3


class RefusedHandshakes:
    """Hears on a connecting socket's monitor the handshakes that will never succeed: the engine refused this key
    (its ZAP handler), one side speaks CURVE and the other not, every handshake fails without a word, as it does
    when the engine's public key given is not its own (the engine cannot read the client's hello), or the address
    does not speak ZeroMQ at all (an HTTP port). libzmq retries the silent failures for ever; the others it does not.
    Waiting on such a socket is waiting for ever."""

    def __init__(
        self,
        sock: zmq.Socket,
        address: str,
        curve_on: bool,
        dials: bool = False,
        asks_greeting: bool = False,
        rides_out_full: bool = False,
    ):
        """`dials`: hear too each dial that found no one listening, for verdict(). Only for a short-lived socket: a
        monitor left unread (a client between calls, a fleet serving) fills with them, about seven a second while
        the engine is down, and then stalls libzmq's I/O thread. `asks_greeting` (a worker's): handshakes that all fail
        without a word are refused for good only when the address greets as ZeroMQ does (an engine of another key
        pair, or with CURVE where this side has none), not when it does not (the way to an engine that is down, as
        an ssh -L tunnel, docker's published port or a proxy takes each connection and closes it), before an engine
        was reached there as after: a worker started before its engine through a tunnel was refused in a second, told
        that the engine's key was wrong, and one whose engine came back with a new key pair waited for ever.
        `rides_out_full` (a client's): a refusal for the engine's --max-client-connections is no reason, only `full`
        and `shut_out`, the owner dialling again on a socket of its own (watch()) once a connection may have ended."""
        self._socket = sock
        self._address = address
        self._curve_on = curve_on
        # kept once heard: the monitor tells of a refusal once, and a caller asking again (the next request of a
        # client) must not take the silence after it for an engine that may still answer
        self._reason: str | None = None
        self._silent_failures = 0  # since the last handshake that succeeded
        self._handshakes = 0  # that succeeded: a connection made again to the engine is one more
        self._connected = False  # the last handshake succeeded, and its connection has not ended since
        self._handshake_ended = False  # the current connection's handshake succeeded or failed
        self._no_one_listening = False  # a dial found no one, before any handshake failed
        self._asks_greeting = asks_greeting
        self._rides_out_full = rides_out_full
        # why the last handshake failed, while that was the engine's bound (until one succeeds), for a call that
        # times out meanwhile
        self.full: str | None = None
        # refused for the bound on this socket, which libzmq then dials no more: mostly. When it reads the
        # connection's end before the refusal in it, it dials again, and may get in
        self.shut_out = False
        # the silent failures counted when the address last greeted as ZeroMQ, since the last handshake that succeeded
        self._greeted_at: int | None = None
        self._greeting_due = False  # asked once the events read so far are all heard: see _ask_greeting
        # of the socket's kind: a zmq.asyncio socket's monitor is awaited, a blocking one's polled. Its events are
        # read by plain code alone (_events), so they are heard in order: a read through zmq.asyncio holds an event
        # taken until its coroutine resumes, and reason(), called meanwhile, heard the next one first (a
        # connection's end before its failed handshake: taken for a peer that speaks no ZeroMQ)
        self._kinds = (
            zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_HANDSHAKE_SUCCEEDED
            # once per connection made, so never while no one listens (as CONNECT_RETRIED is, seven a second)
            | zmq.EVENT_DISCONNECTED
            | (zmq.EVENT_CONNECT_RETRIED if dials else 0)
        )
        self.monitor = sock.get_monitor_socket(self._kinds)
        # the same monitor read without waiting, whatever its kind: an asyncio client asks from plain code too
        self._events = zmq.Socket.shadow(self.monitor)

    def watch(self, sock: zmq.Socket) -> None:
        """Hears `sock` from now on, in place of the socket shut out (`shut_out`), before it connects; the handshakes
        counted so far stay counted, so a request sent before is asked after once `sock` connects."""
        self.close()
        self._socket = sock
        self.shut_out = False
        self._connected = False
        self._handshake_ended = False
        self.monitor = sock.get_monitor_socket(self._kinds)
        self._events = zmq.Socket.shadow(self.monitor)

    @property
    def handshook(self) -> bool:
        """Whether a handshake with the engine succeeded, as of the events read so far (reason() reads them)."""
        return self._handshakes > 0

    @property
    def handshakes(self) -> int:
        """How many handshakes with an engine succeeded, as of the events read so far: one more each time the
        socket connects again, to the same engine or to another come up on the address."""
        return self._handshakes

    @property
    def connected(self) -> bool:
        """Whether the socket is connected to an engine, as of the events read so far: a handshake succeeded, and its
        connection has not ended since."""
        return self._connected

    def reason(self) -> str | None:
        """Why the engine will never be reached over this socket, or None while it may be."""
        while self._reason is None and not self.monitor.closed and self._events.poll(0):
            self._reason = self._heard(recv_monitor_message(self._events))
            if self._reason is not None:
                # for good: nothing more is read, and against an engine that fails every handshake libzmq dials on,
                # two events a dial, until the unread monitor stalls its I/O thread (232d495)
                self._stop_monitoring()
        self._ask_greeting()
        return self._reason

    def suspected(self) -> str | None:
        """Why the engine may never be reached, once the handshakes since the last that succeeded (or since the socket
        connected) all failed without a word, before there were enough of them to refuse it (about a second and a
        half): for a call that times out meanwhile, which said that nothing answered at the address, and to check
        that the engine is up (or, an engine reached, only that it timed out). None while none failed (as of the
        events read so far: reason() reads them)."""
        if not self._silent_failures:
            return None
        return self._failing_since_reached() if self.handshook else self._no_engine_here(certain=False)

    def not_an_engine(self) -> str | None:
        """For a message that could not be read: why its sender is no argus engine (kept, as a refusal), or None if a
        handshake succeeded, and it may be one (of another version). libzmq takes a peer that does not greet as
        ZeroMQ does for one of ZeroMQ's first version, which has no handshake, and hands on what it sends as a
        message: an HTTP server's 400 (without CURVE; with it, libzmq hangs up, see _heard)."""
        if self.reason() is None and not self.handshook:
            self._reason = self._no_engine_here(certain=True)
        return None if self.handshook else self._reason

    def verdict(self, timeout_s: float) -> str | None:
        """Waits up to `timeout_s` for a first handshake to succeed (None) or fail for good (why); None too once a
        dial finds no one listening (an engine not up yet), once a message came with no handshake (a peer of
        ZeroMQ's first version, as libzmq takes an HTTP server for: the caller reads it), or if nothing was heard by
        then."""
        deadline = time.monotonic() + timeout_s
        # the socket too: an HTTP server's 400, handed on as a message, comes with no monitor event after it (the
        # server keeps the connection open), and a worker given the engine's HTTP port waited out the whole timeout
        poller = zmq.Poller()
        poller.register(self.monitor, zmq.POLLIN)
        poller.register(self._socket, zmq.POLLIN)
        while self._reason is None and not self.handshook and not self._no_one_listening:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                break
            ready = dict(poller.poll(left_ms))
            if self.monitor not in ready:
                break
            self._reason = self._heard(recv_monitor_message(self.monitor))
            if not self.monitor.poll(0):
                self._ask_greeting()
        return self._reason

    def _heard(self, event: dict) -> str | None:
        kind = event["event"]
        if kind == zmq.EVENT_CONNECT_RETRIED:
            # libzmq dials again after a refused dial, and after a handshake that failed without a word
            self._no_one_listening = self._no_one_listening or self._silent_failures == 0
            return None
        if kind == zmq.EVENT_DISCONNECTED:
            self._connected = False
            ended, self._handshake_ended = self._handshake_ended, False
            # a connection that ended with no handshake event: libzmq met no ZeroMQ 3 greeting, which every argus
            # engine sends, and (CURVE on) hung up on a peer it took for one of ZeroMQ's first version, which has
            # no CURVE, as on a protocol error, after which it does not dial again
            return None if ended or self.handshook else self._no_engine_here(certain=True)
        self._handshake_ended = True
        if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.full = None
            self.shut_out = False
            self._silent_failures = 0
            self._greeted_at = None
            self._greeting_due = False
            self._handshakes += 1
            self._connected = True
            return None
        engine = f"the engine at {self._address}"
        if kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            self._silent_failures += 1
            if self._asks_greeting:
                return self._judged_by_greeting()
            if self.handshook:
                # an engine answered at this address: what hangs up without a word now is the way to it while it is
                # down (a tunnel, docker's port, a proxy, each taking the connection and closing it, about ten times a
                # second), not an address that is no engine's. Taken for that, the client was refused for good,
                # in those words, and served no more once the engine was back up. An engine come back with another key
                # pair, or with CURVE where this side has none, fails them so too: suspected() says so to a sync call
                # that times out. An async call waits on: failed, it failed during each restart behind docker's port
                return None
            return self._no_engine_here(certain=False) if self._silent_failures >= _SILENT_FAILURES else None
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH and event["value"] == FULL_STATUS:
            # libzmq dials no more after it: this socket will not reach the engine, another socket may
            self.full = (
                f"{engine} holds as many ZeroMQ client connections as its --max-client-connections allows, and refused"
                " this one: close the clients of it no longer used (one AsyncArgusClient serves any number of"
                " requests at once) or raise its bound"
            )
            self.shut_out = True
            return None if self._rides_out_full else self.full
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            # the peer cannot tell which socket's keys it was checked against, nor whether the key is admitted on
            # the other (a client's key given to a worker): the engine's log says
            return (
                f"{engine} does not admit this CURVE key on this socket (a worker's key goes in its"
                " --curve-allow-workers, or --curve-allow without it; a client's in its --curve-allow)"
            )
        if event["value"] == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return f"{engine} does not use CURVE" if self._curve_on else f"{engine} requires CURVE keys"
        return f"the handshake with {engine} failed (ZeroMQ protocol error {event['value']:#x})"

    def _ask_greeting(self) -> None:
        """Asks the address whether it greets as ZeroMQ, when due, once the events waiting were heard: the failures
        heard after count against it. Asked as a failure's event was read, those still waiting (a worker reads them
        once a second) came before the answer, and an engine come up meanwhile with this side's keys was refused."""
        if self._greeting_due and self._reason is None:
            self._greeting_due = False
            if greets_as_zeromq(self._address):
                self._greeted_at = self._silent_failures

    def _judged_by_greeting(self) -> str | None:
        """Why the engine fails every handshake, once the address greets as ZeroMQ and the next handshakes fail too;
        None while it may be the way to an engine that is down. The address is asked once per _SILENT_FAILURES:
        libzmq dials again every 100 ms."""
        failures = self._silent_failures
        if self._greeted_at is None:
            self._greeting_due = self._greeting_due or failures % _SILENT_FAILURES == 0
            return None
        if failures < self._greeted_at + _FAILURES_AFTER_GREETING:
            return None
        engine = f"the engine at {self._address}"
        if self._curve_on:
            # an engine without CURVE hangs up on this side's CURVE hello as often as it names the mismatch: the
            # greeting's signature does not tell the two apart
            why = (
                "the engine's public key given is not its own (a new key pair? give --curve-server-key its .key), or"
                " the engine does not use CURVE"
            )
        else:
            why = f"{engine} requires CURVE keys"
        since = " since it was reached" if self.handshook else ""
        return f"every handshake with {engine} has failed{since}, and it answers as ZeroMQ: {why}"

    def _no_engine_here(self, certain: bool) -> str:
        """Why, once the address answers as no argus engine does: the likeliest cause first, from this side's keys.
        `certain`: the peer speaks no ZeroMQ 3, rather than every handshake failing without a word, as a CURVE
        mismatch does too when the engine hangs up before this side names it (a race, either way). Without CURVE,
        the same words either way: a client pointed at an HTTP port meets its answer read as a message, a connection
        ended with no handshake event, or ten failed handshakes, whichever comes first as the host is loaded, and
        ArgusClient and AsyncArgusClient must say the same."""
        not_zeromq = f"{self._address} is not an argus engine's ZeroMQ address (the handshake failed: an HTTP port?)"
        if not self._curve_on:
            return f"{not_zeromq}, or the engine at {self._address} requires CURVE keys"
        if certain:
            return not_zeromq
        return (
            f"every handshake with the engine at {self._address} failed: the engine's public key given is not its own,"
            f" the engine does not use CURVE, or {self._address} is not an argus engine's ZeroMQ address (an HTTP"
            " port?)"
        )

    def _failing_since_reached(self) -> str:
        """Why, once an engine was reached and every handshake since fails without a word: the engine restarted with
        other keys, or the way to it takes each connection while it is down."""
        engine = f"the engine at {self._address}"
        if self._curve_on:
            keys = (
                "the engine's public key given is not its own (restarted with another key pair? make the client"
                " anew with its new public key), the engine does not use CURVE"
            )
        else:
            keys = "the engine requires CURVE keys (restarted with CURVE on?)"
        return (
            f"every handshake with {engine} has failed since it was reached: {keys}, or what takes the connections at"
            f" {self._address} is the way to an engine that is down (an ssh -L tunnel, docker's published port, a"
            " proxy)"
        )

    def close(self) -> None:
        self._stop_monitoring()
        self.monitor.close()

    def _stop_monitoring(self) -> None:
        # a close() before ended it: its monitor, closed, polled raised ZMQError, where closing twice was harmless
        if not self.monitor.closed:
            stop_monitoring(self._socket, self._events)


def stop_monitoring(sock: zmq.Socket, events: zmq.Socket) -> None:
    """Ends the monitoring of `sock`, whose events `events` reads (a blocking socket on its monitor), unless the
    socket is closed (closing it ended its monitoring). The events unread are dropped first: a monitor left unread
    fills (a client idle while what it dials takes each connection and closes it: a tunnel to an engine that is down,
    two events a dial; an engine's worker socket failing a fleet's handshakes), and libzmq's I/O thread then waits for
    room in it holding the lock disable_monitor takes. A close() waited for ever, the GIL held: the whole process
    hung."""
    if sock.closed:
        return
    while events.poll(0):
        events.recv_multipart()
    sock.disable_monitor()


def create_key_files(directory: str | Path, name: str, replace: bool = False) -> tuple[Path, Path]:
    """`name`.key and `name`.key_secret (owner only) in `directory`.

    They are written in a private folder and moved in: written in place, the secret was readable by anyone
    who could read `directory` until it was chmod-ed, long enough to open it and keep the descriptor.
    An existing pair is replaced only if `replace` (FileExistsError otherwise): peers holding its public
    key would be refused by the new one.
    """
    _refuse_without_curve(_NONE_MADE, otherwise="")  # before anything is written
    if not replace:
        for path in (Path(directory) / f"{name}.key", Path(directory) / f"{name}.key_secret"):
            if path.exists():
                raise FileExistsError(errno.EEXIST, "key file exists", str(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    private = tempfile.mkdtemp(prefix=".keys-", dir=directory)
    try:
        written = zmq.auth.create_certificates(private, name)
        # the public key as the engine wants a key it admits: written as the umask says, 0664 under a umask of 002
        # (a user's default on Debian and Ubuntu), and the engine warned of each pair `argus keys` made
        os.chmod(written[0], 0o644)
        os.chmod(written[1], 0o600)
        public, secret = (Path(directory) / Path(path).name for path in written)
        os.replace(written[0], public)
        os.replace(written[1], secret)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return public, secret
