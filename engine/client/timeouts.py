"""A call's timeout (`timeout_s`), one rule for both clients: the bound it takes, and what a call that runs out of it
raises."""

from __future__ import annotations

from protocols.curve import RefusedHandshakes

# ZeroMQ's send timeout is an int of milliseconds
_MAX_TIMEOUT_S = (2**31 - 1) / 1000


class EngineUnreachable(TimeoutError):
    """A call timed out, and no handshake with an engine ever succeeded at the client's address: nothing answered
    there (no engine up, a host that does not resolve or does not answer), or what answered failed each handshake
    without a word, too few times yet to refuse the call (its words then say what that suggests: the engine's public
    key given is not its own, CURVE at one end only, an address that is no engine's). A plain TimeoutError is an
    engine reached that did not reply in time. A TimeoutError too, as it is one: code that handles timeouts still
    does, and the call may have come only early (an engine that comes up later is dialled, and answers the next
    call)."""


def checked_timeout(timeout_s: float | None) -> float | None:
    # checked before the socket is made: ZeroMQ refused a negative one with 'Invalid argument' (NaN, infinity
    # and over 24 days failed otherwise), each time leaving the socket and context unclosed
    if timeout_s is not None and not 0 < timeout_s <= _MAX_TIMEOUT_S:
        raise ValueError(f"timeout_s must be above 0 and at most {_MAX_TIMEOUT_S:.0f} (or None), not {timeout_s}")
    return timeout_s


def timed_out(address: str, refusals: RefusedHandshakes, timeout_s: float, why: str) -> TimeoutError:
    """What a call that ran out of `timeout_s` raises, `why` its own words, by the handshakes heard up to then (the
    caller reads the monitor's events first)."""
    if refusals.full:
        # turned away at each dial since: no engine unreachable, one whose every connection is taken
        return TimeoutError(f"{why} in {timeout_s:g} s: {refusals.full}")
    suspected = refusals.suspected()
    if not refusals.handshook:
        return _unreached(address, timeout_s, suspected)
    # an engine reached before: the handshakes failing since say why no reply came (it said only that none had)
    return TimeoutError(f"{why}: {suspected}" if suspected else why)


def _unreached(address: str, waited_s: float, suspected: str | None) -> EngineUnreachable:
    if suspected:
        # something took the connections, and failed each handshake: telling its user to check that the engine is up
        # sent them to an engine that was, refusing their keys
        return EngineUnreachable(f"nothing at {address} took a handshake in {waited_s:g} s: {suspected}")
    return EngineUnreachable(
        f"nothing answered at {address} in {waited_s:g} s: check that the engine is up and that {address} is its"
        " --client-listen address"
    )
