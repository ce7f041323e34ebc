"""The argparse type of how many rounds a benchmark runs of a kind (measured, or warming up before)."""

from __future__ import annotations

from engine.commands.arg_types import between

# the most rounds a bench runs of a kind: fifty times the worker bench's default 20, hours of its default runs, and of
# the engine bench's. More is a mistyped number: `bench worker --repeats 99999999999` was taken, and ran until stopped
MAX_ROUNDS = 1000
# an argparse type: a count of rounds from 1 to MAX_ROUNDS
round_count = between(int, 1, MAX_ROUNDS, "", "a thousand: more is a mistyped number, not a measurement")
