"""Concurrent writers: quota never overshoots, compare-and-set loses no update."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tmcp_storage import QuotaExceeded, Space, VersionConflict

from tests.e2e.conftest import ClientFactory

WRITERS = 16


def test_concurrent_writers_never_exceed_the_quota(connect: ClientFactory, app_id: str) -> None:
    admin = connect(app_id, "backend", "storage:admin", space=Space(app_id, "alice"))
    admin.set_quota(space=Space(app_id, "alice"), limit_keys=50, limit_bytes=10_000)
    clients = [connect(app_id, "alice") for _ in range(WRITERS)]

    def fill(writer: int) -> tuple[int, int]:
        stored = rejected = 0
        for i in range(20):
            try:
                clients[writer].put(f"w{writer:02d}/{i:02d}", b"x" * 300)
                stored += 1
            except QuotaExceeded:
                rejected += 1
        return stored, rejected

    with ThreadPoolExecutor(WRITERS) as pool:
        results = list(pool.map(fill, range(WRITERS)))
    stored = sum(s for s, _ in results)
    entries = list(clients[0].list())
    quota = clients[0].quota()
    assert quota.used_bytes <= 10_000
    assert quota.used_keys <= 50
    assert stored == len(entries) == quota.used_keys == 33  # 33 * 300 <= 10_000 < 34 * 300
    assert quota.used_bytes == sum(e.size for e in entries)
    assert sum(r for _, r in results) == WRITERS * 20 - stored


def test_concurrent_compare_and_set_increments_lose_nothing(
    connect: ClientFactory, app_id: str
) -> None:
    clients = [connect(app_id, "alice") for _ in range(WRITERS)]
    clients[0].put("counter", 0, expected_version=0)
    per_writer = 5

    def increment(writer: int) -> tuple[int, int]:
        done = conflicts = 0
        client = clients[writer]
        while done < per_writer:
            current = client.get("counter", strong=True)
            try:
                client.put("counter", current.value + 1, expected_version=current.version)
                done += 1
            except VersionConflict:
                conflicts += 1
        return done, conflicts

    with ThreadPoolExecutor(WRITERS) as pool:
        results = list(pool.map(increment, range(WRITERS)))
    successes = sum(d for d, _ in results)
    final = clients[0].get("counter", strong=True)
    assert final.value == successes == WRITERS * per_writer
    assert final.version == successes + 1


def test_concurrent_writes_to_many_spaces_each_keep_their_own_revisions(
    connect: ClientFactory, app_id: str
) -> None:
    # Writes that arrive together share transactions across spaces (core/grouping.py):
    # each space still counts its own revisions, one per write, with none lost.
    users, per_writer = [f"u{i}" for i in range(6)], 10
    clients = [connect(app_id, user) for user in users for _ in range(2)]

    def write(writer: int) -> list[tuple[str, int, int]]:
        client, seen = clients[writer], []
        for i in range(per_writer):
            key = f"w{writer % 2}/{i % 3}"  # rewrites: versions climb per key
            result = client.put(key, b"x" * (i + 1))
            seen.append((key, result.revision, result.entry.version))
        return seen

    with ThreadPoolExecutor(len(clients)) as pool:
        results = list(pool.map(write, range(len(clients))))
    for index in range(len(users)):
        mine = results[2 * index] + results[2 * index + 1]
        assert sorted(r for _, r, _ in mine) == list(range(1, 2 * per_writer + 1))
        for key in {k for k, _, _ in mine}:
            versions = [v for k, r, v in sorted(mine, key=lambda m: m[1]) if k == key]
            assert versions == list(range(1, len(versions) + 1))
        reader = clients[2 * index]
        entries = list(reader.list())
        quota = reader.quota()
        assert len(entries) == quota.used_keys == 6
        assert quota.used_bytes == sum(e.size for e in entries)
        for entry in entries:  # each key holds its last write
            last = max((m for m in mine if m[0] == entry.key), key=lambda m: m[1])
            assert (entry.mod_revision, entry.version) == (last[1], last[2])
