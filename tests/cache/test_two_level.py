"""Two caches in one event loop on a real Redis: the batch path (``get_many``) and the
invalidation round trip, without server processes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

import pytest
from tmcp_storage_server.model import Entry, Space
from tmcp_storage_server.store.cache import WRITE_THROUGH_MAX, CacheSettings, TwoLevelCache
from tmcp_storage_server.store.invalidation import RedisSubscriber
from tmcp_storage_server.store.l1 import CachedRead, L1Cache
from tmcp_storage_server.store.redis_l2 import RedisL2, connect

from tests.cache.conftest import RedisServer
from tests.unit.test_l1_cache import Loader

SPACE = Space("app", "u")
SETTINGS = CacheSettings(max_age=2, ttl=60, negative_ttl=5, coherent_without_channel=False)


async def _cache(url: str, prefix: str) -> tuple[TwoLevelCache, asyncio.Task[None]]:
    l2 = RedisL2(client=connect(url), prefix=prefix, retain=60)
    cache = TwoLevelCache(l1=L1Cache(max_bytes=1 << 20), l2=l2, settings=SETTINGS)
    subscriber = RedisSubscriber(
        client=l2.client,
        channel=l2.channel,
        on_message=cache.apply,
        on_up=cache.channel_reachable,
        on_down=cache.channel_unreachable,
    )
    cache.on_channel_failure = subscriber.recheck
    task = asyncio.create_task(subscriber.run())
    for _ in range(200):
        if cache.channel_up:
            return cache, task
        await asyncio.sleep(0.01)
    raise AssertionError("no subscription")


@pytest.fixture
async def caches(own_redis: RedisServer) -> AsyncIterator[tuple[TwoLevelCache, TwoLevelCache]]:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    a, task_a = await _cache(own_redis.url, prefix)
    b, task_b = await _cache(own_redis.url, prefix)
    yield a, b
    for cache, task in ((a, task_a), (b, task_b)):
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cache.l2 is not None
        await cache.l2.close()


async def _eventually(check: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(200):  # about a second
        if await check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


async def test_get_many_reads_what_another_process_wrote_from_redis(
    caches: tuple[TwoLevelCache, TwoLevelCache],
) -> None:
    a, b = caches
    db = Loader()
    written = [db.write(f"k{i}", f"v{i}".encode()) for i in range(5)]
    await a.written_many([(SPACE, db.revision, written)])

    async def load(keys: Sequence[str]) -> tuple[Mapping[str, Entry], int]:
        return await db.many(keys)

    found, revision = await b.get_many(SPACE, ["k0", "k1", "k2", "k3", "k4", "nope"], load)
    assert {k: e.value for k, e in found.items()} == {f"k{i}": f"v{i}".encode() for i in range(5)}
    assert revision == db.revision
    assert (b.stats.l2_hits, b.stats.l2_misses, db.calls) == (5, 1, 1)  # "nope" from the db
    found, _ = await b.get_many(SPACE, ["k0", "nope"], load)
    assert set(found) == {"k0"} and db.calls == 1 and b.stats.l1_hits == 2

    # A overwrites k0: B drops its copy when the invalidation arrives, then reads Redis.
    await a.written_many([(SPACE, db.revision + 1, [db.write("k0", b"new")])])

    async def b_sees_new() -> bool:
        found, _ = await b.get_many(SPACE, ["k0"], load)
        return found["k0"].value == b"new"

    await _eventually(b_sees_new)
    assert db.calls == 1 and b.stats.invalidations_received >= 2


async def test_a_bulk_write_marks_redis_instead_of_storing_its_values(
    caches: tuple[TwoLevelCache, TwoLevelCache],
) -> None:
    a, b = caches
    db = Loader()
    old = [db.write(f"k{i}", b"old") for i in range(WRITE_THROUGH_MAX + 1)]
    stale_revision = db.revision
    new = [db.write(e.key, b"new") for e in old]
    await a.written_many(
        [(SPACE, db.revision, new)]
    )  # one commit, more than WRITE_THROUGH_MAX keys
    keys = [e.key for e in new]
    found, _ = await a.get_many(SPACE, keys, db.many)
    assert {e.value for e in found.values()} == {b"new"} and db.calls == 0  # A's own L1
    assert b.l2 is not None
    # Redis holds markers, no values: B reads the database ...
    assert await b.l2.get_many([(SPACE.app_id, SPACE.user_id, k) for k in keys]) == [None] * len(
        keys
    )
    # ... and a read made before the write can no longer be stored there.
    await b.l2.store([((SPACE.app_id, SPACE.user_id, "k0"), _read_at(old[0], stale_revision))])
    assert await b.l2.get_many([(SPACE.app_id, SPACE.user_id, "k0")]) == [None]
    found, _ = await b.get_many(SPACE, keys, db.many)
    assert {e.value for e in found.values()} == {b"new"} and db.calls == 1


def _read_at(entry: Entry, revision: int) -> CachedRead:
    return CachedRead(entry, revision, 0.0, 1e12)
