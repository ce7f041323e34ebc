"""Image sizes and batch sizes each backend accepts, known without loading it (the engine plans with them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SizeLimits:
    min_size: int
    max_size: int
    default_size: int


BACKEND_SIZES = {
    "tiny": SizeLimits(64, 256, 64),
    "sdxl": SizeLimits(512, 1536, 1024),
    "sim": SizeLimits(64, 2048, 1024),
}
# the largest batch each backend runs when --max-batch does not say
BACKEND_MAX_BATCH = {"tiny": 8, "sdxl": 4, "sim": 8}
DEFAULT_STEPS = 50
DEFAULT_LEVELS = (5, 10, 15, 20, 25)
