"""Prometheus metrics through the real server, on both backends, and with two workers."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from tmcp.storage.v1 import sync_pb2, sync_pb2_grpc, types_pb2
from tmcp_storage import Client, Mutation, NotFound, QuotaExceeded, RateLimited, Space

from tests.e2e.conftest import own_server
from tests.e2e.harness import ServerProcess, token
from tests.e2e.metrics_scrape import metrics_url, scrape, wait_for, wait_for_more
from tests.e2e.wire import bearer

KV = {"grpc_service": "tmcp.storage.v1.KeyValue", "grpc_type": "unary"}
KEY_LIMIT = 5


@pytest.fixture(scope="module")
def metered(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server of its own with metrics on a free port (and a small key quota)."""
    env = {"STORAGE_METRICS_LISTEN": "127.0.0.1:0", "STORAGE_LIMIT_KEYS": str(KEY_LIMIT)}
    with own_server(backend, request, tmp_path_factory, env) as process:
        yield process


@pytest.fixture
def kv(metered: ServerProcess, app_id: str) -> Iterator[Client]:
    """Alice's client of the metered server."""
    with Client(
        metered.target, token=token(app_id, "alice"), space=Space(app_id, "alice"), retries=0
    ) as client:
        yield client


def test_rpcs_are_counted_by_method_and_code(metered: ServerProcess, kv: Client) -> None:
    before = scrape(metered)
    for i in range(3):
        kv.put(f"k{i}", {"i": i})
    kv.get("k0")
    kv.get("k1")
    with pytest.raises(NotFound):
        kv.get("absent")
    # An error reaches the client while its handler unwinds: the count follows at once.
    not_found = {"grpc_method": "Get", "grpc_code": "NOT_FOUND", **KV}
    after = wait_for_more(
        metered, before, "grpc_server_handled_total", "NOT_FOUND is not counted", **not_found
    )
    assert after.since(before, "grpc_server_started_total", grpc_method="Put", **KV) == 3
    assert (
        after.since(before, "grpc_server_handled_total", grpc_method="Put", grpc_code="OK", **KV)
        == 3
    )
    assert after.since(before, "grpc_server_started_total", grpc_method="Get", **KV) == 3
    assert (
        after.since(before, "grpc_server_handled_total", grpc_method="Get", grpc_code="OK", **KV)
        == 2
    )
    assert (
        after.since(
            before, "grpc_server_handled_total", grpc_method="Get", grpc_code="NOT_FOUND", **KV
        )
        == 1
    )
    assert after.since(before, "grpc_server_msg_received_total", grpc_method="Get", **KV) == 3
    assert after.since(before, "grpc_server_msg_sent_total", grpc_method="Get", **KV) == 2
    assert after.since(before, "grpc_server_handling_seconds_count", grpc_method="Get", **KV) == 3
    assert after.since(before, "grpc_server_handling_seconds_sum", grpc_method="Get", **KV) > 0
    buckets = after.matching("grpc_server_handling_seconds_bucket", grpc_method="Get", **KV)
    counts = [value for _, value in buckets]
    assert counts == sorted(counts) and buckets[-1][0]["le"] == "+Inf"
    assert counts[-1] == after.total("grpc_server_handling_seconds_count", grpc_method="Get")
    # Health checks are RPCs too.
    assert after.has("grpc_server_handled_total", grpc_service="grpc.health.v1.Health")


def test_cache_hits_are_counted_per_level(metered: ServerProcess, kv: Client, backend: str) -> None:
    kv.put("hot", "x")
    before = scrape(metered)
    for _ in range(4):
        assert kv.get("hot").value == "x"
    after = scrape(metered)
    hits = "tmcp_storage_cache_hits_total"
    assert after.total(hits, level="l1") - before.total(hits, level="l1") == 4
    assert after.has("tmcp_storage_cache_misses_total", level="l1")
    assert after.has("tmcp_storage_cache_db_reads_total")
    if backend == "postgres":  # Redis is the second level and the invalidation channel
        assert after.has(hits, level="l2")
        assert after.total("tmcp_storage_redis_up") == 1
        assert after.total("tmcp_storage_cache_channel_up", channel="Redis") == 1
    else:
        assert not after.has(hits, level="l2") and not after.has("tmcp_storage_redis_up")


