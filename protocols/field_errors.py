"""A refused field in argus's words, for both front doors.

msgspec, which decodes requests at both doors, says "Expected `int` >= 1 - at `$.n`" and "Invalid enum value 'gif' -
at `$.output_format`": the validator's words. argus says it as it says what it checks by hand: the field, the value
sent, then the rule ("n must be an integer >= 1, got 0"). Each door names the fields of its own schema (msgspec names
a field as it was sent: HTTP's `num_inference_steps` is ZeroMQ's `steps`) and spells a value as its clients write it:
JSON over HTTP (protocols.openai_images), Python over ZeroMQ (protocols.client_messages). Only a refused request pays:
this reads the words of an error already raised.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal, get_args, get_origin, get_type_hints

import msgspec

from protocols.limits import PROMPT_PATTERN

# msgspec's "Expected `int` >= 1 - at `$.n`", "Expected `int | null`, got `str` - at `$.n`" and, of a whole message,
# "Expected `object`, got `array`"
EXPECTED = re.compile(r"Expected `(?P<kind>[^`]+)`(?:, got `(?P<got>[^`]+)`)?(?P<rule>.*?)(?: - at `\$\.\w+`)?")
_KIND_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "array": "a list",
    "null": "null",
}
# a rule msgspec says as its regex ("matching regex '[^\\s...]'"), in words
_PATTERN_WORDS = {
    f" matching regex {PROMPT_PATTERN!r}": " with a character other than whitespace or control characters",
}


def param_of(message: str) -> str | None:
    """The field msgspec's message names: "... - at `$.field`", or one missing or unknown as "... field `field`"."""
    match = re.search(r"at `\$\.([a-z_]+)|field `([^`]*)`", message)
    return (match.group(1) or match.group(2)) if match else None


def choices_of(schema: type[msgspec.Struct]) -> dict[str, tuple]:
    """Each field of `schema` with a fixed list of values, the values in the order the schema declares them."""
    return {
        name: get_args(choices)
        for name, hint in get_type_hints(schema).items()
        for choices in (hint, *get_args(hint))
        if get_origin(choices) is Literal
    }


def kind_words(kind: str) -> str:
    # "int | null" is how msgspec names a field that may be sent as null: null is its default, not what to send
    kinds = [_KIND_WORDS.get(name, name) for name in kind.split(" | ")]
    return " or ".join(name for name in kinds if name != "null" or len(kinds) == 1)


def field_message(
    message: str, param: str, sent: dict, choices: tuple | None, spell: Callable[[object], str]
) -> str | None:
    """msgspec's `message` refusing the field `param` of the request `sent` (read untyped) in argus's words; None
    where msgspec's own name the field plainly (one missing or unknown). `choices`: the field's fixed list of values,
    if it has one; `spell`: a value as the door's clients write it, shortened (a field may be sent megabytes long)."""
    if choices and message.startswith("Invalid enum value"):
        return f"{param} {spell(sent[param])} must be one of {', '.join(map(spell, choices))}"
    expected = EXPECTED.fullmatch(message)
    if expected is None:
        return None
    kind, got, rule = expected.group("kind", "got", "rule")
    rule = _PATTERN_WORDS.get(rule, rule)
    value = sent[param]
    # a string too long or too short is told by its length; any other value, spelled
    said = f"{len(value)} characters" if got is None and isinstance(value, str) else spell(value)
    return f"{param} must be {kind_words(kind)}{rule}, got {said}"
