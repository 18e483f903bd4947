"""The MERGE strategy's pure JSON merges."""

from __future__ import annotations

import json
from typing import Any

from tmcp_storage_server.core.merge import merge_patch, merge_values, three_way


def _merge(base: Any, server: Any, client: Any) -> Any:
    encoded = merge_values(
        None if base is None else json.dumps(base).encode(),
        json.dumps(server).encode(),
        json.dumps(client).encode(),
    )
    return None if encoded is None else json.loads(encoded)


def test_rfc7396_examples() -> None:
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": "b", "b": "c"}, {"a": None}) == {"b": "c"}
    assert merge_patch({"a": ["b"]}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert merge_patch(["a"], {"a": 1}) == {"a": 1}
    assert merge_patch({"a": "foo"}, None) is None


def test_three_way_keeps_changes_of_both_sides() -> None:
    base = {"name": "Ann", "age": 30, "city": "Oslo"}
    server = {"name": "Ann", "age": 31, "city": "Oslo"}
    client = {"name": "Anna", "age": 30, "city": "Oslo", "pet": "cat"}
    assert three_way(base, server, client) == {
        "name": "Anna",
        "age": 31,
        "city": "Oslo",
        "pet": "cat",
    }


def test_three_way_both_changed_takes_the_mutation() -> None:
    assert three_way({"a": 1}, {"a": 2}, {"a": 3}) == {"a": 3}


def test_three_way_deletions() -> None:
    base = {"a": 1, "b": 2, "c": 3}
    server = {"a": 1, "c": 3}  # server removed b
    client = {"a": 1, "b": 2}  # client removed c
    assert three_way(base, server, client) == {"a": 1}


def test_three_way_nested_objects_merge_per_field() -> None:
    base = {"s": {"x": 1, "y": 1}}
    server = {"s": {"x": 2, "y": 1}}
    client = {"s": {"x": 1, "y": 2}}
    assert three_way(base, server, client) == {"s": {"x": 2, "y": 2}}


def test_three_way_bool_is_not_a_number() -> None:
    assert three_way({"a": 1}, {"a": 1}, {"a": True}) == {"a": True}


def test_merge_values_without_base_is_a_merge_patch() -> None:
    assert _merge(None, {"a": 1, "b": 2}, {"b": 3, "c": None}) == {"a": 1, "b": 3}


def test_merge_values_non_objects_fall_back() -> None:
    assert _merge(None, [1], {"a": 1}) is None
    assert _merge(None, {"a": 1}, "text") is None
    assert merge_values(None, b"not json", b"{}") is None


def test_merge_values_non_object_base_is_ignored() -> None:
    assert _merge([1], {"a": 1}, {"b": 2}) == {"a": 1, "b": 2}
