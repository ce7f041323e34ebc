"""A client serves the process that made it. Used in a process forked from that one (multiprocessing's fork, a
preloading server), it says so at once: a fork copies ZeroMQ's sockets but not their I/O threads, and the call waited
for ever, its timeout unheard. Closing the copy there touches nothing of the parent's, whose client serves on. Sent to
another process (multiprocessing's spawn pickles it), it is refused saying so."""

import asyncio
import multiprocessing
from multiprocessing.reduction import ForkingPickler

import pytest

from engine.client import ArgusClient, AsyncArgusClient
from engine_process import start_engine
from protocols.client_messages import Images

# long enough for a forked child to answer, much shorter than the hang it replaces
_CHILD_ANSWERS_S = 60


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = start_engine(tmp_path_factory.mktemp("fork"), "--time-scale", "0.01", backend="sim", workers=1)
    yield engine
    engine.stop()


def _in_forked_child(use) -> tuple[str, str]:
    """What `use()` raised in a forked child, as its type's name and its words, once its close() returned too."""
    fork = multiprocessing.get_context("fork")
    theirs, ours = fork.Pipe(duplex=False)

    def child() -> None:
        try:
            use()
            ours.send(("returned", ""))
        except BaseException as error:  # noqa: BLE001 - whatever it is, the test names it
            ours.send((type(error).__name__, str(error)))

    process = fork.Process(target=child, daemon=True)
    process.start()
    try:
        assert theirs.poll(_CHILD_ANSWERS_S), "the forked child's call neither returned nor raised"
        return theirs.recv()
    finally:
        process.kill()
        process.join()


def test_a_sync_client_used_in_a_forked_child_says_so_and_serves_on_in_the_parent(engine):
    with ArgusClient(engine.client_address, timeout_s=30) as client:
        assert isinstance(client.generate("before the fork", width=64, height=64), Images)

        def use() -> None:
            try:
                client.generate("in the child", width=64, height=64)
            finally:
                client.close()

        kind, words = _in_forked_child(use)
        assert kind == "RuntimeError", (kind, words)
        assert "was forked from it" in words and "make a client in this process" in words
        assert isinstance(client.generate("after the fork", width=64, height=64), Images)


def test_an_async_client_used_in_a_forked_child_says_so_and_serves_on_in_the_parent(engine):
    # forked with no event loop running: one running in the parent would be the child's too, and asyncio.run refuse it
    client = AsyncArgusClient(engine.client_address)

    async def call(prompt: str) -> object:
        return await asyncio.wait_for(client.generate(prompt, width=64, height=64), 30)

    async def use() -> None:
        try:
            await call("in the child")
        finally:
            await client.close()

    try:
        assert isinstance(asyncio.run(call("before the fork")), Images)
        kind, words = _in_forked_child(lambda: asyncio.run(use()))
        assert kind == "RuntimeError", (kind, words)
        assert "was forked from it" in words and "make a client in this process" in words
        assert isinstance(asyncio.run(call("after the fork")), Images)
    finally:
        asyncio.run(client.close())


@pytest.mark.parametrize("kind", [ArgusClient, AsyncArgusClient])
def test_a_client_sent_to_a_spawned_process_is_refused_saying_so(engine, kind):
    client = kind(engine.client_address)
    try:
        # how multiprocessing sends a spawned process its arguments; not a spawned process itself, whose start leaves
        # multiprocessing's resource tracker running for the life of the test process, a child other tests count
        # before: pyzmq's "self.handle cannot be converted to a Python object for pickling"
        with pytest.raises(TypeError, match=f"an {kind.__name__} cannot be pickled: .* make a client in each process"):
            ForkingPickler.dumps((print, (client,)))
    finally:
        if kind is AsyncArgusClient:
            asyncio.run(client.close())
        else:
            client.close()
