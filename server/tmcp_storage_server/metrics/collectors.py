"""Collectors: each reads counters the server keeps anyway, only when scraped.

Nothing here runs on the request path. ``RpcCollector`` reads ``api.observe.RpcStats``;
the others read the cache's ``CacheStats``, the PostgreSQL pool's statistics, the change
feed's subscriber count and the core's quota and push counters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, runtime_checkable

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from tmcp_storage_server.api.observe import BUCKETS, RpcStats
from tmcp_storage_server.errors import QUOTA_REASONS
from tmcp_storage_server.model import PushResult
from tmcp_storage_server.store.cache import TwoLevelCache

_RPC_LABELS = ["grpc_type", "grpc_service", "grpc_method"]
_BOUNDS = [repr(b) for b in BUCKETS] + ["+Inf"]


class RpcCollector(Collector):
    """The grpc-ecosystem server metrics (names as go-grpc-prometheus)."""

    def __init__(self, stats: RpcStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        """Families built from the per-method counters."""
        started = CounterMetricFamily(
            "grpc_server_started_total", "RPCs started on the server.", labels=_RPC_LABELS
        )
        handled = CounterMetricFamily(
            "grpc_server_handled_total",
            "RPCs completed on the server, regardless of success or failure.",
            labels=[*_RPC_LABELS, "grpc_code"],
        )
        seconds = HistogramMetricFamily(
            "grpc_server_handling_seconds",
            "Response latency (seconds) of gRPC handled by the server.",
            labels=_RPC_LABELS,
        )
        received = CounterMetricFamily(
            "grpc_server_msg_received_total",
            "RPC stream messages received on the server.",
            labels=_RPC_LABELS,
        )
        sent = CounterMetricFamily(
            "grpc_server_msg_sent_total",
            "gRPC stream messages sent by the server.",
            labels=_RPC_LABELS,
        )
        for m in list(self._stats.methods.values()):
            labels = [m.kind, m.service, m.method]
            codes = dict(m.handled)
            started.add_metric(labels, m.started)
            for code, count in sorted(codes.items()):
                handled.add_metric([*labels, code], count)
            cumulative, total = [], 0
            for bound, count in zip(_BOUNDS, list(m.buckets), strict=True):
                total += count
                cumulative.append((bound, float(total)))
            seconds.add_metric(labels, cumulative, m.seconds)
            if m.kind == "unary":  # one request each; one response when OK
                received.add_metric(labels, m.started)
                sent.add_metric(labels, codes.get("OK", 0))
            else:
                received.add_metric(labels, m.received + (m.kind == "server_stream") * m.started)
                sent.add_metric(labels, m.sent + (m.kind == "client_stream") * codes.get("OK", 0))
        yield from (started, handled, seconds, received, sent)


class CacheCollector(Collector):
    """The read cache's counters per level, and whether its channel (Redis) is up."""

    def __init__(self, cache: TwoLevelCache) -> None:
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        """Families read from ``CacheStats`` and the cache's state."""
        cache, stats = self._cache, self._cache.stats
        hits = CounterMetricFamily(
            "tmcp_storage_cache_hits_total", "Cached reads served, by level.", labels=["level"]
        )
        misses = CounterMetricFamily(
            "tmcp_storage_cache_misses_total",
            "Cache lookups that missed, by level.",
            labels=["level"],
        )
        hits.add_metric(["l1"], stats.l1_hits)
        misses.add_metric(["l1"], stats.l1_misses)
        if cache.l2 is not None:
            hits.add_metric(["l2"], stats.l2_hits)
            misses.add_metric(["l2"], stats.l2_misses)
        yield hits
        yield misses
        for name, value, doc in (
            ("db_reads", stats.db_reads, "Reads the cache passed to the database."),
            ("stale_fills_refused", stats.stale_fills_refused, "Fills refused as stale."),
            ("invalidations_received", stats.invalidations_received, "From other processes."),
            ("channel_errors", stats.channel_errors, "Failed Redis/NOTIFY calls on requests."),
            ("channel_outages", stats.channel_outages, "Times the channel went down."),
            ("l1_flushes", stats.l1_flushes, "Times the L1 was emptied."),
        ):
            yield CounterMetricFamily(f"tmcp_storage_cache_{name}_total", doc, value=value)
        yield GaugeMetricFamily("tmcp_storage_cache_l1_bytes", "L1 size.", value=cache.l1.bytes)
        yield GaugeMetricFamily("tmcp_storage_cache_l1_items", "L1 items.", value=len(cache.l1))
        if cache.l2 is not None or cache.notifier is not None:
            up = GaugeMetricFamily(
                "tmcp_storage_cache_channel_up",
                "1 while the invalidation channel is up (else L1 items age out).",
                labels=["channel"],
            )
            up.add_metric([cache.channel_name], float(cache.channel_up))
            yield up
        if cache.l2 is not None:
            yield GaugeMetricFamily(
                "tmcp_storage_redis_up",
                "1 while Redis answers (the cache's subscription is up).",
                value=float(cache.channel_up),
            )


