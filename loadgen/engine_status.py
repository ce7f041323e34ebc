"""What the load generator reads from the engine's HTTP status endpoints.

- `GET /ready` answering 200 or 503 before a run: else no request could be served.
- `GET /ready` may carry the `sizes` and `steps` the engine takes: a run whose
  --size or --steps is outside them would have every request refused.
- `GET /ready` may carry `exact_capacity_rps`: requests per second the ready
  workers sustain at exact generation (K = 0) and the engine's default steps
  (`steps.default`); `--load` is a multiple of it. `null` (with
  `exact_capacity_reason`) from sim workers at --time-scale 0, which no capacity bounds.
- Workers per level over time, for the timeline plot: from `GET /plan` when the
  engine has a controller (expected shape `{"workers_per_level": {"K": n}}`),
  else from the `level` of each worker listed by `GET /ready`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, NamedTuple
from urllib.parse import urlsplit

import aiohttp

from engine.config import API_KEY_ENV
from loadgen.clients import auth_headers
from loadgen.report import LevelSample
from workers.limits import SizeLimits, steps_refusal

log = logging.getLogger(__name__)
_TIMEOUT = aiohttp.ClientTimeout(total=5.0)


class CapacityUnknown(Exception):
    pass


class EngineUnreachable(Exception):
    pass


# what an engine's /ready answers: 200 ready, 503 not yet (no worker ready, a drain). Anything else is no engine a run
# could use: a 404 from `--url .../v1` (the base URL OpenAI's clients take), a 403 host_not_allowed, a proxy's 502
_READY_STATUSES = (200, 503)


async def check_reachable(base_url: str, api_key: str | None = None) -> object:
    """The engine's /ready, parsed (None if it is not JSON). Raises EngineUnreachable when no engine answers /ready
    at `base_url` (nothing answers HTTP, or something that is not an engine's /ready), or the engine requires an API
    key and none was given or it refuses the one given: every request of a run would fail alike, for as long as the
    run lasts."""
    body = await _read_ready(base_url, api_key)
    try:  # not round the read: a ValueError of aiohttp's (a header it will not send) was taken for a body not JSON
        return json.loads(body)
    except ValueError:
        return None


def request_refusal(ready: object, width: int, height: int, steps: int | None) -> str | None:
    """Why an engine whose /ready is `ready` refuses every request of width x height (0 x 0: its default) and `steps`
    (None: its default), naming the flag; None if it takes them, or cannot tell: /ready lists no worker (the limits are
    then only its --backend's usual ones), or has no limits (an engine before they were added, or not argus)."""
    if not isinstance(ready, dict) or not ready.get("workers"):
        return None
    sizes, step_rules = ready.get("sizes"), ready.get("steps")
    if width and isinstance(sizes, dict):
        try:
            limits = SizeLimits(int(sizes["min"]), int(sizes["max"]), int(sizes["default"]), int(sizes["multiple"]))
        except (KeyError, TypeError, ValueError):
            return None
        if limits.multiple > 0 and not (limits.takes(width) and limits.takes(height)):
            return f"--size {width}x{height}: the engine takes sides that are {limits.rule}"
    if steps is not None and isinstance(step_rules, dict) and isinstance(step_rules.get("refused"), list):
        refused = {n for n in step_rules["refused"] if isinstance(n, int)}
        if refusal := steps_refusal(steps, refused):
            return f"--{refusal}"
    return None


async def _read_ready(base_url: str, api_key: str | None) -> bytes:
    """The body of GET /ready; raises EngineUnreachable as check_reachable says."""
    url = base_url.rstrip("/") + "/ready"
    async with aiohttp.ClientSession(timeout=_TIMEOUT, headers=auth_headers(api_key)) as session:
        try:
            async with session.get(url) as response:
                status, body = response.status, await response.read()
        except (aiohttp.ClientError, OSError) as exc:
            # a timeout's message is empty (and an exception is never falsy): the error ended with 'at URL: '
            if isinstance(exc, TimeoutError):
                said = f"GET {url} had no answer in {_TIMEOUT.total:g} s"
            else:
                said = str(exc) or type(exc).__name__
            raise EngineUnreachable(f"no engine answers at {base_url}: {said}") from None
    if status == 401:
        # auth_headers sends no header for no key or "": the engine was not refusing a key, it was given none
        if not api_key:
            raise EngineUnreachable(
                f"the engine at {base_url} requires an API key and none was given: pass --api-key or set ${API_KEY_ENV}"
            )
        raise EngineUnreachable(f"the engine at {base_url} refuses the API key (--api-key or ${API_KEY_ENV})")
    if status not in _READY_STATUSES:
        said = _error_said(body)
        openai_base = urlsplit(base_url).path.rstrip("/").endswith("/v1")
        hint = "; --url is the engine's own address, without the /v1 OpenAI's clients take" if openai_base else ""
        raise EngineUnreachable(f"no engine at {base_url}: GET {url} answered {status}{said and f' {said}'}{hint}")
    return body


def _error_said(body: bytes) -> str:
    """The engine's code and message in an error body (`host_not_allowed: Host 'x' does not name...`), or ''."""
    try:
        error = json.loads(body)["error"]
        return ": ".join(str(error[key]) for key in ("code", "message") if error.get(key))
    except (ValueError, TypeError, KeyError):
        return ""


class Capacity(NamedTuple):
    rps: float
    # the workers in rotation it is the capacity of: fewer than started while some still load their model, and
    # without those /ready lists as failing (out of rotation, counted in no capacity)
    workers: int
    # the steps it is at: the engine's default (its profile's); None when /ready does not say
    default_steps: int | None


async def exact_capacity_rps(base_url: str, api_key: str | None = None) -> Capacity:
    """The engine's `exact_capacity_rps` from /ready; raises EngineUnreachable as check_reachable does, and
    CapacityUnknown when the engine does not report one."""
    try:
        status = json.loads(await _read_ready(base_url, api_key))
    except ValueError as exc:
        raise CapacityUnknown(f"could not read {base_url}/ready: {exc}") from None
    capacity = status.get("exact_capacity_rps") if isinstance(status, dict) else None
    if not isinstance(capacity, (int, float)):
        # and, from an engine whose sim workers take no time, why
        why = status.get("exact_capacity_reason") if isinstance(status, dict) else None
        raise CapacityUnknown(
            f"{base_url}/ready reports no exact_capacity_rps" + (f" ({why})" if isinstance(why, str) else "")
        )
    if capacity <= 0:
        # no worker ready (still loading its model, say): "reports none" sent the user to look for a missing field
        reason = status.get("reason")
        raise CapacityUnknown(
            f"{base_url}/ready reports an exact_capacity_rps of 0" + (f" ({reason})" if isinstance(reason, str) else "")
        )
    workers = status.get("workers")
    in_rotation = (
        [w for w in workers if isinstance(w, dict) and w.get("state") == "ready"] if isinstance(workers, list) else []
    )
    steps = status.get("steps")
    default_steps = steps.get("default") if isinstance(steps, dict) else None
    return Capacity(float(capacity), len(in_rotation), default_steps if isinstance(default_steps, int) else None)


@dataclass
class LevelSampler:
    """Polls the engine every `every_s` seconds; each sample is (seconds since run start, {level: workers})."""

    base_url: str
    every_s: float = 1.0
    api_key: str | None = None
    samples: list[LevelSample] = field(default_factory=list)
    source: Literal["plan", "ready"] | None = None

    async def run(self, run_start: float) -> None:
        """`run_start`: the time.perf_counter() sample times count from."""
        base = self.base_url.rstrip("/")
        use_plan = True
        async with aiohttp.ClientSession(timeout=_TIMEOUT, headers=auth_headers(self.api_key)) as session:
            while True:
                try:
                    if use_plan:
                        levels = await _plan_levels(session, base)
                        use_plan = levels is not None
                    if not use_plan:
                        levels = await _ready_levels(session, base)
                    if levels is not None:
                        self.source = "plan" if use_plan else "ready"
                        self.samples.append((time.perf_counter() - run_start, levels))
                except Exception as exc:  # whatever the server sends (an Infinity count, deep nesting): the
                    # sampler must not end, as run_load awaits it at the end, and the load itself goes on
                    log.debug("status poll failed: %s", exc)
                    # no reading: an empty sample, a gap in the plot's panel. Left out, the last reading held to
                    # the end of the run: an engine SIGKILLed 2 s into a 6 s run was drawn serving to the end
                    self.samples.append((time.perf_counter() - run_start, {}))
                await asyncio.sleep(self.every_s)


async def _plan_levels(session: aiohttp.ClientSession, base: str) -> dict[int, int] | None:
    """None when the engine has no /plan (404) or one this reader does not understand."""
    async with session.get(base + "/plan") as response:
        if response.status == 404:
            return None
        response.raise_for_status()
        body = await response.json(content_type=None)
    plan = body.get("workers_per_level") if isinstance(body, dict) else None
    if not isinstance(plan, dict):
        log.warning("GET /plan has no workers_per_level mapping; reading worker levels from /ready instead")
        return None
    return {int(level): int(n) for level, n in plan.items()}


async def _ready_levels(session: aiohttp.ClientSession, base: str) -> dict[int, int] | None:
    async with session.get(base + "/ready") as response:
        body = await response.json(content_type=None)
    workers = body.get("workers") if isinstance(body, dict) else None
    if not isinstance(workers, list):
        return None
    return dict(Counter(int(w["level"]) for w in workers if isinstance(w, dict) and "level" in w))
