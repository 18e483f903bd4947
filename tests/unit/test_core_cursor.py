"""Sync cursors: opaque, round-tripping, and strict about garbage."""

from __future__ import annotations

import pytest
from tmcp_storage_server.core.cursor import Cursor
from tmcp_storage_server.errors import InvalidArgument


def test_round_trip_with_any_key() -> None:
    for cursor in (Cursor(7, "a:b:c", False), Cursor(1, "", True), Cursor(2**40, "ключ", False)):
        assert Cursor.decode(cursor.encode()) == cursor


def test_empty_is_the_start() -> None:
    assert Cursor.decode("") == Cursor.start()


def test_after_revision_is_past_every_key_of_it() -> None:
    assert Cursor.after_revision(4) == Cursor(5, "", False)


@pytest.mark.parametrize("token", ["garbage!", "YWJj", "YzI6MTowOms", "YzE6LTE6MDpr"])
def test_garbage_is_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        Cursor.decode(token)
    assert caught.value.reason == "INVALID_CURSOR"
