"""The clients and run_load when nothing useful answers, answers at the hard end, or the client fails: every request
is still recorded, once; and the run cut short or refused."""

import asyncio
import functools
import time

import pytest
import zmq
import zmq.asyncio
from load_clients import BusyAfter

import engine.client.link
from engine_process import free_port
from loadgen.arrivals import Arrival
from loadgen.clients import HttpLoadClient, LoadClient, RequestOptions, ZmqLoadClient
from loadgen.records import Answer
from loadgen.report import format_summary
from loadgen.run import Interrupt, run_load
from protocols.client_messages import Cancel, Generate, engine_side_codec
from protocols.curve import KeyPair, make_server

SCHEDULE = [Arrival(0.0), Arrival(0.05), Arrival(0.1, 1)]
PROMPTS = ["a red fox", "a paper boat"]


def assert_counted_once(records, summary, n):
    assert [r["id"] for r in records] == list(range(n))
    assert summary["sent"] == n == sum(summary["outcomes"].values())


async def test_refused_http_connections_are_error_records():
    client = HttpLoadClient(f"http://127.0.0.1:{free_port()}", RequestOptions(64, 64, steps=4))
    try:
        records, summary = await asyncio.wait_for(
            run_load(SCHEDULE, PROMPTS, client, 1000.0, drain_s=10.0, progress=False), 30
        )
    finally:
        await client.close()
    assert_counted_once(records, summary, 3)
    assert summary["outcomes"]["error"] == 3 and summary["error_codes"] == {"connection_error": 3}
    assert summary["slo_violation_ratio"] == 1.0
    assert [r["prompt_index"] for r in records] == [0, 1, 1]


async def test_unanswered_requests_time_out_and_the_engine_is_told():
    """A ROUTER that never answers: the run ends at its hard timeout and cancels what is in flight."""
    address = f"tcp://127.0.0.1:{free_port()}"
    context = zmq.asyncio.Context()
    silent = context.socket(zmq.ROUTER)
    silent.setsockopt(zmq.LINGER, 0)
    silent.bind(address)
    codec = engine_side_codec()
    client = ZmqLoadClient(address, RequestOptions(64, 64, steps=4))
    try:
        records, summary = await asyncio.wait_for(
            run_load(SCHEDULE, PROMPTS, client, None, seed=9, drain_s=0.5, progress=False), 30
        )
        received = []
        while len(received) < 6 and await silent.poll(5000):
            frames = await silent.recv_multipart()
            received.append(codec.decode(frames[1:]))
    finally:
        await client.close()
        silent.close()
        context.term()
    assert_counted_once(records, summary, 3)
    assert all(r["outcome"] == "error" and r["code"] == "client_timeout" for r in records)
    assert all(r["latency_ms"] is None and r["n_images"] == 0 for r in records)
    generates = [m for m in received if isinstance(m, Generate)]
    assert [g.seed for g in generates] == [9, 10, 11]
    assert [(g.prompt, g.width, g.height, g.steps) for g in generates][0] == ("a red fox", 64, 64, 4)
    cancelled = {m.request_id for m in received if isinstance(m, Cancel)}
    assert cancelled == {g.request_id for g in generates}


async def test_a_run_ends_when_the_engine_is_not_there_and_the_send_queue_is_full(monkeypatch):
    """Nothing listens, so every Generate waits in the socket's queue, bounded by its high-water mark (100,000:
    4 here). At the hard end, the Cancel of each request given up on must not wait for room in that queue."""
    small_queue = functools.partial(engine.client.link.make_socket, send_hwm=4)
    monkeypatch.setattr(engine.client.link, "make_socket", small_queue)
    client = ZmqLoadClient(f"tcp://127.0.0.1:{free_port()}", RequestOptions(64, 64, steps=4))
    try:
        records, summary = await asyncio.wait_for(
            run_load([Arrival(0.0)] * 20, PROMPTS, client, None, drain_s=0.3, progress=False), 30
        )
    finally:
        await client.close()
    assert_counted_once(records, summary, 20)
    assert summary["error_codes"] == {"client_timeout": 20}


async def test_requests_to_an_engine_that_requires_curve_are_refused_and_said_why_once(caplog):
    """ZeroMQ does not dial again after such a handshake: each request waited for the run's hard end, recorded
    client_timeout with no word of CURVE."""
    address = f"tcp://127.0.0.1:{free_port()}"
    context = zmq.Context()
    engine_keys = KeyPair.generate()
    server = context.socket(zmq.ROUTER)
    server.setsockopt(zmq.LINGER, 0)
    make_server(server, engine_keys, "clients")
    server.bind(address)
    client = ZmqLoadClient(address, RequestOptions(64, 64, steps=4))  # no keys
    try:
        records, summary = await asyncio.wait_for(
            run_load(SCHEDULE, PROMPTS, client, None, drain_s=2.0, progress=False), 30
        )
    finally:
        await client.close()
        server.close()
        context.term()
    assert_counted_once(records, summary, 3)
    assert summary["error_codes"] == {"connection_refused": 3}
    refusals = [r.getMessage() for r in caplog.records if "CURVE" in r.getMessage()]
    # "the engine at ADDRESS requires CURVE keys: ...", or, when the engine hung up before the client named the
    # mismatch ten times in a row (seen under CI's load), "every handshake with the engine at ADDRESS failed: the
    # engine requires CURVE keys, ...": either is the refusal, said once
    assert len(refusals) == 1, refusals
    assert f"the engine at {address}" in refusals[0] and "requires CURVE keys" in refusals[0], refusals
    assert refusals[0].endswith(": no request over --zmq can be served"), refusals


