"""Invalidation messages and the cache's channel states, with a fake notifier."""

from __future__ import annotations

from collections.abc import Sequence

from tmcp_storage_server.model import Space
from tmcp_storage_server.store.cache import CacheSettings, TwoLevelCache
from tmcp_storage_server.store.invalidation import Invalidation, messages
from tmcp_storage_server.store.l1 import L1Cache

from tests.unit.test_l1_cache import SPACE, Clock, Loader

SETTINGS = CacheSettings(max_age=2.0, ttl=60.0, negative_ttl=1.0, coherent_without_channel=False)


class FakeNotifier:
    max_message_bytes = 300

    def __init__(self) -> None:
        self.sent: list[Invalidation] = []
        self.down = False

    async def publish(self, payload: Sequence[bytes]) -> None:
        if self.down:
            raise ConnectionError("down")
        self.sent.extend(Invalidation.decode(m) for m in payload)

    async def reconnect(self) -> None:
        if self.down:
            raise ConnectionError("down")

    async def close(self) -> None:
        pass


def test_messages_split_under_the_size_limit_and_round_trip() -> None:
    keys = [f"key/{i:04d}/é" for i in range(100)]
    sent = list(messages("me", Space("app", "u"), 42, keys, max_bytes=300))
    assert len(sent) > 1 and all(len(m) <= 300 for m in sent)
    decoded = [Invalidation.decode(m) for m in sent]
    assert [k for d in decoded for k in d.keys] == keys
    assert {(d.origin, d.space, d.revision) for d in decoded} == {("me", Space("app", "u"), 42)}
    assert list(messages("me", Space("app", "u"), 1, [])) == []


def _cache(clock: Clock, notifier: FakeNotifier) -> TwoLevelCache:
    l1 = L1Cache(max_bytes=1 << 20, clock=clock)
    return TwoLevelCache(l1=l1, l2=None, notifier=notifier, settings=SETTINGS)


async def test_writes_are_announced_and_others_invalidations_applied() -> None:
    clock, db, notifier = Clock(), Loader(), FakeNotifier()
    cache = _cache(clock, notifier)
    await cache.channel_reachable()
    await cache.written_many([(SPACE, 1, [db.write("a", b"1")])])
    assert [(m.revision, m.keys) for m in notifier.sent] == [(1, ("a",))]
    cache.apply(notifier.sent[0])  # our own message, heard back: ignored
    assert cache.stats.invalidations_received == 0
    assert (await cache.get(SPACE, "a", lambda: db.one("a")))[0] is not None
    assert db.calls == 0
    db.write("a", b"2")  # another process writes and announces it
    cache.apply(Invalidation("other", SPACE, db.revision, ("a",)))
    found, _ = await cache.get(SPACE, "a", lambda: db.one("a"))
    assert found is not None and found.value == b"2" and db.calls == 1


async def test_a_channel_outage_ages_items_and_recovery_flushes_and_announces() -> None:
    clock, db, notifier = Clock(), Loader(), FakeNotifier()
    cache = _cache(clock, notifier)
    await cache.channel_reachable()
    db.write("a", b"1")
    await cache.get(SPACE, "a", lambda: db.one("a"))
    notifier.down = True
    await cache.written_many([(SPACE, 2, [db.write("b", b"1")])])  # cannot announce: remembered
    assert not cache.channel_up and cache.stats.channel_errors == 1
    clock.now += 2.0  # max age while the channel is down
    await cache.get(SPACE, "a", lambda: db.one("a"))
    assert db.calls == 2
    notifier.down = False
    await cache.channel_reachable()
    assert cache.channel_up and len(cache.l1) == 0  # flushed
    assert [(m.revision, m.keys) for m in notifier.sent] == [(2, ("b",))]
