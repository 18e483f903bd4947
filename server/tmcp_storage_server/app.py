"""The composition root: build the parts from a Config, serve, and drain.

The only module that knows every layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

from tmcp_storage_server.api.auth import TokenVerifier
from tmcp_storage_server.api.batch import BatchServicer
from tmcp_storage_server.api.kv import KeyValueServicer
from tmcp_storage_server.api.quota import QuotaServicer
from tmcp_storage_server.api.server import SERVICE_NAMES, build_server
from tmcp_storage_server.api.sync import SyncServicer
from tmcp_storage_server.config import Config
from tmcp_storage_server.core.batch import BatchService
from tmcp_storage_server.core.clock import SystemClock
from tmcp_storage_server.core.conflict_records import ConflictService
from tmcp_storage_server.core.expiry import Sweeper
from tmcp_storage_server.core.kv import KeyValueService
from tmcp_storage_server.core.ports import Repository
from tmcp_storage_server.core.quota import QuotaService
from tmcp_storage_server.core.sync import SyncService
from tmcp_storage_server.core.watch import WatchService, WatchSettings
from tmcp_storage_server.core.writes import Writer
from tmcp_storage_server.errors import StorageError
from tmcp_storage_server.store.change_feed import LocalChangeFeed

log = logging.getLogger("tmcp_storage_server")

HEALTH_INTERVAL = 2.0
COMPACT_INTERVAL = 60.0
"""Seconds between history compactions (shorter when the retention is short)."""


def build_repository(config: Config) -> Repository:
    """The repository the database URL names."""
    if config.embedded:
        from tmcp_storage_server.store.sqlite import SqliteRepository

        return SqliteRepository(path=config.sqlite_path)
    from tmcp_storage_server.store.postgres import PostgresRepository

    return PostgresRepository(url=config.database_url, max_size=config.db_pool_size)


async def build_feed(config: Config) -> LocalChangeFeed:
    """In-process wake-ups; with PostgreSQL also LISTEN/NOTIFY across processes."""
    if config.embedded:
        return LocalChangeFeed()
    from tmcp_storage_server.store.change_feed import PostgresChangeFeed

    feed = PostgresChangeFeed(url=config.database_url)
    await feed.start()
    return feed


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

    @classmethod
    async def start(cls, config: Config) -> App:
        """Open the database (applying migrations), bind the port and start serving."""
        config, _ = config.resolve_secret()
        repository = build_repository(config)
        await repository.open()
        clock = SystemClock()
        feed = await build_feed(config)
        writer = Writer(repository=repository, defaults=config.limits, feed=feed)
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
        health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        server = build_server(
            kv=KeyValueServicer(
                service=KeyValueService(repository=repository, writer=writer, clock=clock),
                auth=auth,
            ),
            batch=BatchServicer(
                service=BatchService(repository=repository, writer=writer, clock=clock),
                auth=auth,
            ),
            quota=QuotaServicer(
                service=QuotaService(repository=repository, defaults=config.limits, clock=clock),
                auth=auth,
            ),
            sync=SyncServicer(
                service=SyncService(repository=repository, writer=writer, clock=clock),
                conflicts=ConflictService(repository=repository, writer=writer, clock=clock),
                watcher=watcher,
                auth=auth,
            ),
            health_servicer=health_servicer,
        )
        port = server.add_insecure_port(config.listen)
        if port == 0:
            await feed.stop()
            await repository.close()
            raise OSError(f"cannot listen on {config.listen}")
        await server.start()
        sweeper = Sweeper(repository=repository, writer=writer, clock=clock)
        app = cls(config, port, server, repository, health_servicer, [], feed, watcher)
        await app._set_serving(True)
        app._tasks = [
            asyncio.create_task(app._watch_health(), name="health"),
            asyncio.create_task(app._sweep(sweeper), name="sweeper"),
            asyncio.create_task(app._compact(clock), name="compactor"),
        ]
        log.info(
            "serving on %s (port %d), database %s",
            config.listen,
            port,
            "sqlite " + config.sqlite_path if config.embedded else "postgresql",
        )
        return app

    async def _set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, status)

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
        await self._server.stop(self.config.shutdown_grace)
        await self._feed.stop()
        await self._repository.close()
        log.info("stopped")