@runtime_checkable
class PoolStats(Protocol):
    """A repository with a connection pool."""

    def pool_stats(self) -> dict[str, int]:
        """psycopg_pool ``get_stats()``."""
        ...


_POOL_GAUGES = (
    ("size", "pool_size", "Connections open (in use or idle)."),
    ("max", "pool_max", "Most connections the pool opens."),
    ("available", "pool_available", "Idle connections ready for use."),
    ("waiting", "requests_waiting", "Calls waiting for a connection."),
)
_POOL_COUNTERS = (
    ("requests", "requests_num", "Connections asked of the pool."),
    ("requests_queued", "requests_queued", "Requests that had to wait for a connection."),
    ("requests_errors", "requests_errors", "Requests that failed (timeout, closed pool)."),
    ("connections_lost", "connections_lost", "Connections found broken."),
)


class PoolCollector(Collector):
    """The PostgreSQL pool: in use, idle, waiting, and its counters."""

    def __init__(self, source: PoolStats) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        """Families read from ``pool_stats()``."""
        stats = self._source.pool_stats()
        yield GaugeMetricFamily(
            "tmcp_storage_db_pool_in_use",
            "Connections lent out to calls.",
            value=stats.get("pool_size", 0) - stats.get("pool_available", 0),
        )
        for name, key, doc in _POOL_GAUGES:
            yield GaugeMetricFamily(f"tmcp_storage_db_pool_{name}", doc, value=stats.get(key, 0))
        for name, key, doc in _POOL_COUNTERS:
            yield CounterMetricFamily(
                f"tmcp_storage_db_pool_{name}_total", doc, value=stats.get(key, 0)
            )


class CoreCollector(Collector):
    """Open watchers, quota rejections by reason, pushed mutations by outcome, calls
    refused by the write rate limit."""

    def __init__(
        self,
        *,
        watchers: Callable[[], int],
        quota_rejections: Counter[str],
        push_outcomes: Counter[PushResult],
        rate_limited: Callable[[], int],
    ) -> None:
        self._watchers = watchers
        self._quota = quota_rejections
        self._outcomes = push_outcomes
        self._rate_limited = rate_limited

    def collect(self) -> Iterator[Metric]:
        """Families read from the core's counters."""
        yield GaugeMetricFamily(
            "tmcp_storage_watchers",
            "Open Watch and Stream subscriptions in this process.",
            value=self._watchers(),
        )
        quota = CounterMetricFamily(
            "tmcp_storage_quota_rejections_total",
            "Writes (or atomic batches, or pushed mutations) refused by quota.",
            labels=["reason"],
        )
        for reason in _keys(QUOTA_REASONS, self._quota):
            quota.add_metric([reason], self._quota.get(reason, 0))
        yield quota
        outcomes = CounterMetricFamily(
            "tmcp_storage_push_outcomes_total",
            "Pushed mutations by outcome (Push and Stream).",
            labels=["status"],
        )
        for result in PushResult:
            outcomes.add_metric([result.name], self._outcomes.get(result, 0))
        yield outcomes
        yield CounterMetricFamily(
            "tmcp_storage_rate_limited_total",
            "Write calls refused by the per-space write rate (STORAGE_WRITE_RATE).",
            value=self._rate_limited(),
        )


def _keys(known: Iterable[str], seen: Counter[str]) -> list[str]:
    return sorted(set(known) | set(seen))
