"""The values of offline sync: what `push`, `pull`, `status` and `conflicts` hand back."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tmcp_storage.errors import StorageError
from tmcp_storage.models import Entry


class Strategy(enum.StrEnum):
    """How the server settles a mutation whose `base_version` is stale."""

    DEFAULT = "default"
    """The app's configured default on the server (``STORAGE_APP_STRATEGIES``), else last
    write wins."""
    LAST_WRITE_WINS = "last_write_wins"
    MERGE = "merge"
    MANUAL = "manual"
    KEEP_BOTH = "keep_both"


class Result(enum.StrEnum):
    """The outcome of one pushed mutation."""

    UNSPECIFIED = "unspecified"
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    REJECTED = "rejected"


@dataclass(frozen=True, kw_only=True)
class Mutation:
    """One queued write: `value` set (bytes raw, anything else JSON), or `delete=True`."""

    mutation_id: int
    """Rises by exactly one per client, from 1."""
    key: str
    value: object = None
    delete: bool = False
    content_type: str | None = None
    ttl: float | timedelta | None = None
    base_version: int | None = None
    """The version the client last saw; None writes blindly (no conflict check)."""
    metadata: Mapping[str, str] | None = None


@dataclass(frozen=True, kw_only=True)
class MutationOutcome:
    """What the server did with one mutation."""

    mutation_id: int
    result: Result
    original_result: Result
    """For DUPLICATE: the result stored the first time."""
    entry: Entry | None
    """APPLIED: the new entry (no value); CONFLICT: the server's entry."""
    conflict_id: str
    error: StorageError | None
    """REJECTED (or a duplicate of a rejected one): why."""


@dataclass(frozen=True, kw_only=True)
class PushResult:
    """The answer to a push."""

    outcomes: list[MutationOutcome]
    last_mutation_id: int
    revision: int


@dataclass(frozen=True, kw_only=True)
class Change:
    """The current state of one changed key."""

    key: str
    op: str
    """`put`, `delete`, `expire` or `touch`."""
    revision: int
    entry: Entry | None
    """The entry with its value; None for `delete` and `expire`."""
    client_id: str
    mutation_id: int
    version: int
    """The key's version after the change (a deletion's too)."""


@dataclass(frozen=True, kw_only=True)
class PullResult:
    """One page of changes since a cursor."""

    changes: list[Change]
    cursor: str
    has_more: bool
    reset: bool
    """The cursor was older than the retained history: drop local state; `changes` is a
    full snapshot (continue while `has_more`)."""
    last_mutation_id: int
    revision: int


@dataclass(frozen=True, kw_only=True)
class SyncStatus:
    """What the server knows of a space and a client."""

    revision: int
    cursor: str
    last_mutation_id: int
    last_push_time: datetime | None
    last_pull_time: datetime | None
    open_conflicts: int
    history_horizon_revision: int
    history_horizon_time: datetime | None


@dataclass(frozen=True, kw_only=True)
class Conflict:
    """A conflict record."""

    conflict_id: str
    key: str
    strategy: Strategy
    open: bool
    server_value: Any
    """The server's value when the conflict arose (None: absent or deleted)."""
    client_value: Any
    """The mutation's value (None: a deletion)."""
    client_id: str
    mutation_id: int
    base_version: int
    created_at: datetime | None
    resolved_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class WatchEvent:
    """One message of a watch: changes, or a heartbeat; `cursor` resumes after it."""

    changes: list[Change]
    cursor: str
    heartbeat: bool
