"""Protobuf to commands and domain values to protobuf (entries and timestamps, written
in place)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from tmcp.storage.v1 import kv_pb2, types_pb2
from tmcp_storage_server.api import convert
from tmcp_storage_server.api.kv import GetResponses, build_get_response
from tmcp_storage_server.core.commands import PutCommand
from tmcp_storage_server.model import Entry

MOMENTS = [
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2026, 11, 23, 12, 30, 1, 250_000, tzinfo=timezone(timedelta(hours=-5))),
    datetime(2026, 11, 23, 12, 30, 1, 7),  # naive: UTC
]


@pytest.mark.parametrize("moment", MOMENTS)
def test_timestamps_match_the_protobuf_library(moment: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    assert convert.timestamp(moment) == expected


def _entry(**changes: object) -> Entry:
    fields: dict[str, object] = {
        "key": "k",
        "value": b"\x00\xffraw",
        "content_type": "application/octet-stream",
        "version": 3,
        "create_revision": 2,
        "mod_revision": 9,
        "created_at": MOMENTS[3],
        "updated_at": MOMENTS[4],
        "expires_at": None,
        "size": 5,
        "checksum": "sha256:abc",
        **changes,
    }
    return Entry(**fields)  # type: ignore[arg-type]


def _expected(value: Entry, *, with_value: bool) -> types_pb2.Entry:
    """The same entry built field by field with the protobuf library's conversions."""
    message = types_pb2.Entry(
        key=value.key,
        content_type=value.content_type,
        version=value.version,
        create_revision=value.create_revision,
        mod_revision=value.mod_revision,
        size=value.size,
        checksum=value.checksum,
        metadata=value.metadata,
    )
    message.created_at.FromDatetime(value.created_at.astimezone(UTC))
    message.updated_at.FromDatetime(value.updated_at.replace(tzinfo=UTC))
    if value.expires_at is not None:
        message.expires_at.FromDatetime(value.expires_at)
    if with_value and value.value is not None:
        if value.is_json:
            message.value.json.string_value = "text"  # what the JSON test stores
        else:
            message.value.raw = value.value
    return message


@pytest.mark.parametrize(
    "value",
    [
        _entry(),
        _entry(metadata={"a": "1", "b": ""}, expires_at=MOMENTS[2]),
        _entry(value=b'"text"', content_type="application/json; charset=utf-8"),
        _entry(value=None),
    ],
)
@pytest.mark.parametrize("with_value", [True, False])
def test_entries_are_filled_in_place(value: Entry, with_value: bool) -> None:
    message = types_pb2.Entry()
    convert.fill_entry(message, value, with_value=with_value)
    assert message == _expected(value, with_value=with_value)
    assert message.HasField("expires_at") == (value.expires_at is not None)
    assert message.HasField("value") == (with_value and value.value is not None)


def test_put_commands_carry_every_field_of_the_request() -> None:
    message = kv_pb2.PutRequest(
        key="k",
        value=types_pb2.Value(raw=b"v"),
        content_type="text/plain",
        expected_version=4,
        ttl=duration_pb2.Duration(seconds=30),
        keep_ttl=True,
        metadata={"a": "1"},
    )
    message.expires_at.FromDatetime(MOMENTS[2])
    assert convert.put_command(message) == PutCommand(
        key="k",
        value=b"v",
        content_type="text/plain",
        is_json=False,
        expected_version=4,
        ttl=timedelta(seconds=30),
        expires_at=MOMENTS[2],
        keep_ttl=True,
        metadata={"a": "1"},
    )
    bare = convert.put_command(kv_pb2.PutRequest(key="k", value=types_pb2.Value(raw=b"")))
    assert bare == PutCommand("k", b"", content_type="application/octet-stream")  # the default
    json_value = types_pb2.Value()
    json_value.json.string_value = "x"
    as_json = convert.put_command(kv_pb2.PutRequest(key="k", value=json_value))
    assert (as_json.value, as_json.is_json, as_json.content_type) == (
        b'"x"',
        True,
        "application/json",
    )


def test_with_content_type_changes_only_the_content_type() -> None:
    values: dict[str, object] = {
        "key": "k",
        "value": b"v",
        "content_type": "text/plain",
        "is_json": True,
        "expected_version": 4,
        "ttl": timedelta(seconds=30),
        "expires_at": MOMENTS[2],
        "keep_ttl": True,
        "metadata": {"a": "1"},
    }
    assert {f.name for f in dataclasses.fields(PutCommand)} == set(values)  # all set here
    command = PutCommand(**values)  # type: ignore[arg-type]
    assert command.with_content_type("a/b") == dataclasses.replace(command, content_type="a/b")


def test_get_responses_are_built_once_per_entry_object_and_revision() -> None:
    responses = GetResponses(size=2, max_value_bytes=8)
    entry = _entry()
    first = responses.get(entry, 9)
    assert first == build_get_response(entry, 9) and first.header.revision == 9
    assert first.entry.value.raw == b"\x00\xffraw" and first.entry.version == 3
    assert responses.get(entry, 9) is first  # the cache returned the same read again
    later = responses.get(entry, 10)  # the same entry read at a later revision
    assert later.header.revision == 10 and responses.get(entry, 10) is later
    assert responses.get(dataclasses.replace(entry), 10) is not later  # another read
    json_entry = _entry(value=b'{"a":1}', content_type="application/json", size=7)
    assert responses.get(json_entry, 9).entry.value.json.struct_value.fields["a"].number_value == 1
    big = _entry(value=b"x" * 9, size=9)
    assert responses.get(big, 1) is not responses.get(big, 1)  # over 8 bytes: never kept


def test_get_responses_are_bounded_first_in_first_out() -> None:
    responses = GetResponses(size=2)
    a, b, c = _entry(), _entry(), _entry()
    ra, rb = responses.get(a, 1), responses.get(b, 1)
    assert responses.get(a, 1) is ra and responses.get(b, 1) is rb
    rc = responses.get(c, 1)  # full: a, the first in, goes
    assert responses.get(b, 1) is rb and responses.get(c, 1) is rc
    assert responses.get(a, 1) is not ra
