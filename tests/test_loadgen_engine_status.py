"""Reading capacity and workers per level from the engine's status endpoints (a stand-in HTTP server
with the fields the engine does not serve yet: exact_capacity_rps in /ready, and GET /plan)."""

import asyncio
import contextlib
import socket
import time

import pytest
from aiohttp import web
from stand_in_http import served

from loadgen.engine_status import (
    CapacityUnknown,
    EngineUnreachable,
    LevelSampler,
    check_reachable,
    exact_capacity_rps,
    request_refusal,
)


@contextlib.asynccontextmanager
async def status_server(ready: dict, plan: dict | None, api_key: str | None = None, ready_status=200, on_ready=None):
    @web.middleware
    async def require_key(request, handler):
        if api_key and request.headers.get("Authorization") != f"Bearer {api_key}":
            return web.json_response({"error": {"code": "unauthorized"}}, status=401)
        return await handler(request)

    async def get_ready(request):
        return web.json_response(ready, status=ready_status)

    async def get_plan(request):
        if plan is None:
            raise web.HTTPNotFound()
        return web.json_response(plan)

    app = web.Application(middlewares=[require_key])
    app.router.add_get("/ready", on_ready or get_ready)
    app.router.add_get("/plan", get_plan)
    async with served(app) as url:
        yield url


READY = {
    "ready": True,
    "workers": [
        {"name": "a", "level": 0, "state": "ready"},
        {"name": "b", "level": 25, "state": "ready"},
        {"name": "c", "level": 0, "state": "ready"},
    ],
}


async def sample(url: str, api_key: str | None = None) -> LevelSampler:
    sampler = LevelSampler(url, every_s=0.05, api_key=api_key)
    task = asyncio.create_task(sampler.run(time.perf_counter()))
    while len(sampler.samples) < 2:
        await asyncio.sleep(0.02)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return sampler


async def test_capacity_from_ready():
    async with asyncio.timeout(20):
        async with status_server({**READY, "exact_capacity_rps": 2.5}, None, api_key="k") as url:
            # READY says no steps: the capacity's are unknown
            assert await exact_capacity_rps(url, api_key="k") == (2.5, 3, None)
            with pytest.raises(EngineUnreachable, match="refuses the API key"):
                await exact_capacity_rps(url, api_key="not-k")
            # before, it said the engine refused a key when none was sent
            for none in (None, ""):
                with pytest.raises(EngineUnreachable) as refused:
                    await exact_capacity_rps(url, api_key=none)
                assert str(refused.value) == (
                    f"the engine at {url} requires an API key and none was given: pass --api-key or set $ARGUS_API_KEY"
                )
        # a worker taken out of rotation as failing is listed, but the capacity is not its
        failing = [{**READY["workers"][0], "state": "failing"}, *READY["workers"][1:]]
        with_steps = {**READY, "workers": failing, "exact_capacity_rps": 1.6, "steps": {"default": 50}}
        async with status_server(with_steps, None) as url:
            assert await exact_capacity_rps(url) == (1.6, 2, 50)
        async with status_server(READY, None) as url:
            with pytest.raises(CapacityUnknown, match="reports no exact_capacity_rps$"):
                await exact_capacity_rps(url)
        # an engine whose sim workers take no time, and say so
        unbounded = {**READY, "exact_capacity_rps": None, "exact_capacity_reason": "no capacity bounds them"}
        async with status_server(unbounded, None) as url:
            with pytest.raises(CapacityUnknown, match=r"reports no exact_capacity_rps \(no capacity bounds them\)$"):
                await exact_capacity_rps(url)
        # an engine whose workers are all still starting: its capacity is 0, and its reason says why
        starting = {**READY, "workers": [], "exact_capacity_rps": 0.0, "reason": "no worker is connected: of its own"}
        async with status_server(starting, None) as url:
            with pytest.raises(CapacityUnknown, match=r"an exact_capacity_rps of 0 \(no worker is connected: of"):
                await exact_capacity_rps(url)


async def test_only_an_engines_ready_answer_is_taken_for_an_engine():
    """/ready answers 200 (ready) or 503 (not yet): a 404 (--url ending in /v1) or an engine's 403 host_not_allowed
    was taken for an engine that answers, and a run sent its whole schedule to fail alike."""

    async def refuse_host(request):
        body = {"error": {"message": "Host 'x' does not name this engine", "code": "host_not_allowed"}}
        return web.json_response(body, status=403)

    async with asyncio.timeout(20):
        async with status_server(READY, None) as url:
            await check_reachable(url)  # 200
            with pytest.raises(EngineUnreachable, match=r"/v1/ready answered 404.*without the /v1"):
                await check_reachable(url + "/v1")
            with pytest.raises(EngineUnreachable, match="answered 404"):
                await exact_capacity_rps(url + "/v1")
        async with status_server({"ready": False, "workers": []}, None, ready_status=503) as url:
            await check_reachable(url)  # an engine with no worker ready yet
        async with status_server(READY, None, on_ready=refuse_host) as url:
            with pytest.raises(EngineUnreachable, match="answered 403 host_not_allowed: Host 'x' does not name"):
                await check_reachable(url)


