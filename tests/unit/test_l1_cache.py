"""The in-process cache level and the two-level cache without Redis, on a fake clock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from tmcp_storage_server.model import Entry, Space
from tmcp_storage_server.store.cache import CacheSettings, TwoLevelCache
from tmcp_storage_server.store.l1 import ITEM_OVERHEAD, CachedRead, L1Cache

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def entry(
    key: str, value: bytes = b"v", *, revision: int = 1, expires: float | None = None
) -> Entry:
    moment = datetime.fromtimestamp(T0, UTC)
    return Entry(
        key=key,
        value=value,
        content_type="application/octet-stream",
        version=revision,
        create_revision=1,
        mod_revision=revision,
        created_at=moment,
        updated_at=moment,
        expires_at=None if expires is None else datetime.fromtimestamp(expires, UTC),
        size=len(value),
        checksum="",
    )


def read(key: str, revision: int, value: bytes = b"v", *, until: float = T0 + 60) -> CachedRead:
    return CachedRead(entry(key, value, revision=revision), revision, T0, until)


def k(name: str) -> tuple[str, str, str]:
    return ("app", "user", name)


def test_bytes_bound_evicts_least_recently_used() -> None:
    l1 = L1Cache(max_bytes=3 * (ITEM_OVERHEAD + 1000 + 20), clock=Clock())
    for name in ("a", "b", "c"):
        assert l1.put(k(name), read(name, 1, b"x" * 1000))
    assert l1.lookup(k("a")) is not None  # a is now the most recent
    l1.put(k("d"), read("d", 1, b"x" * 1000))
    assert l1.bytes <= l1.max_bytes
    assert l1.lookup(k("b")) is None
    assert all(l1.lookup(k(n)) is not None for n in ("a", "c", "d"))


def test_an_item_larger_than_the_bound_is_not_kept() -> None:
    l1 = L1Cache(max_bytes=ITEM_OVERHEAD + 100, clock=Clock())
    l1.put(k("big"), read("big", 1, b"x" * 1000))
    assert l1.lookup(k("big")) is None
    assert l1.bytes == 0


def test_newer_wins_and_older_fills_are_refused() -> None:
    l1 = L1Cache(max_bytes=1 << 20, clock=Clock())
    assert l1.put(k("a"), read("a", 5, b"new"))
    generation = l1.begin(k("a"))
    assert not l1.fill(k("a"), read("a", 3, b"old"), generation=generation)
    l1.end(k("a"))
    cached = l1.lookup(k("a"))
    assert cached is not None and cached.revision == 5
    assert l1.put(k("a"), read("a", 5, b"new"))  # the same read again is fine


def test_an_invalidation_during_a_load_refuses_the_older_fill() -> None:
    l1 = L1Cache(max_bytes=1 << 20, clock=Clock())
    generation = l1.begin(k("a"))
    l1.invalidate(k("a"), 7)
    assert not l1.fill(k("a"), read("a", 6), generation=generation)
    assert l1.lookup(k("a")) is None
    assert l1.fill(k("a"), read("a", 7), generation=generation)  # read at the change
    l1.end(k("a"))
    assert l1.lookup(k("a")) is not None


def test_markers_vanish_when_the_load_ends() -> None:
    l1 = L1Cache(max_bytes=1 << 20, clock=Clock())
    l1.begin(k("a"))
    l1.invalidate(k("a"), 7)
    assert len(l1) == 1
    l1.end(k("a"))
    assert len(l1) == 0 and l1.bytes == 0
    l1.invalidate(k("b"), 3)  # nobody loads b: nothing to remember
    assert len(l1) == 0


def test_invalidation_drops_older_items_and_keeps_newer_ones() -> None:
    l1 = L1Cache(max_bytes=1 << 20, clock=Clock())
    l1.put(k("old"), read("old", 3))
    l1.put(k("new"), read("new", 9))
    l1.invalidate(k("old"), 4)
    l1.invalidate(k("new"), 9)  # this process's own write, heard back
    assert l1.lookup(k("old")) is None
    assert l1.lookup(k("new")) is not None


def test_expiry_and_max_age() -> None:
    clock = Clock()
    l1 = L1Cache(max_bytes=1 << 20, clock=clock)
    l1.put(k("ttl"), read("ttl", 1, until=T0 + 5))
    l1.put(k("long"), read("long", 1))
    clock.now = T0 + 4.999
    assert l1.lookup(k("ttl")) is not None
    assert l1.lookup(k("long"), max_age=2.0) is None  # read 4.999 s ago
    clock.now = T0 + 5
    assert l1.lookup(k("ttl")) is None
    assert l1.put(k("late"), read("late", 1, until=T0 + 1))  # already expired: not kept
    assert l1.lookup(k("late")) is None and len(l1) == 0


def test_flush_refuses_fills_in_flight() -> None:
    l1 = L1Cache(max_bytes=1 << 20, clock=Clock())
    l1.put(k("a"), read("a", 1))
    generation = l1.begin(k("b"))
    l1.flush()
    assert l1.lookup(k("a")) is None
    assert not l1.fill(k("b"), read("b", 1), generation=generation)


def test_evicting_a_key_being_loaded_refuses_fills_in_flight() -> None:
    l1 = L1Cache(max_bytes=2 * (ITEM_OVERHEAD + 1000 + 20), clock=Clock())
    l1.put(k("a"), read("a", 9, b"x" * 1000))
    generation = l1.begin(k("a"))
    l1.put(k("b"), read("b", 1, b"x" * 1000))
    l1.put(k("c"), read("c", 1, b"x" * 1000))  # evicts a, whose rank guarded the load
    assert not l1.fill(k("a"), read("a", 2, b"x" * 1000), generation=generation)


def test_disabled_keeps_nothing() -> None:
    l1 = L1Cache(max_bytes=0, clock=Clock())
    generation = l1.begin(k("a"))
    assert l1.fill(k("a"), read("a", 1), generation=generation)
    l1.end(k("a"))
    assert l1.lookup(k("a")) is None and len(l1) == 0


class Loader:
    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.revision = 0
        self.calls = 0

    async def one(self, key: str) -> tuple[Entry | None, int]:
        self.calls += 1
        return self.entries.get(key), self.revision

    async def many(self, keys: Sequence[str]) -> tuple[Mapping[str, Entry], int]:
        self.calls += 1
        return {key: self.entries[key] for key in keys if key in self.entries}, self.revision

    def write(self, key: str, value: bytes | None) -> Entry:
        self.revision += 1
        stored = entry(key, value or b"", revision=self.revision)
        if value is None:
            stored = replace(stored, value=None, deleted=True)
            self.entries.pop(key, None)
        else:
            self.entries[key] = stored
        return stored


def two_level(clock: Clock, *, coherent: bool = True) -> TwoLevelCache:
    settings = CacheSettings(
        max_age=2.0, ttl=60.0, negative_ttl=1.0, coherent_without_channel=coherent
    )
    return TwoLevelCache(l1=L1Cache(max_bytes=1 << 20, clock=clock), l2=None, settings=settings)


SPACE = Space("app", "user")


async def test_reads_are_served_from_l1_and_counted() -> None:
    clock, db = Clock(), Loader()
    cache = two_level(clock)
    db.write("a", b"1")
    for _ in range(3):
        found, revision = await cache.get(SPACE, "a", lambda: db.one("a"))
        assert found is not None and found.value == b"1" and revision == 1
    assert db.calls == 1
    assert (cache.stats.l1_hits, cache.stats.l1_misses, cache.stats.db_reads) == (2, 1, 1)


async def test_misses_are_cached_briefly() -> None:
    clock, db = Clock(), Loader()
    cache = two_level(clock)
    for _ in range(3):
        assert (await cache.get(SPACE, "none", lambda: db.one("none")))[0] is None
    assert db.calls == 1
    clock.now += 1.0
    await cache.get(SPACE, "none", lambda: db.one("none"))
    assert db.calls == 2


async def test_writes_replace_and_delete_cached_reads() -> None:
    clock, db = Clock(), Loader()
    cache = two_level(clock)
    db.write("a", b"1")
    await cache.get(SPACE, "a", lambda: db.one("a"))
    await cache.written_many([(SPACE, db.revision + 1, [db.write("a", b"2")])])
    found, _ = await cache.get(SPACE, "a", lambda: db.one("a"))
    assert found is not None and found.value == b"2"
    await cache.written_many([(SPACE, db.revision + 1, [db.write("a", None)])])
    assert (await cache.get(SPACE, "a", lambda: db.one("a")))[0] is None
    assert db.calls == 1


async def test_entries_are_never_served_past_their_expiry() -> None:
    clock, db = Clock(), Loader()
    cache = two_level(clock)
    db.write("a", b"1")
    db.entries["a"] = replace(db.entries["a"], expires_at=datetime.fromtimestamp(T0 + 3, UTC))
    await cache.get(SPACE, "a", lambda: db.one("a"))
    clock.now = T0 + 2.9
    assert (await cache.get(SPACE, "a", lambda: db.one("a")))[0] is not None
    assert db.calls == 1
    clock.now = T0 + 3
    db.entries.pop("a")  # the database hides it too
    assert (await cache.get(SPACE, "a", lambda: db.one("a")))[0] is None
    assert db.calls == 2


async def test_without_an_invalidation_channel_items_live_at_most_max_age() -> None:
    clock, db = Clock(), Loader()
    cache = two_level(clock, coherent=False)
    db.write("a", b"1")
    await cache.get(SPACE, "a", lambda: db.one("a"))
    clock.now = T0 + 1.9
    await cache.get(SPACE, "a", lambda: db.one("a"))
    assert db.calls == 1
    clock.now = T0 + 2.0
    await cache.get(SPACE, "a", lambda: db.one("a"))
    assert db.calls == 2


async def test_cached_answers_what_get_would_from_l1_alone() -> None:
    clock, db = Clock(), Loader()
    cache = two_level(clock, coherent=False)
    assert cache.cached(SPACE, "a") is None  # nothing read yet; not counted as a miss
    db.write("a", b"1")
    read = await cache.get(SPACE, "a", lambda: db.one("a"))
    assert cache.cached(SPACE, "a") == read
    assert cache.cached(SPACE, "a")[0] is read[0]  # type: ignore[index]
    assert (cache.stats.l1_hits, cache.stats.l1_misses) == (2, 1)
    await cache.get(SPACE, "none", lambda: db.one("none"))
    assert cache.cached(SPACE, "none") == (None, 1)  # an absent key, remembered
    clock.now = T0 + 2.0  # no invalidation channel: max_age holds for cached too
    assert cache.cached(SPACE, "a") is None
    await cache.written_many([(SPACE, db.revision + 1, [db.write("b", b"2")])])
    found = cache.cached(SPACE, "b")
    assert found is not None and found[0] is not None and found[0].value == b"2"


async def test_get_many_loads_only_the_misses_once() -> None:
    clock, db = Clock(), Loader()
    cache = two_level(clock)
    for name in ("a", "b", "c"):
        db.write(name, name.encode())
    await cache.get(SPACE, "a", lambda: db.one("a"))
    found, revision = await cache.get_many(SPACE, ["a", "b", "x", "b"], db.many)
    assert sorted(found) == ["a", "b"] and revision == 3
    assert db.calls == 2
    found, _ = await cache.get_many(SPACE, ["a", "b", "x"], db.many)
    assert sorted(found) == ["a", "b"] and db.calls == 2
    assert cache.stats.l1_hits == 4
