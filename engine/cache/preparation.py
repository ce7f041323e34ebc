"""A request's preparation: the level it is served at and the cached neighbour's latent it resumes from, chosen
from its nearest cached prompt by the policy (engine/cache/service.py runs it on the cache thread)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from controller.level_shares import Choice
from controller.predictor import Lookup
from engine.cache.prompt_cache import Neighbour, PromptCache
from engine.dispatch.jobs import AdmittedRequest, Fallback, image_of
from workers.limits import guided

# (lookup, images, steps) -> the controller's choice (ControlLoop.choose), safe to call from the cache thread
Choose = Callable[[Lookup, int, int, random.Random], Choice]
# (K*, K', the steps the neighbour's latents are held at, steps) -> (level, the step it resumes at) of the levels a
# job may move up to (ControlLoop.fallback_levels)
FallbackLevels = Callable[[int, int, tuple[int, ...], int], tuple[tuple[int, int], ...]]


class Preparation(NamedTuple):
    """A tuple: one for every request, made on the cache thread, where a frozen dataclass of these fields cost about
    four times as much (2 to 3 us)."""

    k_star: int
    level: int  # K' the request is served at
    start: int  # the step of its run it resumes at (controller/level_shares.py): `level` at the default steps
    latent: np.ndarray | None  # the neighbour's latent after `start` steps (None at 0)
    similarity: float | None
    vector: np.ndarray | None  # the prompt's embedding, kept to cache what its generation brings back
    # the levels above `level`, ascending, for a job that must wait or would miss its deadline: those of the
    # policy's the neighbour holds in memory (see Dispatcher)
    fallbacks: tuple[Fallback, ...] = ()
    neighbour: str | None = None  # the cached prompt `latent` and the fallbacks' are of, credited once used
    resumer: int = 0  # the image `latent` starts (engine/dispatch/jobs.py image_of)
    latent_seed: int | None = None  # the seed of the run `latent` is of (None: not known)


class Preparer:
    def __init__(self, choose: Choose, fallback_levels: FallbackLevels | None):
        """`fallback_levels`: also hand each hit the latents of these levels (a policy that escalates)."""
        self._choose = choose
        self._fallback_levels = fallback_levels
        # seeded, so a run's choices can be repeated; used by one thread only
        self._rng = random.Random(0)

    def prepare(
        self,
        cache: PromptCache | None,
        request: AdmittedRequest,
        vector: np.ndarray | None,
        neighbour: Neighbour | None,
    ) -> Preparation:
        """The request's level, and its neighbour's latent to resume from, read from `cache` (None: no cache, and so
        no neighbour). `vector`: its embedding, kept to cache what its run brings back."""
        if request.spec.exact:
            # not served from a neighbour, nor counted a miss (it did not ask the cache); its K* is 0 in the demand.
            # Embedded all the same: what its full run brings back is cached for others
            neighbour = None
        elif not guided(request.spec.guidance_scale):
            # guidance off and on do not mix, either way: the first K steps set an image's composition, and an unguided
            # run's (SD-XL's: loose, often incoherent) would start a guided request's image, a guided one an unguided
            # request's (not the image asked for). Unguided runs are rare: they run in full, a miss, and are not cached
            neighbour = None
        lookup = Lookup(
            similarity=neighbour.similarity if neighbour else None,
            neighbour_levels=tuple(k for k in neighbour.levels if k < request.steps) if neighbour else (),
            prompt=request.spec.prompt,
            neighbour_prompt=neighbour.prompt if neighbour else None,
        )
        k_star, level, start = self._choose(lookup, request.spec.n, request.steps, self._rng)
        # a neighbour comes from the cache, so with one there is a cache to read its latent from; counted a hit once
        # the image is made from it (count_start)
        latent = cache.read_latent(neighbour.prompt_id, start) if neighbour and start else None
        if start and latent is None:
            level = start = 0  # the policy picked a level the neighbour does not have: run in full
        seed = cache.latent_seed(neighbour.prompt_id, start) if latent is not None else None
        resumer = image_of(request.seeds, seed) if latent is not None else 0
        fallbacks = self._fallbacks(cache, neighbour, lookup, k_star, level, request, resumer)
        named = neighbour.prompt if neighbour else None
        return Preparation(k_star, level, start, latent, lookup.similarity, vector, fallbacks, named, resumer, seed)

    def _fallbacks(
        self,
        cache: PromptCache | None,
        neighbour: Neighbour | None,
        lookup: Lookup,
        k_star: int,
        level: int,
        request: AdmittedRequest,
        job: int,
    ) -> tuple[Fallback, ...]:
        """The latents of the levels the policy lets image `job` move up to, held in memory, ascending: not one of a
        run of another image's seed, whose picture that image makes."""
        if self._fallback_levels is None or neighbour is None:
            return ()
        ups = self._fallback_levels(k_star, level, lookup.neighbour_levels, request.steps)
        if not ups:
            return ()
        held, seeds = neighbour.prompt_id, request.seeds
        others = set(seeds) - {seeds[job]} if len(seeds) > 1 else ()
        # one pass, a Fallback made only for a latent it keeps: on the path of every hit, per level
        found = []
        for up, step in ups:
            latent = cache.peek_latent(held, step)
            if latent is not None and (seed := cache.latent_seed(held, step)) not in others:
                found.append(Fallback(up, step, latent, seed))
        return tuple(found)
