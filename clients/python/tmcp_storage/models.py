"""The values the client hands back: frozen dataclasses with no protobuf in them.

A caller never sees a generated message: `codec` turns each response into one of these,
so that code using the client reads as plain Python and survives proto changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeAlias

JsonInput: TypeAlias = (
    "Mapping[str, JsonInput] | Sequence[JsonInput] | str | int | float | bool | None"
)
"""A Python value that can be written as JSON (a JSON object needs `str` keys)."""

RawInput: TypeAlias = bytes | bytearray | memoryview
"""A Python value that is written as raw bytes."""

QuotaKind: TypeAlias = Literal["bytes", "keys"]
"""Which limit of a space a write ran into."""


@dataclass(frozen=True)
class Space:
    """One user's store in one mini-app; the unit of isolation, quota and revision."""

    app_id: str
    """The mini-app."""
    user_id: str = ""
    """The user; empty for the app's shared space."""

    @classmethod
    def shared(cls, app_id: str) -> Space:
        """The app's shared space (readable by the app's users, writable by its admin)."""
        return cls(app_id, "")


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One stored key as the server returned it."""

    key: str
    """The key (UTF-8, 1-255 bytes)."""
    value: Any
    """`bytes` for raw values; for JSON ones the decoded Python value (dict, list, str,
    int, float, bool or None, as `json.loads` gives). `None` also when the response
    left the value out: `has_value` tells the two apart."""
    has_value: bool
    """False when the response omitted the value (Put, Touch, List without values)."""
    content_type: str
    """The stored content type; `application/json` for JSON values."""
    version: int
    """Per-key write counter: 1 on create, +1 on each put and delete; never reused."""
    create_revision: int
    """The space revision that created this incarnation of the key."""
    mod_revision: int
    """The space revision of the last change to the key (put, touch)."""
    created_at: datetime | None
    """When the key was created (UTC)."""
    updated_at: datetime | None
    """When the value was last written (UTC)."""
    expires_at: datetime | None
    """When the key expires (UTC), or None if it does not."""
    size: int
    """Size of the value in bytes, as quota counts it."""
    checksum: str
    """`sha256:<hex>` of the value bytes."""
    metadata: dict[str, str]
    """The entry's string metadata."""


@dataclass(frozen=True, kw_only=True)
class QuotaUsage:
    """A space's usage and effective limits."""

    used_bytes: int
    """Value bytes of the live keys."""
    limit_bytes: int
    """Most value bytes the space may hold."""
    used_keys: int
    """Number of live keys."""
    limit_keys: int
    """Most live keys the space may hold."""
    max_value_bytes: int
    """Largest single value allowed."""


@dataclass(frozen=True, kw_only=True)
class PutResult:
    """What a put returns."""

    entry: Entry
    """The stored entry, without its value (`has_value` is False)."""
    usage: QuotaUsage
    """The space's usage after the write."""
    revision: int
    """The space revision the write committed at."""


@dataclass(frozen=True, kw_only=True)
class DeleteResult:
    """What a delete returns."""

    deleted: bool
    """False when the key was already absent (which is not an error)."""
    usage: QuotaUsage
    """The space's usage after the delete."""
    revision: int
    """The space revision the call was served at."""


@dataclass(frozen=True, kw_only=True)
class DeletePrefixResult:
    """What a delete-prefix returns."""

    deleted_count: int
    """How many live keys were deleted."""
    usage: QuotaUsage
    """The space's usage after the delete."""
    revision: int
    """The space revision the call was served at."""


@dataclass(frozen=True, kw_only=True)
class QuotaInfo:
    """A space's limits, usage and headroom."""

    used_bytes: int
    """Value bytes of the live keys."""
    limit_bytes: int
    """Most value bytes the space may hold."""
    used_keys: int
    """Number of live keys."""
    limit_keys: int
    """Most live keys the space may hold."""
    max_value_bytes: int
    """Largest single value allowed."""
    available_bytes: int
    """Bytes that can still be written."""
    available_keys: int
    """Keys that can still be created."""
    revision: int
    """The space revision the figures were read at."""


@dataclass(frozen=True, kw_only=True)
class ContentTypeUsage:
    """Bytes and keys of one content type in a space."""

    content_type: str
    """The content type."""
    bytes: int
    """Value bytes of that type."""
    keys: int
    """Live keys of that type."""


@dataclass(frozen=True, kw_only=True)
class KeySize:
    """One of the largest keys of a space."""

    key: str
    """The key."""
    size: int
    """Its value size in bytes."""


@dataclass(frozen=True, kw_only=True)
class UsageInfo:
    """Detailed usage of a space."""

    usage: QuotaUsage
    """Usage and effective limits."""
    by_content_type: tuple[ContentTypeUsage, ...]
    """Bytes and keys per content type."""
    expiring_keys: int
    """Live keys that have an expiry."""
    expiring_bytes: int
    """Value bytes of those keys."""
    open_conflicts: int
    """Sync conflicts waiting to be resolved."""
    largest_keys: tuple[KeySize, ...]
    """The largest keys, largest first."""
    revision: int
    """The space revision the figures were read at."""


@dataclass(frozen=True, kw_only=True)
class QuotaLimits:
    """Limit overrides of an app or a space; None means inherited."""

    limit_bytes: int | None = None
    """Most value bytes per space, or None to inherit."""
    limit_keys: int | None = None
    """Most live keys per space, or None to inherit."""
    max_value_bytes: int | None = None
    """Largest single value, or None to inherit."""


@dataclass(frozen=True, kw_only=True)
class SpaceUsage:
    """One space of an app and its usage."""

    space: Space
    """The space."""
    usage: QuotaUsage
    """Its usage and effective limits."""


@dataclass(frozen=True, kw_only=True)
class AppUsage:
    """Totals over every space of an app."""

    app_id: str
    """The app."""
    spaces: int
    """Number of spaces that hold data."""
    used_bytes: int
    """Value bytes over all spaces."""
    used_keys: int
    """Live keys over all spaces."""
    overrides: QuotaLimits
    """The app's limit overrides (unset ones inherit the server defaults)."""
    largest_spaces: tuple[SpaceUsage, ...]
    """The largest spaces, largest first."""


@dataclass(frozen=True)
class SetItem:
    """One write of a batch, with the options of `put`."""

    key: str
    value: Any
    """bytes are stored raw, anything else as JSON."""
    content_type: str | None = None
    expected_version: int | None = None
    ttl: float | timedelta | None = None
    expires_at: datetime | None = None
    keep_ttl: bool = False
    metadata: Mapping[str, str] | None = None


@dataclass(frozen=True)
class DeleteItem:
    """One delete of a batch, optionally conditional on the key's version."""

    key: str
    expected_version: int | None = None


@dataclass(frozen=True)
class GetItem:
    """One read inside `execute`."""

    key: str


@dataclass(frozen=True)
class ItemResult:
    """The outcome of one batch item, in request order."""

    key: str
    error: Exception | None
    """The item's own error (a `StorageError`), or None when it succeeded."""
    entry: Entry | None = None
    """get: the entry read; set: the stored entry (without its value)."""
    found: bool = False
    deleted: bool = False

    @property
    def ok(self) -> bool:
        """Whether this item succeeded."""
        return self.error is None


@dataclass(frozen=True)
class BatchResult:
    """The outcome of a batch call: one result per item, in request order."""

    results: tuple[ItemResult, ...]
    revision: int
    usage: QuotaUsage | None = None
