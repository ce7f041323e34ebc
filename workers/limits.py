"""Image sizes and batch sizes each backend accepts, known without loading it (the engine plans with them)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocols.limits import MAX_STEPS, SIZE_MULTIPLE

if TYPE_CHECKING:
    from protocols.worker_messages import Hello
    from workers.backend import BackendInfo


@dataclass(frozen=True, slots=True)
class SizeLimits:
    min_size: int
    max_size: int
    default_size: int
    multiple: int = SIZE_MULTIPLE  # another only as an engine's /ready says (loadgen reads it there)

    @classmethod
    def of(cls, described: BackendInfo | Hello) -> SizeLimits:
        """The sizes a worker takes, as its backend or its hello describes them."""
        return cls(described.min_size, described.max_size, described.default_size)

    def takes(self, side: int) -> bool:
        return side % self.multiple == 0 and self.min_size <= side <= self.max_size

    @property
    def rule(self) -> str:
        """What `takes` asks of a side, in words for an error."""
        return f"a multiple of {self.multiple} from {self.min_size} to {self.max_size}"


BACKEND_SIZES = {
    "tiny": SizeLimits(64, 256, 64),
    "sdxl": SizeLimits(512, 1536, 1024),
    "sim": SizeLimits(64, 2048, 1024),
}
# the largest batch each backend runs when --max-batch does not say
BACKEND_MAX_BATCH = {"tiny": 8, "sdxl": 4, "sim": 8}
DEFAULT_STEPS = 50
DEFAULT_LEVELS = (5, 10, 15, 20, 25)

# SD-XL's latent: 4 channels at an eighth of the image's sides (the VAE's scale factor). The tiny model has the same
# shape; the sim backend hands back small placeholders whatever the size, to keep a thousand workers cheap to feed,
# unless told to pass SD-XL's (`--sim-latents sdxl`: what a cache of real size holds, for `argus bench checkpoint`)
LATENT_CHANNELS = 4
LATENT_SCALE = 8
SIM_LATENT_SHAPE = (LATENT_CHANNELS, 2, 2)
PLACEHOLDER_LATENTS = "placeholder"
SDXL_LATENTS = "sdxl"
SIM_LATENTS = (PLACEHOLDER_LATENTS, SDXL_LATENTS)


def guided(guidance_scale: float) -> bool:
    """Whether a run at `guidance_scale` is guided: diffusers runs classifier-free guidance (an unconditional pass
    beside the prompt's, each step) only above 1; at 1 and below the prompt alone steers, and a negative prompt does
    nothing."""
    return guidance_scale > 1.0


def latent_shape(backend: str, width: int, height: int, sim_latents: str = PLACEHOLDER_LATENTS) -> tuple[int, int, int]:
    """The shape of one latent a `backend` worker passes through, and resumes from, at width x height: what the
    engine's cache takes from a worker, and what a worker takes from the cache. `sim_latents`: a sim worker's kind
    (SIM_LATENTS), which its model's identity names (workers/model_id.py model_latent_shape)."""
    if backend == "sim" and sim_latents == PLACEHOLDER_LATENTS:
        return SIM_LATENT_SHAPE
    return (LATENT_CHANNELS, height // LATENT_SCALE, width // LATENT_SCALE)


# the codes input_refusal answers: the client's input, refused at admission or, for a request admitted before any worker
# said hello, once routed; counted as refused either way (engine/server.py)
INPUT_REFUSALS = frozenset({"invalid_size", "invalid_steps"})


def input_refusal(
    width: int, height: int, steps: int, sizes: SizeLimits, refused_steps: Collection[int]
) -> tuple[str, str] | None:
    """Why workers that take `sizes` and refuse the step counts `refused_steps` cannot make an image of width x height
    in `steps` steps: the client's error code and message, or None if they can."""
    for name, side in (("width", width), ("height", height)):
        if not sizes.takes(side):
            return "invalid_size", f"{name} {side} must be {sizes.rule}"
    if refusal := steps_refusal(steps, refused_steps):
        return "invalid_steps", refusal
    return None


def steps_refusal(steps: int, refused: Collection[int]) -> str | None:
    """Why a backend that refuses the step counts `refused` (BackendInfo.refused_steps) cannot run `steps`, naming
    the nearest counts it can run; None if it can."""
    if steps not in refused:
        return None
    below = next((n for n in range(steps - 1, 0, -1) if n not in refused), None)
    above = next((n for n in range(steps + 1, MAX_STEPS + 1) if n not in refused), None)
    nearest = " or ".join(str(n) for n in (below, above) if n is not None)
    return (
        f"steps {steps}: the model's scheduler makes another number of timesteps for it, so no worker can run"
        f" exactly {steps} steps; ask for {nearest}"
    )
