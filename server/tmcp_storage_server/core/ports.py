"""What the core needs from the outside world, as Protocols.

A ``Repository`` stores spaces; every write goes through a ``SpaceTransaction``, which
holds the space's row locked from the first statement to commit, so revision, usage and
quota decisions are serialized per space and never made on stale data.

A ``Cache`` serves eventually consistent reads in front of the repository; the write
path tells it what each commit stored. Compare-and-set decisions never consult it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from tmcp_storage_server.model import (
    AppUsage,
    Change,
    ChangedKey,
    Conflict,
    Entry,
    LimitOverrides,
    Outcome,
    Space,
    SpaceState,
    SyncClient,
    UsageDetail,
)


@dataclass(frozen=True, slots=True)
class ChangesPage:
    """What ``changed_since`` read, and the space's state in the same snapshot."""

    changes: list[ChangedKey]
    revision: int
    """The space revision."""
    horizon: int
    """Changes at or before this revision may have been forgotten (compacted)."""
    horizon_time: datetime | None
    open_conflicts: int


class Wakeup(Protocol):
    """One subscriber's wake-up signal. A wake-up only says "read the log again": a
    lost one delays a subscriber until its next poll, it never loses a change."""

    async def wait(self, seconds: float) -> bool:
        """Until woken (True, and the signal is consumed) or ``seconds`` pass (False)."""
        ...


class ChangeFeed(Protocol):
    """Wakes the watchers of a space, in this process and in every other one."""

    def subscribe(self, space: Space) -> AbstractContextManager[Wakeup]:
        """A wake-up signal for commits to ``space`` while the block runs."""
        ...

    def notify(self, space: Space) -> None:
        """A commit to ``space`` happened: wake its watchers everywhere (never blocks)."""
        ...

    def wake_all(self) -> None:
        """Wake every subscriber (shutdown, or notifications may have been missed)."""
        ...


class Clock(Protocol):
    """Wall time, injectable so that tests can move it."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SpaceTransaction(Protocol):
    """One write transaction on one space, its row locked until commit or rollback."""

    @property
    def state(self) -> SpaceState:
        """The space's row as locked at the start of the transaction."""
        ...

    async def load(self, keys: Sequence[str]) -> dict[str, Entry]:
        """Stored entries (live, expired or tombstones, with values) of these keys."""
        ...

    async def load_prefix(self, prefix: str, now: datetime) -> list[Entry]:
        """Live entries under ``prefix``, without values, in key order."""
        ...

    async def due_expired(self, now: datetime) -> list[Entry]:
        """Live (not deleted) entries whose expiry is at or before ``now``, no values."""
        ...

    async def save(
        self,
        *,
        revision: int,
        entries: Sequence[Entry],
        changes: Sequence[Change],
        used_bytes: int,
        used_keys: int,
        retained: Sequence[Entry] = (),
    ) -> None:
        """Upsert ``entries`` (tombstones included), append ``changes``, and set the
        space's revision and usage counters. May be called more than once. ``retained``
        entries (with values) are kept as previous versions, the last ``RETAINED_VERSIONS``
        of each key."""
        ...

    async def sync_client(self, client_id: str) -> SyncClient | None:
        """The client's row in this space, if it ever pushed."""
        ...

    async def save_sync_client(self, client: SyncClient) -> None:
        """Create or update the client's row."""
        ...

    async def outcomes(self, client_id: str, first: int, last: int) -> list[Outcome]:
        """Stored outcomes of the client's mutations ``first..last``, in id order."""
        ...

    async def save_outcomes(self, client_id: str, outcomes: Sequence[Outcome]) -> None:
        """Store outcomes of newly applied mutations."""
        ...

    async def retained_value(self, key: str, version: int) -> bytes | None:
        """The value ``key`` had at ``version``, if that version is retained."""
        ...

    async def conflict(self, conflict_id: str) -> Conflict | None:
        """One conflict record of the space."""
        ...

    async def save_conflict(self, conflict: Conflict) -> None:
        """Create or update a conflict record."""
        ...


RETAINED_VERSIONS = 5
"""Previous versions kept per key, for three-way merges."""


