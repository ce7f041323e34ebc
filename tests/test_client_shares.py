"""Shares of the queue among clients (engine/dispatch/client_shares.py): a lone client may fill it; once another is
refused for want of room, a client holding its share is refused too, so the room that frees goes to the one waiting."""

import asyncio
import itertools
import random
import tracemalloc

import aiohttp
import pytest
from fake_clock import Clock
from waiting import eventually

from engine.dispatch.client_shares import ClientShares
from engine_process import start_engine

MAX_QUEUE = 12

# the engine of the test marked own_engine starts while the tests before it run
pytestmark = pytest.mark.usefixtures("engines_ahead")


def one_second(images_ahead: int) -> int:
    """A Retry-After of 1 s whatever is ahead: a client refused at a full queue is remembered waiting for 3 s."""
    return 1


def refused(shares: ClientShares, client: str, images: int, queued: int) -> str | None:
    """Why the request is refused (Busy.reason), or None."""
    refusal = shares.refusal(client, images, queued)
    return refusal and refusal.reason


def fill(shares: ClientShares, client: str, images: int, queued: int) -> int:
    """Admits the client's images one by one while it may; returns how many."""
    admitted = 0
    while shares.refusal(client, 1, queued + admitted) is None:
        shares.add(client, 1)
        admitted += 1
        if admitted == images:
            break
    return admitted


def test_a_lone_client_may_fill_the_queue():
    shares = ClientShares(MAX_QUEUE, one_second, clock=Clock())
    assert fill(shares, "pipeline", 100, 0) == MAX_QUEUE
    assert refused(shares, "pipeline", 1, MAX_QUEUE) == "queue_full"


def test_a_client_refused_at_a_full_queue_is_given_the_room_the_others_free():
    clock = Clock()
    shares = ClientShares(MAX_QUEUE, one_second, clock=clock)
    fill(shares, "pipeline", MAX_QUEUE, 0)
    assert refused(shares, "person", 1, MAX_QUEUE) == "queue_full"  # nothing free: it waits
    shares.remove("pipeline", 3)  # three of the pipeline's images are answered
    # before, the pipeline's next requests took the room as it freed, and the person's retry found none
    assert refused(shares, "pipeline", 1, MAX_QUEUE - 3) == "client_share"
    assert refused(shares, "person", 1, MAX_QUEUE - 3) is None
    shares.add("person", 1)
    # admitted, the person counts as waiting until its wait ends: the pipeline is held to its share meanwhile
    assert refused(shares, "pipeline", 1, MAX_QUEUE - 2) == "client_share"
    clock.now = 3.5  # the wait is over: the pipeline may take what is left
    assert fill(shares, "pipeline", 100, MAX_QUEUE - 2) == 2


def test_a_client_asking_for_an_image_at_a_time_is_not_refused_again_while_its_wait_lasts():
    """Its wait ended as it was admitted, and a pipeline retrying each Busy at once took back the room its image
    freed: each next request found the queue full, and waited a Retry-After (1 s at least) for an image that takes
    tens of ms (through an engine at --max-queue 16, 8 s beside a pipeline keeping 32 in flight: 11 to 19 images
    before, 34 to 35 after; 147 alone)."""
    clock = Clock()
    shares = ClientShares(MAX_QUEUE, one_second, clock=clock)
    fill(shares, "pipeline", MAX_QUEUE, 0)
    assert refused(shares, "person", 1, MAX_QUEUE) == "queue_full"
    shares.remove("pipeline", 1)
    queued = MAX_QUEUE - 1
    for _ in range(5):  # within the person's 3 s wait
        assert refused(shares, "person", 1, queued) is None
        shares.add("person", 1)
        # its image is answered, and one of the pipeline's; the pipeline asks again at once, before the person does
        shares.remove("person", 1)
        shares.remove("pipeline", 1)
        queued += fill(shares, "pipeline", 100, queued - 1) - 1
        clock.now += 0.5


def test_a_client_holding_less_than_its_share_is_not_held_back_by_others_waiting():
    shares = ClientShares(MAX_QUEUE, one_second, clock=Clock())
    fill(shares, "a", 3, 0)
    fill(shares, "b", 9, 3)
    assert refused(shares, "c", 1, MAX_QUEUE) == "queue_full"  # three clients: shares of 4
    shares.remove("b", 2)
    assert refused(shares, "a", 1, MAX_QUEUE - 2) is None  # 3 + 1 is within its share
    assert refused(shares, "b", 1, MAX_QUEUE - 2) == "client_share"  # 7 held is past it


