"""How the core uses the cache: eventual reads from it; strong reads, compare-and-set and
rolled-back writes never."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest
from tmcp_storage_server.core.commands import PutCommand
from tmcp_storage_server.core.kv import KeyValueService
from tmcp_storage_server.core.writes import Writer
from tmcp_storage_server.errors import QuotaExceeded, Unavailable, VersionMismatch
from tmcp_storage_server.model import QuotaLimits, Space
from tmcp_storage_server.store.cache import CacheSettings, TwoLevelCache
from tmcp_storage_server.store.l1 import L1Cache

from tests.unit.fakes import ALICE, SPACE, FakeClock, FakeRepository


async def test_eventual_reads_use_the_cache_strong_reads_and_cas_the_database() -> None:
    repo, clock = FakeRepository(), FakeClock()
    settings = CacheSettings(max_age=2, ttl=60, negative_ttl=1, coherent_without_channel=True)
    cache = TwoLevelCache(l1=L1Cache(max_bytes=1 << 20), l2=None, settings=settings)
    writer = Writer(repository=repo, defaults=QuotaLimits(60, 3, 50), cache=cache)  # type: ignore[arg-type]
    kv = KeyValueService(repository=repo, writer=writer, clock=clock, cache=cache)  # type: ignore[arg-type]
    await kv.put(ALICE, SPACE, PutCommand("k", b"one"))

    # Another process changes the database, and this cache hears nothing of it.
    data = repo.spaces[SPACE]
    data.entries["k"] = replace(data.entries["k"], value=b"two", version=2, mod_revision=2)
    data.state = replace(data.state, revision=2)
    assert (await kv.get(ALICE, SPACE, "k"))[0].value == b"one"
    assert (await kv.get(ALICE, SPACE, "k", strong=True))[0].value == b"two"

    with pytest.raises(VersionMismatch):  # decided on the database's version 2
        await kv.put(ALICE, SPACE, PutCommand("k", b"x", expected_version=1))
    await kv.put(ALICE, SPACE, PutCommand("k", b"three", expected_version=2))
    assert (await kv.get(ALICE, SPACE, "k"))[0].value == b"three"  # the commit updated it

    await kv.put(ALICE, SPACE, PutCommand("a", b"x" * 50))
    with pytest.raises(QuotaExceeded):  # rolled back: the cache keeps the committed value
        await kv.put(ALICE, SPACE, PutCommand("k", b"x" * 11))
    entry, revision = await kv.get(ALICE, SPACE, "k")
    assert entry.value == b"three" and revision == 3
    assert cache.stats.l1_hits == 3 and cache.stats.db_reads == 0


class CommitLostRepository(FakeRepository):
    """Commits, then reports the connection lost: the caller cannot tell it committed."""

    fail = False

    @asynccontextmanager
    async def transactions(self, requests: Mapping[Space, Sequence[str]]) -> AsyncIterator[Any]:
        async with super().transactions(requests) as spaces:
            yield spaces
        if self.fail:
            raise Unavailable()


async def test_a_commit_of_unknown_outcome_drops_the_keys_from_the_cache() -> None:
    repo, clock = CommitLostRepository(), FakeClock()
    settings = CacheSettings(max_age=2, ttl=60, negative_ttl=1, coherent_without_channel=True)
    cache = TwoLevelCache(l1=L1Cache(max_bytes=1 << 20), l2=None, settings=settings)
    writer = Writer(repository=repo, defaults=QuotaLimits(1000, 10, 100), cache=cache)  # type: ignore[arg-type]
    kv = KeyValueService(repository=repo, writer=writer, clock=clock, cache=cache)  # type: ignore[arg-type]
    await kv.put(ALICE, SPACE, PutCommand("k", b"one"))
    assert (await kv.get(ALICE, SPACE, "k"))[0].value == b"one"
    repo.fail = True
    with pytest.raises(Unavailable):
        await kv.put(ALICE, SPACE, PutCommand("k", b"two"))
    assert (await kv.get(ALICE, SPACE, "k"))[0].value == b"two"  # it did commit
