"""Input rules from DESIGN.md: keys, spaces, values, content types, metadata, expiry.

Each check raises ``InvalidArgument`` naming the field and a reason clients branch on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TypeVar

from tmcp_storage_server.errors import InvalidArgument
from tmcp_storage_server.model import DEFAULT_CONTENT_TYPE, Space, is_json_content_type

MAX_KEY_BYTES = 255
MAX_VALUE_BYTES = 1024 * 1024
MAX_METADATA_PAIRS = 16
MAX_METADATA_BYTES = 4096
MAX_APP_ID_BYTES = 128
MAX_USER_ID_BYTES = 255
MAX_CONTENT_TYPE = 127
MAX_TTL = timedelta(days=366 * 100)

_T = TypeVar("_T")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_APP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9][\w!#$&^.+-]*/[A-Za-z0-9][\w!#$&^.+-]*(\s*;[ -~]*)?")


_VALID_SPACES: set[tuple[str, str]] = set()
"""Spaces (app id, user id) that passed ``space`` lately: every call names one, and a hit
costs a tuple hash instead of two regular expressions (a tuple, not the ``Space``: its
dataclass hash is Python code, 0.35 us). Cleared when it reaches ``_VALID_SPACES_MAX``."""
_VALID_SPACES_MAX = 10_000


_VALID_CONTENT_TYPES: set[str] = set()
"""Content types that passed ``content_type`` lately, as ``_VALID_SPACES`` (every item of
a batch names one, mostly the same few)."""
_VALID_CONTENT_TYPES_MAX = 1_000


def space(value: Space, field: str = "space") -> Space:
    """A space names an app (letters, digits, ``._-``) and a user (may be empty)."""
    names = (value.app_id, value.user_id)
    if names in _VALID_SPACES:
        return value
    _check_space(value, field)
    _remember(_VALID_SPACES, names, _VALID_SPACES_MAX)
    return value


def _remember(valid: set[_T], value: _T, limit: int) -> None:
    """Add ``value`` to a set of values that passed a check, emptied when it is full."""
    if len(valid) >= limit:
        valid.clear()
    valid.add(value)


def _check_space(value: Space, field: str) -> None:
    if not value.app_id:
        raise InvalidArgument(f"{field}.app_id", "app_id is required", reason="INVALID_SPACE")
    if len(value.app_id.encode()) > MAX_APP_ID_BYTES or not _APP_ID.fullmatch(value.app_id):
        raise InvalidArgument(
            f"{field}.app_id",
            f"app_id must be 1-{MAX_APP_ID_BYTES} letters, digits, '.', '_' or '-'",
            reason="INVALID_SPACE",
        )
    if len(value.user_id.encode()) > MAX_USER_ID_BYTES or _CONTROL.search(value.user_id):
        raise InvalidArgument(
            f"{field}.user_id",
            f"user_id must be at most {MAX_USER_ID_BYTES} bytes without control characters",
            reason="INVALID_SPACE",
        )


def key(value: str, field: str = "key") -> str:
    """Keys are UTF-8, 1-255 bytes, without control characters."""
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates: not UTF-8, cannot be stored
        raise InvalidArgument(field, "key is not valid UTF-8", reason="INVALID_KEY") from None
    if size == 0:
        raise InvalidArgument(field, "key must not be empty", reason="INVALID_KEY")
    if size > MAX_KEY_BYTES:
        raise InvalidArgument(
            field, f"key is {size} bytes; at most {MAX_KEY_BYTES}", reason="INVALID_KEY"
        )
    if _CONTROL.search(value):
        raise InvalidArgument(field, "key contains a control character", reason="INVALID_KEY")
    return value


def prefix(value: str, field: str = "prefix") -> str:
    """A prefix is empty or follows the key rules."""
    return key(value, field) if value else value


def content_type(value: str, *, is_json: bool, field: str = "content_type") -> str:
    """The content type to store: JSON values are always ``application/json``."""
    if is_json:
        if value and not is_json_content_type(value):
            raise InvalidArgument(
                field,
                "a JSON value is stored as application/json; leave content_type empty",
                reason="INVALID_CONTENT_TYPE",
            )
        return value or "application/json"
    if not value:
        return DEFAULT_CONTENT_TYPE
    if value in _VALID_CONTENT_TYPES:
        return value
    if len(value) > MAX_CONTENT_TYPE or not _CONTENT_TYPE.fullmatch(value):
        raise InvalidArgument(
            field, "content_type must look like type/subtype", reason="INVALID_CONTENT_TYPE"
        )
    _remember(_VALID_CONTENT_TYPES, value, _VALID_CONTENT_TYPES_MAX)
    return value


def value_size(data: bytes, *, max_bytes: int, field: str = "value") -> bytes:
    """Values fit the space's per-value limit."""
    if len(data) > max_bytes:
        raise InvalidArgument(
            field,
            f"value is {len(data)} bytes; at most {max_bytes}",
            reason="VALUE_TOO_LARGE",
        )
    return data


def value(data: bytes, ctype: str, *, max_bytes: int, field: str = "value") -> bytes:
    """Values fit the space's per-value limit; JSON content types must parse."""
    value_size(data, max_bytes=max_bytes, field=field)
    if is_json_content_type(ctype):
        try:
            json.loads(data)
        except ValueError:
            raise InvalidArgument(
                field, "value is declared application/json but is not JSON", reason="INVALID_JSON"
            ) from None
    return data


def metadata(pairs: Mapping[str, str], field: str = "metadata") -> dict[str, str]:
    """At most 16 pairs and 4 KiB of keys and values; keys non-empty, no control chars."""
    if not pairs:
        return {}
    if len(pairs) > MAX_METADATA_PAIRS:
        raise InvalidArgument(
            field,
            f"{len(pairs)} metadata pairs; at most {MAX_METADATA_PAIRS}",
            reason="INVALID_METADATA",
        )
    total = 0
    for name, text in pairs.items():
        if not name or _CONTROL.search(name):
            raise InvalidArgument(
                field,
                "metadata keys must be non-empty, no control characters",
                reason="INVALID_METADATA",
            )
        total += len(name.encode()) + len(text.encode())
    if total > MAX_METADATA_BYTES:
        raise InvalidArgument(
            field,
            f"metadata is {total} bytes; at most {MAX_METADATA_BYTES}",
            reason="INVALID_METADATA",
        )
    return dict(pairs)


def expiry(
    now: datetime, *, ttl: timedelta | None, expires_at: datetime | None, field: str = "ttl"
) -> datetime | None:
    """The absolute expiry from a relative ``ttl`` or an absolute ``expires_at``."""
    if ttl is not None and expires_at is not None:
        raise InvalidArgument(field, "set ttl or expires_at, not both", reason="INVALID_TTL")
    if ttl is not None:
        if ttl <= timedelta(0) or ttl > MAX_TTL:
            raise InvalidArgument(
                field, "ttl must be positive and under 100 years", reason="INVALID_TTL"
            )
        return now + ttl
    if expires_at is not None and expires_at <= now:
        raise InvalidArgument("expires_at", "expires_at is in the past", reason="INVALID_TTL")
    return expires_at


def page_size(size: int, *, default: int = 100, maximum: int = 1000) -> int:
    """0 means the default; above the maximum is coerced to it (AIP-158)."""
    if size < 0:
        raise InvalidArgument("page_size", "page_size must not be negative")
    return default if size == 0 else min(size, maximum)
