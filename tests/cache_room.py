"""Memory budgets for the prompt cache's tests, derived from what it charges a prompt (prompt_bytes): a test says
which latents and prompts it makes room for, not how many bytes that takes."""

from __future__ import annotations

from collections.abc import Iterable, Sized

from engine.cache.prompt_cache import prompt_bytes


def room(latent_bytes: int, texts: Iterable[str], dim: int, levels: Sized) -> int:
    """A memory budget (max_bytes) holding `latent_bytes` of latents and the prompts of these texts, in a cache of
    vectors of `dim` values and these levels."""
    return latent_bytes + sum(prompt_bytes(text, dim, len(levels)) for text in texts)
