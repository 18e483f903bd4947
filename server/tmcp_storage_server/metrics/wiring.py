"""Which collectors a serving process registers, from the parts ``app`` built."""

from __future__ import annotations

from prometheus_client import ProcessCollector
from prometheus_client.registry import Collector

from tmcp_storage_server.api.observe import RpcStats
from tmcp_storage_server.core.ports import Repository
from tmcp_storage_server.core.sync import SyncService
from tmcp_storage_server.core.writes import Writer
from tmcp_storage_server.metrics.collectors import (
    CacheCollector,
    CoreCollector,
    PoolCollector,
    PoolStats,
    RpcCollector,
)
from tmcp_storage_server.store.cache import TwoLevelCache
from tmcp_storage_server.store.change_feed import LocalChangeFeed


def collectors(
    rpc: RpcStats,
    cache: TwoLevelCache | None,
    repository: Repository,
    feed: LocalChangeFeed,
    writer: Writer,
    sync: SyncService,
) -> list[Collector]:
    """Collectors for every part this process has (the pool only with PostgreSQL)."""
    found: list[Collector] = [
        RpcCollector(rpc),
        CoreCollector(
            watchers=lambda: feed.subscriber_count,
            quota_rejections=writer.quota_rejections,
            push_outcomes=sync.push_outcomes,
            rate_limited=lambda: writer.rate_limited,
        ),
        ProcessCollector(registry=None),
    ]
    if cache is not None:
        found.append(CacheCollector(cache))
    if isinstance(repository, PoolStats):
        found.append(PoolCollector(repository))
    return found
