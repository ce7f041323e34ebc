"""Image sizes and batch sizes each backend accepts, known without loading it (the engine plans with them)."""

from __future__ import annotations

from dataclasses import dataclass

from protocols.limits import SIZE_MULTIPLE


@dataclass(frozen=True, slots=True)
class SizeLimits:
    min_size: int
    max_size: int
    default_size: int

    def takes(self, side: int) -> bool:
        return side % SIZE_MULTIPLE == 0 and self.min_size <= side <= self.max_size

    @property
    def rule(self) -> str:
        """What `takes` asks of a side, in words for an error."""
        return f"a multiple of {SIZE_MULTIPLE} from {self.min_size} to {self.max_size}"


BACKEND_SIZES = {
    "tiny": SizeLimits(64, 256, 64),
    "sdxl": SizeLimits(512, 1536, 1024),
    "sim": SizeLimits(64, 2048, 1024),
}
# the largest batch each backend runs when --max-batch does not say
BACKEND_MAX_BATCH = {"tiny": 8, "sdxl": 4, "sim": 8}
DEFAULT_STEPS = 50
DEFAULT_LEVELS = (5, 10, 15, 20, 25)
