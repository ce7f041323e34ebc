"""Prompt sources, read in place from ../shared/data/prompts, and their pairing with a schedule."""

import json
from pathlib import Path

import pytest

from loadgen.arrivals import Arrival
from loadgen.prompts import load_prompts, pair_prompts

PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "prompts"


def test_one_prompt_a_line():
    prompts = load_prompts(PROMPTS / "diffusiondb_5k.txt")
    with open(PROMPTS / "diffusiondb_5k.txt") as f:
        lines = f.read().splitlines()
    # blank lines are not prompts; everything else is kept in order, as written
    assert prompts == [line for line in lines if line.strip()]
    assert len(prompts) == 4999
    assert prompts[0].startswith("a renaissance portrait of dwayne johnson")


def test_partiprompts_tsv_keeps_quotes_that_are_part_of_a_prompt():
    prompts = load_prompts(PROMPTS / "partiprompts.tsv")
    assert len(prompts) == 1632
    assert prompts[:3] == ["bond", "element", "molecule"]
    assert any(p.startswith('"G I G G L E" painted') for p in prompts)


def test_drawbench_json_list():
    prompts = load_prompts(PROMPTS / "drawbench.json")
    assert len(prompts) == 200
    assert prompts[0] == "A red colored car."


def test_unknown_or_malformed_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\.txt"):
        load_prompts(tmp_path / "prompts.csv")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"prompts": ["a"]}))
    with pytest.raises(ValueError, match="list of strings"):
        load_prompts(bad)
    no_column = tmp_path / "bad.tsv"
    no_column.write_text("Text\tCategory\na cat\tanimals\n")
    with pytest.raises(ValueError, match="Prompt"):
        load_prompts(no_column)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="no prompts"):
        load_prompts(empty)


def test_a_prompt_the_engine_refuses_as_blank_is_skipped_in_any_format(tmp_path):
    """Whitespace and control characters alone, which the engine refuses as it refuses "": a line of NULs was kept,
    and each request sent it was a 400."""
    blank = ["", " \t", "\x00\x00", "\x1b\x7f "]
    (tmp_path / "p.txt").write_text("\n".join(["a cat", *blank, "a dog\x00"]) + "\n")
    (tmp_path / "p.tsv").write_text("Prompt\tCategory\n" + "".join(f"{p}\tx\n" for p in ["a cat", *blank, "a dog\x00"]))
    (tmp_path / "p.json").write_text(json.dumps(["a cat", *blank, "a dog\x00"]))
    for name in ("p.txt", "p.tsv", "p.json"):
        assert load_prompts(tmp_path / name) == ["a cat", "a dog\x00"], name


def test_prompts_go_in_order_and_cycle_unless_the_trace_names_one():
    schedule = [Arrival(float(i)) for i in range(5)]
    assert pair_prompts(schedule, ["a", "b"]) == [0, 1, 0, 1, 0]
    schedule[3] = Arrival(3.0, 1)
    assert pair_prompts(schedule, ["a", "b", "c"]) == [0, 1, 2, 1, 1]
    with pytest.raises(ValueError, match="names prompt 7, but there are 2 prompts$"):
        pair_prompts([Arrival(0.0, 7)], ["a", "b"])
    with pytest.raises(ValueError, match="names prompt 7, but there is 1 prompt$"):  # was 'there are 1 prompts'
        pair_prompts([Arrival(0.0, 7)], ["a"])


def test_prompts_over_the_bound_are_counted_in_words(tmp_path):
    one, three = tmp_path / "one.txt", tmp_path / "three.txt"
    one.write_text("a fox\n" + "x" * 4001 + "\n")
    three.write_text(("x" * 4001 + "\n") * 3)
    with pytest.raises(ValueError, match=r"one\.txt: prompt 1 over 4000 chars"):  # was '(and 0 more)'
        load_prompts(one)
    with pytest.raises(ValueError, match=r"three\.txt: prompt 0 \(and 2 more\) over 4000 chars"):
        load_prompts(three)


@pytest.mark.parametrize(
    ("name", "content"),
    [("p.txt", "a red fox\n"), ("p.tsv", "Prompt\tCategory\na red fox\tAnimals\n"), ("p.json", '["a red fox"]')],
)
def test_a_byte_order_mark_is_not_part_of_the_prompts(tmp_path, name, content):
    """With one, a TSV had 'no Prompt column', a JSON file was refused, and the first line's prompt began with it."""
    path = tmp_path / name
    path.write_text("\ufeff" + content, encoding="utf-8")
    assert load_prompts(path) == ["a red fox"]
