"""The HTTP door's API keys: --api-key's one, or the named keys of --api-keys FILE, one per client.

A named key names the client that holds it (engine/dispatch/client_shares.py, engine/dispatch/fair_share.py): what a
request says of itself (`user`, `safety_identifier`) cannot change whose share it is counted in, as a CURVE key cannot
over ZeroMQ. The file is reread on SIGHUP; a file that cannot be read then leaves the keys as they were.

Keys are looked up by their SHA-256: a guess costs the same time whatever it shares with a key (a dict of the keys
themselves compares them byte by byte, and says by the time it takes how much of one a guess got right).
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

from engine.commands.arg_types import read_user_file
from engine.logs.plurals import counted
from protocols.secret_files import warn_if_open_to_others

log = logging.getLogger("argus.engine")

# a name shows in the log lines an operator greps: no spaces, nothing a terminal interprets
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


def key_problem(key: str) -> str | None:
    """Why not every HTTP client could send `key` in an Authorization header; None if all can."""
    if not key:
        return "is empty"
    if key != key.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        # HTTP trims a header's value and carries no control character
        return (
            "starts or ends with a space or holds a control character (a newline read from a file?): no HTTP client"
            " can send it"
        )
    if not key.isascii():
        # RFC 6750: such a key served curl and aiohttp, and was a 401 to Python's urllib and requests, whatever their
        # user did
        odd = next(c for c in key if not c.isascii())
        return (
            f"holds {odd!r}, which is not ASCII: HTTP clients send it as different bytes (curl and aiohttp as UTF-8,"
            " Python's urllib and requests as Latin-1, refused then); a Bearer token is ASCII"
        )
    return None


class ApiKeys:
    """The keys the HTTP door takes now. `holder(given)`: the name of the client a key is given to ("" for --api-key's
    unnamed one), None for no key of these."""

    def __init__(self, holders: dict[bytes, str], path: str | None = None) -> None:
        self._holders = holders
        self.path = path  # --api-keys's file, reread on SIGHUP; None for --api-key's one key

    @classmethod
    def single(cls, key: str) -> ApiKeys:
        return cls({_digest(key.encode()): ""})

    @classmethod
    def read(cls, path: str) -> ApiKeys:
        """--api-keys `path`, or a UsageError naming the file (and the line at fault)."""
        return cls(read_user_file(_read_holders, path), path)

    @property
    def named(self) -> bool:
        return self.path is not None

    def holder(self, given: bytes) -> str | None:
        return self._holders.get(_digest(given))

    def reload(self) -> int:
        """Rereads --api-keys's file (blocking: call it off the loop); how many keys it holds. A UsageError leaves
        the keys as they were."""
        self._holders = read_user_file(_read_holders, self.path)
        return len(self._holders)


def _read_holders(path: str) -> dict[bytes, str]:
    # warned at start and at each SIGHUP, as the CURVE key files are: it holds every client's key
    warn_if_open_to_others(
        path,
        "whoever reads it can pose as any client it names, and whoever writes it can put in a key of their own;"
        " chmod 600 it",
        log,
        readable=True,
    )
    holders: dict[bytes, str] = {}
    names: set[str] = set()
    # lines as an editor numbers them: splitlines also breaks at \v, \f, \x1c-\x1e, \x85 and U+2028, and a key line
    # holding one was refused as two, each error after it named a line too far on
    for number, line in enumerate(Path(path).read_text(encoding="utf-8-sig").split("\n"), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        where = f"{path} line {number}"
        if len(fields) != 2:
            raise ValueError(f"{where}: expected NAME KEY, got {counted(len(fields), 'field')}")
        name, key = fields
        if not _NAME.fullmatch(name):
            # not quoted: in a line written KEY NAME it is the key, and this error is logged at a SIGHUP (a key such
            # as `openssl rand -base64` or secrets.token_urlsafe makes, with its / = or _, was written to the log)
            raise ValueError(
                f"{where}: the name, its first field (not shown: it may be a key), must be 1 to 64 of letters, digits"
                " and ._@+- (a letter or digit first); a line is NAME KEY"
            )
        if problem := key_problem(key):
            raise ValueError(f"{where}: the key {problem}")
        if name in names:
            raise ValueError(f"{where}: {name} is named twice")
        digest = _digest(key.encode())
        if digest in holders:
            raise ValueError(f"{where}: {name}'s key is {holders[digest]}'s too: a key names one client")
        names.add(name)
        holders[digest] = name
    if not holders:
        # every request would be refused 401, with no word said at start
        raise ValueError(f"{path}: no key (lines of NAME KEY)")
    return holders


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()