def test_a_client_holding_nothing_is_given_the_room_where_its_share_rounds_down_to_none():
    """At --max-queue 1 two clients' shares are 0 images each: the one refused was not counted as waiting, and a
    pipeline retrying each Busy at once took the one slot every time it freed (a person retrying after each
    Retry-After was refused 15 times in 15 s, and served never)."""
    shares = ClientShares(1, one_second, clock=Clock())
    fill(shares, "pipeline", 1, 0)
    assert refused(shares, "person", 1, 1) == "queue_full"  # it waits
    shares.remove("pipeline", 1)
    assert refused(shares, "pipeline", 1, 0) == "queue_full"  # the slot is kept for the person, waiting first
    assert refused(shares, "person", 1, 0) is None
    shares.add("person", 1)
    shares.remove("person", 1)
    assert refused(shares, "pipeline", 1, 0) is None  # its turn now: it waited behind the person


def test_a_wait_ends_when_the_client_has_not_come_back():
    clock = Clock()
    shares = ClientShares(MAX_QUEUE, one_second, clock=clock)
    fill(shares, "pipeline", MAX_QUEUE, 0)
    assert refused(shares, "person", 1, MAX_QUEUE) == "queue_full"
    shares.remove("pipeline", 1)
    assert refused(shares, "pipeline", 1, MAX_QUEUE - 1) == "client_share"
    clock.now = 3.5  # the person gave up: the pipeline is alone again
    assert refused(shares, "pipeline", 1, MAX_QUEUE - 1) is None


def test_a_client_that_holds_its_share_already_is_not_counted_as_waiting():
    shares = ClientShares(MAX_QUEUE, one_second, clock=Clock())
    fill(shares, "a", 6, 0)
    fill(shares, "b", 6, 6)
    # b refused at the full queue holds its share (6 of 12): it does not hold a back
    assert refused(shares, "b", 1, MAX_QUEUE) == "queue_full"
    shares.remove("a", 1)
    assert refused(shares, "a", 1, MAX_QUEUE - 1) is None


def test_nothing_is_kept_for_clients_that_hold_nothing_and_wait_no_more():
    clock = Clock()
    shares = ClientShares(MAX_QUEUE, one_second, clock=clock)
    for i in range(50):
        shares.add(f"c{i}", 1)
        shares.remove(f"c{i}", 1)
    fill(shares, "pipeline", MAX_QUEUE, 0)
    for i in range(50):
        refused(shares, f"w{i}", 1, MAX_QUEUE)
    for i in range(0, 50, 2):  # admitted within their waits: counted as waiting until the waits end
        shares.add(f"w{i}", 1)
        shares.remove(f"w{i}", 1)
    clock.now = 10.0
    refused(shares, "pipeline", 1, MAX_QUEUE)
    assert shares._held == {"pipeline": MAX_QUEUE} and shares._waiting == {} and shares._served == {}


def test_a_request_as_large_as_the_queue_is_served_in_turn_beside_a_client_that_keeps_a_few_queued():
    """n at --max-queue fits only an empty queue: before, another client that kept three images queued (far below its
    share) took each slot back as it freed, and the large request got queue_full for as long as it retried."""
    shares = ClientShares(MAX_QUEUE, one_second, clock=Clock())
    fill(shares, "pipeline", 3, 0)
    assert refused(shares, "album", MAX_QUEUE, 3) == "queue_full"  # it waits for room
    shares.remove("pipeline", 1)
    assert refused(shares, "pipeline", 1, 2) == "queue_full"  # the room is kept for the album, which waited first
    shares.remove("pipeline", 2)
    assert refused(shares, "album", MAX_QUEUE, 0) is None  # not held back by the pipeline, which waits behind it
    shares.add("album", MAX_QUEUE)
    shares.remove("album", MAX_QUEUE)
    assert refused(shares, "pipeline", 1, 0) is None  # next in line


