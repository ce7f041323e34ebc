"""QuietLines: a line per key at most once an interval, the rest counted; keys a peer makes up cannot grow it."""

from fake_clock import Clock

from engine.logs.quiet_lines import QuietLines


def test_a_key_is_said_once_an_interval_with_the_count_left_out():
    clock = Clock()
    lines = QuietLines(10.0, clock)
    assert lines.due("refused w1") == 0
    assert [lines.due("refused w1", count) for count in (1, 2)] == [None, None]
    clock.now += 10
    assert lines.due("refused w1") == 3


def test_keys_made_up_without_end_are_forgotten_not_kept():
    """Past 256 keys, what was kept goes: a key then is said again at once, as if new. Kept, a peer that names each
    refusal anew (a fresh worker id each hello) grew the engine's memory for as long as it went on."""
    clock = Clock()
    lines = QuietLines(10.0, clock)
    assert lines.due("first") == 0 and lines.due("first") is None
    for n in range(256):
        lines.due(f"made up {n}")
    assert lines.due("first") == 0
