"""The composition root: build the parts from a Config, serve, and drain.

The only module that knows every layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2

from tmcp_storage_server import workers
from tmcp_storage_server.api.auth import TokenVerifier
from tmcp_storage_server.api.batch import BatchServicer
from tmcp_storage_server.api.kv import KeyValueServicer
from tmcp_storage_server.api.observe import CallObserver, RpcStats
from tmcp_storage_server.api.quota import QuotaServicer
from tmcp_storage_server.api.server import MAX_MESSAGE_BYTES, SERVICE_NAMES, build_server
from tmcp_storage_server.api.sync import SyncServicer
from tmcp_storage_server.api.transport import server_credentials, server_options
from tmcp_storage_server.config import Config
from tmcp_storage_server.core import ratelimit
from tmcp_storage_server.core.batch import BatchService
from tmcp_storage_server.core.clock import SystemClock
from tmcp_storage_server.core.conflict_records import ConflictService
from tmcp_storage_server.core.expiry import Sweeper
from tmcp_storage_server.core.grouping import WriteGroups
from tmcp_storage_server.core.kv import KeyValueService
from tmcp_storage_server.core.ports import Repository
from tmcp_storage_server.core.quota import QuotaService
from tmcp_storage_server.core.sync import SyncService
from tmcp_storage_server.core.watch import WatchService, WatchSettings
from tmcp_storage_server.core.writes import Writer
from tmcp_storage_server.errors import StorageError
from tmcp_storage_server.metrics import endpoint as metrics_endpoint
from tmcp_storage_server.metrics.wiring import collectors
from tmcp_storage_server.store.cache import CacheSettings, TwoLevelCache
from tmcp_storage_server.store.change_feed import LocalChangeFeed
from tmcp_storage_server.store.l1 import L1Cache

if TYPE_CHECKING:  # aiohttp (about 20 MiB) is imported only by a process serving gRPC-Web
    from tmcp_storage_server.api.gateway import Gateway

log = logging.getLogger("tmcp_storage_server")

HEALTH_INTERVAL = 2.0
CACHE_HEALTH_INTERVAL = 0.2
CACHE_HEALTH_SERVICE = "tmcp.storage.v1.Cache"
"""Health name that is NOT_SERVING while the cache's invalidation channel (Redis, or
PostgreSQL LISTEN) is down; the server itself keeps serving through the database."""
COMPACT_INTERVAL = 60.0
"""Seconds between history compactions (shorter when the retention is short)."""


class Subscriber(Protocol):
    """Keeps a cache's invalidation channel (``store.invalidation``, ``store.pg_channel``)."""

    async def run(self) -> None:
        """Until cancelled."""
        ...

    def recheck(self) -> None:
        """A publish failed: renew the subscription."""
        ...


def build_repository(config: Config) -> Repository:
    """The repository the database URL names."""
    if config.embedded:
        from tmcp_storage_server.store.sqlite import SqliteRepository

        return SqliteRepository(path=config.sqlite_path)
    from tmcp_storage_server.store.postgres import PostgresRepository

    return PostgresRepository(url=config.database_url, max_size=config.db_pool_size)


def build_cache(config: Config) -> tuple[TwoLevelCache | None, Subscriber | None]:
    """The read cache the configuration asks for (None when both levels are off), and
    the subscriber that keeps it coherent: Redis pub/sub when Redis is configured, else
    PostgreSQL LISTEN/NOTIFY; none for the single-process embedded database."""
    if config.cache_bytes == 0 and not config.redis_url:
        return None, None
    settings = CacheSettings(
        max_age=config.cache_max_age,
        ttl=config.cache_ttl,
        negative_ttl=config.cache_negative_ttl,
        coherent_without_channel=config.embedded,
    )
    l1 = L1Cache(max_bytes=config.cache_bytes)
    subscriber: Subscriber
    if config.redis_url:
        from tmcp_storage_server.store.invalidation import RedisSubscriber
        from tmcp_storage_server.store.redis_l2 import RedisL2, connect

        l2 = RedisL2(
            client=connect(config.redis_url), prefix=config.redis_prefix, retain=config.cache_ttl
        )
        cache = TwoLevelCache(l1=l1, l2=l2, settings=settings)
        subscriber = RedisSubscriber(
            client=l2.client,
            channel=l2.channel,
            on_message=cache.apply,
            on_up=cache.channel_reachable,
            on_down=cache.channel_unreachable,
        )
    elif not config.embedded:
        from tmcp_storage_server.store.pg_channel import (
            PostgresNotifier,
            PostgresSubscriber,
            channel_name,
        )

        channel = channel_name(config.redis_prefix)
        notifier = PostgresNotifier(url=config.database_url, channel=channel)
        cache = TwoLevelCache(l1=l1, l2=None, notifier=notifier, settings=settings)
        subscriber = PostgresSubscriber(
            url=config.database_url,
            channel=channel,
            on_message=cache.apply,
            on_up=cache.channel_reachable,
            on_down=cache.channel_unreachable,
        )
    else:
        return TwoLevelCache(l1=l1, l2=None, settings=settings), None
    cache.on_channel_failure = subscriber.recheck
    return cache, subscriber