def test_a_refusal_says_how_soon_by_the_images_that_must_leave_before_it_fits():
    """At a full queue, the images asked for beyond the room left; past a client's share, those it holds beyond it,
    which leave at its part of the pace (one of two clients sharing the queue here)."""
    asked: list[int] = []
    shares = ClientShares(MAX_QUEUE, lambda ahead: asked.append(ahead) or 7, clock=Clock())
    fill(shares, "pipeline", MAX_QUEUE, 0)
    assert shares.refusal("person", 2, MAX_QUEUE - 1) == ("queue_full", 7)
    assert asked[-1] == 1  # room for 1 of its 2 images is left
    assert shares.refusal("pipeline", 1, MAX_QUEUE) == ("client_share", 7)
    assert asked[-1] == (MAX_QUEUE + 1 - MAX_QUEUE // 2) * 2


def test_a_client_told_to_wait_long_keeps_its_place_for_a_few_of_that_wait():
    """Remembered as waiting for a fixed 3 s, a client told to come back in 20 s was forgotten before it came: the
    room it was owed went to the client filling the queue."""
    clock = Clock()
    shares = ClientShares(MAX_QUEUE, lambda ahead: 20, clock=clock)
    fill(shares, "pipeline", MAX_QUEUE, 0)
    assert refused(shares, "person", 1, MAX_QUEUE) == "queue_full"
    shares.remove("pipeline", 1)
    clock.now = 59.0  # within 3 x 20 s: still waiting
    assert refused(shares, "pipeline", 1, MAX_QUEUE - 1) == "client_share"
    clock.now = 61.0  # gone
    assert refused(shares, "pipeline", 1, MAX_QUEUE - 1) is None


def test_a_short_wait_set_after_a_long_one_ends_at_its_own_time():
    """Waits are of different lengths: one set after a longer one still ends when its own time is up, not after the
    longer one's (kept in the order set, it was counted as waiting, and shrank the others' shares, until then)."""
    clock = Clock()
    retries = iter([20, 1])
    shares = ClientShares(MAX_QUEUE, lambda ahead: next(retries), clock=clock)
    fill(shares, "pipeline", MAX_QUEUE, 0)
    assert refused(shares, "patient", 1, MAX_QUEUE) == "queue_full"  # waits 60 s
    assert refused(shares, "brief", 1, MAX_QUEUE) == "queue_full"  # waits 3 s
    shares.remove("pipeline", MAX_QUEUE - 5)
    clock.now = 4.0
    # shared by the pipeline and the patient client alone: 5 held and 1 asked are within its share of 6


# An engine whose queue holds two images, made one at a time, about 2.5 s each: the steps of _shares_over_http that
# need the queue as it is take a few ms, on a machine at rest (at 1 s each, a CI run beside other jobs answered the
# pipeline's second image before it asked again).
QUEUE_OF_TWO = ("--time-scale", "0.5", "--max-queue", "2", "--max-batch", "1")
ONE_SIM_WORKER = dict(workers=1, backend="sim")


@pytest.fixture(scope="module")
def queue_of_two(tmp_path_factory):
    """One for the tests that give the engine no flag of their own: each leaves every request answered. The person
    refused at the full queue counts as waiting for three Retry-Afters, admitted after or not (3 s in the first test,
    the engine's pace unknown yet; 9 s later), which holds a pipeline to its share: the test of one client, which
    leaves no wait, runs between the two that leave one, each over before the last one's wait is."""
    engine = start_engine(tmp_path_factory.mktemp("shares"), *QUEUE_OF_TWO, **ONE_SIM_WORKER)
    yield engine
    assert engine.stop() == 0


def _shares_over_http(engine, naming) -> tuple[tuple[int, dict], ...]:
    """A pipeline fills a queue of two, a person is refused, the pipeline's first image is answered; then the
    pipeline and the person ask again. `naming(client)`: the request's JSON fields and headers naming `client`.
    The requests asked again are of one step (0.35 s an image, not 2.5): a share counts images whatever their steps,
    and only the pipeline's first two must last for the queue to be as the steps need it."""
    url = engine.http + "/v1/images/generations"

    async def run():
        async with aiohttp.ClientSession() as session:

            async def post(client: str, **steps: int) -> tuple[int, dict]:
                fields, headers = naming(client)
                body = {"prompt": "a kite", "size": "64x64", **steps, **fields}
                async with session.post(url, json=body, headers=headers) as response:
                    return response.status, await response.json()

            again = {"num_inference_steps": 1}
            queued = [asyncio.create_task(post("pipeline")) for _ in range(2)]
            assert await eventually(lambda: engine.metric("argus_queued_images") == 2, timeout_s=30)  # full
            refused = await post("person")
            # whichever is answered first (the two race to the engine: awaited in the order they were made, the later
            # one admitted first had both answered by then, the pipeline holding nothing, and its next request taken)
            (answered,), (still_queued,) = await asyncio.wait(queued, return_when=asyncio.FIRST_COMPLETED)
            first = answered.result()
            return refused, first, await post("pipeline", **again), await post("person", **again), await still_queued

    return asyncio.run(run())


def _told_apart(replies: tuple[tuple[int, dict], ...]) -> None:
    refused, first, pipeline_again, person_again, second = replies
    assert refused[0] == 429 and "at capacity" in refused[1]["error"]["message"]
    assert first[0] == 200 and second[0] == 200
    assert pipeline_again[0] == 429 and "its share" in pipeline_again[1]["error"]["message"]
    assert person_again[0] == 200


_ADDRESSES = {"pipeline": "203.0.113.7", "person": "198.51.100.20"}


def varied_retry(images_ahead: int) -> int:
    """Retry-Afters of 1 to 4 s by the images ahead: waits set longer and shorter than the ones they renew."""
    return 1 + images_ahead % 4


class CountedAfresh:
    """The shares as the module's docstring defines them, every client counted afresh at each call (as ClientShares
    did, at a cost growing with the clients waiting): the model it must answer as."""

    def __init__(self, max_queue: int, retry_s, clock: Clock):
        self.max_queue, self.retry_s, self.clock = max_queue, retry_s, clock
        self.held: dict[str, int] = {}
        self.waiting: dict[str, tuple[float, int]] = {}  # in the order the waits began
        self.served: dict[str, float] = {}  # admitted while waiting: until when it counts as waiting still

    def refusal(self, client: str, images: int, queued: int) -> str | None:
        self.waiting = {c: w for c, w in self.waiting.items() if w[0] > self.clock()}
        self.served = {c: until for c, until in self.served.items() if until > self.clock()}
        held = self.held.get(client, 0)
        share = self.max_queue // len(self.held.keys() | self.waiting.keys() | self.served.keys() | {client})
        if held and any(c != client for c in self.waiting.keys() | self.served.keys()) and held + images > share:
            return "client_share"
        first = next(iter(self.waiting), client)
        beyond = queued + images + (0 if first == client else self.waiting[first][1]) - self.max_queue
        if beyond > 0:
            if held < share or not held:
                self.served.pop(client, None)  # waiting anew, behind those waiting
                self.waiting[client] = (self.clock() + 3 * self.retry_s(beyond), images)
            return "queue_full"
        return None

    def add(self, client: str, images: int) -> None:
        self.held[client] = self.held.get(client, 0) + images
        if (wait := self.waiting.pop(client, None)) is not None:
            self.served[client] = wait[0]

    def remove(self, client: str, images: int) -> None:
        self.held[client] -= images
        if not self.held[client]:
            del self.held[client]


@pytest.mark.parametrize("max_queue", [MAX_QUEUE, 5])  # 5: six clients' shares round down to none
@pytest.mark.parametrize("retry_s", [one_second, varied_retry])
@pytest.mark.parametrize("seed", range(5))
def test_the_shares_kept_as_clients_come_and_go_answer_as_counting_every_client_afresh(seed, retry_s, max_queue):
    """ClientShares keeps its counts as requests come, are answered and waits end, so that a call costs the same
    however many clients wait; it must refuse exactly as the shares counted afresh at every call do."""
    rng = random.Random(seed)
    clock = Clock()
    shares, model = ClientShares(max_queue, retry_s, clock), CountedAfresh(max_queue, retry_s, clock)
    clients = [f"c{i}" for i in range(6)]
    queued = 0
    for _ in range(3000):
        clock.now += rng.choice((0.0, 0.0, 0.1, 0.5, 2.0))
        client = rng.choice(clients)
        if model.held.get(client) and rng.random() < 0.4:
            images = rng.randint(1, model.held[client])
            shares.remove(client, images)
            model.remove(client, images)
            queued -= images
            continue
        images = rng.randint(1, 5)
        refusal = model.refusal(client, images, queued)
        assert refused(shares, client, images, queued) == refusal
        if refusal is None:
            shares.add(client, images)
            model.add(client, images)
            queued += images


def grown_by_retries(shares: ClientShares, clock: Clock, every_s: float, retries: int = 20_000) -> int:
    """The bytes the shares grow by while a client retries every `every_s` at a queue a pipeline keeps full."""
    fill(shares, "pipeline", MAX_QUEUE, 0)
    assert refused(shares, "retrier", 1, MAX_QUEUE) == "queue_full"
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(retries):
            clock.now += every_s
            assert refused(shares, "retrier", 1, MAX_QUEUE) == "queue_full"
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_a_client_retrying_at_once_leaves_no_more_behind_than_one_wait():
    """Each renewal of a wait pushed an end of its own, kept until it came up (three Retry-Afters, up to 3 minutes):
    one ZeroMQ client retrying each Busy at once, 32,000 a second at a queue told to come back in 30 s, grew the
    engine by 194 MB in 40 s."""
    clock = Clock()
    shares = ClientShares(MAX_QUEUE, lambda ahead: 60, clock=clock)
    assert grown_by_retries(shares, clock, 0.001) < 20_000  # bytes: the one wait, renewed in place (1.8 MB before)
    shares.remove("pipeline", 1)
    clock.now += 179.0  # within three Retry-Afters of the last refusal: still waiting
    assert refused(shares, "pipeline", 1, MAX_QUEUE - 1) == "client_share"
    clock.now += 2.0  # gone
    assert refused(shares, "pipeline", 1, MAX_QUEUE - 1) is None


@pytest.mark.parametrize(
    ("retry_s", "every_s"),
    [
        # a clock that reads the same for a burst of retries (a coarse one): each is a wait ending when the last does
        ([60], 0.0),
        # Retry-Afters shorter and longer in turn: each shorter one's end is listed, and the longer ones' ends it
        # leaves behind are dropped as they come up while the client still waits
        ([3, 2, 1], 0.5),
    ],
)
def test_a_client_retrying_for_long_leaves_no_more_behind_than_its_recent_waits(retry_s, every_s):
    """Mutation round 8: an end pushed again for a renewal ending as the one listed, or one left behind pushed on
    again when met rather than dropped, grew the shares without bound (by 1.6 MB or more in 30,000 retries)."""
    clock = Clock()
    retries = itertools.cycle(retry_s)
    shares = ClientShares(MAX_QUEUE, lambda ahead: next(retries), clock=clock)
    assert grown_by_retries(shares, clock, every_s, retries=30_000) < 20_000


def test_over_http_the_user_field_names_the_client(queue_of_two):
    """OpenAI's `user` (an end user's id, as a gateway sends it) names the client over HTTP: requests from one
    address are told apart by it."""
    _told_apart(_shares_over_http(queue_of_two, lambda client: ({"user": client}, {})))


def test_x_forwarded_for_from_a_peer_not_trusted_is_not_read(queue_of_two):
    """Without --forwarded-allow-ips any client could name itself anyone: both are the one client of their
    address, which is not held back for its own wait (the pipeline's retry is admitted)."""
    replies = _shares_over_http(queue_of_two, lambda client: ({}, {"X-Forwarded-For": _ADDRESSES[client]}))
    refused, first, pipeline_again, _, _ = replies
    assert refused[0] == 429 and first[0] == 200
    assert pipeline_again[0] == 200


def test_over_http_safety_identifier_names_the_client_before_user(queue_of_two):
    """OpenAI's `safety_identifier` replaced `user` (deprecated), and takes precedence over it when not empty: a
    gateway that sends both, its own name as `user`, had every end user counted as one client."""
    _told_apart(_shares_over_http(queue_of_two, lambda client: ({"safety_identifier": client, "user": "gw"}, {})))


@pytest.mark.own_engine(*QUEUE_OF_TWO, "--forwarded-allow-ips", "127.0.0.0/8", **ONE_SIM_WORKER)
def test_behind_a_trusted_proxy_x_forwarded_for_names_the_client(own_engine):
    """Behind a reverse proxy every request comes from its address; with --forwarded-allow-ips naming it, the
    address the proxy appended to X-Forwarded-For names the client (what the client itself put there does not)."""

    def through_proxy(client: str) -> tuple[dict, dict]:
        return {}, {"X-Forwarded-For": f"10.9.9.9, {_ADDRESSES[client]}"}

    _told_apart(_shares_over_http(own_engine, through_proxy))


def test_clients_naming_themselves_afresh_at_a_full_queue_are_remembered_waiting_up_to_a_bound():
    """A client naming itself afresh at each request (a `user` a request) at a queue told to wait 60 s had each name
    remembered waiting for 3 minutes: 180,000 waits, 80 MB of the engine, at 1,000 refusals a second. Past the bound,
    every share is none already: a client more is refused as before, and the first to wait keeps its room."""
    clock = Clock()
    shares = ClientShares(MAX_QUEUE, lambda ahead: 60, clock=clock)
    fill(shares, "pipeline", MAX_QUEUE, 0)
    assert refused(shares, "first", MAX_QUEUE, MAX_QUEUE) == "queue_full"
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for name in range(50_000):
            clock.now += 0.001
            assert refused(shares, f"user-{name}", 1, MAX_QUEUE) == "queue_full"
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 50 * MAX_QUEUE * 500  # bytes: the waits of a few times --max-queue clients (15 MB before)
    shares.remove("pipeline", MAX_QUEUE)
    # the room freed is kept for the client that has waited longest: the others are refused it
    assert refused(shares, "user-49999", 1, 0) == "queue_full"
    assert refused(shares, "pipeline", 1, 0) == "queue_full"
    assert refused(shares, "first", MAX_QUEUE, 0) is None