class _StallingClient(LoadClient):
    """Request 0 answers just before the run's hard end, and request 1 stalls the loop across both instants:
    the answer and the hard end come due in one loop turn."""

    async def _exchange(self, prompt, seed, slo_ms) -> Answer:
        if seed == 0:
            await asyncio.sleep(0.25)
        else:
            await asyncio.sleep(0.05)
            time.sleep(0.5)  # noqa: ASYNC251 - the stall is the point
        return Answer("busy", code="busy")

    async def close(self) -> None:
        pass


async def test_an_answer_due_in_the_loop_turn_of_the_hard_end_is_recorded_before_the_summary():
    records, summary = await run_load(
        [Arrival(0.0), Arrival(0.0)], PROMPTS, _StallingClient(RequestOptions()), None, seed=0, drain_s=0.3,
        progress=False,
    )  # fmt: skip
    assert_counted_once(records, summary, 2)
    await asyncio.sleep(0.05)  # a done callback left over would add its record now
    assert len(records) == 2


class _LateSendingClient(LoadClient):
    """Request 0 stalls the loop past the drain, so request 1 goes out that late; it is answered `answer_after_s`
    after."""

    def __init__(self, answer_after_s: float):
        super().__init__(RequestOptions())
        self.answer_after_s = answer_after_s

    async def _exchange(self, prompt, seed, slo_ms) -> Answer:
        if seed == 0:
            time.sleep(0.5)  # noqa: ASYNC251 - the stall is the point
        else:
            await asyncio.sleep(self.answer_after_s)
        return Answer("busy", code="busy")

    async def close(self) -> None:
        pass


async def test_a_request_sent_late_still_gets_the_whole_drain():
    """The generator fell behind by more than --drain-s: a request it sent late is given the drain from its send,
    not cancelled as it goes out and counted as the engine's client_timeout."""
    records, summary = await run_load(
        [Arrival(0.0), Arrival(0.01)], PROMPTS, _LateSendingClient(answer_after_s=0.05), None, seed=0, drain_s=0.3,
        progress=False,
    )  # fmt: skip
    assert_counted_once(records, summary, 2)
    assert records[1]["sent_at"] - records[1]["scheduled_at"] > 0.3  # the case at hand
    assert summary["outcomes"]["rejected"] == 2, records
    assert summary["duration_s"] > records[1]["sent_at"]  # to the last answer


async def test_a_request_given_up_on_says_when_it_was_sent_not_when_it_was_due():
    records, _ = await run_load(
        [Arrival(0.0), Arrival(0.01)], PROMPTS, _LateSendingClient(answer_after_s=30), None, seed=0,
        drain_s=0.3, progress=False,
    )  # fmt: skip
    assert records[1]["code"] == "client_timeout"
    assert records[1]["sent_at"] >= 0.5  # after request 0's stall


class _FailingClient(LoadClient):
    """A bug in the client: every exchange raises."""

    async def _exchange(self, prompt, seed, slo_ms) -> Answer:
        raise RuntimeError("a bug in the client")

    async def close(self) -> None:
        pass


async def test_a_request_the_client_failed_is_an_error_record_named_by_the_exception(caplog):
    records, summary = await run_load([Arrival(0.0)], PROMPTS, _FailingClient(RequestOptions()), None, progress=False)
    assert_counted_once(records, summary, 1)
    assert (records[0]["outcome"], records[0]["code"]) == ("error", "exception:RuntimeError")
    assert records[0]["latency_ms"] is not None  # it was answered, by the exception, not left to the hard end
    assert "request 0 failed in the client" in caplog.text


class _BrokenSendClient(_FailingClient):
    """A bug in the sending itself: request() raises as it is called."""

    def request(self, planned, run_start, slo_ms):
        raise RuntimeError("a bug in the sending")


async def test_a_bug_in_the_sending_is_raised_not_swallowed():
    with pytest.raises(RuntimeError, match="a bug in the sending"):
        await run_load([Arrival(0.0)], PROMPTS, _BrokenSendClient(RequestOptions()), None, progress=False)


