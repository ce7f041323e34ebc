"""What a command cannot run with, refused before it starts: argparse types for numbers (finite, and above zero or
from zero, at least a bound or between two; a probability), lists of them, URLs, and files to write into a directory
that is not there; and files to read that cannot be read, as a UsageError. And what a URL's host is."""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from engine.config import HEARTBEAT_INTERVAL_S, MAX_HEARTBEAT_TIMEOUT_S, MAX_QUEUE, MIN_HEARTBEAT_TIMEOUT_S
from engine.http.forwarded_for import IPNetwork
from protocols.curve import ClientKeys
from protocols.endpoints import NotAnEndpoint, parse_endpoint
from protocols.limits import MAX_BATCH, MAX_STEPS
from workers.config import usable_cpus
from workers.limits import DEFAULT_LEVELS

T = TypeVar("T")

# a DNS name, an IPv4 address or an IPv6 one (without its brackets), as the host of an image URL
URL_HOST = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+(%[A-Za-z0-9._-]+)?")


# the devices a worker runs its model on (torch names more, none a worker here is built for); torch takes no leading
# zero in an index (cuda:07 raised "Invalid device string", a traceback)
_DEVICE = re.compile(r"cpu|mps|cuda(:(?P<index>0|[1-9][0-9]*))?")
# torch keeps a device's index in a signed byte: cuda:256 was read as cuda:0, and ran there, cuda:255 as the current
# device, cuda:128 as cuda:-128, and past 2**31 it raised (a traceback)
MAX_CUDA_INDEX = 127
# a URL path that needs no quoting: image URLs are made by appending to it. A % starts an escape of two hex digits:
# one that starts none (/50%off) was sent by each client as it saw fit, Python's as /50%25off, a browser's as is
_URL_PATH = re.compile(r"(/([A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})*)*")
# what a URL is written in, whole (RFC 3986): urlsplit reads past tabs and newlines anywhere, and spaces or controls
# before the scheme, so checking its parts alone let them through, kept in every image URL
_VISIBLE_ASCII = re.compile(r"[!-~]+")


# here, not in engine/cli.py, which the commands' modules would import again as a second module (and class) when
# it runs as `python -m engine.cli`: its main() would not catch what they raise
class UsageError(Exception):
    """Flags that cannot run together, or a file in the way: the command says why and exits 2, as argparse does."""


