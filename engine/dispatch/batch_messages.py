"""The Generate message a batch of jobs goes to its worker as: the settings its jobs share (their batch key), an item
each, and the latents the worker is to bring back for the cache."""

from __future__ import annotations

from controller.level_shares import resumable_steps
from engine.dispatch.jobs import Job
from protocols.worker_messages import Generate, GenerateItem
from workers.limits import DEFAULT_STEPS, guided


class BatchMessages:
    def __init__(self, latent_levels: tuple[int, ...] | None):
        """`latent_levels`: the cache's levels, () without one; None: every level the worker has."""
        self._latent_levels = latent_levels
        self._latents_asked: dict[int, list[int] | None] = {}  # by the steps of a batch

    def of(self, batch_id: int, jobs: list[Job]) -> Generate:
        key = jobs[0].key
        return Generate(
            batch_id=batch_id,
            level=key.start,
            steps=key.steps,
            width=key.width,
            height=key.height,
            guidance_scale=key.guidance_scale,
            output_format=key.output_format,
            output_compression=key.output_compression,
            items=[
                GenerateItem(job.job_id, job.prompt, job.seed, job.latent, job.similarity, job.negative_prompt)
                for job in jobs
            ],
            # an unguided run's latents are not cached (CacheService.insert): they cross no wire
            latent_levels=self._latents_asked_at(key.steps) if guided(key.guidance_scale) else [],
        )

    def _latents_asked_at(self, steps: int) -> list[int] | None:
        """The cache levels a batch of `steps` steps brings latents back at: latents the cache would drop cross no
        wire, and at other steps than the default, only those some level resumes from (controller/level_shares.py):
        the rest crossed the wire to be cached in memory that no lookup would ever use."""
        asked = self._latents_asked.get(steps)
        if asked is None and self._latent_levels is not None:
            levels = self._latent_levels
            asked = self._latents_asked[steps] = resumable_steps(steps, DEFAULT_STEPS, levels) if levels else []
        return asked
