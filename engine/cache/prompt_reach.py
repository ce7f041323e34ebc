"""What of a prompt the image model reads: SD-XL's two CLIP tokenizers keep its first 77 tokens, start and end
tokens included, and cut the rest (docs/http-api.md, The prompt). The embedders compare prompts by that part alone: two
prompts that differ only past it make the same image, and a long tail the model never reads (a list of style words
shared by many prompts) made prompts of other subjects look alike.

The cut needs no vocabulary: CLIP splits the lower-cased text into pieces by the pattern below (a run of letters, one
digit, a run of other marks, a contraction) before its byte-pair encoding makes each piece one token or more. So the
first 75 pieces hold at least the 75 tokens read: cutting after them never drops a word the model reads, and keeps
all of a prompt of common English words (one token each), a few words more of one that splits them. A fine-tune's
tokenizer of another vocabulary (the tiny backend's, a few words) reads less, never more.
"""

from __future__ import annotations

import re

import regex

# SD-XL's tokenizers' model_max_length, of which the start and end tokens take two
MODEL_TOKENS = 77
_READ_PIECES = MODEL_TOKENS - 2
# CLIP's pre-tokenizer (transformers' CLIPTokenizer), matched case-blind rather than on the lower-cased text, whose
# length may differ, so a cut is an offset into the prompt as given. Marks join the letters before them, as Unicode
# composition (which CLIP applies first) joins an accent to its letter: a piece of several tokens is safe, a token
# counted as several pieces would cut early
_PIECE = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}\p{M}]+|\p{N}|[^\s\p{L}\p{M}\p{N}]+""",
    regex.IGNORECASE,
)

# no fewer pieces than _PIECE's (each of those starts in one of these of its own), counted in a quarter of the time
# (the standard library's engine, on ASCII letters): the cut is looked for only in prompts it may shorten, 0.04% of
# diffusiondb_5k's; for each of the others it cost 14 us (the hash embedder's 34 us a prompt), now 4
_NO_FEWER_PIECES = re.compile(r"[a-zA-Z]+|\S")


def read_by_model(prompt: str) -> str:
    """The prompt as far as the image model reads it: whole, or cut after its 75th CLIP piece."""
    if len(_NO_FEWER_PIECES.findall(prompt)) <= _READ_PIECES:
        return prompt
    for count, piece in enumerate(_PIECE.finditer(prompt), start=1):
        if count == _READ_PIECES:
            return prompt[: piece.end()]
    return prompt
