"""The asyncio entry point against the real server (same operations as the blocking one)."""

from __future__ import annotations

import asyncio

import pytest
from tmcp_storage import AsyncClient, NotFound, SetItem, Space, VersionConflict

from tests.e2e.harness import ServerProcess, token


@pytest.fixture
async def client(server: ServerProcess, app_id: str):  # type: ignore[no-untyped-def]
    async with AsyncClient(
        server.target, token=token(app_id, "alice"), space=Space(app_id, "alice")
    ) as client:
        yield client


async def test_async_round_trip(client: AsyncClient) -> None:
    put = await client.put("doc", {"n": 1})
    assert (await client.get("doc")).value == {"n": 1}
    with pytest.raises(VersionConflict):
        await client.put("doc", {"n": 2}, expected_version=put.entry.version + 1)
    await client.batch_set([SetItem(f"l/{i}", i) for i in range(5)])
    assert [e.key async for e in client.list("l/", page_size=2)] == [f"l/{i}" for i in range(5)]
    assert (await client.touch("doc", ttl=60)).expires_at is not None
    assert (await client.delete_prefix("l/")).deleted_count == 5
    assert (await client.delete("doc")).deleted
    with pytest.raises(NotFound):
        await client.get("doc")
    assert (await client.quota()).used_keys == 0


async def test_async_calls_run_concurrently(client: AsyncClient) -> None:
    results = await asyncio.gather(*(client.put(f"c{i}", i) for i in range(20)))
    revisions = sorted(r.revision for r in results)
    assert revisions == list(range(revisions[0], revisions[0] + 20))  # distinct, no gaps
    got = await client.batch_get([f"c{i}" for i in range(20)])
    assert [r.entry.value for r in got.results if r.entry] == list(range(20))