def _number(kind: type, admits: Callable[[float], bool], bound: str, why: str = "") -> Callable[[str], float]:
    """An argparse type: a finite number of `kind` that `admits`, said as "a number `bound`" (and `why`) when not.
    `why` is said of a number out of bounds alone: it said why a smaller one cannot work of --window-s inf, and of
    --image-url-store-bytes 1e9, refused for not being a whole number."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            # "1e9" or "256MiB" is no count of bytes
            whole = "whole " if kind is int else ""
            raise argparse.ArgumentTypeError(f"expected a {whole}number {bound}, not {text!r}") from None
        # an int is finite however large: math.isfinite raised OverflowError past a float's range (a traceback for
        # --max-queue 1e400 written out)
        if not (isinstance(value, int) or math.isfinite(value)):  # inf, NaN
            raise argparse.ArgumentTypeError(f"expected a finite number {bound}, not {text!r}")
        if not admits(value):
            raise argparse.ArgumentTypeError(f"expected a number {bound}{why}, not {text!r}")
        return value

    parse.__name__ = f"{kind.__name__} {bound}"  # argparse names the type in its errors
    return parse


def _at_least_zero(kind: type, zero_allowed: bool) -> Callable[[str], float]:
    """An argparse type: a finite number of `kind` above zero (or from zero)."""
    if zero_allowed:
        return _number(kind, lambda value: value >= 0, ">= 0")
    return _number(kind, lambda value: value > 0, "> 0")


positive_int = _at_least_zero(int, zero_allowed=False)
positive_float = _at_least_zero(float, zero_allowed=False)
non_negative_int = _at_least_zero(int, zero_allowed=True)
non_negative_float = _at_least_zero(float, zero_allowed=True)


def at_least(kind: type, least: float, unit: str, why: str) -> Callable[[str], float]:
    """An argparse type: a finite number of `kind` of at least `least` (above zero); `why` says why a smaller one
    cannot work."""
    return _number(kind, lambda value: value >= least, f">= {least:g}{unit}", f" ({why})")


def between(kind: type, least: float, most: float, unit: str, why: str, *, least_allowed: bool = True):
    """An argparse type: a finite number of `kind` from `least` to `most` (above `least` when not `least_allowed`);
    `why` ("" when it goes without saying) says why one outside them cannot work."""
    if least_allowed:
        admits, bound = (lambda value: least <= value <= most), f"from {_said(least)} to {_said(most)}{unit}"
    else:
        admits, bound = (lambda value: least < value <= most), f"above {_said(least)} and at most {_said(most)}{unit}"
    return _number(kind, admits, bound, f" ({why})" if why else "")


def _said(bound: float) -> str:
    """A bound said whole, as given: :g said 2**63 - 1 as 9.22337e+18, which is no bound."""
    return f"{int(bound):,}" if float(bound).is_integer() else f"{bound:,}"


def thread_count(text: str) -> int:
    """An argparse type: torch's CPU threads for a model, at most the CPUs this process may run on. Past them the
    threads only take turns (a 256x256 matmul took 0.2 ms with 2 threads on 2 cores, 33 ms with 1,000), and past
    2**31 - 1 the worker died with a traceback as it loaded its model."""
    value = positive_int(text)
    cpus = usable_cpus()
    if value > cpus:
        raise argparse.ArgumentTypeError(
            f"at most {cpus}, the CPUs this process may run on (more threads only take turns on them), not {text!r}"
        )
    return value


# a probability, a number from 0 to 1
probability = between(float, 0, 1, "", "")
# a TCP port to listen on, 0 for any free one. A port past 65535 is not an error to the socket layer: it listens on the
# number modulo 65536 (70000 on 4464)
tcp_port = between(int, 0, 65535, "", "")


def engine_address(text: str) -> str:
    """An argparse type: the engine's worker address to dial, tcp://HOST:PORT or ipc://PATH. ZeroMQ refuses any
    other only as the socket connects: a worker died with a traceback, and a Ray actor, replaced, died again."""
    return _zmq_address(text, listening=False)


def http_host(text: str) -> str:
    """An argparse type: --host, an address or a name, an IPv6 address with or without its brackets. asyncio takes
    it bare alone: `--host [::1]`, as a URL and --client-listen write it, was refused "Name or service not known"."""
    return text[1:-1] if text.startswith("[") and text.endswith("]") else text


def listen_address(text: str) -> str:
    """An argparse type: an address the engine's ZeroMQ sockets listen on, tcp://HOST:PORT (PORT 0 or * for any free
    one) or ipc://PATH. ZeroMQ refuses any other only as the engine binds it, after the engine has built much of
    itself and warned that the address listens without CURVE; ZeroMQ still judges HOST (an address of this host)."""
    return _zmq_address(text, listening=True)


def _zmq_address(text: str, listening: bool) -> str:
    try:
        parse_endpoint(text, listening)
    except NotAnEndpoint as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def public_url(text: str) -> str:
    """An argparse type: the URL clients reach the HTTP API at (a reverse proxy's), without its final slash. A port
    is 1 to 65535: with port 0 every image URL was one no client can fetch, and an empty one (`https://HOST:$PORT`,
    the variable unset) sent clients to the scheme's default port, not the one meant; both were found out only as
    clients failed."""
    try:
        parts = urlsplit(text)
        port = parts.port  # it raises on a port that is not one
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if (
        parts.scheme not in ("http", "https")
        or not URL_HOST.fullmatch(parts.hostname or "")
        or port == 0
        or parts.netloc.endswith(":")
        or not _URL_PATH.fullmatch(parts.path)
        or any(c in text for c in "?#@")
        or not _VISIBLE_ASCII.fullmatch(text)
    ):
        raise argparse.ArgumentTypeError(f"expected http(s)://HOST[:PORT][/PATH] (PORT 1 to 65535), not {text!r}")
    return text.rstrip("/")


def torch_device(text: str) -> str:
    """An argparse type: a device a worker runs its model on. A typo ('gpu', 'cuda0') failed each worker as it
    started, and an engine restarted its local workers so for ever, never ready."""
    found = _DEVICE.fullmatch(text)
    if found and int(found["index"] or 0) <= MAX_CUDA_INDEX:
        return text
    raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N (N 0 to {MAX_CUDA_INDEX}) or mps, not {text!r}")


# the largest batch a worker runs, within what the wire carries
batch_size = between(int, 1, MAX_BATCH, " images", "what the wire carries")
# the engine's own bounds, for `argus serve` and for the commands that pass a value on to an engine:
# seconds of worker silence before it is lost
heartbeat_timeout = between(
    float,
    MIN_HEARTBEAT_TIMEOUT_S,
    MAX_HEARTBEAT_TIMEOUT_S,
    " s",
    f"workers beat every {HEARTBEAT_INTERVAL_S:g} s, and a shorter wait counts healthy workers lost; ZeroMQ counts a"
    " longer one in ms, in an int",
)
# images admitted at once: past a C int, the engine's start failed in a traceback (OverflowError, exit 1)
queue_size = between(int, 1, MAX_QUEUE, " images", "ZeroMQ counts a client's replies in an int")
# denoising steps N of a request
step_count = between(int, 1, MAX_STEPS, "", "as the engine takes")
# the sim backend's factor on its profile's GPU time: from about 1e306 the engine's scaled profile overflowed to
# infinite latencies, and its start ended in a ValueError traceback (from about 1e150, NumPy's overflow warnings
# first); a million already makes one simulated SD-XL image take two months
MAX_SIM_TIME_SCALE = 1e6
sim_time_scale = between(float, 0, MAX_SIM_TIME_SCALE, "", "at a million, one simulated image takes months")


def ip_network(text: str) -> IPNetwork:
    """An argparse type: an IP address, or a network in CIDR notation (10.0.0.0/8; host bits are ignored)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address or network: {exc}") from None


def comma_separated(item: Callable[[str], T]) -> Callable[[str], list[T]]:
    """An argparse type: a comma-separated list (blank items skipped), each item of type `item`."""

    def parse(text: str) -> list[T]:
        return [item(part) for part in text.split(",") if part.strip()]

    parse.__name__ = f"comma-separated {item.__name__}"
    return parse


def cache_levels(text: str) -> tuple[int, ...]:
    """An argparse type: the levels K the prompt cache keeps latents at, some of the default ones, ascending. They
    are the levels the controller knows a quality and a similarity threshold for."""
    rule = f"some of {','.join(map(str, DEFAULT_LEVELS))}, ascending, comma separated"
    try:
        levels = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {rule}, not {text!r}") from None
    if not levels or list(levels) != sorted(set(levels)) or not set(levels) <= set(DEFAULT_LEVELS):
        raise argparse.ArgumentTypeError(f"expected {rule}, not {text!r}")
    return levels


def output_file(text: str) -> str:
    """An argparse type: a file a command writes when it ends, checked now, not after a run that may take hours. `-` is
    the standard output, as it is to most commands (it was a file named '-' in the working directory)."""
    if text == "-":
        text = "/dev/stdout"
    if not text:  # a variable left unset (--json "$OUT"): it was said to be a directory, " is a directory, not a file"
        raise argparse.ArgumentTypeError("is empty (a variable left unset?): give a file to write, or leave it out")
    if os.path.basename(text) in ("", ".", ".."):
        # a directory not there yet (`--json results/`): the command ran, and wrote its output as a file named results
        raise argparse.ArgumentTypeError(f"{text} names a directory, not a file")
    if os.path.exists(text) and not os.path.isfile(text) and not os.path.isdir(text):
        # a stream (a pipe, a terminal, a FIFO, /dev/null), written as it comes: no file is made beside it. Its
        # directory was asked to take one, which /dev/pts and a pipe's /proc/PID/fd (where /dev/stdout leads) refuse
        # any user but root: `--json /dev/stdout` was `cannot write in /proc/4242/fd`
        if not os.access(text, os.W_OK):
            raise argparse.ArgumentTypeError(f"cannot write to {text}")
        return text
    directory = Path(text).resolve().parent
    if not directory.is_dir():
        raise argparse.ArgumentTypeError(f"no directory {directory} to write {text} in")
    if not os.access(directory, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write in {directory}")
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
    from engine.system.whole_files import check_writable_whole

    try:
        # what os.access passes and the write at the end is refused: root's --json /proc/x.json ran the bench first
        check_writable_whole(text)
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot write in {directory}: {error.strerror or error}") from None
    return text


def not_an_input(out: str | None, *inputs: str | None, flag: str = "--out") -> None:
    """An output (`flag`) that is one of the command's input files is a UsageError: written as the command ended, it
    replaced them (`argus train-predictor S --out S`: the samples, hours of measuring). None: not given."""
    for path in inputs:
        if out and path and _one_file(path, out):
            raise UsageError(f"{flag} {out} is the input {path}: writing it would destroy what it is made from")


def none_empty(args: argparse.Namespace, *flags: str) -> None:
    """A flag given an empty value (a variable left unset: `--curve-secret "$SECRET"`) is a UsageError: read as the
    flag left out, it ran the engine without CURVE, or with a bundled profile, without a word. A positional argument
    (no "--"), which cannot be left out, is named as the usage line names it."""
    for flag in flags:
        if getattr(args, flag.removeprefix("--").replace("-", "_")) == "":
            fix = "give its value, or leave the flag out" if flag.startswith("--") else "give its value"
            raise UsageError(f"{flag} is empty (a variable left unset?): {fix}")


def distinct_outputs(*outputs: tuple[str, str | None]) -> None:
    """Outputs (flag, path; None: not given) that name one file are a UsageError: each written whole as the command
    ended, the last replaced the others (`argus loadgen --records out --json out`: the records gone, exit 0). A
    stream (/dev/stdout) is written as it comes, nothing replaced, and may take several."""
    from engine.system.whole_files import is_stream

    seen: dict[str, str] = {}
    for flag, path in outputs:
        if not path or is_stream(path):
            continue
        for other_flag, other in seen.items():
            # not there yet, they are one file if they are one path
            if os.path.realpath(path) == os.path.realpath(other) or _one_file(path, other):
                raise UsageError(f"{flag} {path} is the file of {other_flag} {other}: one would replace the other")
        seen[flag] = path


def _one_file(a: str, b: str) -> bool:
    """Whether the files at `a` and `b`, both there, are one (a path, a link to it, another hard link)."""
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def host_memory_bytes() -> int | None:
    """This host's physical memory, None where the OS does not say: what a number of bytes to hold is checked
    against."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def read_user_file(read: Callable[[str], T], path: str) -> T:
    """`read(path)`, where a file the user named cannot be used (missing, unreadable, not UTF-8, malformed): that
    is a one-line UsageError naming the file, not a traceback. Only the reading is covered: a bug elsewhere still
    shows its traceback."""
    try:
        return read(path)
    except OSError as error:  # named by the file it is about: `path` may be a directory of them
        raise UsageError(f"{error.filename or path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise UsageError(_not_utf8(path, error)) from None
    except json.JSONDecodeError as error:  # Python's own, which does not name the file
        raise UsageError(f"{path}: {error}") from None
    except RecursionError:  # json's, for lists or objects nested a thousand deep
        raise UsageError(f"{path}: nested too deep to read") from None
    except ValueError as error:  # the readers', which name the file (and line)
        raise UsageError(str(error)) from None


def _not_utf8(path: str, error: UnicodeDecodeError) -> str:
    """Where `path` stops being UTF-8. Python's message gives a position in the chunk a text file was decoded in,
    not in the file: 'position 7103' of a prompt file's line 3,001, 300 KB in. The line is found by reading the
    file again, which a pipe cannot be: then no place is given."""
    where = path
    if os.path.isfile(path):
        try:
            data = Path(path).read_bytes()
            data.decode()
        except UnicodeDecodeError as whole:
            newline = b"\n"
            where = f"{path}:{data.count(newline, 0, whole.start) + 1}"
        except OSError:
            pass
    return f"{where}: not UTF-8: can't decode byte 0x{error.object[error.start]:02x} ({error.reason})"


def client_keys(secret_file: str, server_public_file: str) -> ClientKeys:
    """What a worker or a client reaches a CURVE engine with: a key file it cannot use is a UsageError naming it."""
    # each error names the file it is about (an OSError by its filename), the server's key file too
    return read_user_file(lambda path: ClientKeys.from_files(path, server_public_file), secret_file)
