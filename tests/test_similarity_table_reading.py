"""Reading a similarity table file (engine/cache/table_file.py) in process: the edges of a cosine similarity are
thresholds, a JSON true is none, levels no engine caches at and files of another kind are refused as they are read
(served, an engine given one ran until stopped), and an unreadable model folder is a usage error."""

from __future__ import annotations

import json

import pytest

from engine.cache import table_file as table_module
from engine.cache.table_file import TABLE_KIND, checked_table_file, read_table_file
from engine.commands.arg_types import UsageError


def table_file(tmp_path, thresholds: dict[str, object], **fields) -> str:
    path = tmp_path / "table.json"
    data = {"version": 1, "kind": TABLE_KIND, "provenance": "test", "embedder": "hash", "thresholds": thresholds}
    path.write_text(json.dumps(data | fields))
    return str(path)


def test_the_edges_of_a_cosine_similarity_are_thresholds(tmp_path):
    """-1 takes every neighbour at the level, 1 only an identical one."""
    given = read_table_file(table_file(tmp_path, {"5": -1, "25": 1}))
    assert given.table.levels == (0, 5, 25)
    assert (given.table.threshold(5), given.table.threshold(25)) == (-1.0, 1.0)


@pytest.mark.parametrize("threshold", [True, False])
def test_a_json_boolean_is_no_threshold(tmp_path, threshold):
    with pytest.raises(ValueError, match=f"threshold {threshold!r} is not a cosine similarity"):
        read_table_file(table_file(tmp_path, {"10": threshold}))


@pytest.mark.parametrize(
    ("thresholds", "says"),
    [
        ({"10": 0.75, "010": 0.8}, "level 10 twice"),  # one level in two spellings: which threshold is meant?
        ({"10": 0.75, "30": 0.97}, "level 30 is none of the cache levels"),
        ({}, "expected a similarity for each level"),
    ],
)
def test_levels_no_table_can_serve_with_are_refused(tmp_path, thresholds, says):
    """Refused as the file is read, in process: served, an engine with such a table runs until it is stopped."""
    with pytest.raises(ValueError, match=says):
        read_table_file(table_file(tmp_path, thresholds))


def test_a_file_of_another_kind_is_refused_whatever_method_it_names(tmp_path):
    """Only a file that says no kind is read as the report calibrate wrote before it marked its files."""
    path = table_file(tmp_path, {"10": 0.75}, kind="latency_profile", method="nirvana-table-unchanged")
    with pytest.raises(ValueError, match="not a version 1 'similarity_table' file"):
        read_table_file(path)


def test_a_model_folder_the_user_cannot_read_is_a_usage_error_naming_the_flag(tmp_path, monkeypatch):
    """Its digest cannot be taken: the engine's load of the model would fail on the same file."""

    def unreadable(embedder: str, model_path: str | None) -> str:
        raise PermissionError(13, "Permission denied", f"{model_path}/model.safetensors")

    monkeypatch.setattr(table_module, "embedder_identity", unreadable)
    with pytest.raises(UsageError, match="--embedder-path /models/minilm: .*Permission denied"):
        checked_table_file(table_file(tmp_path, {"10": 0.75}), "hash", "/models/minilm", "--embedder-path", [10])
