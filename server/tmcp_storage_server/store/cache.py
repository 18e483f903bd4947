"""The two-level read cache: L1 in this process, L2 in Redis (optional), then the database.

How it stays coherent (see ``store.l1`` for ranks and generations):

- Every read carries the space revision it was made at; L1 and Redis keep an item only
  if no higher-ranked one is there, so a slow read can never overwrite a newer write.
- A write (``written``, after commit) puts its entries into the L1, then in one Redis round
  trip stores them in L2 (a large batch only marks them changed there) and publishes an
  invalidation; other processes mark or drop their
  L1 copies. A fill that began before the invalidation arrived is refused by the marker.
- Without Redis, invalidations travel by PostgreSQL NOTIFY (a ``Notifier``); the embedded
  SQLite database has one process and needs no channel.
- Coherence needs a working invalidation channel. While it is down (Redis or the
  listening connection unreachable) L1 items are served for at most ``max_age`` seconds
  after they were read, L2 is skipped, and writes remember the keys they could not
  announce. When the channel is back, the subscription is renewed first, then the L1 is
  flushed and the remembered keys are marked in Redis and announced.
- Nothing is served past its entry's expiry, past ``ttl`` after it was read (a safety net
  under pub/sub), or, for "absent", past ``negative_ttl``.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import redis.asyncio as redis

from tmcp_storage_server.core.ports import Commit, Load, LoadMany
from tmcp_storage_server.model import Entry, Space
from tmcp_storage_server.store.invalidation import (
    MAX_MESSAGE_BYTES,
    Invalidation,
    Notifier,
    messages,
)
from tmcp_storage_server.store.l1 import CachedRead, CacheKey, L1Cache
from tmcp_storage_server.store.redis_l2 import RedisL2

log = logging.getLogger(__name__)

MAX_PENDING = 10_000
"""Keys a process remembers having changed while Redis was down; beyond this it deletes
every L2 item under its prefix when Redis is back."""

WRITE_THROUGH_MAX = 16
"""A commit of up to this many entries of a space stores them in Redis (other processes
then read them from L2); a larger one (a bulk batch) only marks them changed there: its
values would cost more to encode and send than the reads they might save."""

_DOWN = (redis.RedisError, OSError)
"""What a Redis call or a ``Notifier`` raises when its server is unreachable."""


@dataclass(slots=True)
class CacheStats:
    """Counters of one process, reported at shutdown and in logs."""

    l1_hits: int = 0
    l1_misses: int = 0
    l2_hits: int = 0
    l2_misses: int = 0
    db_reads: int = 0
    stale_fills_refused: int = 0
    invalidations_received: int = 0
    channel_errors: int = 0
    """Failed Redis (or NOTIFY) calls on the request path."""
    channel_outages: int = 0
    """Times the invalidation channel (Redis, or PostgreSQL LISTEN) went down."""
    l1_flushes: int = 0

    def line(self) -> str:
        """``name=value`` pairs for a log line."""
        return " ".join(f"{k}={v}" for k, v in asdict(self).items())


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """What ``TwoLevelCache`` needs from the configuration."""

    max_age: float
    ttl: float
    negative_ttl: float
    coherent_without_channel: bool
    """True when no other process can write (embedded SQLite): no channel is needed."""


def cache_key(space: Space, key: str) -> CacheKey:
    """The key of an item."""
    return (space.app_id, space.user_id, key)


class TwoLevelCache:
    """``core.ports.Cache`` over an ``L1Cache`` and, optionally, a ``RedisL2``."""

    def __init__(
        self,
        *,
        l1: L1Cache,
        l2: RedisL2 | None,
        settings: CacheSettings,
        notifier: Notifier | None = None,
        on_channel_failure: Callable[[], None] = lambda: None,
    ) -> None:
        self.l1 = l1
        self.l2 = l2
        self.notifier = notifier
        """Publishes invalidations when there is no L2 (with L2, Redis carries them)."""
        self.settings = settings
        self.stats = CacheStats()
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.on_channel_failure = on_channel_failure
        self.channel_up = False
        self.channel_name = "Redis" if l2 is not None else "PostgreSQL NOTIFY"
        self._pending: dict[CacheKey, int] = {}
        self._pending_overflow = False
        self._reported = False

    @property
    def coherent(self) -> bool:
        """Whether every write of any process reaches this L1 (else items age out)."""
        return self.settings.coherent_without_channel or self.channel_up

    @property
    def healthy(self) -> bool:
        """Whether the invalidation channel, if there is one, is up (what health says)."""
        return self.channel_up or (self.l2 is None and self.notifier is None)

    def _valid_until(self, entry: Entry | None, read_at: float) -> float:
        if entry is None:
            return read_at + self.settings.negative_ttl
        until = read_at + self.settings.ttl
        if entry.expires_at is not None:
            until = min(until, entry.expires_at.timestamp())
        return until

    def cached(self, space: Space, key: str) -> tuple[Entry | None, int] | None:
        """An L1 hit, or None (not counted as a miss: ``get`` counts it)."""
        read = self.l1.lookup(
            cache_key(space, key), max_age=None if self.coherent else self.settings.max_age
        )
        if read is None:
            return None
        self.stats.l1_hits += 1
        return read.entry, read.revision

    async def get(self, space: Space, key: str, load: Load) -> tuple[Entry | None, int]:
        """L1, then L2, then ``load``."""
        hit = self.cached(space, key)
        if hit is not None:
            return hit
        self.stats.l1_misses += 1
        ck = cache_key(space, key)
        generation = self.l1.begin(ck)
        try:
            if self.l2 is not None and self.channel_up:
                found = (await self._l2_get([ck]))[0]
                if found is not None and self.l1.fill(ck, found, generation=generation):
                    self.stats.l2_hits += 1
                    return found.entry, found.revision
                self.stats.l2_misses += 1
            read_at = self.l1.clock()
            entry, revision = await load()
            self.stats.db_reads += 1
            read = CachedRead(entry, revision, read_at, self._valid_until(entry, read_at))
            if not self.l1.fill(ck, read, generation=generation):
                self.stats.stale_fills_refused += 1
            await self._l2_store([(ck, read)])
            return entry, revision
        finally:
            self.l1.end(ck)

    async def get_many(
        self, space: Space, keys: Sequence[str], load: LoadMany
    ) -> tuple[dict[str, Entry], int]:
        """As ``get`` for many keys: one L2 round trip and one ``load`` for the rest."""
        unique = list(dict.fromkeys(keys))
        max_age = None if self.coherent else self.settings.max_age
        found: dict[str, Entry] = {}
        revision = 0
        missing: dict[str, CacheKey] = {}
        for key in unique:
            ck = cache_key(space, key)
            read = self.l1.lookup(ck, max_age=max_age)
            if read is None:
                self.stats.l1_misses += 1
                missing[key] = ck
                continue
            self.stats.l1_hits += 1
            revision = max(revision, read.revision)
            if read.entry is not None:
                found[key] = read.entry
        if not missing:
            return found, revision
        generations = {key: self.l1.begin(ck) for key, ck in missing.items()}
        try:
            return await self._get_missing(missing, generations, load, found, revision)
        finally:
            for ck in missing.values():
                self.l1.end(ck)

    async def _get_missing(
        self,
        missing: dict[str, CacheKey],
        generations: dict[str, int],
        load: LoadMany,
        found: dict[str, Entry],
        revision: int,
    ) -> tuple[dict[str, Entry], int]:
        if self.l2 is not None and self.channel_up:
            reads = await self._l2_get(list(missing.values()))
            for (key, ck), read in zip(list(missing.items()), reads, strict=True):
                if read is not None and self.l1.fill(ck, read, generation=generations[key]):
                    self.stats.l2_hits += 1
                    revision = max(revision, read.revision)
                    if read.entry is not None:
                        found[key] = read.entry
                    del missing[key]
                else:
                    self.stats.l2_misses += 1
            if not missing:
                return found, revision
        read_at = self.l1.clock()
        loaded, db_revision = await load(list(missing))
        self.stats.db_reads += 1
        fills = []
        for key, ck in missing.items():
            entry = loaded.get(key)
            read = CachedRead(entry, db_revision, read_at, self._valid_until(entry, read_at))
            if not self.l1.fill(ck, read, generation=generations[key]):
                self.stats.stale_fills_refused += 1
            fills.append((ck, read))
            if entry is not None:
                found[key] = entry
        await self._l2_store(fills)
        return found, max(revision, db_revision)

    async def written_many(self, commits: Sequence[Commit]) -> None:
        """Into this L1 and L2, and announced to the other processes: one Redis round
        trip for every space of the commit."""
        now = self.l1.clock()
        reads: list[tuple[CacheKey, CachedRead]] = []
        marks: list[tuple[CacheKey, int]] = []
        for space, revision, entries in commits:
            through = len(entries) <= WRITE_THROUGH_MAX
            for entry in entries:
                ck = cache_key(space, entry.key)
                if entry.deleted or entry.value is not None:
                    live = None if entry.deleted else entry
                    read = CachedRead(live, revision, now, self._valid_until(live, now))
                    self.l1.put(ck, read)
                    if through:
                        reads.append((ck, read))
                    else:
                        marks.append((ck, revision))
                else:  # saved without its value: only announce the change
                    self.l1.invalidate(ck, revision)
                    marks.append((ck, revision))
        if self.channel_up:
            try:
                changed = [
                    (space, revision, [e.key for e in es]) for space, revision, es in commits
                ]
                await self._announce(changed, reads, marks)
                return
            except _DOWN as exc:
                self._channel_failed(exc)
        if self.l2 is not None or self.notifier is not None:
            for space, revision, entries in commits:
                self._remember(space, revision, [e.key for e in entries])

    async def _announce(
        self,
        changed: Sequence[tuple[Space, int, Sequence[str]]],
        reads: list[tuple[CacheKey, CachedRead]],
        marks: list[tuple[CacheKey, int]],
    ) -> None:
        limit = MAX_MESSAGE_BYTES
        if self.l2 is None and self.notifier is not None:
            limit = self.notifier.max_message_bytes
        payload = [
            message
            for space, revision, keys in changed
            for message in messages(self.origin, space, revision, keys, limit)
        ]
        if self.l2 is not None:  # items, then messages: one script call, one round trip
            await self.l2.store(reads, marks=marks, publish=payload)
        elif self.notifier is not None:
            await self.notifier.publish(payload)

    async def unknown(self, space: Space, revision: int, keys: Sequence[str]) -> None:
        """Markers at ``revision`` here and in Redis, and an announcement: older reads are
        dropped everywhere; a read at that revision (if it committed) is accepted."""
        marks = []
        for key in keys:
            ck = cache_key(space, key)
            self.l1.invalidate(ck, revision)
            marks.append((ck, revision))
        if self.channel_up:
            try:
                await self._announce([(space, revision, list(keys))], [], marks)
                return
            except _DOWN as exc:
                self._channel_failed(exc)
        if self.l2 is not None or self.notifier is not None:
            self._remember(space, revision, keys)

    async def close(self) -> None:
        """Close the connections of L2 and of the notifier (whichever exist)."""
        if self.l2 is not None:
            await self.l2.close()
        if self.notifier is not None:
            await self.notifier.close()

    def apply(self, invalidation: Invalidation) -> None:
        """An invalidation heard from another process."""
        if invalidation.origin == self.origin:
            return
        self.stats.invalidations_received += 1
        for key in invalidation.keys:
            self.l1.invalidate(cache_key(invalidation.space, key), invalidation.revision)

    async def channel_reachable(self) -> None:
        """The subscription is (re)established: flush the L1, mark in L2 and announce what
        this process changed while the channel was down, then trust it again. (Raises,
        leaving the channel down, when that fails.)"""
        if self.l2 is not None:
            await self.l2.reconnect()
        elif self.notifier is not None:
            await self.notifier.reconnect()
        self.l1.flush()
        self.stats.l1_flushes += 1
        await self._repair()
        self.channel_up = True
        self._reported = True
        log.warning("%s reachable: cache coherent (L1 flushed)", self.channel_name)
        if self._pending or self._pending_overflow:
            # Written during the repair, before the channel was trusted: announce them too.
            try:
                await self._repair()
            except _DOWN as exc:
                self._channel_failed(exc)

    async def _repair(self) -> None:
        pending, overflow = self._pending, self._pending_overflow
        self._pending, self._pending_overflow = {}, False
        try:
            if overflow and self.l2 is not None:
                removed = await self.l2.forget_all()
                log.warning("cleared %d L2 items: too many changes while Redis was down", removed)
            payload = self._pending_messages(pending)
            if self.l2 is not None and pending:
                await self.l2.mark(list(pending.items()), payload)
            elif self.notifier is not None and payload:
                await self.notifier.publish(payload)
        except BaseException:
            for ck, revision in pending.items():
                self._pending[ck] = max(revision, self._pending.get(ck, 0))
            self._pending_overflow |= overflow
            raise

    def channel_unreachable(self, why: str) -> None:
        """The subscription failed: serve L1 items for at most ``max_age``, skip L2."""
        # Reported on each fall, and once when it was never up since the start.
        if self.channel_up or not self._reported:
            self._reported = True
            self.stats.channel_outages += self.channel_up
            self.channel_up = False
            log.warning(
                "%s unreachable (%s): reading through the database, L1 items live at most %.3gs",
                self.channel_name,
                why,
                self.settings.max_age,
            )

    async def _l2_get(self, keys: list[CacheKey]) -> list[CachedRead | None]:
        assert self.l2 is not None
        try:
            reads = await self.l2.get_many(keys)
        except _DOWN as exc:
            self._channel_failed(exc)
            return [None] * len(keys)
        now = self.l1.clock()
        return [r if r is not None and r.valid_until > now else None for r in reads]

    async def _l2_store(self, reads: list[tuple[CacheKey, CachedRead]]) -> None:
        if self.l2 is None or not self.channel_up or not reads:
            return
        try:
            await self.l2.store(reads)
        except _DOWN as exc:
            self._channel_failed(exc)

    def _channel_failed(self, exc: BaseException) -> None:
        self.stats.channel_errors += 1
        self.channel_unreachable(f"{type(exc).__name__}: {exc}")
        self.on_channel_failure()

    def _pending_messages(self, pending: dict[CacheKey, int]) -> list[bytes]:
        """One announcement per space, at the newest revision among its keys: a higher
        revision than a key's own only makes other processes refuse more fills."""
        by_space: dict[Space, tuple[int, list[str]]] = {}
        for (app_id, user_id, key), revision in pending.items():
            space = Space(app_id, user_id)
            newest, keys = by_space.get(space, (0, []))
            keys.append(key)
            by_space[space] = (max(newest, revision), keys)
        limit = self.notifier.max_message_bytes if self.notifier is not None else None
        return [
            message
            for space, (revision, keys) in by_space.items()
            for message in messages(self.origin, space, revision, keys, limit or MAX_MESSAGE_BYTES)
        ]

    def _remember(self, space: Space, revision: int, keys: Sequence[str]) -> None:
        for key in keys:
            ck = cache_key(space, key)
            self._pending[ck] = max(revision, self._pending.get(ck, 0))
        if len(self._pending) > MAX_PENDING:
            self._pending.clear()
            self._pending_overflow = True
