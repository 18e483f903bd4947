"""The two-level cache across two server processes on one PostgreSQL and one Redis
(or, without Redis, with PostgreSQL NOTIFY carrying the invalidations).

Process A takes the writes, process B serves the reads (eventual consistency, so from
its caches). Values are counters, so "older" is a smaller number.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tmcp_storage import Client, NotFound, Space

from tests.cache.conftest import RedisServer
from tests.e2e.harness import ServerProcess, token

TRIALS = 200
CACHE = "tmcp.storage.v1.Cache"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
MAX_AGE = 1.0


def _client(server: ServerProcess, app_id: str) -> Client:
    return Client(
        server.target,
        token=token(app_id, "alice"),
        space=Space(app_id, "alice"),
        retries=0,
        timeout=5,
    )


def _number(client: Client, key: str) -> int:
    try:
        value = client.get(key).value
    except NotFound:
        return -1
    assert isinstance(value, bytes)
    return int(value)


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _health(server: ServerProcess, service: str) -> int:
    with grpc.insecure_channel(server.target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
        return int(reply.status)


def _stats(server: ServerProcess) -> dict[str, int]:
    line = re.findall(r"cache stats: (.*)", server.log())[-1]
    return {k: int(v) for k, v in (pair.split("=") for pair in line.split())}


class Pair:
    """Servers A and B on one database and one Redis, and a client of each."""

    def __init__(self, postgres_url: str, redis_url: str | None, **env: str) -> None:
        settings = {"STORAGE_REDIS_PREFIX": f"test-{uuid.uuid4().hex[:8]}:", **env}
        if redis_url:
            settings["STORAGE_REDIS_URL"] = redis_url
        self.channel = "Redis" if redis_url else "PostgreSQL NOTIFY"
        self.app_id = "app-" + uuid.uuid4().hex[:12]
        self.a = ServerProcess(postgres_url, env=settings)
        self.b = ServerProcess(postgres_url, env=settings)
        self.clients: list[Client] = []

    def start(self) -> Pair:
        self.a.start()
        self.b.start()
        for server in (self.a, self.b):
            _wait_for(lambda s=server: f"{self.channel} reachable" in s.log(), "subscription")  # type: ignore[misc]
        self.writer, self.reader = _client(self.a, self.app_id), _client(self.b, self.app_id)
        return self

    def stop(self) -> None:
        for client in (getattr(self, "writer", None), getattr(self, "reader", None)):
            if client is not None:
                client.close()
        self.a.stop()
        self.b.stop()


@pytest.fixture(params=["redis", "notify"])
def pair(
    request: pytest.FixtureRequest, postgres_url: str, own_redis: RedisServer
) -> Iterator[Pair]:
    redis_url = own_redis.url if request.param == "redis" else None
    started = Pair(postgres_url, redis_url, STORAGE_CACHE_MAX_AGE=str(MAX_AGE))
    try:
        yield started.start()
    finally:
        started.stop()


@pytest.fixture
def redis_pair(postgres_url: str, own_redis: RedisServer) -> Iterator[Pair]:
    started = Pair(postgres_url, own_redis.url, STORAGE_CACHE_MAX_AGE=str(MAX_AGE))
    try:
        yield started.start()
    finally:
        started.stop()


def test_a_write_through_a_is_read_through_b_within_100_ms(pair: Pair) -> None:
    delays = []
    newest_seen = -1
    for i in range(TRIALS):
        pair.writer.put("counter", str(i).encode())
        acked = time.monotonic()
        while True:
            seen = _number(pair.reader, "counter")
            assert seen >= newest_seen, f"B went back from {newest_seen} to {seen}"
            newest_seen = seen
            if seen == i:
                break
            assert time.monotonic() - acked < 2.0, f"B never showed {i}"
        delays.append(time.monotonic() - acked)
        for _ in range(3):  # and never older afterwards (served from B's caches)
            assert _number(pair.reader, "counter") == i
    p99 = sorted(delays)[int(0.99 * len(delays)) - 1]
    assert p99 < 0.100, f"p99 {p99 * 1000:.1f} ms"
    pair.b.stop()
    stats = _stats(pair.b)
    assert stats["l1_hits"] >= 2 * TRIALS, stats
    if pair.channel == "Redis":
        assert stats["l2_hits"] > 0, stats  # A's writes, read from Redis
    assert stats["invalidations_received"] >= TRIALS, stats
    assert stats["channel_outages"] == 0, stats


def test_deletes_and_expiry_are_never_served_from_cache(pair: Pair) -> None:
    pair.writer.put("gone", b"1")
    assert _number(pair.reader, "gone") == 1
    pair.writer.delete("gone")
    _wait_for(lambda: _number(pair.reader, "gone") == -1, "the delete through B", 0.5)
    pair.writer.put("brief", b"1", ttl=0.5)
    written = time.monotonic()
    assert _number(pair.reader, "brief") == 1
    _wait_for(lambda: _number(pair.reader, "brief") == -1, "expiry through B")
    assert time.monotonic() - written < 0.6
    assert _number(pair.reader, "missing") == -1
    pair.writer.put("missing", b"7")  # the cached "absent" is invalidated
    _wait_for(lambda: _number(pair.reader, "missing") == 7, "a created key through B", 0.5)


def test_redis_outage_bounds_staleness_and_recovery_serves_nothing_stale(
    redis_pair: Pair, own_redis: RedisServer
) -> None:
    pair = redis_pair
    pair.writer.put("k", b"0")
    assert _number(pair.reader, "k") == 0
    own_redis.stop()
    _wait_for(lambda: "Redis unreachable" in pair.b.log(), "B to notice the outage")
    _wait_for(lambda: _health(pair.b, CACHE) == NOT_SERVING, "B's cache health", 2.0)
    assert _health(pair.b, "") == SERVING  # the server itself serves on
    acked: list[tuple[float, int]] = []
    newest_seen = -1
    for i in range(1, 30):
        pair.writer.put("k", str(i).encode())
        acked.append((time.monotonic(), i))
        deadline = time.monotonic() + 0.05
        while time.monotonic() < deadline:
            started = time.monotonic()
            seen = _number(pair.reader, "k")
            assert seen >= newest_seen
            newest_seen = seen
            # Whatever B shows was acknowledged less than max age (+ slack) before.
            due = [n for t, n in acked if t < started - MAX_AGE - 0.2]
            assert not due or seen >= due[-1], f"B shows {seen}, {due[-1]} is older than max age"
    _wait_for(lambda: _number(pair.reader, "k") == 29, "B to catch up", MAX_AGE + 1)

    # Cached by B while Redis is down, changed while B hears nothing, then Redis is back:
    # B's L1 must not serve it past the outage (it is flushed on reconnect).
    pair.writer.put("during", b"1")
    assert _number(pair.reader, "during") == 1
    pair.writer.put("during", b"2")
    own_redis.start()
    _wait_for(lambda: pair.b.log().count("Redis reachable") == 2, "B to reconnect")
    assert _number(pair.reader, "during") == 2
    _wait_for(lambda: pair.a.log().count("Redis reachable") == 2, "A to reconnect")
    _wait_for(lambda: _health(pair.b, CACHE) == SERVING, "B's cache health", 2.0)
    newest_seen = 29
    for i in range(30, 80):
        pair.writer.put("k", str(i).encode())
        acked_at = time.monotonic()
        while (seen := _number(pair.reader, "k")) != i:
            assert seen >= newest_seen
            newest_seen = seen
            assert time.monotonic() - acked_at < 0.1, f"B shows {seen}, not {i}"
    pair.b.stop()
    stats = _stats(pair.b)
    assert stats["channel_outages"] == 1 and stats["channel_errors"] >= 0, stats


def test_a_hung_redis_never_makes_calls_hang(redis_pair: Pair, own_redis: RedisServer) -> None:
    pair = redis_pair
    pair.writer.put("k", b"0")
    assert _number(pair.reader, "k") == 0
    assert own_redis.process is not None
    os.kill(own_redis.process.pid, signal.SIGSTOP)  # accepts nothing, answers nothing
    try:
        slowest = 0.0
        for i in range(1, 11):
            started = time.monotonic()
            pair.writer.put("k", str(i).encode())
            _number(pair.reader, "k")
            slowest = max(slowest, time.monotonic() - started)
        assert slowest < 1.5, f"a call took {slowest:.2f}s"
        _wait_for(lambda: "Redis unreachable" in pair.b.log(), "B to notice", 5)
        _wait_for(lambda: _number(pair.reader, "k") == 10, "B to read 10", MAX_AGE + 1)
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
    for server in (pair.a, pair.b):
        _wait_for(lambda s=server: s.log().count("Redis reachable") >= 2, "reconnect")  # type: ignore[misc]
    pair.writer.put("k", b"11")
    _wait_for(lambda: _number(pair.reader, "k") == 11, "B to read 11", 0.1)
