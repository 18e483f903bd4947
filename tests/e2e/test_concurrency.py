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
