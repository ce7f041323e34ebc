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


def _down_while_turned_away(engine, proxy: DroppingProxy, tmp_path):
    """Stops the engine, lets the proxy turn the client's dials away more times than would refuse an address that is
    no engine's, and starts another engine on the same address."""
    assert engine.stop() == 0
    turned_away = proxy.turned_away
    assert wait_for(lambda: proxy.turned_away >= turned_away + 2 * _SILENT_FAILURES)
    return start_engine(tmp_path, *_SIM, backend="sim", workers=1, client_port=_port(engine.client_address))


def test_a_sync_client_is_served_by_the_engine_back_behind_the_proxy(tmp_path):
    engines = [start_engine(tmp_path, *_SIM, backend="sim", workers=1)]
    proxy = DroppingProxy(_port(engines[0].client_address))
    try:
        with ArgusClient(proxy.address, timeout_s=60) as client:
            assert isinstance(client.generate("before", width=64, height=64), Images)
            engines.append(_down_while_turned_away(engines[0], proxy, tmp_path))
            reply = client.generate("after", width=64, height=64)  # was ConnectionRefusedError
            assert isinstance(reply, Images), reply
    finally:
        proxy.close()
        for engine in engines:
            engine.stop()


async def test_an_async_client_is_served_by_the_engine_back_behind_the_proxy(tmp_path):
    engines = [await asyncio.to_thread(start_engine, tmp_path, *_SIM, backend="sim", workers=1)]
    proxy = DroppingProxy(_port(engines[0].client_address))
    try:
        async with AsyncArgusClient(proxy.address) as client:
            assert isinstance(await asyncio.wait_for(client.generate("before", width=64, height=64), 60), Images)
            engines.append(await asyncio.to_thread(_down_while_turned_away, engines[0], proxy, tmp_path))
            reply = await asyncio.wait_for(client.generate("after", width=64, height=64), 60)
            assert isinstance(reply, Images), reply  # was ConnectionRefusedError
    finally:
        proxy.close()
        for engine in engines:
            await asyncio.to_thread(engine.stop)
