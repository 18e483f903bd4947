"""The server's parts, built for one command-line run with the builders of ``app.py``.

A command that writes must be heard by running servers: its cache publishes what each
commit stored on the same invalidation channel as theirs (Redis, or PostgreSQL NOTIFY),
and its commits wake their watchers (the repository NOTIFYs them with each commit). So
the parts are the server's own, and a writing command waits until the channel is up
before it writes anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tmcp_storage_server.app import build_cache, build_repository
from tmcp_storage_server.config import Config
from tmcp_storage_server.core.admin import AdminService
from tmcp_storage_server.core.clock import SystemClock
from tmcp_storage_server.core.conflict_records import ConflictService
from tmcp_storage_server.core.kv import KeyValueService
from tmcp_storage_server.core.ports import Repository
from tmcp_storage_server.core.quota import QuotaService
from tmcp_storage_server.core.writes import Writer
from tmcp_storage_server.errors import Unavailable
from tmcp_storage_server.model import Principal, Scope
from tmcp_storage_server.store.cache import TwoLevelCache

log = logging.getLogger(__name__)

CHANNEL_WAIT = 5.0
"""Seconds a writing command waits for the invalidation channel before giving up."""

OPERATOR = Principal("tmcp-storage-cli", "", frozenset({Scope.OPERATOR}))
"""Who the command line acts as: it reaches every space, as the database's owner does."""


@dataclass
class Parts:
    """The services a command calls."""

    config: Config
    repository: Repository
    kv: KeyValueService
    quota: QuotaService
    conflicts: ConflictService
    admin: AdminService
    clock: SystemClock
    cache: TwoLevelCache | None

    @property
    def announced(self) -> bool:
        """Whether every write so far reached the invalidation channel (if there is one)."""
        return self.cache is None or self.cache.healthy


@contextlib.asynccontextmanager
async def open_parts(config: Config, *, writes: bool) -> AsyncIterator[Parts]:
    """Open the database and, for a command that ``writes``, the cache channel; close
    all of it on exit."""
    repository = build_repository(config)
    await repository.open()
    clock = SystemClock()
    tasks: list[asyncio.Task[None]] = []
    cache = None
    try:
        if writes:
            cache, subscriber = build_cache(config)
            if subscriber is not None and cache is not None:
                tasks.append(asyncio.create_task(subscriber.run(), name="invalidations"))
                await _channel_up(cache)
        writer = Writer(repository=repository, defaults=config.limits, cache=cache)
        yield Parts(
            config=config,
            repository=repository,
            kv=KeyValueService(repository=repository, writer=writer, clock=clock),
            quota=QuotaService(repository=repository, defaults=config.limits, clock=clock),
            conflicts=ConflictService(repository=repository, writer=writer, clock=clock),
            admin=AdminService(repository=repository, writer=writer, clock=clock),
            clock=clock,
            cache=cache,
        )
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if cache is not None:
            await cache.close()
        await repository.close()


async def _channel_up(cache: TwoLevelCache) -> None:
    """Until the subscriber reported the channel up; Unavailable after ``CHANNEL_WAIT``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CHANNEL_WAIT
    while not cache.channel_up:
        if loop.time() > deadline:
            raise Unavailable(
                f"{cache.channel_name} is unreachable: running servers would not hear of "
                "this write, so nothing was written"
            )
        await asyncio.sleep(0.02)