def test_pool_gauges(metered: ServerProcess, kv: Client, backend: str) -> None:
    kv.put("p", "x")
    result = scrape(metered)
    if backend == "sqlite":
        assert not result.has("tmcp_storage_db_pool_in_use")
        return
    for gauge in ("in_use", "size", "available", "waiting", "max"):
        assert result.has(f"tmcp_storage_db_pool_{gauge}"), gauge
    assert result.total("tmcp_storage_db_pool_size") >= 1
    assert result.total("tmcp_storage_db_pool_max") >= result.total("tmcp_storage_db_pool_size")
    assert (
        0
        <= result.total("tmcp_storage_db_pool_in_use")
        <= result.total("tmcp_storage_db_pool_size")
    )
    assert result.total("tmcp_storage_db_pool_requests_total") >= 1


def test_open_watchers_and_stream_messages(metered: ServerProcess, app_id: str) -> None:
    watchers = "tmcp_storage_watchers"
    wait_for(metered, lambda s: s.total(watchers) == 0, "watchers of earlier tests remain")
    watch = {"grpc_service": "tmcp.storage.v1.Sync", "grpc_method": "Watch"}
    sent_before = scrape(metered).total("grpc_server_msg_sent_total", **watch)
    with grpc.insecure_channel(metered.target) as channel:
        call: Any = sync_pb2_grpc.SyncStub(channel).Watch(
            sync_pb2.WatchRequest(space=types_pb2.Space(app_id=app_id, user_id="alice")),
            metadata=bearer(app_id, "alice"),
        )
        first = next(call)  # "from now on" starts with a heartbeat carrying the cursor
        assert first.heartbeat and first.cursor
        assert dict(call.initial_metadata())["x-request-id"]
        # The message may reach us before the server's write returns and counts it.
        during = wait_for(
            metered,
            lambda s: (
                s.total(watchers) == 1
                and s.total("grpc_server_msg_sent_total", **watch) > sent_before
            ),
            "the watcher or its message is not counted",
        )
        assert during.total("grpc_server_started_total", grpc_type="server_stream", **watch) >= 1
        call.cancel()
    wait_for(
        metered,
        lambda s: (
            s.total(watchers) == 0
            and s.total("grpc_server_handled_total", grpc_code="CANCELLED", **watch) >= 1
        ),
        "the watcher is still counted, or its end is not",
    )


def test_quota_rejections_and_push_outcomes(metered: ServerProcess, kv: Client) -> None:
    before = scrape(metered)
    for i in range(KEY_LIMIT):
        kv.put(f"q{i}", i)
    with pytest.raises(QuotaExceeded):
        kv.put("one-too-many", 0)
    result = kv.push(
        "device-1",
        [
            Mutation(mutation_id=1, key="q0", value="new"),
            Mutation(mutation_id=2, key="beyond", value=1),
        ],
    )
    assert [o.result.name for o in result.outcomes] == ["APPLIED", "REJECTED"]
    exhausted = {"grpc_method": "Put", "grpc_code": "RESOURCE_EXHAUSTED", **KV}
    after = wait_for_more(
        metered,
        before,
        "grpc_server_handled_total",
        "RESOURCE_EXHAUSTED is not counted",
        **exhausted,
    )
    assert after.since(before, "tmcp_storage_quota_rejections_total", reason="QUOTA_KEYS") == 2
    assert after.since(before, "tmcp_storage_quota_rejections_total", reason="QUOTA_BYTES") == 0
    assert after.since(before, "tmcp_storage_push_outcomes_total", status="APPLIED") == 1
    assert after.since(before, "tmcp_storage_push_outcomes_total", status="REJECTED") == 1
    assert after.since(before, "tmcp_storage_push_outcomes_total", status="CONFLICT") == 0
    assert after.since(before, "grpc_server_handled_total", **exhausted) == 1


