"""The write path shared by every mutating call: one locked transaction per space.

A ``WriteSession`` opens the space's transaction, first turns entries whose expiry has
passed into tombstones (one revision, EXPIRE changes) so that they never count against
the write, then lets the caller load and stage entries, and at commit checks quota
against the net change and saves everything under one new revision. After the
transaction commits, the cache (if any) learns every entry the session saved.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime

from tmcp_storage_server.core import validate
from tmcp_storage_server.core.commands import PutCommand
from tmcp_storage_server.core.ports import Cache, ChangeFeed, Repository, SpaceTransaction
from tmcp_storage_server.core.ratelimit import WriteRateLimiter
from tmcp_storage_server.errors import (
    AlreadyExists,
    QuotaExceeded,
    RateLimited,
    VersionMismatch,
)
from tmcp_storage_server.model import (
    Change,
    ChangeOp,
    Entry,
    QuotaLimits,
    QuotaUsage,
    Space,
    SpaceState,
)

RETAIN_MAX_BYTES = 64 * 1024
"""Values up to this size are retained as previous versions (JSON only: what MERGE
reads), so retention costs at most ``RETAINED_VERSIONS`` x 64 KiB per key."""


def retainable(entry: Entry) -> bool:
    """Whether a written version is kept for later three-way merges."""
    return (
        not entry.deleted
        and entry.value is not None
        and entry.is_json
        and entry.size <= RETAIN_MAX_BYTES
    )


def checksum(data: bytes) -> str:
    """``sha256:<hex>`` of a value."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def effective_limits(defaults: QuotaLimits, state: SpaceState) -> QuotaLimits:
    """Server defaults, then the app's overrides, then the space's."""
    limits = defaults.overridden(state.app_overrides).overridden(state.space_overrides)
    # A per-value limit above the hard maximum would not fit the wire limits.
    return replace(limits, max_value_bytes=min(limits.max_value_bytes, validate.MAX_VALUE_BYTES))


def usage_of(state: SpaceState, limits: QuotaLimits) -> QuotaUsage:
    """The quota usage of a space row under ``limits``."""
    return QuotaUsage(
        used_bytes=state.used_bytes,
        limit_bytes=limits.limit_bytes,
        used_keys=state.used_keys,
        limit_keys=limits.limit_keys,
        max_value_bytes=limits.max_value_bytes,
    )


def check_version(key: str, current: Entry | None, expected: int | None, now: datetime) -> None:
    """Compare-and-set: unset passes; 0 means absent; N must equal the stored version
    (a tombstone keeps its version, so a stale N never matches a re-created key)."""
    if expected is None:
        return
    live = current is not None and current.live_at(now)
    if expected == 0:
        if live:
            assert current is not None
            raise AlreadyExists(key, current.version)
        return
    stored = current.version if current is not None else 0
    if stored != expected:
        raise VersionMismatch(key, expected, stored)


def build_put(cmd: PutCommand, current: Entry | None, *, now: datetime, revision: int) -> Entry:
    """The entry a Put stores over ``current`` (which may be a tombstone or expired)."""
    live = current if current is not None and current.live_at(now) else None
    if cmd.keep_ttl:
        expires_at = live.expires_at if live is not None else None
    elif cmd.ttl is None and cmd.expires_at is None:
        expires_at = None
    else:
        expires_at = validate.expiry(now, ttl=cmd.ttl, expires_at=cmd.expires_at)
    return Entry(
        key=cmd.key,
        value=cmd.value,
        content_type=cmd.content_type,
        version=(current.version if current is not None else 0) + 1,
        create_revision=live.create_revision if live is not None else revision,
        mod_revision=revision,
        created_at=live.created_at if live is not None else now,
        updated_at=now,
        expires_at=expires_at,
        size=len(cmd.value),
        checksum=checksum(cmd.value),
        metadata=dict(cmd.metadata) if cmd.metadata else {},
    )


