"""Conversions between Python values and the generated messages, with no I/O.

Values: `bytes`, `bytearray` and `memoryview` are written raw; anything else must be
JSON (dict with str keys, list or tuple, str, int, float, bool, None) and is written as a
`google.protobuf.Value`. JSON numbers are doubles on the wire, so on the way back a number
that is integral and within ±2**53 becomes an `int` and any other a `float`; an `int`
that a double cannot hold exactly is refused rather than silently rounded.

Times: timestamps come back as timezone-aware UTC datetimes; a datetime sent must be
timezone-aware, since a naive one could mean any zone. A TTL is seconds (int or float)
or a `timedelta`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from tmcp.storage.v1 import quota_pb2, types_pb2

from tmcp_storage import models

MAX_SAFE_INTEGER = 2**53
"""Integral JSON numbers up to this magnitude decode as `int`."""


def encode_value(value: object) -> types_pb2.Value:
    """Wrap a Python value for a write: raw bytes, or JSON for anything else."""
    if isinstance(value, bytes | bytearray | memoryview):
        return types_pb2.Value(raw=bytes(value))
    return types_pb2.Value(json=encode_json(value))


def decode_value(value: types_pb2.Value) -> Any:
    """Unwrap a stored value: `bytes` if raw, the decoded Python value if JSON."""
    kind = value.WhichOneof("kind")
    if kind == "raw":
        return value.raw
    if kind == "json":
        return decode_json(value.json)
    return None


def encode_json(value: object) -> struct_pb2.Value:
    """Convert a JSON-able Python value to a `google.protobuf.Value`."""
    out = struct_pb2.Value()
    if value is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        out.number_value = _exact_float(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"JSON has no {value!r}")
        out.number_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, Mapping):
        out.struct_value.SetInParent()  # so that {} is an object, not unset
        fields = out.struct_value.fields
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be str, not {type(key).__name__}")
            fields[key].CopyFrom(encode_json(item))
    elif isinstance(value, list | tuple):
        out.list_value.SetInParent()
        out.list_value.values.extend(encode_json(item) for item in value)
    else:
        raise TypeError(
            f"cannot store {type(value).__name__}: pass bytes, or a JSON value "
            "(dict, list, str, int, float, bool, None)"
        )
    return out


def decode_json(value: struct_pb2.Value) -> Any:
    """Convert a `google.protobuf.Value` to plain Python, as `json.loads` would."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and abs(number) <= MAX_SAFE_INTEGER:
            return int(number)
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {key: decode_json(item) for key, item in value.struct_value.fields.items()}
    if kind == "list_value":
        return [decode_json(item) for item in value.list_value.values]
    return None  # null_value, or unset


def _exact_float(value: int) -> float:
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if number != value:
        raise ValueError(f"{value} cannot be stored exactly as a JSON number (a double)")
    return number


def encode_timestamp(when: datetime) -> timestamp_pb2.Timestamp:
    """Convert a timezone-aware datetime to a Timestamp."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware, e.g. datetime.now(timezone.utc)")
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(when)
    return out


def decode_timestamp(stamp: timestamp_pb2.Timestamp) -> datetime:
    """Convert a Timestamp to a timezone-aware UTC datetime."""
    return stamp.ToDatetime(tzinfo=UTC)


def encode_ttl(ttl: float | timedelta) -> duration_pb2.Duration:
    """Convert seconds or a timedelta to a Duration."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float | timedelta):
        raise TypeError(f"ttl must be seconds or a timedelta, not {type(ttl).__name__}")
    if not isinstance(ttl, timedelta):
        if not math.isfinite(ttl):
            raise ValueError(f"ttl must be finite, not {ttl!r}")
        ttl = timedelta(seconds=ttl)
    out = duration_pb2.Duration()
    out.FromTimedelta(ttl)
    return out


def encode_space(space: models.Space) -> types_pb2.Space:
    """Convert a Space to its message."""
    return types_pb2.Space(app_id=space.app_id, user_id=space.user_id)


def decode_space(space: types_pb2.Space) -> models.Space:
    """Convert a Space message."""
    return models.Space(space.app_id, space.user_id)


def decode_entry(entry: types_pb2.Entry) -> models.Entry:
    """Convert an Entry message; its value is decoded when the response carried one."""
    has_value = entry.HasField("value") and entry.value.WhichOneof("kind") is not None
    return models.Entry(
        key=entry.key,
        value=decode_value(entry.value) if has_value else None,
        has_value=has_value,
        content_type=entry.content_type,
        version=entry.version,
        create_revision=entry.create_revision,
        mod_revision=entry.mod_revision,
        created_at=_optional_time(entry.created_at, entry.HasField("created_at")),
        updated_at=_optional_time(entry.updated_at, entry.HasField("updated_at")),
        expires_at=_optional_time(entry.expires_at, entry.HasField("expires_at")),
        size=entry.size,
        checksum=entry.checksum,
        metadata=dict(entry.metadata),
    )


def _optional_time(stamp: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    return decode_timestamp(stamp) if present else None


def decode_usage(usage: types_pb2.QuotaUsage) -> models.QuotaUsage:
    """Convert a QuotaUsage message."""
    return models.QuotaUsage(
        used_bytes=usage.used_bytes,
        limit_bytes=usage.limit_bytes,
        used_keys=usage.used_keys,
        limit_keys=usage.limit_keys,
        max_value_bytes=usage.max_value_bytes,
    )


def encode_limits(
    *, limit_bytes: int | None, limit_keys: int | None, max_value_bytes: int | None
) -> quota_pb2.QuotaLimits:
    """Build a QuotaLimits message; None leaves a field unset (inherited)."""
    return quota_pb2.QuotaLimits(
        limit_bytes=limit_bytes, limit_keys=limit_keys, max_value_bytes=max_value_bytes
    )


def decode_limits(limits: quota_pb2.QuotaLimits) -> models.QuotaLimits:
    """Convert a QuotaLimits message; unset fields become None."""
    return models.QuotaLimits(
        limit_bytes=limits.limit_bytes if limits.HasField("limit_bytes") else None,
        limit_keys=limits.limit_keys if limits.HasField("limit_keys") else None,
        max_value_bytes=(limits.max_value_bytes if limits.HasField("max_value_bytes") else None),
    )
