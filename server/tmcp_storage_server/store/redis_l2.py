"""The shared cache level in Redis, and the channel its invalidations travel on.

One Redis hash per key, ``<prefix>e:<app>\\x1f<user>\\x1f<key>``, with fields ``k`` (rank,
see ``store.l1``), ``t`` (read at, ms), ``u`` (valid until, ms) and ``d`` (the encoded
entry; empty for "absent"). Writes go through a Lua script that keeps the stored item
when its rank is higher, so racing writers and fillers can never leave an older read in
place. Items live ``retain`` seconds in Redis whatever their validity, so that their rank
keeps guarding after an entry's expiry; readers check ``u``.

Ranks are compared as Lua numbers (doubles): exact up to 2**53, so for space revisions
below 2**52. Calls raise ``redis.RedisError`` or ``OSError`` when Redis is unreachable;
the caller (``store.cache``) decides what that means.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from tmcp_storage_server.model import Entry
from tmcp_storage_server.store.l1 import CachedRead, CacheKey, marker_rank, read_rank

SOCKET_TIMEOUT = 0.5
"""Seconds any Redis call may take before Redis counts as unreachable."""

# KEYS[1] item; ARGV rank, read_at_ms, valid_until_ms, data, retain_ms.
_SET_NEWER = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'k') or '-1')
if cur > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'k', ARGV[1], 't', ARGV[2], 'u', ARGV[3], 'd', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

_FIELDS = ("k", "t", "u", "d")


def connect(url: str) -> redis.Redis:
    """A client with short timeouts and no retries: a slow Redis must never make a call
    hang; the cache falls back to the database instead."""
    return redis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )


def _us(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1_000_000)


def _moment(us: int | None) -> datetime | None:
    return None if us is None else datetime.fromtimestamp(us / 1_000_000, UTC)


def encode_entry(entry: Entry) -> bytes:
    """A JSON line of the fields, then the value bytes."""
    head = [
        entry.content_type,
        entry.version,
        entry.create_revision,
        entry.mod_revision,
        _us(entry.created_at),
        _us(entry.updated_at),
        _us(entry.expires_at),
        entry.size,
        entry.checksum,
        dict(entry.metadata),
    ]
    return json.dumps(head, separators=(",", ":")).encode() + b"\n" + (entry.value or b"")


def decode_entry(key: str, data: bytes) -> Entry:
    """The entry ``encode_entry`` wrote."""
    head, _, value = data.partition(b"\n")
    ctype, version, create_rev, mod_rev, created, updated, expires, size, digest, meta = json.loads(
        head
    )
    return Entry(
        key=key,
        value=value,
        content_type=ctype,
        version=version,
        create_revision=create_rev,
        mod_revision=mod_rev,
        created_at=_moment(created) or datetime.min.replace(tzinfo=UTC),
        updated_at=_moment(updated) or datetime.min.replace(tzinfo=UTC),
        expires_at=_moment(expires),
        size=size,
        checksum=digest,
        metadata=meta,
    )


class RedisL2:
    """Items in Redis under ``prefix``; invalidations published on ``channel``."""

    def __init__(self, *, client: redis.Redis, prefix: str, retain: float) -> None:
        self.client = client
        self._prefix = prefix.encode()
        self._retain_ms = max(1, int(retain * 1000))
        self._set_newer = client.register_script(_SET_NEWER)
        self.channel = prefix + "invalidate"

    def redis_key(self, key: CacheKey) -> bytes:
        """Where the item of ``key`` lives."""
        return self._prefix + b"e:" + "\x1f".join(key).encode()

    async def get_many(self, keys: Sequence[CacheKey]) -> list[CachedRead | None]:
        """The stored reads of ``keys`` (None where missing or only a marker), in order.
        Validity is the caller's to check."""
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(self.redis_key(key), _FIELDS)
            replies = await pipe.execute()
        return [_read(key, reply) for key, reply in zip(keys, replies, strict=True)]

    async def store(
        self, reads: Sequence[tuple[CacheKey, CachedRead]], *, publish: bytes | None = None
    ) -> None:
        """Store each read unless Redis holds a newer one; then publish ``publish``. One
        round trip, in this order, so another process that hears the invalidation and
        reads Redis finds the new item."""
        items: list[tuple[CacheKey, list[bytes | int]]] = []
        for key, read in reads:
            data = b"" if read.entry is None else encode_entry(read.entry)
            args: list[bytes | int] = [
                read_rank(read.revision),
                _ms(read.read_at),
                _ms(read.valid_until),
                data,
                self._retain_ms,
            ]
            items.append((key, args))
        await self._set_many(items, [publish] if publish is not None else [])

    async def mark(self, changes: Sequence[tuple[CacheKey, int]], publish: Sequence[bytes]) -> None:
        """Markers for keys changed at revisions (values unknown), then the messages."""
        markers: list[tuple[CacheKey, list[bytes | int]]] = [
            (key, [marker_rank(revision), 0, 0, b"", self._retain_ms]) for key, revision in changes
        ]
        await self._set_many(markers, publish)

    async def _set_many(
        self, items: Sequence[tuple[CacheKey, list[bytes | int]]], publish: Sequence[bytes]
    ) -> None:
        # EVALSHA straight away: a registered script in a pipeline makes redis-py ask
        # SCRIPT EXISTS first, one more round trip on every write. After a Redis restart
        # or SCRIPT FLUSH the answer is NOSCRIPT: load it and send the pipeline again
        # (setting newer items is idempotent; an invalidation heard twice is harmless).
        for attempt in range(2):
            async with self.client.pipeline(transaction=False) as pipe:
                for key, args in items:
                    pipe.evalsha(self._set_newer.sha, 1, self.redis_key(key), *args)
                for message in publish:
                    pipe.publish(self.channel, message)
                try:
                    await pipe.execute()
                    return
                except NoScriptError:
                    if attempt:
                        raise
            await self.client.script_load(_SET_NEWER)

    async def forget_all(self) -> int:
        """Delete every item under the prefix (only ours); returns how many."""
        deleted = 0
        async for found in self.client.scan_iter(match=self._prefix + b"e:*", count=1000):
            deleted += await self.client.unlink(found)
        return deleted

    async def reconnect(self) -> None:
        """Drop idle connections (after an outage they are dead: the first call on each
        would fail), then raise unless Redis answers on a new one."""
        await self.client.connection_pool.disconnect(inuse_connections=False)
        await self.client.ping()

    async def close(self) -> None:
        """Close the connections."""
        await self.client.aclose()


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _read(key: CacheKey, reply: Sequence[bytes | None]) -> CachedRead | None:
    rank, read_at, valid_until, data = reply
    if rank is None or int(rank) % 2 == 0:
        return None
    entry = decode_entry(key[2], data) if data else None
    return CachedRead(entry, int(rank) // 2, int(read_at or 0) / 1000, int(valid_until or 0) / 1000)
