"""between(): an argparse type for a number from one bound to another, said with both bounds, the value given and
why; refused as argparse refuses a type (exit 2, before the command runs)."""

import argparse

import pytest

from engine.commands.arg_types import between

STEPS = between(int, 1, 200, "", "as the engine takes")
SECONDS = between(float, 0, 3600.0, " s", "an hour", least_allowed=False)


@pytest.mark.parametrize(("kind", "text", "value"), [(STEPS, "1", 1), (STEPS, "50", 50), (STEPS, "200", 200)])
def test_a_number_inside_or_at_either_bound_is_taken(kind, text, value):
    assert kind(text) == value


def test_a_float_bound_takes_its_kind():
    assert SECONDS("3600") == 3600.0 and isinstance(SECONDS("1"), float)
    assert SECONDS("1e-9") == 1e-9


@pytest.mark.parametrize(
    ("kind", "text", "says"),
    [
        # outside: both bounds, the value given and why
        (STEPS, "0", "expected a number from 1 to 200 (as the engine takes), not '0'"),
        (STEPS, "201", "expected a number from 1 to 200 (as the engine takes), not '201'"),
        (STEPS, "-5", "expected a number from 1 to 200 (as the engine takes), not '-5'"),
        # the lower bound refused where it is not allowed
        (SECONDS, "0", "expected a number above 0 and at most 3,600 s (an hour), not '0'"),
        (SECONDS, "3600.5", "expected a number above 0 and at most 3,600 s (an hour), not '3600.5'"),
        # no finite number of the kind, said as such
        (STEPS, "ten", "expected a whole number from 1 to 200, not 'ten'"),
        (STEPS, "1.5", "expected a whole number from 1 to 200, not '1.5'"),
        (STEPS, "nan", "expected a whole number from 1 to 200, not 'nan'"),
        (STEPS, "", "expected a whole number from 1 to 200, not ''"),
        (SECONDS, "an hour", "expected a number above 0 and at most 3,600 s, not 'an hour'"),
        (SECONDS, "nan", "expected a finite number above 0 and at most 3,600 s, not 'nan'"),
        (SECONDS, "inf", "expected a finite number above 0 and at most 3,600 s, not 'inf'"),
        (SECONDS, "-inf", "expected a finite number above 0 and at most 3,600 s, not '-inf'"),
    ],
)
def test_a_number_outside_or_no_number_is_refused_saying_what_is_taken(kind, text, says):
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        kind(text)
    assert str(refused.value) == says


def test_bounds_are_said_whole():
    """:g said 2**63 - 1 as 9.22337e+18, a bound no one can give."""
    seed = between(int, 0, 2**63 - 1, "", "")
    assert seed(str(2**63 - 1)) == 2**63 - 1
    with pytest.raises(
        argparse.ArgumentTypeError, match=r"^expected a number from 0 to 9,223,372,036,854,775,807, not"
    ):
        seed(str(2**63))
    with pytest.raises(argparse.ArgumentTypeError, match=r"^expected a number from 0\.25 to 1,000 s, not '1e9'$"):
        between(float, 0.25, 1000.0, " s", "")("1e9")


def test_argparse_refuses_it_by_the_flag_with_exit_2(capsys):
    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("--steps", type=STEPS)
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--steps", "201"])
    assert stop.value.code == 2
    says = "bench: error: argument --steps: expected a number from 1 to 200 (as the engine takes), not '201'"
    assert says in capsys.readouterr().err
