"""The Redis level on its own: newer wins, markers, validity fields, the entry codec."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from tmcp_storage_server.store.l1 import CachedRead
from tmcp_storage_server.store.redis_l2 import RedisL2, connect, decode_entry, encode_entry

from tests.cache.conftest import RedisServer
from tests.unit.test_l1_cache import entry

KEY = ("app", "user", "k")


@pytest.fixture
async def l2(own_redis: RedisServer) -> AsyncIterator[RedisL2]:
    level = RedisL2(client=connect(own_redis.url), prefix="test:", retain=60)
    yield level
    await level.close()


def _read(revision: int, value: bytes | None = b"v") -> CachedRead:
    stored = None if value is None else entry("k", value, revision=revision)
    return CachedRead(stored, revision, 1_800_000_000.0, 1_800_000_060.0)


async def test_an_older_read_never_replaces_a_newer_one(l2: RedisL2) -> None:
    await l2.store([(KEY, _read(5, b"new"))])
    await l2.store([(KEY, _read(3, b"old"))])
    [found] = await l2.get_many([KEY])
    assert found is not None and found.revision == 5
    assert found.entry is not None and found.entry.value == b"new"
    await l2.store([(KEY, _read(6, None))])  # a deletion at 6: "absent"
    [found] = await l2.get_many([KEY])
    assert found is not None and found.entry is None and found.revision == 6
    assert found.valid_until == 1_800_000_060.0


async def test_a_marker_hides_older_reads_and_yields_to_the_read_at_its_revision(
    l2: RedisL2,
) -> None:
    await l2.store([(KEY, _read(5))])
    await l2.mark([(KEY, 7)], [])
    assert await l2.get_many([KEY]) == [None]
    await l2.store([(KEY, _read(6))])
    assert await l2.get_many([KEY]) == [None]
    await l2.store([(KEY, _read(7, b"seven"))])
    [found] = await l2.get_many([KEY])
    assert found is not None and found.entry is not None and found.entry.value == b"seven"


async def test_writes_reload_the_script_after_redis_forgot_it(l2: RedisL2) -> None:
    # A restarted Redis (or SCRIPT FLUSH) answers NOSCRIPT to EVALSHA: the level loads
    # the script once and sends its writes again. (Only on this test's own Redis.)
    await l2.client.script_flush()
    await l2.store([(KEY, _read(5, b"after flush"))])
    await l2.client.script_flush()
    await l2.mark([(KEY, 9)], [])
    await l2.store([(KEY, _read(9, b"nine"))])
    [found] = await l2.get_many([KEY])
    assert found is not None and found.entry is not None and found.entry.value == b"nine"


async def test_forget_all_deletes_only_our_prefix(l2: RedisL2, own_redis: RedisServer) -> None:
    await l2.store([(KEY, _read(1))])
    other = RedisL2(client=connect(own_redis.url), prefix="other:", retain=60)
    await other.store([(KEY, _read(1))])
    assert await l2.forget_all() == 1
    assert await l2.get_many([KEY]) == [None]
    assert (await other.get_many([KEY]))[0] is not None
    await other.close()


def test_the_entry_codec_round_trips() -> None:
    original = entry("k", "é\n\x00".encode(), revision=4, expires=1_900_000_000.5)
    original = replace(original, metadata={"a": "b"})
    decoded = decode_entry("k", encode_entry(original))
    assert decoded == original
    assert decoded.expires_at == datetime.fromtimestamp(1_900_000_000.5, UTC)
