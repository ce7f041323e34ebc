"""Image sizes each backend accepts, known without loading it (the engine validates with them)."""

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
DEFAULT_STEPS = 50
DEFAULT_LEVELS = (5, 10, 15, 20, 25)
