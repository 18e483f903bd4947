"""Cache invalidations over PostgreSQL NOTIFY/LISTEN, for deployments without Redis.

Each process sends NOTIFY on a connection of its own after a commit, and LISTENs on
another. As with Redis pub/sub, a notification can be lost only with its connection: the
listener then reports the channel down (L1 items age out after ``max_age``) and, once
listening again, up (the cache flushes its L1 first). A NOTIFY payload is at most 8000
bytes, so messages are split smaller.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import psycopg
from psycopg import sql

from tmcp_storage_server.store.invalidation import ChannelSubscriber, Invalidation

CONNECT_TIMEOUT = 2
CHECK_EVERY = 0.5
"""Seconds between liveness checks of the listening connection."""
_NOTIFY = "SELECT pg_notify(%s, %s)"


def channel_name(prefix: str) -> str:
    """The NOTIFY channel of a key prefix (an identifier of at most 63 bytes)."""
    return (prefix + "invalidate")[:63]


async def _connect(url: str) -> psycopg.AsyncConnection[tuple[object, ...]]:
    return await psycopg.AsyncConnection.connect(
        url, autocommit=True, connect_timeout=CONNECT_TIMEOUT, application_name="tmcp-cache"
    )


class PostgresNotifier:
    """``invalidation.Notifier`` over one autocommit connection."""

    max_message_bytes = 7900

    def __init__(self, *, url: str, channel: str) -> None:
        self._url = url
        self._channel = channel
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._lock = asyncio.Lock()

    async def publish(self, payload: Sequence[bytes]) -> None:
        """NOTIFY each message, in order, in one round trip."""
        async with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await _connect(self._url)
                async with self._conn.pipeline():
                    for message in payload:
                        await self._conn.execute(_NOTIFY, (self._channel, message.decode()))
            except psycopg.Error as exc:
                await self._drop()
                raise ConnectionError(f"NOTIFY failed: {type(exc).__name__}") from exc

    async def reconnect(self) -> None:
        """Drop the connection; the next publish opens a new one."""
        async with self._lock:
            await self._drop()

    async def close(self) -> None:
        """Release the connection."""
        await self.reconnect()

    async def _drop(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


class PostgresSubscriber(ChannelSubscriber):
    """LISTENs on ``channel`` and reports the channel down and up."""

    transient = (psycopg.Error, OSError, ConnectionError)

    def __init__(
        self,
        *,
        url: str,
        channel: str,
        on_message: Callable[[Invalidation], None],
        on_up: Callable[[], Awaitable[None]],
        on_down: Callable[[str], None],
    ) -> None:
        super().__init__(channel=channel, on_message=on_message, on_up=on_up, on_down=on_down)
        self._url = url

    async def _session(self) -> None:
        async with await _connect(self._url) as conn:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            await self._up()
            while not self._recheck.is_set():
                started = time.monotonic()
                async for notify in conn.notifies(timeout=CHECK_EVERY):
                    self._deliver(notify.payload.encode())
                    if time.monotonic() - started > CHECK_EVERY:
                        break
                await asyncio.wait_for(conn.execute("SELECT 1"), CHECK_EVERY * 2)
        raise ConnectionError("a NOTIFY failed")
