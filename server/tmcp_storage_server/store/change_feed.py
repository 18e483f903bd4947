"""Change feeds: wake the watchers of a space after a commit.

``LocalChangeFeed`` wakes subscribers in this process. ``PostgresChangeFeed`` adds
PostgreSQL LISTEN/NOTIFY so that commits in any process reach every process: ``notify``
wakes local subscribers at once and queues a NOTIFY that a background task sends; a
listener connection turns notifications into local wake-ups. Wake-ups carry no data:
subscribers always re-read the changes log from their cursor, and poll it now and then,
so a lost notification (a dropped listener connection) delays a change, never drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import psycopg

from tmcp_storage_server.model import Space

log = logging.getLogger(__name__)

CHANNEL = "tmcp_storage_changes"
_SEPARATOR = "\x1f"
_MAX_QUEUED = 10_000
"""NOTIFYs waiting to be sent; beyond that they are dropped (the poll covers them)."""
_RECONNECT_DELAY = 1.0
_NOTIFY_ALL = "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p"
"""One statement for a batch of spaces: a statement per space costs more CPU than the
write it announces."""


class _Signal:
    """One subscriber's wake-up flag."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await self._event.wait()
        except TimeoutError:
            return False
        self._event.clear()
        return True


class LocalChangeFeed:
    """Wakes subscribers of this process."""

    def __init__(self) -> None:
        self._subscribers: dict[Space, set[_Signal]] = {}

    @contextlib.contextmanager
    def subscribe(self, space: Space) -> Iterator[_Signal]:
        """A wake-up signal for ``space`` while the block runs."""
        signal = _Signal()
        self._subscribers.setdefault(space, set()).add(signal)
        try:
            yield signal
        finally:
            subscribers = self._subscribers.get(space)
            if subscribers is not None:
                subscribers.discard(signal)
                if not subscribers:
                    del self._subscribers[space]

    def wake(self, space: Space) -> None:
        """Wake this process's subscribers of ``space``."""
        for signal in self._subscribers.get(space, ()):
            signal.set()

    def notify(self, space: Space) -> None:
        """A commit to ``space``: wake its subscribers."""
        self.wake(space)

    def wake_all(self) -> None:
        """Wake everyone (shutdown)."""
        for subscribers in self._subscribers.values():
            for signal in subscribers:
                signal.set()

    async def stop(self) -> None:
        """Nothing runs in the background of a local feed."""

    async def flush(self, seconds: float) -> bool:
        """Whether every wake-up was delivered: at once, locally."""
        return True

    @property
    def subscriber_count(self) -> int:
        """How many subscribers are registered (for metrics and tests)."""
        return sum(len(s) for s in self._subscribers.values())


class PostgresChangeFeed(LocalChangeFeed):
    """Local wake-ups plus LISTEN/NOTIFY across processes."""

    def __init__(self, *, url: str) -> None:
        super().__init__()
        self._url = url
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=_MAX_QUEUED)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start the listener and the publisher."""
        self._tasks = [
            asyncio.create_task(self._listen(), name="feed-listen"),
            asyncio.create_task(self._publish(), name="feed-publish"),
        ]

    async def stop(self) -> None:
        """Stop both background tasks."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def flush(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the queued NOTIFYs to be sent (a short-lived
        process, such as the command line, before it exits); whether they were."""
        try:
            async with asyncio.timeout(seconds):
                await self._queue.join()
        except TimeoutError:
            return False
        return True

    def notify(self, space: Space) -> None:
        """Wake local subscribers now; queue a NOTIFY for the other processes."""
        self.wake(space)
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(space.app_id + _SEPARATOR + space.user_id)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, connect_timeout=5, application_name="tmcp-storage-feed"
        )

    async def _publish(self) -> None:
        conn: psycopg.AsyncConnection[Any] | None = None
        while True:
            taken = [await self._queue.get()]
            while not self._queue.empty() and len(taken) < 100:
                taken.append(self._queue.get_nowait())
            try:
                if conn is None or conn.closed:
                    conn = await self._connect()
                await conn.execute(_NOTIFY_ALL, (CHANNEL, list(dict.fromkeys(taken))))
            except psycopg.Error as exc:
                log.warning("change feed: NOTIFY failed (%s); watchers fall back to polling", exc)
                conn = None
                await asyncio.sleep(_RECONNECT_DELAY)
            finally:
                for _ in taken:  # sent, or left to the watchers' polls: ``flush`` is done
                    self._queue.task_done()

    async def _listen(self) -> None:
        while True:
            try:
                async with await self._connect() as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.wake_all()  # reconnected: notifications may have been missed
                    async for note in conn.notifies():
                        app_id, _, user_id = note.payload.partition(_SEPARATOR)
                        self.wake(Space(app_id, user_id))
            except psycopg.Error as exc:
                log.warning("change feed: listener lost (%s); reconnecting", exc)
                await asyncio.sleep(_RECONNECT_DELAY)
