"""A writer cut off from Redis while readers are not: its changes are announced (and
marked in Redis) as soon as it reaches Redis again."""

from __future__ import annotations

import uuid

from tmcp_storage import Client, Space

from tests.cache.conftest import RedisServer
from tests.cache.test_coherence import _number, _wait_for
from tests.e2e.harness import ServerProcess, token
from tests.e2e.proxy import CuttableProxy


def test_a_writer_cut_off_from_redis_announces_its_changes_when_back(
    postgres_url: str, own_redis: RedisServer
) -> None:
    proxy = CuttableProxy(("127.0.0.1", own_redis.port)).start()
    prefix = {"STORAGE_REDIS_PREFIX": f"test-{uuid.uuid4().hex[:8]}:"}
    a = ServerProcess(
        postgres_url,
        env={"STORAGE_REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0", **prefix},
    )
    b = ServerProcess(postgres_url, env={"STORAGE_REDIS_URL": own_redis.url, **prefix})
    app_id = "app-" + uuid.uuid4().hex[:12]
    clients: list[Client] = []
    try:
        for server in (a, b):
            server.start()
            _wait_for(lambda s=server: "Redis reachable" in s.log(), "subscription")  # type: ignore[misc]
            clients.append(
                Client(server.target, token=token(app_id, "u"), space=Space(app_id, "u"), retries=0)
            )
        writer, reader = clients
        writer.put("k", b"1")
        _wait_for(lambda: _number(reader, "k") == 1, "B to read 1")

        proxy.cut()
        _wait_for(lambda: "Redis unreachable" in a.log(), "A to notice")
        writer.put("k", b"2")  # committed; neither Redis nor B hears of it yet
        assert reader.get("k", strong=True).value == b"2"
        # B still trusts its caches (its Redis is fine): the known window, bounded by
        # STORAGE_CACHE_TTL, and closed below as soon as A reaches Redis again.
        assert _number(reader, "k") == 1

        proxy.start()
        _wait_for(lambda: a.log().count("Redis reachable") == 2, "A to reconnect")
        _wait_for(lambda: _number(reader, "k") == 2, "B to hear of 2", timeout=0.5)
        # Redis itself was repaired too: a process with an empty L1 reads 2 from it or
        # from the database, never 1.
        c = ServerProcess(postgres_url, env={"STORAGE_REDIS_URL": own_redis.url, **prefix})
        c.start()
        try:
            _wait_for(lambda: "Redis reachable" in c.log(), "C's subscription")
            with Client(
                c.target, token=token(app_id, "u"), space=Space(app_id, "u"), retries=0
            ) as fresh:
                assert _number(fresh, "k") == 2
        finally:
            c.stop()
    finally:
        for client in clients:
            client.close()
        a.stop()
        b.stop()
        proxy.stop()
