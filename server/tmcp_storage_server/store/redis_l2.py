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

# KEYS the items; ARGV[1] the channel, ARGV[2] the number m of messages, ARGV[3] the
# retention (ms), ARGV[4..3+m] the messages, then one argument per item: "rank read_at_ms
# valid_until_ms data" (one argument, not four: packing arguments is most of the client's
# cost of a large batch). Each item is set unless Redis holds a higher rank; then the
# messages are published (after the items, so that a process that hears one and reads
# Redis finds the new item).
_STORE = """
local m = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local item = ARGV[3 + m + i]
  local a = string.find(item, ' ', 1, true)
  local b = string.find(item, ' ', a + 1, true)
  local c = string.find(item, ' ', b + 1, true)
  local rank = string.sub(item, 1, a - 1)
  local cur = tonumber(redis.call('HGET', key, 'k') or '-1')
  if cur <= tonumber(rank) then
    redis.call('HSET', key, 'k', rank, 't', string.sub(item, a + 1, b - 1),
      'u', string.sub(item, b + 1, c - 1), 'd', string.sub(item, c + 1))
    redis.call('PEXPIRE', key, ARGV[3])
  end
end
for j = 1, m do redis.call('PUBLISH', ARGV[1], ARGV[3 + j]) end
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
        self._store = client.register_script(_STORE)
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
        self,
        reads: Sequence[tuple[CacheKey, CachedRead]],
        *,
        marks: Sequence[tuple[CacheKey, int]] = (),
        publish: Sequence[bytes] = (),
    ) -> None:
        """Markers for keys changed at revisions with values unknown (``marks``) and each
        read, unless Redis holds a newer one; then the messages of ``publish``: one
        script call, one round trip."""
        if not reads and not marks and not publish:
            return
        keys = [self.redis_key(key) for key, _ in marks]
        args: list[bytes | int] = [self.channel.encode(), len(publish), self._retain_ms]
        args += publish
        args += (b"%d 0 0 " % marker_rank(revision) for _, revision in marks)
        for key, read in reads:
            keys.append(self.redis_key(key))
            head = b"%d %d %d " % (
                read_rank(read.revision),
                _ms(read.read_at),
                _ms(read.valid_until),
            )
            args.append(head if read.entry is None else head + encode_entry(read.entry))
        # EVALSHA straight away: a registered script makes redis-py ask SCRIPT EXISTS
        # first, one more round trip on every write. After a Redis restart or SCRIPT FLUSH
        # the answer is NOSCRIPT: load it and call again (setting newer items is
        # idempotent; an invalidation heard twice is harmless).
        try:
            await self.client.evalsha(self._store.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.client.script_load(_STORE)
            await self.client.evalsha(self._store.sha, len(keys), *keys, *args)

    async def mark(self, changes: Sequence[tuple[CacheKey, int]], publish: Sequence[bytes]) -> None:
        """Markers for keys changed at revisions (values unknown), then the messages."""
        await self.store((), marks=changes, publish=publish)

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