class _SlowClient(LoadClient):
    """Every request waits a long time for its answer."""

    async def _exchange(self, prompt, seed, slo_ms) -> Answer:
        await asyncio.sleep(30)
        return Answer("busy", code="busy")

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("slo_ms", "outcome"), [(None, "cancelled"), (60_000.0, "cancelled"), (1.0, "error")], ids=["no SLO", "SLO", "late"]
)
async def test_a_run_cut_short_reports_what_it_sent_and_stops_waiting_when_told_again(slo_ms, outcome):
    """Ctrl-C in argus loadgen: the first stops the sending, the second the waiting; before, the run lost every
    record. What was sent is counted once, and the summary says how many were planned. A request given up on is
    a violation only if it had waited past its SLO already: each was an error, client_timeout, so a run stopped
    soon after its start reported every request in flight as a violation."""
    interrupt = Interrupt()
    schedule = [Arrival(0.1 * i) for i in range(100)]  # ten seconds of it

    async def press_ctrl_c_twice():
        await asyncio.sleep(0.35)
        interrupt.next_stage()
        await asyncio.sleep(0.2)
        interrupt.next_stage()

    pressing = asyncio.create_task(press_ctrl_c_twice())
    records, summary = await asyncio.wait_for(
        run_load(schedule, PROMPTS, _SlowClient(RequestOptions()), slo_ms, drain_s=60.0, progress=False,
                 interrupt=interrupt),
        10,
    )  # fmt: skip
    await pressing
    sent = len(records)
    assert 1 <= sent < len(schedule)
    assert_counted_once(records, summary, sent)
    assert summary["planned"] == len(schedule)
    assert summary["outcomes"][outcome] == sent and summary["error_codes"] == {"interrupted": sent}
    # every request cancelled: none whose fate is known, so no ratio (it said 0.0, none of them a violation)
    assert summary["slo_violation_ratio"] == (1.0 if outcome == "error" else None)


@pytest.mark.parametrize(
    ("schedule", "answer_after_s", "ran_to"),
    [
        ([Arrival(30.0)], 0.0, "when it was stopped"),
        ([Arrival(0.0), Arrival(30.0)], 0.0, "when it was stopped"),
        ([Arrival(0.0), Arrival(30.0)], 0.6, "its last answer"),
    ],
    ids=["before its first send", "after its last answer", "before its last answer"],
)
async def test_a_run_stopped_while_sending_lasts_until_the_stop_or_its_last_answer(schedule, answer_after_s, ran_to):
    """A trace whose next arrival was 30 s away, stopped 0.3 s in (Ctrl-C, SIGTERM): duration_s ran from the start to
    the last answer alone, 0.0 for a run stopped before its first send (however long it had run) and the moment of
    its last answer for one that had nothing in flight; its throughput was over that span. A request answered after
    the stop still ends the run."""
    interrupt = Interrupt()

    async def stop_after(delay_s):
        await asyncio.sleep(delay_s)
        interrupt.stop_sending.set()

    stopping = asyncio.create_task(stop_after(0.3))
    records, summary = await asyncio.wait_for(
        run_load(schedule, PROMPTS, BusyAfter(answer_after_s), None, progress=False, interrupt=interrupt), 10
    )
    await stopping
    assert summary["planned"] == len(schedule) and summary["sent"] == len(schedule) - 1
    assert summary["duration_s"] > max(0.2, answer_after_s - 0.1)  # not wall-clock bounds: the 0.0 it was, or ~0
    assert summary["stopped_s"] <= summary["duration_s"]
    assert (summary["stopped_s"] == summary["duration_s"]) == (ran_to == "when it was stopped")
    assert f" s to {ran_to}, cut short: {len(schedule)} planned" in format_summary(summary).splitlines()[0]
    # nothing sent, no figure: it said 0.0/s, or with the 0.0 s of the run, n/a for the wrong reason
    assert summary["throughput_rps"] == (0.0 if records else None)


def test_ctrl_c_stops_the_sending_then_the_waiting_and_a_stop_signal_both():
    interrupt = Interrupt()
    interrupt.next_stage()
    assert interrupt.stop_sending.is_set() and not interrupt.stop_waiting.is_set()
    interrupt.next_stage()
    assert interrupt.stop_waiting.is_set()
    stopped = Interrupt()
    stopped.stop_now()
    assert stopped.stop_sending.is_set() and stopped.stop_waiting.is_set()


async def test_a_drain_of_no_time_is_refused():
    client = HttpLoadClient(f"http://127.0.0.1:{free_port()}", RequestOptions(64, 64))
    try:
        with pytest.raises(ValueError, match="drain_s must be > 0, not 0"):
            await run_load(SCHEDULE, PROMPTS, client, None, drain_s=0.0, progress=False)
    finally:
        await client.close()


async def test_a_drain_shorter_than_the_slo_is_refused():
    """A request still within its SLO at the hard end was counted a violation: bench compare waited 60 s of wall time
    whatever its SLO (--slo-ms x --time-scale), and loadgen refused such a --drain-s alone."""
    client = HttpLoadClient(f"http://127.0.0.1:{free_port()}", RequestOptions(64, 64))
    try:
        with pytest.raises(ValueError, match="drain_s 60 is shorter than the SLO, 90000 ms"):
            await run_load(SCHEDULE, PROMPTS, client, 90_000.0, drain_s=60.0, progress=False)
    finally:
        await client.close()
