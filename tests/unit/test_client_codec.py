"""The client's pure parts: value, time and entry conversion, request building, settings."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.protobuf import struct_pb2
from tmcp.storage.v1 import kv_pb2, quota_pb2, types_pb2
from tmcp_storage import codec
from tmcp_storage._retry import RetryPolicy
from tmcp_storage._settings import MAX_MESSAGE_BYTES, Settings
from tmcp_storage.models import Space
from tmcp_storage.operations import Operations, next_list_request

SPACE = Space("app", "user-1")


def round_trip(value: object) -> Any:
    return codec.decode_value(codec.encode_value(value))


# --- values -------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"\x00\xffbytes", bytearray(b"ba"), memoryview(b"mv")])
def test_bytes_like_values_are_raw_and_come_back_as_bytes(
    raw: bytes | bytearray | memoryview,
) -> None:
    encoded = codec.encode_value(raw)
    assert encoded.WhichOneof("kind") == "raw"
    decoded = codec.decode_value(encoded)
    assert type(decoded) is bytes
    assert decoded == bytes(raw)


def test_nested_json_round_trips() -> None:
    value = {
        "name": "Ada",
        "tags": ["a", "b", []],
        "nested": {"deep": {"list": [1, 2.5, None, True, False, {"x": "y"}]}},
        "empty": {},
        "unicode": "日本語 ✓",
    }
    assert round_trip(value) == value


def test_a_str_is_a_json_string_not_raw_bytes() -> None:
    encoded = codec.encode_value("hello")
    assert encoded.WhichOneof("kind") == "json"
    assert encoded.json.string_value == "hello"
    assert round_trip("hello") == "hello"


def test_tuples_are_json_arrays() -> None:
    assert round_trip((1, "two")) == [1, "two"]


@pytest.mark.parametrize("value", [None, True, False, 0, -7, "", [], {}])
def test_scalars_round_trip_with_their_type(value: object) -> None:
    decoded = round_trip(value)
    assert decoded == value
    assert type(decoded) is type(value)


def test_none_is_json_null() -> None:
    encoded = codec.encode_value(None)
    assert encoded.json.WhichOneof("kind") == "null_value"


def test_integral_numbers_come_back_as_int_and_others_as_float() -> None:
    decoded = round_trip({"i": 3, "f": 2.5, "whole_float": 4.0, "neg": -(2**53), "max": 2**53})
    assert decoded == {"i": 3, "f": 2.5, "whole_float": 4, "neg": -(2**53), "max": 2**53}
    assert type(decoded["i"]) is int
    assert type(decoded["f"]) is float
    assert type(decoded["whole_float"]) is int  # JSON has one number type
    assert type(decoded["max"]) is int


def test_integral_numbers_beyond_2_53_come_back_as_float() -> None:
    beyond = struct_pb2.Value(number_value=float(2**53 + 2))
    decoded = codec.decode_json(beyond)
    assert type(decoded) is float
    assert decoded == 2**53 + 2
    big = codec.decode_json(struct_pb2.Value(number_value=1e300))
    assert type(big) is float


def test_an_int_a_double_cannot_hold_is_refused() -> None:
    with pytest.raises(ValueError, match="exactly"):
        codec.encode_value(2**53 + 1)
    with pytest.raises(ValueError, match="exactly"):
        codec.encode_value(10**400)
    # exactly representable large ints are fine
    assert codec.encode_value(10**20).json.number_value == 1e20


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(value: float) -> None:
    with pytest.raises(ValueError, match="JSON has no"):
        codec.encode_value({"x": value})


@pytest.mark.parametrize("value", [{1: "a"}, object(), {"s": {1, 2}}, 1j])
def test_non_json_values_are_refused(value: object) -> None:
    with pytest.raises(TypeError):
        codec.encode_value(value)


def test_an_empty_value_message_decodes_to_none() -> None:
    assert codec.decode_value(types_pb2.Value()) is None


# --- times ----------------------------------------------------------------------------


def test_timestamps_round_trip_as_utc() -> None:
    when = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    back = codec.decode_timestamp(codec.encode_timestamp(when))
    assert back == when
    assert back.tzinfo is UTC


def test_a_timestamp_in_another_zone_is_the_same_instant() -> None:
    when = datetime(2030, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=8)))
    back = codec.decode_timestamp(codec.encode_timestamp(when))
    assert back == when
    assert back.hour == 4
    assert back.utcoffset() == timedelta(0)


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        codec.encode_timestamp(datetime(2030, 1, 1))


@pytest.mark.parametrize(
    ("ttl", "seconds", "nanos"),
    [
        (30, 30, 0),
        (1.5, 1, 500_000_000),
        (timedelta(minutes=2), 120, 0),
        (timedelta(milliseconds=250), 0, 250_000_000),
    ],
)
def test_ttl_becomes_a_duration(ttl: float | timedelta, seconds: int, nanos: int) -> None:
    duration = codec.encode_ttl(ttl)
    assert (duration.seconds, duration.nanos) == (seconds, nanos)


@pytest.mark.parametrize("ttl", [True, "10", None])
def test_ttl_of_another_type_is_refused(ttl: Any) -> None:
    with pytest.raises(TypeError):
        codec.encode_ttl(ttl)


def test_infinite_ttl_is_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        codec.encode_ttl(math.inf)


# --- entries ----------------------------------------------------------------------


def full_entry_message() -> types_pb2.Entry:
    message = types_pb2.Entry(
        key="profile",
        value=types_pb2.Value(json=codec.encode_json({"n": 1})),
        content_type="application/json",
        version=3,
        create_revision=10,
        mod_revision=12,
        size=7,
        checksum="sha256:abc",
        metadata={"origin": "test"},
    )
    message.created_at.FromDatetime(datetime(2030, 1, 1, tzinfo=UTC))
    message.updated_at.FromDatetime(datetime(2030, 1, 2, tzinfo=UTC))
    return message


def test_an_entry_converts_every_field() -> None:
    entry = codec.decode_entry(full_entry_message())
    assert entry.key == "profile"
    assert entry.value == {"n": 1}
    assert entry.has_value
    assert entry.content_type == "application/json"
    assert (entry.version, entry.create_revision, entry.mod_revision) == (3, 10, 12)
    assert entry.created_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert entry.updated_at == datetime(2030, 1, 2, tzinfo=UTC)
    assert entry.expires_at is None
    assert (entry.size, entry.checksum, entry.metadata) == (7, "sha256:abc", {"origin": "test"})


def test_an_entry_without_value_is_told_apart_from_json_null() -> None:
    without = full_entry_message()
    without.ClearField("value")
    omitted = codec.decode_entry(without)
    assert (omitted.value, omitted.has_value) == (None, False)

    null = full_entry_message()
    null.value.CopyFrom(codec.encode_value(None))
    decoded = codec.decode_entry(null)
    assert (decoded.value, decoded.has_value) == (None, True)


def test_an_entry_with_expiry_has_an_aware_expires_at() -> None:
    message = full_entry_message()
    message.expires_at.FromDatetime(datetime(2031, 1, 1, tzinfo=UTC))
    entry = codec.decode_entry(message)
    assert entry.expires_at == datetime(2031, 1, 1, tzinfo=UTC)


def test_quota_limits_keep_unset_apart_from_zero() -> None:
    message = codec.encode_limits(limit_bytes=0, limit_keys=None, max_value_bytes=5)
    assert message.HasField("limit_bytes")
    assert not message.HasField("limit_keys")
    limits = codec.decode_limits(message)
    assert (limits.limit_bytes, limits.limit_keys, limits.max_value_bytes) == (0, None, 5)


# --- requests ---------------------------------------------------------------------


def put_request(**overrides: Any) -> kv_pb2.PutRequest:
    arguments: dict[str, Any] = {
        "content_type": None,
        "expected_version": None,
        "ttl": None,
        "expires_at": None,
        "keep_ttl": False,
        "metadata": None,
        "space": None,
    }
    arguments.update(overrides)
    request = Operations(space=SPACE).put("k", {"a": 1}, **arguments).request
    assert isinstance(request, kv_pb2.PutRequest)
    return request


def test_put_without_expected_version_leaves_the_field_unset() -> None:
    request = put_request()
    assert not request.HasField("expected_version")
    assert not request.HasField("ttl")
    assert not request.HasField("expires_at")
    assert request.content_type == ""
    assert request.space == types_pb2.Space(app_id="app", user_id="user-1")


def test_put_with_expected_version_zero_sets_it() -> None:
    request = put_request(expected_version=0)
    assert request.HasField("expected_version")
    assert request.expected_version == 0


def test_put_carries_ttl_expiry_metadata_and_content_type() -> None:
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    request = put_request(
        ttl=timedelta(seconds=5),
        expires_at=expires,
        keep_ttl=True,
        metadata={"m": "1"},
        content_type="application/vnd.x+json",
    )
    assert request.ttl.seconds == 5
    assert request.expires_at.ToDatetime(tzinfo=UTC) == expires
    assert request.keep_ttl
    assert dict(request.metadata) == {"m": "1"}
    assert request.content_type == "application/vnd.x+json"


def test_get_asks_for_strong_consistency_only_when_told() -> None:
    ops = Operations(space=SPACE)
    weak = ops.get("k", strong=False, space=None).request
    strong = ops.get("k", strong=True, space=None).request
    assert isinstance(weak, kv_pb2.GetRequest)
    assert isinstance(strong, kv_pb2.GetRequest)
    assert weak.consistency == types_pb2.CONSISTENCY_UNSPECIFIED
    assert strong.consistency == types_pb2.CONSISTENCY_STRONG


def test_the_space_of_a_call_wins_over_the_default() -> None:
    other = Space("app", "user-2")
    request = Operations(space=SPACE).delete("k", expected_version=None, space=other).request
    assert isinstance(request, kv_pb2.DeleteRequest)
    assert request.space.user_id == "user-2"
    assert not request.HasField("expected_version")


def test_a_call_without_any_space_is_refused() -> None:
    with pytest.raises(ValueError, match="no space"):
        Operations(space=None).get("k", strong=False, space=None)


def test_set_quota_targets_an_app_or_a_space() -> None:
    ops = Operations(space=SPACE)
    limits: dict[str, Any] = {"limit_bytes": 1, "limit_keys": None, "max_value_bytes": None}
    for_app = ops.set_quota(app_id="app", space=None, reset=True, **limits).request
    for_space = ops.set_quota(app_id=None, space=None, reset=False, **limits).request
    assert isinstance(for_app, quota_pb2.SetQuotaRequest)
    assert isinstance(for_space, quota_pb2.SetQuotaRequest)
    assert for_app.WhichOneof("target") == "app_id"
    assert for_app.reset
    assert for_space.WhichOneof("target") == "space"
    assert for_space.space.user_id == "user-1"
    assert not for_space.limits.HasField("limit_keys")
    with pytest.raises(ValueError, match="not both"):
        ops.set_quota(app_id="app", space=SPACE, reset=False, **limits)


def test_list_follows_next_page_tokens_and_stops_on_the_last_page() -> None:
    call = Operations(space=SPACE).list(
        "p/", page_size=2, include_values=True, max_bytes=None, space=None
    )
    first = call.request
    following = next_list_request(first, kv_pb2.ListResponse(next_page_token="t1"))
    assert following is not None
    assert following.page_token == "t1"
    assert (following.prefix, following.page_size, following.include_values) == ("p/", 2, True)
    assert first.page_token == ""  # the first request is left alone
    assert next_list_request(following, kv_pb2.ListResponse()) is None


def test_write_results_carry_usage_and_revision() -> None:
    call = Operations(space=SPACE).delete("k", expected_version=3, space=None)
    response = kv_pb2.DeleteResponse(
        header=types_pb2.ResponseHeader(revision=9),
        deleted=True,
        usage=types_pb2.QuotaUsage(used_bytes=1, limit_bytes=2, used_keys=3, limit_keys=4),
    )
    result = call.parse(response)
    assert result.deleted
    assert result.revision == 9
    assert (result.usage.used_bytes, result.usage.limit_keys) == (1, 4)


# --- settings and retry policy ------------------------------------------------------


def settings(**overrides: Any) -> Settings:
    arguments: dict[str, Any] = {
        "token": None,
        "credentials": None,
        "timeout": 10.0,
        "retries": 3,
        "options": (),
    }
    arguments.update(overrides)
    return Settings.create("localhost:1", **arguments)


def test_the_token_goes_in_a_bearer_header() -> None:
    assert settings(token="abc").metadata() == (("authorization", "Bearer abc"),)
    assert settings().metadata() == ()


def test_a_token_function_is_called_for_every_call() -> None:
    tokens = iter(["one", "two"])
    source = settings(token=lambda: next(tokens))
    assert source.metadata() == (("authorization", "Bearer one"),)
    assert source.metadata() == (("authorization", "Bearer two"),)


def test_channel_options_allow_20_mib_messages_unless_overridden() -> None:
    options = dict(settings().options)
    assert options["grpc.max_send_message_length"] == MAX_MESSAGE_BYTES == 20 * 1024 * 1024
    assert options["grpc.max_receive_message_length"] == MAX_MESSAGE_BYTES
    overridden = settings(options=[("grpc.max_receive_message_length", 5)]).options
    assert [value for name, value in overridden if name == "grpc.max_receive_message_length"] == [5]


def test_bad_client_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="timeout"):
        settings(timeout=0)
    with pytest.raises(ValueError, match="retries"):
        settings(retries=-1)


def test_a_call_timeout_replaces_the_default() -> None:
    assert settings(timeout=10.0).call_timeout(None) == 10.0
    assert settings(timeout=10.0).call_timeout(2.0) == 2.0
    assert settings(timeout=None).call_timeout(None) is None


def test_backoff_doubles_from_50_ms_to_2_s_with_jitter() -> None:
    policy = RetryPolicy()
    for retry, ceiling in [(0, 0.05), (1, 0.1), (2, 0.2), (5, 1.6), (6, 2.0), (20, 2.0)]:
        for _ in range(50):
            assert ceiling / 2 <= policy.backoff(retry) <= ceiling
