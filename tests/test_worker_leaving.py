"""What a stopping worker tells its engine, in process: a Leaving, once, before the images it gives up (so the engine
routes them elsewhere) and after those it made (the engine drops an answer that comes after a Leaving); none when
the engine itself said Shutdown."""

from worker_in_process import batch, taken_in, welcome, worker_runtime

from protocols.worker_messages import Abort, BatchDone, ItemCancelled, ItemDone, Leaving, Shutdown


def kinds(messages: list) -> list:
    return [(m.batch_id, [type(o) for o in m.outcomes]) if isinstance(m, BatchDone) else type(m) for m in messages]


def test_a_worker_stopped_mid_run_says_leaving_once_before_the_images_it_gives_up():
    with worker_runtime() as served:
        engine, backend = served.engine, served.backend
        welcome(engine)
        engine.send(batch(1, "a0"))
        engine.send(batch(2, "b0"))
        assert backend.started.wait(30)
        taken_in(engine)
        served.runtime.stop()
        backend.release.set()
        said = served.messages_until_stopped()
    assert kinds(said) == [Leaving, (1, [ItemCancelled]), (2, [ItemCancelled])]


def test_a_worker_stopped_as_its_run_ends_answers_the_images_made_before_its_leaving():
    """The one image given up was aborted by the engine: nothing is owed elsewhere, and the made one goes first."""
    with worker_runtime() as served:
        engine, backend = served.engine, served.backend
        backend.runs_through = True
        welcome(engine)
        engine.send(batch(1, "a0", "a1"))
        assert backend.started.wait(30)
        engine.send(Abort(["a1"]))
        taken_in(engine)
        served.runtime.stop()
        backend.release.set()
        said = served.messages_until_stopped()
    assert kinds(said) == [(1, [ItemDone, ItemCancelled]), Leaving]


def test_a_worker_its_engine_stops_says_no_leaving():
    with worker_runtime(owned=True) as served:
        engine = served.engine
        welcome(engine)
        taken_in(engine)
        engine.send(Shutdown())
        assert served.messages_until_stopped() == []
        assert not served.failed