def build_tombstone(current: Entry, *, now: datetime, revision: int, bump: bool) -> Entry:
    """The remembered deletion of ``current``: a Delete bumps the version, expiry not."""
    return replace(
        current,
        value=None,
        version=current.version + 1 if bump else current.version,
        mod_revision=revision,
        updated_at=now,
        expires_at=None,
        size=0,
        checksum="",
        metadata={},
        deleted=True,
    )


@dataclass(slots=True)
class _Staged:
    entry: Entry
    previous: Entry | None
    change: Change


class WriteSession:
    """Stage writes on one locked space, then commit them under one revision."""

    def __init__(
        self,
        tx: SpaceTransaction,
        *,
        now: datetime,
        limits: QuotaLimits,
        rejections: Counter[str] | None = None,
    ) -> None:
        self._tx = tx
        self._rejections = rejections if rejections is not None else Counter()
        self.now = now
        self.limits = limits
        self.revision = tx.state.revision
        self._used_bytes = tx.state.used_bytes
        self._used_keys = tx.state.used_keys
        self._staged: dict[str, _Staged] = {}
        self._loaded: dict[str, Entry | None] = {}
        self._bytes_delta = self._keys_delta = 0
        self.saved: dict[str, Entry] = {}
        """Every entry committed so far (swept or staged), the last one per key."""
        self._unsaved_changes: list[Change] = []
        self._unsaved_retained: list[Entry] = []
        self._unsaved_keys: set[str] = set()

    @property
    def tx(self) -> SpaceTransaction:
        """The locked transaction, for the sync records written with the entries."""
        return self._tx

    def discard(self) -> None:
        """Drop what is staged and not yet committed (a mutation that failed)."""
        self._staged.clear()
        self._bytes_delta = self._keys_delta = 0

    @property
    def next_revision(self) -> int:
        """The revision the staged writes will commit under."""
        return self.revision + 1

    @property
    def usage(self) -> QuotaUsage:
        """Usage as committed so far (after ``commit``: including the writes)."""
        return QuotaUsage(
            self._used_bytes,
            self.limits.limit_bytes,
            self._used_keys,
            self.limits.limit_keys,
            self.limits.max_value_bytes,
        )

    async def sweep_expired(self) -> int:
        """Turn due entries into tombstones under a revision of their own (saved with the
        next commit)."""
        due = await self._tx.due_expired(self.now)
        if not due:
            return 0
        revision = self.revision + 1
        tombstones = [build_tombstone(e, now=self.now, revision=revision, bump=False) for e in due]
        self._used_bytes -= sum(e.size for e in due)
        self._used_keys -= len(due)
        self._seal(tombstones, [Change(revision, e.key, ChangeOp.EXPIRE, e.version) for e in due])
        self.revision = revision
        self._loaded.update((t.key, t) for t in tombstones)
        return len(due)

    async def load(self, keys: Sequence[str]) -> dict[str, Entry]:
        """Stored entries of ``keys``, seeing what this session staged. Each key is read
        from the database at most once per session: load a batch's keys up front."""
        missing = [
            k for k in dict.fromkeys(keys) if k not in self._staged and k not in self._loaded
        ]
        if missing:
            found = await self._tx.load(missing)
            for k in missing:
                self._loaded[k] = found.get(k)
        result: dict[str, Entry] = {}
        for k in keys:
            entry = self._staged[k].entry if k in self._staged else self._loaded.get(k)
            if entry is not None:
                result[k] = entry
        return result

    async def load_one(self, key: str) -> Entry | None:
        """The stored entry of ``key`` as ``load`` gives it (what every single-key
        mutation asks: without building lists and dicts)."""
        staged = self._staged.get(key)
        if staged is not None:
            return staged.entry
        if key in self._loaded:
            return self._loaded[key]
        return (await self.load([key])).get(key)

    def loaded(self, key: str) -> Entry | None:
        """As ``load_one`` for a key already loaded (KeyError if it was not), without a
        coroutine: what a batch, having loaded all its keys, asks once per item."""
        staged = self._staged.get(key)
        return staged.entry if staged is not None else self._loaded[key]

    async def load_prefix(self, prefix: str) -> list[Entry]:
        """Live entries under ``prefix`` (values not loaded)."""
        await self.flush()
        return await self._tx.load_prefix(prefix, self.now)

    def stage(
        self,
        entry: Entry,
        previous: Entry | None,
        op: ChangeOp,
        *,
        client_id: str = "",
        mutation_id: int = 0,
        check_quota: bool = False,
    ) -> None:
        """Stage ``entry`` to replace ``previous`` (as loaded) under the next revision.
        With ``check_quota``, refuse (and leave unstaged) a write that would take the
        staged total over a limit; otherwise quota is checked once, at commit."""
        replaced = self._staged.get(entry.key)
        before = replaced.previous if replaced is not None else previous
        change = Change(self.next_revision, entry.key, op, entry.version, client_id, mutation_id)
        staged = _Staged(entry, before, change)
        self._add(replaced, -1)
        self._add(staged, +1)
        self._staged[entry.key] = staged
        if check_quota:
            try:
                self._check_quota()
            except QuotaExceeded:
                self._add(staged, -1)
                self._add(replaced, +1)
                if replaced is None:
                    del self._staged[entry.key]
                else:
                    self._staged[entry.key] = replaced
                raise

    def _add(self, staged: _Staged | None, sign: int) -> None:
        """Add (or with ``sign`` -1 remove) a staged write's change to the running net
        change in bytes and keys, so checks cost O(1) per item."""
        if staged is None:
            return
        old, new = staged.previous, staged.entry
        if old is not None and old.live_at(self.now):
            self._bytes_delta -= sign * old.size
            self._keys_delta -= sign
        if not new.deleted:
            self._bytes_delta += sign * new.size
            self._keys_delta += sign

    def _check_quota(self) -> tuple[int, int]:
        """The usage after the staged writes; QuotaExceeded if a growing write passes a
        limit (a write that shrinks usage is allowed even above a lowered limit)."""
        bytes_delta, keys_delta = self._bytes_delta, self._keys_delta
        used_bytes, used_keys = self._used_bytes + bytes_delta, self._used_keys + keys_delta
        error = None
        if bytes_delta > 0 and used_bytes > self.limits.limit_bytes:
            error = QuotaExceeded(kind="bytes", usage=self.usage, requested=bytes_delta)
        elif keys_delta > 0 and used_keys > self.limits.limit_keys:
            error = QuotaExceeded(kind="keys", usage=self.usage, requested=keys_delta)
        if error is not None:
            self._rejections[error.reason] += 1
            raise error
        return used_bytes, used_keys

    async def commit(self, *, defer: bool = False) -> None:
        """Check quota against the net change and commit the staged writes under the next
        revision. They are saved now, or with ``defer`` together with later commits (one
        statement for many revisions: see ``flush``)."""
        if self._staged:
            used_bytes, used_keys = self._check_quota()
            self._seal(
                [s.entry for s in self._staged.values()],
                [s.change for s in self._staged.values()],
                retained=[s.entry for s in self._staged.values() if retainable(s.entry)],
            )
            self.revision, self._used_bytes, self._used_keys = (
                self.next_revision,
                used_bytes,
                used_keys,
            )
            self._loaded.update((k, s.entry) for k, s in self._staged.items())
            self._staged.clear()
            self._bytes_delta = self._keys_delta = 0
        if not defer:
            await self.flush()

    def _seal(
        self, entries: Sequence[Entry], changes: Sequence[Change], retained: Sequence[Entry] = ()
    ) -> None:
        self.saved.update((e.key, e) for e in entries)
        self._unsaved_keys.update(e.key for e in entries)
        self._unsaved_changes.extend(changes)
        self._unsaved_retained.extend(retained)

    async def flush(self) -> None:
        """Save everything committed and not yet saved: the last entry of each key, every
        change under its own revision, and the space row at the latest revision."""
        if not self._unsaved_changes:
            return
        await self._tx.save(
            revision=self.revision,
            entries=[self.saved[k] for k in self._unsaved_keys],
            changes=self._unsaved_changes,
            used_bytes=self._used_bytes,
            used_keys=self._used_keys,
            retained=self._unsaved_retained,
        )
        self._unsaved_keys = set()
        self._unsaved_changes = []
        self._unsaved_retained = []


