"""Every error reason of KeyValue and Quota, with its code and standard detail."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from tmcp.storage.v1 import (
    kv_pb2,
    kv_pb2_grpc,
    types_pb2,
)

from tests.e2e.harness import ServerProcess
from tests.e2e.wire import bearer, failure

Code = grpc.StatusCode


@pytest.fixture
def kv(server: ServerProcess) -> Iterator[kv_pb2_grpc.KeyValueStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield kv_pb2_grpc.KeyValueStub(channel)


@pytest.fixture
def call(kv: kv_pb2_grpc.KeyValueStub, app_id: str):  # type: ignore[no-untyped-def]
    """``call(method, **fields)`` as alice in her space of a fresh app."""
    space = types_pb2.Space(app_id=app_id, user_id="alice")
    metadata = bearer(app_id, "alice")
    requests = {
        "Get": kv_pb2.GetRequest,
        "Put": kv_pb2.PutRequest,
        "Delete": kv_pb2.DeleteRequest,
        "List": kv_pb2.ListRequest,
        "Touch": kv_pb2.TouchRequest,
        "DeletePrefix": kv_pb2.DeletePrefixRequest,
    }

    def run(method: str, **fields: object) -> object:
        request = requests[method](space=space, **fields)
        return getattr(kv, method)(request, metadata=metadata, timeout=10)

    return run


def raw(data: bytes) -> types_pb2.Value:
    return types_pb2.Value(raw=data)


@pytest.mark.parametrize(
    ("key", "why"),
    [("", "empty"), ("k" * 256, "too long"), ("a\nb", "control"), ("a\x7fb", "DEL")],
)
def test_invalid_key(call, key: str, why: str) -> None:  # type: ignore[no-untyped-def]
    for method, extra in (("Put", {"value": raw(b"x")}), ("Get", {}), ("Delete", {})):
        f = failure(functools.partial(call, method, key=key, **extra))
        assert (f.code, f.reason, f.domain) == (
            Code.INVALID_ARGUMENT,
            "INVALID_KEY",
            "storage.tmcp",
        ), why
        assert f.details["BadRequest"].field_violations[0].field == "key"


def test_key_of_255_bytes_is_fine(call) -> None:  # type: ignore[no-untyped-def]
    call("Put", key="é" * 127 + "k", value=raw(b"x"))  # 255 bytes of UTF-8


def test_value_too_large(call) -> None:  # type: ignore[no-untyped-def]
    f = failure(lambda: call("Put", key="k", value=raw(b"x" * (1024 * 1024 + 1))))
    assert (f.code, f.reason) == (Code.INVALID_ARGUMENT, "VALUE_TOO_LARGE")
    assert "BadRequest" in f.details


def test_missing_value(call) -> None:  # type: ignore[no-untyped-def]
    f = failure(lambda: call("Put", key="k"))
    assert (f.code, f.reason) == (Code.INVALID_ARGUMENT, "INVALID_VALUE")


def test_raw_declared_json_must_parse(call) -> None:  # type: ignore[no-untyped-def]
    f = failure(lambda: call("Put", key="k", value=raw(b"{nope"), content_type="application/json"))
    assert (f.code, f.reason) == (Code.INVALID_ARGUMENT, "INVALID_JSON")
    assert failure(lambda: call("Get", key="k")).reason == "KEY_NOT_FOUND"  # nothing stored


def test_json_value_with_other_content_type(call) -> None:  # type: ignore[no-untyped-def]
    value = types_pb2.Value(json=struct_pb2.Value(string_value="x"))
    f = failure(lambda: call("Put", key="k", value=value, content_type="text/plain"))
    assert (f.code, f.reason) == (Code.INVALID_ARGUMENT, "INVALID_CONTENT_TYPE")


def test_bad_content_type(call) -> None:  # type: ignore[no-untyped-def]
    f = failure(lambda: call("Put", key="k", value=raw(b"x"), content_type="not a type"))
    assert f.reason == "INVALID_CONTENT_TYPE"


@pytest.mark.parametrize(
    "metadata",
    [{f"k{i}": "v" for i in range(17)}, {"big": "x" * 4097}, {"": "empty key"}],
)
def test_invalid_metadata(call, metadata: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    f = failure(lambda: call("Put", key="k", value=raw(b"x"), metadata=metadata))
    assert (f.code, f.reason) == (Code.INVALID_ARGUMENT, "INVALID_METADATA")


def test_invalid_ttl(call) -> None:  # type: ignore[no-untyped-def]
    from google.protobuf import duration_pb2, timestamp_pb2

    negative = duration_pb2.Duration(seconds=-5)
    past = timestamp_pb2.Timestamp(seconds=1000)
    future = timestamp_pb2.Timestamp(seconds=4_000_000_000)
    cases: list[dict[str, Any]] = [
        {"ttl": negative},
        {"expires_at": past},
        {"ttl": duration_pb2.Duration(seconds=5), "expires_at": future},
        {"ttl": duration_pb2.Duration(seconds=5), "keep_ttl": True},
    ]
    for fields in cases:
        f = failure(functools.partial(call, "Put", key="k", value=raw(b"x"), **fields))
        assert (f.code, f.reason) == (Code.INVALID_ARGUMENT, "INVALID_TTL"), fields
    call("Put", key="k", value=raw(b"x"))
    f = failure(lambda: call("Touch", key="k"))
    assert f.reason == "INVALID_TTL"


def test_invalid_page_token(call) -> None:  # type: ignore[no-untyped-def]
    for bad in ("garbage!!", "eyJ4IjogMX0", "WzEsIiIsImEiLDZd"):  # junk, {"x": 1}, other prefix
        f = failure(functools.partial(call, "List", prefix="p", page_token=bad))
        assert (f.code, f.reason) == (Code.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN"), bad


def test_invalid_space(kv: kv_pb2_grpc.KeyValueStub, app_id: str) -> None:
    metadata = bearer("bad app!", "alice")
    request = kv_pb2.GetRequest(space=types_pb2.Space(app_id="bad app!", user_id="alice"), key="k")
    f = failure(lambda: kv.Get(request, metadata=metadata))
    assert (f.code, f.reason) == (Code.INVALID_ARGUMENT, "INVALID_SPACE")


def test_not_found(call) -> None:  # type: ignore[no-untyped-def]
    f = failure(lambda: call("Get", key="nope"))
    assert (f.code, f.reason, f.metadata["key"]) == (Code.NOT_FOUND, "KEY_NOT_FOUND", "nope")


def test_key_exists(call) -> None:  # type: ignore[no-untyped-def]
    call("Put", key="k", value=raw(b"x"))
    f = failure(lambda: call("Put", key="k", value=raw(b"y"), expected_version=0))
    assert (f.code, f.reason) == (Code.ALREADY_EXISTS, "KEY_EXISTS")
    assert f.metadata["current_version"] == "1"


def test_version_mismatch(call) -> None:  # type: ignore[no-untyped-def]
    call("Put", key="k", value=raw(b"x"))
    f = failure(lambda: call("Put", key="k", value=raw(b"y"), expected_version=5))
    assert (f.code, f.reason) == (Code.FAILED_PRECONDITION, "VERSION_MISMATCH")
    assert f.metadata["current_version"] == "1"
    violation = f.details["PreconditionFailure"].violations[0]
    assert (violation.type, violation.subject) == ("VERSION", "k")
    f = failure(lambda: call("Delete", key="k", expected_version=9))
    assert f.reason == "VERSION_MISMATCH"
