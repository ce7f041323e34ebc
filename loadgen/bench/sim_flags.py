"""The sim backend as the benchmarks drive it: the flags for workers that answer at once, and argparse types for the
image sizes it takes."""

from __future__ import annotations

import argparse

# sim workers that answer at once; a bench's workers started apart from the engine (`argus worker`) take it too, or
# the engine warns that it plans with another
INSTANT_SIM_TIME_SCALE = "0"
# `argus serve` flags for measuring the engine alone: such workers, a queue that never refuses
INSTANT_SIM_ENGINE = ("--backend", "sim", "--time-scale", INSTANT_SIM_TIME_SCALE, "--max-queue", str(1 << 20))


def sim_image_side(text: str) -> int:
    """An argparse type: an image side the sim backend takes. The engine answers any other with invalid_size: the
    engine bench failed with a traceback once its engine was up, the scale bench blamed the engine's speed."""
    from engine.commands.arg_types import positive_int
    from workers.limits import BACKEND_SIZES

    side, sizes = positive_int(text), BACKEND_SIZES["sim"]
    if not sizes.takes(side):
        raise argparse.ArgumentTypeError(f"expected {sizes.rule}, not {text!r}")
    return side


def sim_image_size(text: str) -> tuple[int, int]:
    """An argparse type: WIDTHxHEIGHT with sides the sim backend takes, or auto (0, 0: its default). The compare bench
    ran a whole trace against each policy with any other, every request refused invalid_size, and exited 0."""
    from protocols.openai_images import parse_size
    from workers.limits import BACKEND_SIZES

    sizes = BACKEND_SIZES["sim"]
    try:
        width, height = parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or WIDTHxHEIGHT (1024x1024), not {text!r}") from None
    if width and not (sizes.takes(width) and sizes.takes(height)):
        raise argparse.ArgumentTypeError(f"expected sides that are {sizes.rule}, not {text!r}")
    return width, height