class Writer:
    """Opens write sessions on a repository. After a commit, the cache (if any) learns
    every entry the session saved, and the change feed (if any) wakes the space's
    watchers. The rate limiter (if any) admits each session before it takes the lock."""

    def __init__(
        self,
        *,
        repository: Repository,
        defaults: QuotaLimits,
        cache: Cache | None = None,
        feed: ChangeFeed | None = None,
        limiter: WriteRateLimiter | None = None,
    ) -> None:
        self._repository = repository
        self._defaults = defaults
        self._cache = cache
        self._feed = feed
        self._limiter = limiter
        self.quota_rejections: Counter[str] = Counter()
        """Writes (or atomic batches) refused by quota, by reason (read by metrics)."""
        self.rate_limited = 0
        """Calls refused by the write rate limit (read by metrics)."""

    def admit(self, space: Space, cost: int) -> None:
        """Count ``cost`` writes against the space's rate: RateLimited when it is over."""
        if self._limiter is not None and cost:
            try:
                self._limiter.charge(space, cost)
            except RateLimited:
                self.rate_limited += 1
                raise

    @asynccontextmanager
    async def session(
        self, space: Space, now: datetime, keys: Sequence[str] = (), *, cost: int = 1
    ) -> AsyncIterator[WriteSession]:
        """A session whose staged writes commit when the block exits normally; ``keys``
        (those the session will load) are read together with taking the lock. ``cost`` is
        what the call counts against the space's write rate (its write items; 0 for the
        server's own sweeps and for batches that only read): RateLimited, before any
        database work, when the space is over its rate."""
        self.admit(space, cost)
        async with self.sessions({space: keys}, now) as sessions:
            yield sessions[space]

    @asynccontextmanager
    async def sessions(
        self, requests: Mapping[Space, Sequence[str]], now: datetime
    ) -> AsyncIterator[dict[Space, WriteSession]]:
        """One session per space, all in one transaction (see ``session``): their staged
        writes commit together when the block exits normally; the cache learns them in
        one call after the commit."""
        sessions: dict[Space, WriteSession] = {}
        starts: dict[Space, int] = {}
        staged_all = False
        try:
            async with self._repository.transactions(requests) as txs:
                for space, tx in txs.items():
                    session = WriteSession(
                        tx,
                        now=now,
                        limits=effective_limits(self._defaults, tx.state),
                        rejections=self.quota_rejections,
                    )
                    starts[space] = session.revision
                    await session.sweep_expired()
                    sessions[space] = session
                yield sessions
                for session in sessions.values():
                    await session.commit()
                staged_all = True
        except BaseException:
            # Failing at COMMIT leaves unknown whether it happened: drop those keys from
            # every cache rather than risk serving what it overwrote.
            if staged_all and self._cache is not None:
                for space, session in sessions.items():
                    if session.saved:
                        await self._cache.unknown(space, session.revision, list(session.saved))
            raise
        # Only after the commit: a cache must never hold what a rollback undid.
        if self._cache is not None:
            commits = [
                (space, session.revision, list(session.saved.values()))
                for space, session in sessions.items()
                if session.saved
            ]
            if commits:
                await self._cache.written_many(commits)
        if self._feed is not None:
            for space, session in sessions.items():
                if session.revision != starts[space]:
                    self._feed.notify(space)