async def test_a_ready_that_could_not_be_asked_is_not_taken_for_an_engine_that_answers():
    """aiohttp refuses to send a header holding a newline (an API key read from a file) with a ValueError, which the
    check took for a body that is not JSON: the engine was said to answer, and the run sent its whole schedule."""
    async with asyncio.timeout(20):
        async with status_server(READY, None, api_key="k") as url:
            with pytest.raises(ValueError, match="control character"):
                await check_reachable(url, api_key="k\n")


async def test_an_address_that_takes_the_connection_and_never_answers_is_said_so(monkeypatch):
    """A listening socket nothing reads from (a hung engine, the wrong service): the error ended 'no engine answers
    at URL: ' with no reason, the timeout's message being empty."""
    import aiohttp

    from loadgen import engine_status

    monkeypatch.setattr(engine_status, "_TIMEOUT", aiohttp.ClientTimeout(total=0.3))
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        async with asyncio.timeout(20):
            with pytest.raises(EngineUnreachable) as unreachable:
                await check_reachable(url)
    assert str(unreachable.value) == f"no engine answers at {url}: GET {url}/ready had no answer in 0.3 s"


async def test_workers_per_level_from_plan_when_there_is_one():
    async with asyncio.timeout(20):
        async with status_server(READY, {"workers_per_level": {"0": 1, "25": 3}}, api_key="k") as url:
            sampler = await sample(url, api_key="k")
    assert sampler.source == "plan"
    assert all(levels == {0: 1, 25: 3} for _, levels in sampler.samples)
    assert [t for t, _ in sampler.samples] == sorted(t for t, _ in sampler.samples)


async def test_workers_per_level_from_ready_without_a_plan():
    async with asyncio.timeout(20):
        async with status_server(READY, None) as url:
            sampler = await sample(url)
    assert sampler.source == "ready"
    assert all(levels == {0: 2, 25: 1} for _, levels in sampler.samples)


async def test_a_status_the_sampler_cannot_read_costs_samples_not_the_run():
    """A /plan whose count is Infinity (int() overflows): before, the error ended the sampler, and run_load,
    awaiting it at the end, lost every record of the run."""
    polls = 0

    async def get_plan(request):
        nonlocal polls
        polls += 1
        return web.Response(text='{"workers_per_level": {"5": Infinity}}', content_type="application/json")

    app = web.Application()
    app.router.add_get("/plan", get_plan)
    async with served(app) as url:
        sampler = LevelSampler(url, every_s=0.02)
        task = asyncio.create_task(sampler.run(time.perf_counter()))
        try:
            async with asyncio.timeout(20):
                while polls < 3 and not task.done():
                    await asyncio.sleep(0.02)
            assert not task.done(), task.exception()
            assert sampler.samples and all(levels == {} for _, levels in sampler.samples)  # a gap each, not a count
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_poll_of_an_engine_gone_is_an_empty_sample():
    """An engine SIGKILLed mid-run: polls with no answer added no sample, and the plot held the last reading to the end
    of the run, the dead engine's workers drawn serving until then. Each is now an empty sample, a gap."""
    async with asyncio.timeout(20):
        async with status_server(READY, {"workers_per_level": {"0": 3}}) as url:
            sampler = await sample(url)  # two readings, then the engine is gone
        task = asyncio.create_task(sampler.run(time.perf_counter()))
        try:
            while len(sampler.samples) < 4 and not task.done():
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert [levels for _, levels in sampler.samples][:2] == [{0: 3}, {0: 3}]
    assert all(levels == {} for _, levels in sampler.samples[2:]), sampler.samples


SIZES = {"min": 64, "max": 256, "default": 64, "multiple": 8}
READY_WITH_LIMITS = {**READY, "sizes": SIZES, "steps": {"default": 50, "max": 200, "refused": [30, 31]}}


@pytest.mark.parametrize(
    ("size", "steps", "refusal"),
    [
        ((1024, 1024), None, "--size 1024x1024: the engine takes sides that are a multiple of 8 from 64 to 256"),
        ((64, 48), None, "--size 64x48: the engine takes sides that are a multiple of 8 from 64 to 256"),
        ((64, 256), None, None),
        ((0, 0), None, None),  # auto: the engine's default
        ((64, 64), 30, "--steps 30: the model's scheduler makes another number of timesteps for it"),
        ((64, 64), 31, "ask for 29 or 32"),
        ((64, 64), 32, None),
    ],
)
async def test_a_run_the_engine_refuses_every_request_of_is_told_from_its_ready(size, steps, refusal):
    async with asyncio.timeout(20):
        async with status_server(READY_WITH_LIMITS, None) as url:
            said = request_refusal(await check_reachable(url), *size, steps)
    assert said is None if refusal is None else refusal in said


@pytest.mark.parametrize(
    "ready",
    [
        {**READY_WITH_LIMITS, "workers": []},  # the limits are the --backend's until a worker says its own
        READY,  # an engine from before /ready had its limits
        {**READY, "sizes": {**SIZES, "multiple": 0}, "steps": {"refused": "all"}},
        {**READY, "sizes": {**SIZES, "max": None}, "steps": None},
        {**READY, "sizes": [64, 256]},
        ["not", "an", "engine's", "ready"],
    ],
)
def test_a_ready_without_limits_to_go_by_refuses_nothing(ready):
    assert request_refusal(ready, 1024, 1024, 30) is None
