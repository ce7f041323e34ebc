"""How soon a refused client is told to try again (engine/dispatch/queue_pace.py): the time the engine takes, at the
pace it freed room lately while it held images, to free the images ahead of the request; whole seconds, from 1 to 60."""

import pytest
from fake_clock import Clock

from engine.dispatch.queue_pace import WINDOW_S, QueuePace
from protocols.limits import MAX_RETRY_AFTER_S


def run_for(pace: QueuePace, clock: Clock, seconds: int, images_per_s: int) -> None:
    """The queue busy for `seconds`, freeing `images_per_s` a second and taking as many."""
    for _ in range(seconds):
        pace.admitted(images_per_s)
        clock.now += 1
        pace.freed(images_per_s)


def test_the_hint_is_the_images_ahead_at_the_pace_room_was_freed():
    clock = Clock(5000.25)
    pace = QueuePace(clock)
    run_for(pace, clock, WINDOW_S, 4)
    assert pace.retry_s(1) == 1  # a quarter of a second, said as HTTP can: 1
    assert pace.retry_s(10) == 3  # 2.5 s
    assert pace.retry_s(40) == 10


def test_a_slower_pace_says_longer():
    clock = Clock(5000.25)
    pace = QueuePace(clock)
    run_for(pace, clock, WINDOW_S, 4)
    fast = pace.retry_s(8)
    run_for(pace, clock, WINDOW_S, 1)  # the fleet slowed: its old pace has left the window
    assert pace.retry_s(8) == 8 > fast


def test_an_engine_that_has_freed_nothing_lately_says_longer_the_longer_it_has_not():
    clock = Clock(5000.25)
    pace = QueuePace(clock)
    assert pace.retry_s(1) == 1  # fresh: nothing known yet
    pace.admitted(1)  # held by a fleet that does not answer it
    clock.now += 10
    assert pace.retry_s(1) == 10  # no image freed in 10 s: at most one every 10 s
    run_for(pace, clock, 5, 100)
    clock.now += 2 * WINDOW_S  # then none for longer than the window
    assert pace.retry_s(1) == WINDOW_S


@pytest.mark.parametrize("asked_while_idle", [True, False], ids=["asked-while-idle", "admitted-after-idle"])
def test_time_the_queue_held_nothing_is_not_counted_as_slow(asked_while_idle):
    """Idle, the engine freed nothing because it was asked nothing: a burst after an idle spell was told 30 s for one
    image (the whole window taken for a hung fleet's), 60 for two, by a fleet that freed them in half a second. The
    first request after the spell is most often admitted, with no hint asked during the spell: the idle time must
    be left out then too."""
    clock = Clock(5000.25)
    pace = QueuePace(clock)
    clock.now += 20  # a fresh engine, idle
    if asked_while_idle:
        assert pace.retry_s(1) == 1
    run_for(pace, clock, 5, 4)
    clock.now += WINDOW_S - 10  # idle again, the busy seconds still in the window
    if asked_while_idle:
        assert pace.retry_s(8) == 2  # 8 images at the 4 a second it freed while it held images
    pace.admitted(8)  # a burst: held for a second and a half with none freed yet
    clock.now += 1.5
    assert pace.retry_s(8) == 3  # 20 images freed in 6.5 s held


def test_the_hint_is_bounded():
    clock = Clock(5000.25)
    pace = QueuePace(clock)
    run_for(pace, clock, WINDOW_S, 1000)
    assert pace.retry_s(1) == 1
    assert pace.retry_s(10**9) == MAX_RETRY_AFTER_S


def test_the_pace_counts_the_images_freed_and_no_more():
    """Two images freed over ten seconds held: one every five seconds, so five images ahead take 25 s."""
    clock = Clock(5000.25)
    pace = QueuePace(clock)
    pace.admitted(2)
    clock.now += 10
    pace.freed(2)
    assert pace.retry_s(5) == 25
