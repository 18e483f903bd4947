"""What callers ask the core to do, already decoded from the wire."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from datetime import datetime, timedelta

from tmcp_storage_server.errors import InvalidArgument, StorageError
from tmcp_storage_server.model import (
    ChangedKey,
    Entry,
    MutationOp,
    Outcome,
    PushResult,
    QuotaUsage,
    SyncClient,
    record,
)


@record
class PutCommand:
    """Create or replace one key (DESIGN.md: Put replaces the entry)."""

    key: str
    value: bytes
    content_type: str = ""
    is_json: bool = False
    """The value came through ``Value.json`` (already serialized into ``value``)."""
    expected_version: int | None = None
    ttl: timedelta | None = None
    expires_at: datetime | None = None
    keep_ttl: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)

    def with_content_type(self, content_type: str) -> PutCommand:
        """The same Put with another content type (what ``dataclasses.replace`` does, at
        half its cost: once per item of every batch)."""
        return PutCommand(
            self.key,
            content_type=content_type,
            value=self.value,
            is_json=self.is_json,
            expected_version=self.expected_version,
            ttl=self.ttl,
            expires_at=self.expires_at,
            keep_ttl=self.keep_ttl,
            metadata=self.metadata,
        )


@record
class DeleteCommand:
    """Delete one key, optionally only at a version."""

    key: str
    expected_version: int | None = None


@record
class TouchCommand:
    """Change only a key's expiry."""

    key: str
    ttl: timedelta | None = None
    expires_at: datetime | None = None
    clear_ttl: bool = False


@record
class WriteResult:
    """The outcome of a single-key write."""

    revision: int
    usage: QuotaUsage
    entry: Entry | None = None
    deleted: bool = False


@record
class DeletePrefixResult:
    """How many keys a DeletePrefix removed."""

    revision: int
    usage: QuotaUsage
    deleted_count: int


@record
class ListPage:
    """One page of List."""

    revision: int
    entries: list[Entry]
    next_page_token: str


@record
class GetCommand:
    """Read one key inside a batch."""

    key: str


@record
class BadOperation:
    """A batch item the api could not decode: it fails with ``error`` (per item unless
    the batch is atomic)."""

    key: str
    error: StorageError


Operation = GetCommand | PutCommand | DeleteCommand | BadOperation
"""One step of a batch."""


@record
class ItemResult:
    """The outcome of one batch item: ``error`` is None when it succeeded."""

    key: str
    error: StorageError | None = None
    entry: Entry | None = None
    found: bool = False
    deleted: bool = False


@record
class BatchResult:
    """The outcome of a batch: one result per item, in request order."""

    revision: int
    results: list[ItemResult]
    usage: QuotaUsage | None = None


@record
class MutationCommand:
    """One queued client write, decoded from a Push."""

    mutation_id: int
    op: MutationOp
    key: str
    value: bytes = b""
    content_type: str = ""
    is_json: bool = False
    ttl: timedelta | None = None
    base_version: int | None = None
    """The version the client last saw; None is a blind write (no conflict check)."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    decode_error: InvalidArgument | None = None
    """The mutation could not be decoded from the wire: it is REJECTED with this."""


@record
class MutationReport:
    """What Push answers for one mutation."""

    result: PushResult
    outcome: Outcome
    """As stored; for DUPLICATE the one stored the first time (None if forgotten)."""
    entry: Entry | None = None
    """APPLIED: the new entry (no value); CONFLICT: the server's entry."""
    error: StorageError | None = None
    """REJECTED (or a DUPLICATE of one): why."""


@record
class PushReport:
    """The outcome of a Push."""

    reports: list[MutationReport]
    last_mutation_id: int
    revision: int
    usage: QuotaUsage


@record
class PullPage:
    """One Pull answer."""

    changes: list[ChangedKey]
    cursor: str
    has_more: bool
    reset: bool
    last_mutation_id: int
    revision: int


@record
class SyncStatus:
    """What GetStatus reports."""

    revision: int
    cursor: str
    client: SyncClient | None
    open_conflicts: int
    horizon_revision: int
    horizon_time: datetime | None


@record
class ResolveResult:
    """The entry ResolveConflict wrote (None when the choice was a deletion)."""

    revision: int
    usage: QuotaUsage
    entry: Entry | None