async def build_feed(config: Config) -> LocalChangeFeed:
    """In-process wake-ups; with PostgreSQL also LISTEN/NOTIFY across processes."""
    if config.embedded:
        return LocalChangeFeed()
    from tmcp_storage_server.store.change_feed import PostgresChangeFeed

    feed = PostgresChangeFeed(url=config.database_url)
    await feed.start()
    return feed


async def start_gateway(config: Config, grpc_port: int) -> Gateway:
    """The gRPC-Web gateway on ``config.web_listen``, forwarding to this process's gRPC
    port over loopback in plaintext (config refuses it together with TLS)."""
    from tmcp_storage_server.api.gateway import Gateway, upstream_target

    gateway = Gateway(
        listen=config.web_listen,
        upstream=upstream_target(config.listen, grpc_port),
        origins=config.web_origins,
        max_message_bytes=MAX_MESSAGE_BYTES,
        credentials=None,
        shutdown_grace=config.shutdown_grace,
        # Browsers' Watches hold upstream streams: stay under the server's per-connection cap.
        streams_per_connection=min(100, config.max_streams or 100),
    )
    port = await gateway.start()
    log.info("gRPC-Web gateway on %s (port %d)", config.web_listen, port)
    return gateway


@dataclass
class App:
    """A running server and its background tasks."""

    config: Config
    port: int
    _server: grpc.aio.Server
    _repository: Repository
    _health: Any  # grpc_health.v1.health.aio.HealthServicer (no stubs)
    _tasks: list[asyncio.Task[None]]
    _feed: LocalChangeFeed
    _watcher: WatchService
    cache: TwoLevelCache | None = None
    metrics: metrics_endpoint.MetricsEndpoint | None = None
    gateway: Gateway | None = None
    """The gRPC-Web gateway, when ``web_listen`` is set."""

    @classmethod
    async def start(cls, config: Config) -> App:
        """Open the database (applying migrations), bind the port and start serving."""
        config, _ = config.resolve_secret()
        repository = build_repository(config)
        await repository.open()
        clock = SystemClock()
        feed = await build_feed(config)
        cache, subscriber = build_cache(config)
        writer = Writer(
            repository=repository,
            defaults=config.limits,
            cache=cache,
            feed=feed,
            limiter=ratelimit.limiter(config.write_rate, config.write_burst),
        )
        watcher = WatchService(
            repository=repository,
            feed=feed,
            clock=clock,
            settings=WatchSettings(
                heartbeat=config.watch_heartbeat,
                max_lag=config.watch_max_lag,
                poll=config.watch_poll,
            ),
        )
        auth = TokenVerifier(secret=config.jwt_secret)
        sync = SyncService(
            repository=repository,
            writer=writer,
            clock=clock,
            app_strategies=config.app_strategies,
        )
        # Single-key writes and batches of every space share one queue of transactions.
        groups = WriteGroups(writer=writer, clock=clock)
        rpc_stats = RpcStats()
        health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        server = build_server(
            kv=KeyValueServicer(
                service=KeyValueService(
                    repository=repository, writer=writer, clock=clock, cache=cache, groups=groups
                ),
                auth=auth,
            ),
            batch=BatchServicer(
                service=BatchService(
                    repository=repository, writer=writer, clock=clock, cache=cache, groups=groups
                ),
                auth=auth,
            ),
            quota=QuotaServicer(
                service=QuotaService(repository=repository, defaults=config.limits, clock=clock),
                auth=auth,
            ),
            sync=SyncServicer(
                service=sync,
                conflicts=ConflictService(repository=repository, writer=writer, clock=clock),
                watcher=watcher,
                auth=auth,
            ),
            health_servicer=health_servicer,
            options=server_options(
                max_streams=config.max_streams, min_ping=config.keepalive_min_ping
            ),
            observer=CallObserver(stats=rpc_stats),
        )
        credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
        if credentials is None:
            port = server.add_insecure_port(config.listen)
        else:
            port = server.add_secure_port(config.listen, credentials)
        if port == 0:
            await feed.stop()
            await repository.close()
            raise OSError(f"cannot listen on {config.listen}")
        try:
            metrics, metrics_at = await metrics_endpoint.start(
                metrics_endpoint.build_registry(
                    collectors(rpc_stats, cache, repository, feed, writer, sync)
                ),
                listen=config.metrics_listen,
                socket_path=workers.metrics_socket(),
            )
        except OSError as exc:
            await feed.stop()
            await repository.close()
            raise OSError(f"cannot serve metrics on {config.metrics_listen}: {exc}") from exc
        await server.start()
        sweeper = Sweeper(repository=repository, writer=writer, clock=clock)
        app = cls(config, port, server, repository, health_servicer, [], feed, watcher, cache)
        app.metrics = metrics
        await app._set_serving(True)
        app._tasks = [
            asyncio.create_task(app._watch_health(), name="health"),
            asyncio.create_task(app._watch_cache(), name="cache-health"),
            asyncio.create_task(app._sweep(sweeper), name="sweeper"),
            asyncio.create_task(app._compact(clock), name="compactor"),
        ]
        if subscriber is not None:
            app._tasks.append(asyncio.create_task(subscriber.run(), name="invalidations"))
        if config.web_listen:
            try:
                app.gateway = await start_gateway(config, port)
            except OSError:
                await app.stop()
                raise
        log.info(
            "serving on %s (port %d, %s), database %s",
            config.listen,
            port,
            ("mutual TLS" if config.tls_client_ca else "TLS") if config.tls else "plaintext",
            "sqlite " + config.sqlite_path if config.embedded else "postgresql",
        )
        log.info("metrics: %s", metrics_at)
        return app

    async def _set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, status)
        await self._set_cache_health()

    async def _set_cache_health(self) -> None:
        up = self.cache is None or self.cache.healthy
        status = health_pb2.HealthCheckResponse
        await self._health.set(CACHE_HEALTH_SERVICE, status.SERVING if up else status.NOT_SERVING)

    async def _watch_cache(self) -> None:
        """Follow the cache's channel state into health (cheap: a flag, no I/O)."""
        reported: bool | None = None
        while True:
            await asyncio.sleep(CACHE_HEALTH_INTERVAL)
            up = self.cache is None or self.cache.healthy
            if up != reported:
                reported = up
                await self._set_cache_health()

    async def _watch_health(self) -> None:
        serving = True
        while True:
            await asyncio.sleep(HEALTH_INTERVAL)
            try:
                await self._repository.ping()
                ok = True
            except StorageError:
                ok = False
            except Exception:
                # Never let the health loop die: an unexpected failure is "not serving".
                log.exception("health check failed unexpectedly")
                ok = False
            if ok != serving:
                log.warning("database %s", "reachable again" if ok else "unreachable")
                serving = ok
                await self._set_serving(ok)

    async def _sweep(self, sweeper: Sweeper) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            try:
                await sweeper.sweep_once()
            except StorageError as exc:
                log.warning("expiry sweep skipped: %s", exc.message)
            except Exception:
                log.exception("expiry sweep failed")

    async def _compact(self, clock: SystemClock) -> None:
        retention = timedelta(seconds=self.config.history_retention)
        interval = min(COMPACT_INTERVAL, max(0.2, self.config.history_retention / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                now = clock.now()
                await self._repository.compact(now - retention, now)
            except StorageError as exc:
                log.warning("history compaction skipped: %s", exc.message)
            except Exception:
                log.exception("history compaction failed")

    async def wait(self) -> None:
        """Until the server stops."""
        await self._server.wait_for_termination()

    async def stop(self) -> None:
        """Stop taking calls, let in-flight calls finish (up to the grace), close."""
        await self._health.enter_graceful_shutdown()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._watcher.close()  # streams end with UNAVAILABLE and their resume cursor
        if self.gateway is not None:  # drains its HTTP calls while the server drains
            await asyncio.gather(self._server.stop(self.config.shutdown_grace), self.gateway.stop())
        else:
            await self._server.stop(self.config.shutdown_grace)
        if self.metrics is not None:
            await self.metrics.close()
        await self._feed.stop()
        await self._repository.close()
        if self.cache is not None:
            await self.cache.close()
            log.info("cache stats: %s", self.cache.stats.line())
        log.info("stopped")