def test_only_metrics_is_served(metered: ServerProcess) -> None:
    url = metrics_url(metered).removesuffix("/metrics") + "/other"
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url, timeout=10)  # noqa: S310
    assert caught.value.code == 404


def _puts_on_fresh_connections(server: ServerProcess, app_id: str, count: int) -> None:
    """Each call on its own connection, so SO_REUSEPORT spreads them over the workers."""
    for i in range(count):
        with Client(
            server.target, token=token(app_id, "alice"), space=Space(app_id, "alice"), retries=2
        ) as client:
            client.put(f"k{i}", i)


def test_workers_are_scraped_in_one_place(postgres_url: str) -> None:
    app_id = "app-" + uuid.uuid4().hex[:12]
    env = {"STORAGE_WORKERS": "2", "STORAGE_METRICS_LISTEN": "127.0.0.1:0"}
    server = ServerProcess(postgres_url, env=env).start()
    try:
        _puts_on_fresh_connections(server, app_id, 30)
        result = scrape(server)
        assert result.total("tmcp_storage_worker_up", worker="0") == 1
        assert result.total("tmcp_storage_worker_up", worker="1") == 1
        puts = result.matching("grpc_server_started_total", grpc_method="Put", **KV)
        assert sum(value for _, value in puts) == 30
        assert {labels["worker"] for labels, _ in puts} <= {"0", "1"}
        for worker in ("0", "1"):  # each worker's own process and pool series
            assert result.has("process_cpu_seconds_total", worker=worker)
            assert result.has("tmcp_storage_db_pool_size", worker=worker)
        # Every sample of every family names its worker.
        assert all("worker" in labels for _, labels, _ in result.samples)

        # A restarted worker serves its (fresh) metrics at the same place again.
        started = result.total("process_start_time_seconds", worker="0")
        pid = re.findall(r"worker 0 started \(pid (\d+)\)", server.log())[-1]
        os.kill(int(pid), signal.SIGKILL)
        wait_for(
            server,
            lambda s: (
                s.total("tmcp_storage_worker_up", worker="0") == 1
                and s.total("process_start_time_seconds", worker="0") > started
            ),
            "worker 0 did not come back with its metrics",
        )
    finally:
        assert server.stop() == 0
    with pytest.raises(urllib.error.URLError):  # the supervisor closed the endpoint
        urllib.request.urlopen(metrics_url(server), timeout=2)  # noqa: S310


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_busy_metrics_port_stops_the_start(postgres_url: str, workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "tmcp_storage_server", "serve"],
            env={
                **os.environ,
                "STORAGE_DATABASE_URL": postgres_url,
                "STORAGE_JWT_SECRET": "s" * 32,
                "STORAGE_LISTEN": "127.0.0.1:0",
                "STORAGE_WORKERS": workers,
                "STORAGE_METRICS_LISTEN": f"127.0.0.1:{port}",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    assert "error: " in done.stderr and "in use" in done.stderr, done.stderr
    assert "listening on" not in done.stdout


def test_rate_limited_writes_are_counted(tmp_path: Path) -> None:
    env = {
        "STORAGE_METRICS_LISTEN": "127.0.0.1:0",
        "STORAGE_WRITE_RATE": "0.1",
        "STORAGE_WRITE_BURST": "1",
    }
    server = ServerProcess("sqlite:///" + str(tmp_path / "storage.db"), env=env).start()
    try:
        app_id = "app-" + uuid.uuid4().hex[:12]
        refused = 0
        with Client(
            server.target, token=token(app_id, "alice"), space=Space(app_id, "alice"), retries=0
        ) as client:
            for i in range(3):
                try:
                    client.put(f"k{i}", i)
                except RateLimited:
                    refused += 1
        assert refused == 2  # a burst of one, then one write per ten seconds
        wait_for(
            server,
            lambda s: s.total("tmcp_storage_rate_limited_total") == refused,
            "rate-limited writes are not counted",
        )
    finally:
        server.stop()