class Repository(Protocol):
    """Durable storage of spaces. Raises ``errors.Unavailable`` when unreachable."""

    async def open(self) -> None:
        """Connect and apply migrations (idempotent; safe from concurrent processes)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def ping(self) -> None:
        """Raise ``Unavailable`` unless the database answers."""
        ...

    async def get(self, space: Space, key: str, now: datetime) -> tuple[Entry | None, int]:
        """The live entry of ``key`` (with value) or None, and the space revision."""
        ...

    async def get_many(
        self, space: Space, keys: Sequence[str], now: datetime
    ) -> tuple[dict[str, Entry], int]:
        """The live entries (with values) of those ``keys`` that exist, and the revision,
        read in one snapshot."""
        ...

    async def list_entries(
        self,
        space: Space,
        *,
        prefix: str,
        start_after: str | None,
        limit: int,
        include_values: bool,
        max_create_revision: int | None,
        now: datetime,
    ) -> tuple[list[Entry], int]:
        """Live entries under ``prefix`` after ``start_after`` in key order, at most
        ``limit``, created at or before ``max_create_revision``; and the revision."""
        ...

    def transaction(
        self, space: Space, keys: Sequence[str] = ()
    ) -> AbstractAsyncContextManager[SpaceTransaction]:
        """Begin a write transaction on ``space`` (created on first use). Commits on
        normal exit, rolls back on an exception. ``keys`` are the keys the caller will
        ``load``: a repository may read them while it takes the lock."""
        ...

    def transactions(
        self, requests: Mapping[Space, Sequence[str]]
    ) -> AbstractAsyncContextManager[Mapping[Space, SpaceTransaction]]:
        """One write transaction over several spaces (each created on first use), as
        ``transaction`` for each: all of them commit together or none does."""
        ...

    async def space_state(self, space: Space) -> SpaceState:
        """The space's row, without locking; a zero state when the space is new."""
        ...

    async def usage_detail(self, space: Space, now: datetime, top_keys: int) -> UsageDetail:
        """Usage by content type, expiring entries and largest keys."""
        ...

    async def app_usage(self, app_id: str, top_spaces: int) -> AppUsage:
        """Totals over every space of an app and its largest spaces."""
        ...

    async def set_overrides(
        self, app_id: str, user_id: str | None, overrides: LimitOverrides, reset: bool
    ) -> LimitOverrides:
        """Merge limit overrides into an app (``user_id`` None) or one space; return them."""
        ...

    async def spaces_with_expired(self, now: datetime, limit: int) -> list[Space]:
        """Spaces that hold live entries due to expire."""
        ...

    async def sync_client(self, space: Space, client_id: str) -> SyncClient | None:
        """A client's row in a space, without locking."""
        ...

    async def list_conflicts(
        self, space: Space, *, prefix: str, include_resolved: bool, after: str, limit: int
    ) -> list[Conflict]:
        """Conflicts under ``prefix`` with ids after ``after``, in id order."""
        ...

    async def changed_since(
        self, space: Space, *, revision: int, key: str, prefix: str, limit: int, now: datetime
    ) -> ChangesPage:
        """Keys (under ``prefix``) whose last change is after ``(revision, key)``, in
        ``(revision, key)`` order, at most ``limit``, read in one snapshot."""
        ...

    async def mark_pulled(self, space: Space, client_id: str, now: datetime) -> int:
        """Record a pull by an owned client; returns its last mutation id (0 if unknown)."""
        ...

    async def compact(self, before: datetime, now: datetime) -> int:
        """Forget history older than ``before``: change rows, tombstones and push
        outcomes, raising each touched space's horizon; returns rows removed."""
        ...


Load = Callable[[], Awaitable[tuple[Entry | None, int]]]
"""Reads one key from the repository: its live entry or None, and the space revision."""

Commit = tuple[Space, int, Sequence[Entry]]
"""A committed write as a cache learns it: the space, its revision, the entries saved."""
LoadMany = Callable[[Sequence[str]], Awaitable[tuple[Mapping[str, Entry], int]]]
"""Reads keys from the repository: their live entries (absent keys left out), and the
space revision of that one snapshot."""


class Cache(Protocol):
    """Read-through cache of live entries, kept coherent with every committed write.

    Every answer carries the space revision it was read at; a cached answer is only ever
    replaced by one read at the same or a newer revision, and never outlives the entry's
    expiry.
    """

    def cached(self, space: Space, key: str) -> tuple[Entry | None, int] | None:
        """What ``get`` would answer from this process's memory, without waiting; None
        when that needs a load (or a round trip to a shared level)."""
        ...

    async def get(self, space: Space, key: str, load: Load) -> tuple[Entry | None, int]:
        """The live entry of ``key`` (or None) and the revision it was read at; ``load``
        is called on a miss."""
        ...

    async def get_many(
        self, space: Space, keys: Sequence[str], load: LoadMany
    ) -> tuple[dict[str, Entry], int]:
        """Live entries of ``keys`` (absent keys left out) and the newest revision among
        the answers; ``load`` is called once with the keys that missed."""
        ...

    async def written_many(self, commits: Sequence[Commit]) -> None:
        """After a commit: each space's ``entries`` (tombstones included) are its state at
        its ``revision``. Updates this process's cache and tells every other process (one
        round trip for all of them)."""
        ...

    async def unknown(self, space: Space, revision: int, keys: Sequence[str]) -> None:
        """A commit of ``keys`` at ``revision`` failed in a way that leaves unknown whether
        it happened: forget them here and everywhere, without filling anything."""
        ...
