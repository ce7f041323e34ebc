"""A client that reaches its engine through something that takes connections while the engine is down (ssh -L, docker's
published port, socat, a load balancer) is served again once the engine is back. Before, each connection taken and
closed there counted as a handshake failed without a word, and ten of them (a second of the engine down) refused the
client for good: ConnectionRefusedError, saying the address was no argus engine's (an HTTP port?), for every call."""

import asyncio

from tcp_proxy import DroppingProxy
from waiting import wait_for

from engine.client import ArgusClient, AsyncArgusClient
from engine_process import start_engine
from protocols.client_messages import Images
from protocols.curve import _SILENT_FAILURES

_SIM = ("--time-scale", "0.01")


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _down_while_turned_away(engine, proxies: list[DroppingProxy], tmp_path):
    """Stops the engine, lets each proxy turn its client's dials away more times than would refuse an address that is
    no engine's, and starts another engine on the same address."""
    assert engine.stop() == 0
    turned_away = [proxy.turned_away for proxy in proxies]
    for proxy, before in zip(proxies, turned_away, strict=True):
        assert wait_for(lambda proxy=proxy, before=before: proxy.turned_away >= before + 2 * _SILENT_FAILURES)
    return start_engine(tmp_path, *_SIM, backend="sim", workers=1, client_port=_port(engine.client_address))


async def test_a_sync_and_an_async_client_are_served_by_the_engine_back_behind_a_proxy_each(tmp_path):
    """One engine's stop and restart for both kinds of client, each behind a proxy of its own (which counts the dials
    it turns away for that client alone)."""
    engines = [await asyncio.to_thread(start_engine, tmp_path, *_SIM, backend="sim", workers=1)]
    proxies = [DroppingProxy(_port(engines[0].client_address)) for _ in range(2)]
    try:
        with ArgusClient(proxies[0].address, timeout_s=60) as sync_client:
            async with AsyncArgusClient(proxies[1].address) as async_client:
                before = await asyncio.to_thread(sync_client.generate, "before", width=64, height=64)
                assert isinstance(before, Images), before
                assert isinstance(
                    await asyncio.wait_for(async_client.generate("before", width=64, height=64), 60), Images
                )
                engines.append(await asyncio.to_thread(_down_while_turned_away, engines[0], proxies, tmp_path))
                replies = await asyncio.gather(
                    asyncio.to_thread(sync_client.generate, "after", width=64, height=64),
                    asyncio.wait_for(async_client.generate("after", width=64, height=64), 60),
                )
        assert all(isinstance(reply, Images) for reply in replies), replies  # was ConnectionRefusedError, each
    finally:
        for proxy in proxies:
            proxy.close()
        for engine in engines:
            await asyncio.to_thread(engine.stop)
